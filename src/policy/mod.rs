//! Policies: which files are policies (`discover`), one file (`file`), what `policy lint` checks in
//! it (`lint`), how selections bind them (`bind`), the profiles that bind them per request (`profile`), the live snapshot (`registry`) and what reloads it (`watch`).

pub mod bind;
pub mod binding;
mod casefold;
pub mod discover;
pub mod file;
pub mod lint;
pub mod profile;
pub mod refusal;
pub mod registry;
pub mod watch;

pub use file::{parse_policy, Effort, Policy, PolicyError, Severity};
pub use refusal::Refusal;
pub use registry::{Bound, Registry, RouteBinding, Snapshot};
