//! Pingora glue: the traffic listener's front door, the guarded exchange, pass-through for
//! unmatched paths, the admin listener and server assembly.

pub mod admin;
pub mod app;
pub mod body;
pub mod exchange;
pub mod gateway;
pub mod idle;
pub mod moderation;
pub mod output;
pub mod passthrough;
pub mod respond;
pub mod server;
pub mod upstream;

pub use gateway::Gateway;
