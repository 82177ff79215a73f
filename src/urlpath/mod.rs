//! Request paths: the rule a path must meet before anything is chosen by it ([`check`]: one
//! path, one meaning), and the patterns that routes and the allow list are written in
//! ([`Pattern`], [`Endpoint`]).
//!
//! The gateway chooses a route, and so the wire format a request is judged in, from its path;
//! the upstream chooses the endpoint that acts on it from the same path. The two must agree for
//! every path the gateway accepts, whatever the upstream's resolver: RFC 3986's dot-segment
//! removal, the WHATWG URL parser (Node, browsers, many proxies), servers that percent-decode
//! before routing, merge slashes, or strip `;` parameters. So the rule refuses every path on
//! which such resolvers can disagree, and what is left is forwarded as the client sent it.

mod pattern;
mod rule;

pub use pattern::{Endpoint, Pattern};
pub use rule::{check, comparable, Ambiguity};
