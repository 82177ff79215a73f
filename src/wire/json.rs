//! Strict JSON parsing of request bodies.
//!
//! The gateway classifies its own reading of a body and then forwards the
//! original bytes, so any input that two JSON parsers may read differently is
//! a bypass: duplicate keys (first-wins vs last-wins), invalid UTF-8 (lossy
//! replacement vs rejection), lone surrogates, trailing data, NUL in a key
//! (cut there by C-string parsers). All of these are refused here, and so are
//! keys that are duplicates to a case-insensitive parser (see [`fold_key`]).

use super::WireError;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses `body` as exactly one JSON object. Nesting depth is bounded by
/// serde_json's recursion limit (128), so hostile nesting yields an error
/// instead of a stack overflow.
pub fn parse_strict(body: &[u8]) -> Result<Value, WireError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        WireError::new(format!(
            "request body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim_start_matches([' ', '\t', '\r', '\n']).is_empty() {
        return Err(WireError::new("request body is empty"));
    }
    if text.starts_with('\u{feff}') {
        return Err(WireError::new(
            "request body starts with a byte order mark; send plain UTF-8 JSON",
        ));
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de).map_err(json_error)?;
    // Trailing data after the value (a second document, garbage) could be
    // read by another parser; refuse it.
    de.end().map_err(json_error)?;

    if !value.is_object() {
        return Err(WireError::new("request body must be a JSON object"));
    }
    Ok(value)
}

fn json_error(e: serde_json::Error) -> WireError {
    let full = e.to_string();
    // serde_json appends the position to the message; we put it in front.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    if e.line() == 0 {
        WireError::new(format!("invalid JSON: {msg}"))
    } else {
        WireError::new(format!(
            "invalid JSON at line {} column {}: {msg}",
            e.line(),
            e.column()
        ))
    }
}

/// Builds a `serde_json::Value`, refusing objects with a repeated key.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        // The folded forms of this object's keys that are not their own fold; almost always
        // empty, since API keys are lower-case ASCII.
        let mut folded: Vec<String> = Vec::new();
        // Keys arrive unescaped, so `"a"` and `"\u0061"` count as the same key.
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {}", quoted(&key))));
            }
            // A parser that keeps keys as C strings reads `"messages\u0000x"` as `messages`.
            if key.contains('\0') {
                return Err(de::Error::custom(format!(
                    "key {} holds a NUL character",
                    quoted(&key)
                )));
            }
            let fold = fold_key(&key);
            let clash = if folds_to_itself(&key) {
                folded.contains(&key)
            } else {
                let clash = obj.contains_key(fold.as_ref()) || folded.iter().any(|f| *f == fold);
                folded.push(fold.into_owned());
                clash
            };
            if clash {
                return Err(de::Error::custom(format!(
                    "key {} is a duplicate of another key of the object to a case-insensitive \
                     parser",
                    quoted(&key)
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}

/// True when `key` is its own fold: no upper-case ASCII letter and nothing beyond ASCII. The
/// fast path: every key an API defines is of this kind.
pub(super) fn folds_to_itself(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase())
}

/// `key` as case-insensitive JSON decoders match it, so that two keys with one fold are one
/// field to them. Go's `encoding/json` (which matches `Messages` to a `messages` field and folds
/// `ſ` U+017F to `s` and the Kelvin sign U+212A to `k`), .NET's `OrdinalIgnoreCase` (`ı` U+0131
/// is `I` upper-cased) and Unicode full case folding (`ß` is `ss`, `ﬁ` is `fi`) all give the
/// same ASCII name here; a character with no ASCII reading is lower-cased.
pub fn fold_key(key: &str) -> std::borrow::Cow<'_, str> {
    if folds_to_itself(key) {
        return key.into();
    }
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        push_fold(c, &mut out);
    }
    out.into()
}

fn push_fold(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    let upper: String = c.to_uppercase().collect();
    if upper.is_ascii() {
        out.push_str(&upper.to_ascii_lowercase());
        return;
    }
    let mut lower = c.to_lowercase();
    match lower.next() {
        // `İ` lower-cases to `i` and a combining dot: simple case mapping, which
        // case-insensitive parsers use, drops the dot.
        Some(first) if first.is_ascii() => out.push(first),
        Some(first) => {
            out.push(first);
            out.extend(lower);
        }
        None => out.push(c),
    }
}

