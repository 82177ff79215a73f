//! The rules' normaliser on arbitrary text: no panic; the ASCII fast path reads text as the
//! general path does (a zero-width space, which the general path drops, sends the same text
//! there); the output has no whitespace runs; the leet fold maps character for character.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/classify/normalize/mod.rs"]
mod normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let norm = normalize::normalize(text);
    assert!(!norm.contains("  "), "{text:?} -> {norm:?}");
    let folded = normalize::fold_leet(&norm);
    assert_eq!(folded.chars().count(), norm.chars().count(), "{norm:?}");
    if text.is_ascii() {
        let general = normalize::normalize(&format!("{text}\u{200B}"));
        assert_eq!(general, norm, "{text:?}");
    }
});
