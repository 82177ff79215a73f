//! The strict parser against sonic-rs on arbitrary bytes (see `common/differential.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/wire/mod.rs"]
mod wire;

#[path = "../common/differential.rs"]
mod differential;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = differential::same_reading(data) {
        panic!("{}: {e}", String::from_utf8_lossy(data));
    }
});
