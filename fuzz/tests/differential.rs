//! The strict parser against sonic-rs (see `common/differential.rs`) on random request-shaped
//! bodies (proptest) and on hand-picked ones where JSON parsers are known to disagree.
//!
//! Run: `cargo test --release --manifest-path fuzz/Cargo.toml`; the long run:
//! `PROPTEST_CASES=200000 cargo test --release --manifest-path fuzz/Cargo.toml -- --ignored`.
//! The gateway's own build leaves sonic-rs out: it turns on serde's `rc` feature, which would
//! rebuild every crate that uses serde (mistral.rs among them).

use proptest::prelude::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

#[allow(dead_code, unused_imports)]
#[path = "../../src/wire/mod.rs"]
mod wire;

#[path = "../common/differential.rs"]
mod differential;

use differential::same_reading;
use wire::parse_strict;

/// Keys that collide in the ways parsers differ on: repeats, case, escapes, folds.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("messages".to_string()),
        Just("Messages".to_string()),
        Just("me\\u0073sages".to_string()),
        Just("me\u{17F}sages".to_string()),
        Just("role".to_string()),
        Just("\\u0072ole".to_string()),
        Just("\u{212A}ey".to_string()),
        Just("key".to_string()),
        Just("\u{131}d".to_string()),
        Just("id".to_string()),
        Just("a\\u0000b".to_string()),
        "[a-zA-Z_\u{e9}\u{17F}]{0,6}",
    ]
}

/// JSON text (as written, escapes and all) of values likely to expose a difference.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("-0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("0.1e-400".to_string()),
        Just("1.7976931348623157e308".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap_or("0".into())),
        Just(r#""\ud83d\ude00""#.to_string()),
        Just(r#""\ud800""#.to_string()),
        Just(r#""\u0070ipe bomb""#.to_string()),
        Just("\"tab\tinside\"".to_string()),
        Just(r#""\/\b\f\n\r\t\"\\""#.to_string()),
        "[ -~\u{a0}-\u{2ff}\u{fffd}]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                let members: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A request-shaped body, sometimes with its bytes bent: whitespace, a BOM, trailing data, a
/// flipped byte.
fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((key(), json_text()), 0..6),
        0u8..8,
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(members, bend, at, byte)| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("\"{k}\" : {v}"))
                .collect();
            let mut b = format!("{{{}}}", members.join(",")).into_bytes();
            match bend {
                0 => b
                    .splice(0..0, b"\xEF\xBB\xBF".iter().copied())
                    .for_each(drop),
                1 => b.extend_from_slice(b" {}"),
                2 => b.extend_from_slice(b"\r\n\t "),
                3 if !b.is_empty() => {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                4 => b.extend_from_slice(b"\0"),
                _ => {}
            }
            b
        })
}

/// Hand-picked bodies where JSON parsers are known to disagree.
const ADVERSARIAL: &[&[u8]] = &[
    br#"{"messages":1,"messages":2}"#,
    br#"{"messages":1,"\u006dessages":2}"#,
    br#"{"messages":1,"Messages":2}"#,
    "{\"messages\":1,\"me\u{17F}\u{17F}ages\":2}".as_bytes(),
    br#"{"a":1,}"#,
    br#"{"a":1}/*c*/"#,
    br#"{"a":1}//c"#,
    br#"{"a":NaN}"#,
    br#"{"a":Infinity}"#,
    br#"{"a":01}"#,
    br#"{"a":1.}"#,
    br#"{"a":.5}"#,
    br#"{"a":+1}"#,
    br#"{"a":1e400}"#,
    br#"{"a":"\ud800"}"#,
    br#"{"a":"\udc00\ud800"}"#,
    b"{\"a\":\"\xed\xa0\x80\"}",
    b"{\"a\":\"\xc0\xaf\"}",
    b"{\"a\":\"\xff\"}",
    b"{\"a\":\"line\nbreak\"}",
    b"{\"a\":\"nul\x00\"}",
    b"\xEF\xBB\xBF{\"a\":1}",
    br#"{"a":1}{"a":2}"#,
    br#"{"a":1} x"#,
    br#"{'a':1}"#,
    br#"{a:1}"#,
    br#"{"a":"\x41"}"#,
    br#"{"a":"\u00"}"#,
    br#"{"a":tru}"#,
    br#"{"a":[1,2,]}"#,
    br#"{"a":18446744073709551615,"b":-9223372036854775808,"c":18446744073709551616}"#,
    br#"{"a":-0,"b":-0.0,"c":0e0,"d":1E+2}"#,
    br#"  {"a" :	"b" }  "#,
    b"{\"a\":1}\x0c",
    b"{\"a\"\x0c:1}",
];

#[test]
fn adversarial_bodies_read_the_same() {
    for body in ADVERSARIAL {
        if let Err(e) = same_reading(body) {
            panic!("{}: {e}", String::from_utf8_lossy(body));
        }
    }
    // The strict parser refuses the repeats and folds that the other parser keeps.
    for body in &ADVERSARIAL[..4] {
        assert!(parse_strict(body).is_err());
        let theirs = sonic_rs::from_slice::<sonic_rs::Value>(body).unwrap();
        assert_eq!(theirs.as_object().unwrap().len(), 2);
    }
}

/// Where the two parsers part ways, the gateway refuses: nesting past serde_json's limit (128),
/// which sonic-rs reads, and a NUL in a key, which C-string parsers cut.
#[test]
fn the_gateway_refuses_where_the_readings_part() {
    let nested = |depth: usize| {
        let mut b = "{\"a\":".repeat(depth);
        b.push('1');
        b.push_str(&"}".repeat(depth));
        b.into_bytes()
    };
    for depth in [1, 64, 127] {
        let body = nested(depth);
        parse_strict(&body).unwrap_or_else(|e| panic!("{depth}: {e}"));
        same_reading(&body).unwrap_or_else(|e| panic!("{depth}: {e}"));
    }
    for depth in [129, 1000] {
        assert!(parse_strict(&nested(depth)).is_err(), "{depth}");
    }
    assert!(sonic_rs::from_slice::<sonic_rs::Value>(&nested(129)).is_ok());
    let body = br#"{"messages":[],"messages\u0000x":[1]}"#;
    assert!(parse_strict(body).is_err());
    let theirs = sonic_rs::from_slice::<sonic_rs::Value>(body).unwrap();
    assert_eq!(theirs.as_object().unwrap().len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bodies_read_the_same(body in body()) {
        prop_assert!(same_reading(&body).is_ok(), "{}: {:?}", String::from_utf8_lossy(&body), same_reading(&body));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// The long run: as many cases as `PROPTEST_CASES` says (see the module's doc).
    #[test]
    #[ignore]
    fn random_bodies_read_the_same_long(body in body()) {
        prop_assert!(same_reading(&body).is_ok(), "{}: {:?}", String::from_utf8_lossy(&body), same_reading(&body));
    }
}
