//! How a request ended, as `guardgate_requests_total{outcome}` counts it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet; a request that ends this way ended on a path that sets none (a bug).
    Unknown,
    /// An unmatched path proxied as it is.
    Passthrough,
    /// A passed-through request that pingora ended with an error.
    PassthroughError,
    /// Refused as malformed (the reason is in `guardgate_bad_requests_total`).
    Rejected,
    /// No route, and unmatched paths are refused.
    NotFound,
    /// An input policy blocked the request.
    Blocked,
    /// A policy could not be judged and the route is fail-closed.
    FailClosed,
    /// A policy could not be judged and the route is fail-open: the exchange went on.
    FailOpen,
    /// Forwarded with annotations from annotate bindings.
    Annotated,
    Forwarded,
    /// The client left before the reply was complete.
    ClientGone,
    /// The upstream could not be reached or failed mid-reply.
    UpstreamError,
    /// An output policy withheld or cut the reply.
    OutputBlocked,
    /// A moderation endpoint answered with its verdicts.
    Classified,
    /// Refused because no policy profile applies (`unknown_profile = "refuse"`).
    NoProfile,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Passthrough => "passthrough",
            Outcome::PassthroughError => "passthrough_error",
            Outcome::Rejected => "rejected",
            Outcome::NotFound => "not_found",
            Outcome::Blocked => "blocked",
            Outcome::FailClosed => "fail_closed",
            Outcome::FailOpen => "fail_open",
            Outcome::Annotated => "annotated",
            Outcome::Forwarded => "forwarded",
            Outcome::ClientGone => "client_gone",
            Outcome::UpstreamError => "upstream_error",
            Outcome::OutputBlocked => "output_blocked",
            Outcome::Classified => "classified",
            Outcome::NoProfile => "no_profile",
        }
    }
}
