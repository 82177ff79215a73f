//! The `redact` action: personal and secret data found in a request is replaced by typed
//! placeholders (`[EMAIL_1]`) before the request goes upstream, and optionally put back in the
//! reply. Detection lives in [`detect`]; everything here works on what it finds.

pub mod detect;

pub use detect::{Detectors, Found, Kind};
