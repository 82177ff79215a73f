//! Strict JSON parsing of request bodies.
//!
//! The gateway classifies its own reading of a body and then forwards the
//! original bytes, so any input that two JSON parsers may read differently is
//! a bypass: duplicate keys (first-wins vs last-wins), invalid UTF-8 (lossy
//! replacement vs rejection), lone surrogates, trailing data. All of these
//! are refused here.

use super::extract::quoted;
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
        // Keys arrive unescaped, so `"a"` and `"\u0061"` count as the same key.
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {}", quoted(&key))));
            }
            let value = map.next_value_seed(StrictValue)?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
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
