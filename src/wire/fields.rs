//! What the gateway does with each top-level field of a request, per API.
//!
//! Each API module keeps its field list (`FIELDS`) from the provider's published request schema
//! (and the extra fields of the compatible servers the gateway fronts, vLLM and SGLang), so a
//! field is a decision rather than an accident of what the parser happens to look at.
//!
//! A field the list does not name may still be rendered by some server (vLLM hands
//! `chat_template_kwargs` and any extra field to the chat template; a newer API version renders
//! fields this list predates), so its strings, keys included, are judged as `other` text. Refusing
//! such fields would break clients that send a server's extras through the SDKs' `extra_body`;
//! reading them costs nothing when they hold numbers and flags, as most extras do.

use serde_json::{Map, Value};

#[cfg(test)]
use super::extract::quoted;
use super::extract::{case_variant, collect_strings, field, Extractor};
use super::json::is_case_variant;
use super::{Source, WireError};

/// One top-level field's treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// Read by the API's parser: text the model is shown.
    Read,
    /// Controls generation, limits, caching, storage or routing: nothing in it is shown to the
    /// model (sampling settings, ids, metadata, stop sequences).
    Setting,
    /// Refused, with the reason: what it carries reaches the model in a form no reading of the
    /// request can judge (a template is a program that writes the prompt; embeddings and token
    /// ids are not text).
    Refused(&'static str),
}

/// An API's top-level fields.
pub(super) type Fields = &'static [(&'static str, Field)];

/// Applies `fields` to the top level of `body`: refuses refused fields and keys that spell a
/// field in another case (a case-insensitive upstream reads them as that field), and judges
/// every string of a field the list does not name. Listed fields are left to the parser.
pub(super) fn check_top_level(
    body: &Map<String, Value>,
    fields: Fields,
    out: &mut Extractor,
) -> Result<(), WireError> {
    for (key, value) in body {
        match fields.iter().find(|(name, _)| name == key) {
            Some((_, Field::Refused(reason))) if !value.is_null() => {
                return Err(WireError::at(key, reason));
            }
            Some(_) => {}
            None => {
                if let Some((name, _)) = fields.iter().find(|(name, _)| is_case_variant(key, name))
                {
                    return Err(case_variant(key, name));
                }
                collect_strings(value, &field("", key), Source::Other, out);
            }
        }
    }
    Ok(())
}

/// Why a client-supplied chat template is refused.
pub(super) const TEMPLATE: &str = "a chat template writes the prompt by running, so reading it \
    cannot judge what the model is shown; use the server's own template";

/// Why prompt embeddings are refused.
pub(super) const EMBEDDINGS: &str = "prompt embeddings are not text and cannot be classified; \
    send text";

#[cfg(test)]
pub(super) mod testing {
    //! The per-field tests every API runs against its list.

    use super::*;
    use crate::wire::Api;

    /// Every `Read` field of `fields` has a case in `cases` (field, body with "zorble" in that
    /// field) and the case's "zorble" is judged, at a location under the field; every case names
    /// a listed field. A field that stops being read fails its own case.
    pub(crate) fn each_read_field_is_read(api: Api, fields: Fields, cases: &[(&str, &str)]) {
        for (name, f) in fields {
            if *f == Field::Read {
                assert!(
                    cases.iter().any(|(c, _)| c == name),
                    "{api}: the read field {name} has no case"
                );
            }
        }
        for (name, body) in cases {
            assert!(
                fields.iter().any(|(n, f)| n == name && *f == Field::Read),
                "{api}: the case {name} is not a read field of the list"
            );
            let req = api
                .parse_request(body.as_bytes())
                .unwrap_or_else(|e| panic!("{api} {name}: {e}"));
            let hit = req.segments.iter().find(|s| s.text.contains("zorble"));
            let hit = hit.unwrap_or_else(|| panic!("{api} {name}: not read: {:?}", req.segments));
            assert!(
                hit.location.starts_with(name),
                "{api} {name}: read at {}",
                hit.location
            );
        }
    }

    /// Every `Setting` field of `fields`, set to a string in `base` (a minimal body, an object),
    /// is accepted and not judged: settings are not model input. `typed` lists the settings the
    /// parser type-checks, with a valid value.
    pub(crate) fn settings_are_not_read(
        api: Api,
        fields: Fields,
        base: &str,
        typed: &[(&str, Value)],
    ) {
        for (name, f) in fields {
            if *f != Field::Setting {
                continue;
            }
            let mut body: Value = serde_json::from_str(base).unwrap();
            let value = typed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| Value::String("zorble".into()));
            body[*name] = value;
            let req = api
                .parse_request(body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{api} {name}: {e}"));
            assert!(
                !req.segments.iter().any(|s| s.location.starts_with(name)),
                "{api} {name}: a setting was read: {:?}",
                req.segments
            );
        }
    }

    /// Refused fields are refused, naming the field; an unknown field's strings are judged; a
    /// listed field spelt in another case is refused.
    pub(crate) fn unknown_refused_and_case_variants(api: Api, fields: Fields, base: &str) {
        let with = |key: &str, value: Value| {
            let mut body: Value = serde_json::from_str(base).unwrap();
            body[key] = value;
            api.parse_request(body.to_string().as_bytes())
        };
        for (name, f) in fields {
            if let Field::Refused(reason) = f {
                let e = with(name, Value::String("x".into())).unwrap_err();
                assert_eq!(e.message, format!("{name}: {reason}"));
            }
        }
        let req = with(
            "some_server_extra",
            serde_json::json!({"kwarg": ["zorble"]}),
        )
        .unwrap();
        assert!(
            req.segments.iter().any(|s| s.text == "zorble"
                && s.location == "some_server_extra.kwarg[0]"
                && s.source == Source::Other),
            "{api}: {:?}",
            req.segments
        );
        // Go's folds: the long s and the Kelvin sign, else plain upper case.
        for (name, _) in fields {
            let variant = if name.contains('s') {
                name.replacen('s', "\u{17F}", 1)
            } else if name.contains('k') {
                name.replacen('k', "\u{212A}", 1)
            } else {
                name.to_ascii_uppercase()
            };
            let e = with(&variant, Value::String("zorble".into())).unwrap_err();
            assert!(
                e.message.contains(&quoted(name)) || e.message.contains("case-insensitive"),
                "{api} {variant}: {}",
                e.message
            );
        }
    }
}
