//! Properties of the request parsers and the text normalisation, over generated input: bad bytes
//! never panic (they are a 400, never a crash), whatever text a client sends is extracted exactly,
//! a duplicate key anywhere is refused, and normalising twice changes nothing.

use guardgate::classify::normalize::normalize;
use guardgate::wire::Api;
use proptest::prelude::*;
use serde_json::{json, Value};

fn any_api() -> impl Strategy<Value = Api> {
    prop::sample::select(Api::all().to_vec())
}

/// A valid body for `api` with `text` in the main user position.
fn body(api: Api, text: &str) -> Value {
    match api.name() {
        "openai-chat" => json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": text}]}]}),
        "openai-completions" => json!({"model": "m", "prompt": text}),
        "openai-responses" => json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": text}]}]}),
        "anthropic-messages" => json!({"model": "m", "max_tokens": 8, "messages": [
            {"role": "user", "content": [{"type": "text", "text": text}]}]}),
        // A newly registered API needs its sample body here before these properties cover it.
        other => panic!("no sample body for {other}"),
    }
}

/// Edits applied to a valid body: the kinds of damage a client or an attacker can do to it.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop::sample::select(b"{}[]\",:\\0123456789.eE+-truefalsnul \x00\xff\xc3".to_vec()),
                1..8
            )
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Truncate(i) => bytes.truncate(i % len),
            Edit::Flip(i, b) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] ^= b;
                }
            }
            Edit::Insert(i, v) => {
                let i = i % (bytes.len() + 1);
                bytes.splice(i..i, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    let end = (i + n).min(bytes.len());
                    bytes.drain(i..end);
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_or_parsed_never_a_panic(
        api in any_api(),
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = api.parse_request(&bytes);
    }

    #[test]
    fn damaged_bodies_are_refused_or_parsed_never_a_panic(
        api in any_api(),
        text in ".{0,40}",
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let raw = apply(serde_json::to_vec(&body(api, &text)).unwrap(), &edits);
        match api.parse_request(&raw) {
            // Whatever still parses is text the classifier sees, not a silent pass.
            Ok(p) => prop_assert!(p.segments.iter().all(|s| !s.location.is_empty())),
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }

    #[test]
    fn any_text_a_client_sends_is_extracted_exactly(api in any_api(), text in any::<String>()) {
        // An empty string has nothing to classify and is the one text not kept as a segment.
        prop_assume!(!text.is_empty());
        let raw = serde_json::to_vec(&body(api, &text)).unwrap();
        let parsed = api.parse_request(&raw).unwrap();
        prop_assert!(
            parsed.segments.iter().any(|s| s.text == text),
            "{:?} not among {:?}", text, parsed.segments
        );
    }

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused(
        api in any_api(),
        depth in 0usize..4,
        key in "[a-z_]{1,8}",
    ) {
        // Nest an object holding `key` twice `depth` levels below the top, under a field every
        // API ignores; the parser must refuse it wherever it stands.
        let mut inner = format!("{{\"{key}\":1,\"{key}\":2}}");
        for _ in 0..depth {
            inner = format!("{{\"x\":{inner}}}");
        }
        let mut raw = serde_json::to_string(&body(api, "hello")).unwrap();
        raw.insert_str(raw.len() - 1, &format!(",\"metadata_x\":{inner}"));
        let err = api.parse_request(raw.as_bytes()).unwrap_err();
        prop_assert!(err.message.contains("duplicate key"), "{}", err.message);
    }

    #[test]
    fn normalising_twice_changes_nothing(text in any::<String>()) {
        let once = normalize(&text);
        prop_assert_eq!(normalize(&once), once.clone());
        prop_assert!(!once.contains("  "));
    }

    #[test]
    fn ascii_and_unicode_paths_agree(text in "[ -~\t\n\r]{0,64}") {
        // The same ASCII text with one non-ASCII character appended takes the general path; the
        // prefix it yields must be what the ASCII fast path gives alone.
        let fast = normalize(&text);
        let general = normalize(&format!("{text}é"));
        prop_assert_eq!(general.strip_suffix('é'), Some(fast.as_str()));
    }
}
