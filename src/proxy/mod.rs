//! Pingora glue: the traffic service, the guarded exchange, the admin listener and server assembly.

pub mod admin;
pub mod body;
pub mod exchange;
pub mod gateway;
pub mod moderation;
pub mod output;
pub mod respond;
pub mod server;
pub mod service;
pub mod upstream;

pub use gateway::Gateway;
