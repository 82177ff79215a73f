//! The integration tests, as one crate: each file under tests/ used to be its own test binary,
//! and each linked the whole library with mistral.rs. Test names read `<module>::<test>`, e.g.
//! `cargo test --release --test it gateway::admin_endpoints`.

mod support;

mod gate;
mod gateway;
// The real small model through mistral.rs; without the feature there is no in-process backend.
#[cfg(feature = "local-model")]
mod model;
mod moderation;
mod output;
mod policy_tools;
mod properties;
mod reload;
mod remote;
mod shadow;
mod stream_reassembly;
mod upgrade;
