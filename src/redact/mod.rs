//! The `redact` action: personal and secret data found in a request is replaced by typed
//! placeholders (`[EMAIL_1]`) before the request goes upstream, and optionally put back in the
//! reply. Detection lives in [`detect`]; everything here works on what it finds: the
//! placeholders (`placeholder`), the request rewrite (`rewrite`) and the restore in streamed
//! replies (`restore`).

pub mod detect;
mod placeholder;
mod restore;
mod rewrite;

pub use detect::{Detectors, Found, Kind};
pub use placeholder::Placeholders;
pub use restore::StreamRestore;
pub use rewrite::rewrite;
