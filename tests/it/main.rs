//! The integration tests, as one crate: one test binary to link against the library and its
//! dependencies (mistral.rs among them), where a crate per file made twelve. Test names read
//! `<module>::<test>`, e.g. `cargo test --release --test it gateway::admin_endpoints`.
//!
//! The modules' tests run concurrently in this one process, so none may change process-wide
//! state: a gateway gets its environment from `TestConfig::env`, not `std::env::set_var`; no test
//! changes the current directory; listeners bind 127.0.0.1 on `support::free_port()` or port 0.

mod support;

mod adversarial;
mod gate;
mod gateway;
// The gpt-oss architecture on CPU, with a tiny checkpoint the test writes.
#[cfg(feature = "local-model")]
mod gpt_oss;
// Several policies in one model call, through the imitation model server.
mod joint;
// The remote backend against llama.cpp's server (skips unless installed or required).
mod llama_server;
// The real small model through mistral.rs; without the feature there is no in-process backend.
#[cfg(feature = "local-model")]
mod model;
mod moderation;
mod obfuscation;
mod offpath;
mod output;
mod policy_tools;
mod profiles;
mod properties;
mod redact;
mod refusals;
mod reload;
mod remote;
mod review;
mod shadow;
mod stream_reassembly;
mod telemetry;
mod upgrade;
