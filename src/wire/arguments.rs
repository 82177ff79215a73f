//! Tool-call arguments: JSON inside a JSON string.
//!
//! The request's own escapes are undone by the strict parser, but arguments are a second JSON
//! document inside a string, with escapes of their own: `"{\"q\":\"\\u0070ipe bomb\"}"` reads
//! as `\u0070ipe bomb` here and as `pipe bomb` to a server that parses the arguments (vLLM
//! and SGLang do before rendering them with `tojson`). So arguments with escapes are decoded and
//! their strings, keys and values, judged as well as the raw text.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// How deep arguments nested in the strings of arguments are decoded.
const MAX_DEPTH: usize = 4;

/// The strings of `text` read as JSON, one a line, when `text` has escapes to undo; `None` when
/// it has none (its strings are then in it as they are) or is not JSON (the raw text is all a
/// model can read).
pub(super) fn decoded(text: &str) -> Option<String> {
    let mut strings = Vec::new();
    collect(text, 0, &mut strings);
    (!strings.is_empty()).then(|| strings.join("\n"))
}

fn collect(text: &str, depth: usize, out: &mut Vec<String>) {
    if depth >= MAX_DEPTH || !text.contains('\\') {
        return;
    }
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    if Strings(&mut found).deserialize(&mut de).is_err() || de.end().is_err() {
        return;
    }
    for s in found {
        // A string that is itself JSON with escapes (arguments encoded twice) is decoded again.
        collect(&s, depth + 1, out);
        out.push(s);
    }
}

/// Collects every string of a JSON document, object keys included, duplicates kept (a repeated
/// key's every value is read, whichever one the upstream keeps).
struct Strings<'a>(&'a mut Vec<String>);

impl<'de> DeserializeSeed<'de> for Strings<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(v.to_string());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strings(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            self.0.push(key);
            map.next_value_seed(Strings(&mut *self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(
            decoded(r#"{"q":"\u0070ipe bomb"}"#).as_deref(),
            Some("q\npipe bomb")
        );
        assert_eq!(
            decoded(r#"{"\u007aorble":1,"a":[true,null,"b\"c"]}"#).as_deref(),
            Some("zorble\na\nb\"c")
        );
    }

    #[test]
    fn every_value_of_a_repeated_key_is_read() {
        let got = decoded(r#"{"q":"fine","q":"\u0070ipe bomb"}"#).unwrap();
        assert!(got.contains("fine") && got.contains("pipe bomb"), "{got}");
    }

    #[test]
    fn arguments_encoded_twice_are_decoded_twice() {
        let twice =
            serde_json::to_string(&serde_json::json!({"inner": r#"{"q":"\u0070ipe"}"#})).unwrap();
        let got = decoded(&twice).unwrap();
        assert!(got.contains("pipe"), "{got}");
    }

    #[test]
    fn nothing_to_undo_or_not_json_gives_nothing() {
        assert_eq!(decoded(r#"{"q":"plain"}"#), None);
        assert_eq!(decoded(r#"not json \u0070"#), None);
        assert_eq!(decoded(r#"{"q":"\u0070"} trailing"#), None);
        assert_eq!(decoded(""), None);
    }

    #[test]
    fn hostile_nesting_is_not_a_crash() {
        let deep = format!("{}\"\\u0070\"{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(decoded(&deep), None);
    }
}
