//! `input_mode = "parallel"`: the upstream call starts at once, beside the input verdict, and the
//! reply (status, headers, body or stream) waits for the verdict. A violation drops the upstream
//! connection, so generation stops, and the client gets the same refusal as with `before`. The
//! audit records say which mode ran and how much of the verdict's time the upstream call hid.
//! The trade-off: a blocked request may already have cost upstream tokens.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;
use std::sync::Arc;
use std::time::Instant;

use super::exchange::{Exchange, Judging, Timing};
use super::forward::{self, Failure};
use super::{answer, reply};
use crate::classify::Content;
use crate::decide::{decide_blocking, Final};
use crate::policy::Bound;
use crate::wire::Segment;

/// Judges `segments` against the route's blocking input bindings while the request goes
/// upstream, then answers as the verdict says.
pub async fn serve(
    ex: &mut Exchange,
    session: &mut Session,
    raw: &Bytes,
    input: &[Bound],
    output: &[Bound],
    segments: Vec<Segment>,
    at: Judging,
) -> pingora::Result<()> {
    let Some(route) = ex.route().cloned() else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "a parallel exchange with no route",
        ));
    };
    let gw = ex.gw.clone();
    let content = Arc::new(Content::from_segments(segments));
    let deadline = ex.deadline_from_now();
    let started = Instant::now();
    let (split, reply, hidden) = {
        let up = &route.upstream;
        let header = || forward::upstream_header(session, up, !output.is_empty(), raw.len());
        let talking = forward::talk(&gw, up, header, raw);
        tokio::pin!(talking);
        // Boxed: the judging future is kilobytes large.
        let mut judging = Box::pin(decide_blocking(
            &gw.cascade,
            input,
            &content,
            deadline,
            route.fail_mode,
        ));
        let mut reply = None;
        let mut upstream_at = None;
        let split = loop {
            tokio::select! {
                biased;
                split = &mut judging => break split,
                r = &mut talking, if reply.is_none() => {
                    upstream_at = Some(started.elapsed());
                    reply = Some(r);
                }
            }
        };
        let verdict_at = started.elapsed();
        // All of the verdict's time was hidden when the upstream answered after it; otherwise
        // the time up to the upstream's header was.
        let hidden = upstream_at.map_or(verdict_at, |u| u.min(verdict_at));
        let reply = match (reply, &split.decision.verdict) {
            (Some(r), _) => Some(r),
            (None, Final::Allow) => Some((&mut talking).await),
            // Dropping the call closes its connection: the upstream stops generating.
            (None, _) => None,
        };
        (split, reply, hidden)
    };
    let verdict = split.decision.verdict.clone();
    let annotations = split.decision.annotations.clone();
    ex.settle(split, &content, at, Timing::Parallel { hidden });
    if verdict != Final::Allow {
        if let Some(Ok(mut r)) = reply {
            r.http.shutdown().await;
        }
        answer::settle(ex, session, input, verdict, None).await?;
        return Ok(());
    }
    match reply {
        Some(Ok(r)) => reply::relay(ex, session, r, output, &annotations).await,
        Some(Err(Failure::Upstream(fault, e))) => {
            forward::failed::<()>(ex, session, &route.upstream, fault, &e).await?;
            Ok(())
        }
        Some(Err(Failure::Header(e))) => Err(e),
        None => Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "an allowed parallel exchange without an upstream reply",
        )),
    }
}
