//! The redact bindings of a request: its text rewritten with placeholders before it goes
//! upstream (`apply`), the originals put back in the reply for the client when a policy says
//! `restore = true` (`restorer`, used by `reply`), and one audit record per binding with the
//! counts by kind (`Exchange::finish`).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;
use std::sync::Arc;
use std::time::Instant;

use super::exchange::{Exchange, Redacted};
use crate::policy::Bound;
use crate::redact::{Detectors, Placeholders};
use crate::wire::ParsedRequest;

/// Rewrites the request (`decoded`, the body without its content coding, read as `parsed`) for
/// the redact bindings `bound`: the body to send upstream, or `None` when nothing was found and
/// the client's bytes go as they are. A rewritten body is sent without a content coding, and a
/// route that restores asks for an uncompressed reply, so placeholders can be found in it.
pub fn apply(
    ex: &mut Exchange,
    session: &mut Session,
    bound: &[Bound],
    decoded: &Bytes,
    parsed: &ParsedRequest,
) -> Option<Bytes> {
    let started = Instant::now();
    let detectors: Vec<&Detectors> = bound
        .iter()
        .filter_map(|b| b.policy.redact.as_ref().map(|r| &r.detectors))
        .collect();
    let restore = bound
        .iter()
        .any(|b| b.policy.redact.as_ref().is_some_and(|r| r.restore));
    let mut placeholders = Placeholders::new();
    let body = crate::redact::rewrite(decoded, parsed, &detectors, &mut placeholders);
    let metrics = &ex.gw.metrics;
    for (kind, n) in placeholders.counts() {
        metrics
            .redactions
            .with_label_values(&[kind.as_str()])
            .inc_by(*n as u64);
    }
    let req = session.req_header_mut();
    if body.is_some() {
        req.remove_header(&http::header::CONTENT_ENCODING);
        // The reply guard reads the prefill from the body as the header now describes it.
        ex.request_body = decoded.clone();
    }
    if restore && !placeholders.is_empty() {
        // Explicitly, because a request without Accept-Encoding accepts any coding.
        let _ = req.insert_header(http::header::ACCEPT_ENCODING, "identity");
    }
    ex.redaction = Some(Redacted {
        policies: bound.iter().map(|b| b.policy.clone()).collect(),
        placeholders: Arc::new(placeholders),
        restore,
        took: started.elapsed(),
    });
    body.map(Bytes::from)
}

/// The placeholders to put back in this exchange's reply, if any.
pub fn restorer(ex: &Exchange) -> Option<Arc<Placeholders>> {
    ex.redaction.as_ref()?.restorer()
}

/// A whole reply body with the placeholders put back: inside JSON strings (escaped) for a JSON
/// reply, as they are for any other text. `None`: nothing to put back.
pub fn restore_whole(p: &Placeholders, header: &ResponseHeader, body: &[u8]) -> Option<Vec<u8>> {
    let json = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
    if json {
        p.restore_json(body)
    } else {
        let text = std::str::from_utf8(body).ok()?;
        match p.restore(text) {
            std::borrow::Cow::Owned(s) => Some(s.into_bytes()),
            std::borrow::Cow::Borrowed(_) => None,
        }
    }
}
