//! Pingora glue: the traffic listener's front door (`app`), a guarded request's state
//! (`exchange`) and phases (`input` → `forward` → `reply`, or `input` → `parallel` where the
//! verdict and the upstream call overlap), who answers a request (`routing`), the moderation
//! endpoints, pass-through for unmatched paths, the admin listener and server assembly.

pub mod admin;
pub mod answer;
pub mod app;
pub mod batch;
pub mod body;
pub mod exchange;
pub mod forward;
pub mod gateway;
pub mod idle;
pub mod input;
pub mod moderation;
pub mod parallel;
pub mod passthrough;
pub mod profile;
pub mod queue;
pub mod redact;
pub mod refusal;
pub mod reply;
pub mod respond;
pub mod routing;
pub mod server;
pub mod upstream;

pub use gateway::Gateway;