/// Whether `key` (not byte-equal to `name`) is `name` to a case-insensitive parser; `name` is a
/// field name an API defines, lower-case ASCII.
pub(super) fn is_case_variant(key: &str, name: &str) -> bool {
    key != name && !folds_to_itself(key) && fold_key(key) == name
}

/// Longest client string echoed back in an error message; such strings are
/// attacker controlled and error bodies should stay small.
const MAX_ECHO: usize = 64;

/// A client-supplied string as a JSON literal for error messages, truncated.
pub(super) fn quoted(s: &str) -> String {
    let shown: String = s.chars().take(MAX_ECHO).collect();
    let quoted = Value::String(shown).to_string();
    if s.chars().count() > MAX_ECHO {
        format!("{quoted}...")
    } else {
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &[u8]) -> String {
        parse_strict(body).unwrap_err().message
    }

    #[test]
    fn parses_plain_object() {
        let v = parse_strict(br#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": "d"}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": [1, -2, 3.5, true, null, "x"], "b": {"c": "d"}})
        );
        assert_eq!(v["a"][0].as_u64(), Some(1));
        assert_eq!(v["a"][1].as_i64(), Some(-2));
    }

    #[test]
    fn big_integers_keep_their_type() {
        let v = parse_strict(br#"{"u": 18446744073709551615, "i": -9223372036854775808}"#).unwrap();
        assert_eq!(v["u"].as_u64(), Some(u64::MAX));
        assert_eq!(v["i"].as_i64(), Some(i64::MIN));
    }

    #[test]
    fn top_level_must_be_object() {
        for body in [&b"[]"[..], b"1", b"\"s\"", b"null", b"true"] {
            assert_eq!(err(body), "request body must be a JSON object");
        }
    }

    #[test]
    fn duplicate_top_level_key() {
        let m = err(br#"{"messages": [], "messages": [1]}"#);
        assert!(m.starts_with("invalid JSON at line 1 column "), "{m}");
        assert!(m.ends_with("duplicate key \"messages\""), "{m}");
    }

    #[test]
    fn duplicate_nested_key() {
        let m = err(br#"{"messages": [{"role": "user", "content": "a", "content": "b"}]}"#);
        assert!(m.contains("duplicate key \"content\""), "{m}");
        let m = err(b"{\"a\": {\"b\": {\"c\": 1,\n \"c\": 2}}}");
        assert!(m.contains("line 2"), "{m}");
        assert!(m.contains("duplicate key \"c\""), "{m}");
    }

    #[test]
    fn duplicate_key_detected_through_escapes() {
        let m = err(br#"{"role": "user", "\u0072ole": "system"}"#);
        assert!(m.contains("duplicate key \"role\""), "{m}");
    }

    #[test]
    fn keys_equal_to_a_case_insensitive_parser_are_refused() {
        for body in [
            r#"{"messages": 1, "Messages": 2}"#,
            r#"{"MESSAGES": 1, "messages": 2}"#,
            "{\"system\": 1, \"\u{17F}ystem\": 2}",
            "{\"\u{212A}ey\": 1, \"key\": 2}",
            "{\"a\": {\"\u{131}d\": 1, \"ID\": 2}}",
            "{\"cla\u{df}\": 1, \"class\": 2}",
            "{\"\u{130}d\": 1, \"id\": 2}",
            "{\"\u{c9}t\u{e9}\": 1, \"\u{e9}t\u{e9}\": 2}",
            // Escaped spellings are the same keys.
            r#"{"role": 1, "\u0052ole": 2}"#,
        ] {
            let m = err(body.as_bytes());
            assert!(m.contains("case-insensitive"), "{body}: {m}");
        }
        // Keys that no parser folds together.
        parse_strict(r#"{"a_b": 1, "a-b": 2, "ab": 3, "\u00e9": 4, "e": 5}"#.as_bytes()).unwrap();
    }

    #[test]
    fn folds() {
        for (key, fold) in [
            ("Messages", "messages"),
            ("me\u{17F}\u{17F}ages", "messages"),
            ("\u{212A}ind", "kind"),
            ("\u{131}d", "id"),
            ("\u{130}d", "id"),
            ("cla\u{df}", "class"),
            ("\u{fb01}le", "file"),
            ("content", "content"),
        ] {
            assert_eq!(fold_key(key), fold, "{key}");
        }
        assert!(is_case_variant("Text", "text"));
        assert!(!is_case_variant("text", "text"));
        assert!(!is_case_variant("texts", "text"));
    }

    #[test]
    fn nul_in_a_key_is_refused() {
        let m = err(br#"{"messages": [], "messages\u0000x": [1]}"#);
        assert!(m.contains("NUL"), "{m}");
        let m = err(br#"{"a": {"\u0000": 1}}"#);
        assert!(m.contains("NUL"), "{m}");
        // In a value it is text like any other.
        let v = parse_strict(br#"{"a": "x\u0000y"}"#).unwrap();
        assert_eq!(v["a"], "x\0y");
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        parse_strict(br#"{"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]}"#).unwrap();
    }

    #[test]
    fn long_duplicate_key_is_truncated_in_message() {
        let key = "k".repeat(500);
        let body = format!("{{\"{key}\": 1, \"{key}\": 2}}");
        let m = err(body.as_bytes());
        assert!(m.len() < 200, "{m}");
        assert!(m.contains("\"..."), "{m}");
    }

    #[test]
    fn invalid_utf8_anywhere() {
        let m = err(b"{\"a\": \"\xff\"}");
        assert!(m.contains("UTF-8"), "{m}");
        let m = err(b"{\"a\xc3\": 1}");
        assert!(m.contains("UTF-8"), "{m}");
        let m = err(b"{\"a\": 1}\xfe");
        assert!(m.contains("UTF-8"), "{m}");
        // Overlong encoding of '/'.
        let m = err(b"{\"a\": \"\xc0\xaf\"}");
        assert!(m.contains("UTF-8"), "{m}");
    }

    #[test]
    fn lone_surrogates_refused() {
        let m = err(br#"{"a": "\ud800"}"#);
        assert!(m.starts_with("invalid JSON"), "{m}");
        let m = err(br#"{"a": "\udc00x"}"#);
        assert!(m.starts_with("invalid JSON"), "{m}");
        // A proper pair is fine.
        let v = parse_strict(br#"{"a": "\ud83d\ude00"}"#).unwrap();
        assert_eq!(v["a"], "\u{1F600}");
    }

    #[test]
    fn trailing_garbage_refused() {
        assert!(err(br#"{"a": 1} x"#).contains("trailing characters"));
        assert!(err(br#"{"a": 1}{"a": 2}"#).contains("trailing characters"));
        // Trailing whitespace is not garbage.
        parse_strict(b"{\"a\": 1}  \r\n").unwrap();
    }

    #[test]
    fn empty_and_truncated() {
        assert_eq!(err(b""), "request body is empty");
        assert_eq!(err(b"  \n"), "request body is empty");
        let m = err(br#"{"a": "#);
        assert!(m.starts_with("invalid JSON"), "{m}");
        assert!(m.contains("EOF"), "{m}");
    }

    #[test]
    fn bom_refused() {
        assert!(err("\u{feff}{}".as_bytes()).contains("byte order mark"));
    }

    #[test]
    fn syntax_errors_have_position() {
        let m = err(br#"{"a": 1,}"#);
        assert!(m.starts_with("invalid JSON at line 1 column 9:"), "{m}");
        let m = err(br#"{'a': 1}"#);
        assert!(m.starts_with("invalid JSON at line 1 column 2:"), "{m}");
        let m = err(br#"{"a": NaN}"#);
        assert!(m.starts_with("invalid JSON"), "{m}");
        let m = err(br#"{"a": 1e999}"#);
        assert!(m.starts_with("invalid JSON"), "{m}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 10_000;
        let mut body = String::from("{\"a\":");
        body.push_str(&"[".repeat(depth));
        body.push_str(&"]".repeat(depth));
        body.push('}');
        let m = err(body.as_bytes());
        assert!(m.contains("recursion limit"), "{m}");

        let mut objs = String::new();
        for _ in 0..depth {
            objs.push_str("{\"a\":");
        }
        objs.push('1');
        objs.push_str(&"}".repeat(depth));
        assert!(err(objs.as_bytes()).contains("recursion limit"));
    }

    #[test]
    fn moderate_nesting_is_fine() {
        let depth = 100;
        let mut body = String::from("{\"a\":");
        body.push_str(&"[".repeat(depth));
        body.push_str(&"]".repeat(depth));
        body.push('}');
        parse_strict(body.as_bytes()).unwrap();
    }
}
