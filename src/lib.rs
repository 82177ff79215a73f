//! guardgate: a reverse proxy that classifies LLM API traffic against natural-language safety
//! policies before it reaches (and after it leaves) the model.
//!
//! Data flows request → [`wire`] parse → [`classify`] per policy → [`decide`] → forward or block
//! ([`proxy`]) → [`audit`]. Policies live in files ([`policy`]) and reload without a restart.

#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod audit;
pub mod classify;
pub mod config;
pub mod decide;
pub mod eval;
pub mod guard;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod redact;
pub mod review;
pub mod shadow;
pub mod telemetry;
pub mod urlpath;
pub mod wire;
