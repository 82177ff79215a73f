//! The input guard of a batch-upload route: every request the upload holds is judged against
//! the route's input policies, one by one, as it would be on its own API's route; the first that
//! is blocked (or cannot be judged on a fail-closed route) refuses the whole upload. A file
//! uploaded for another purpose is not text, and the route's `non_text_parts` decides whether it
//! passes.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;

use super::answer::{decoded, non_text_parts, refuse_body, refuse_wire, settle};
use super::exchange::{Exchange, Flow, Judging};
use super::gateway::Route;
use crate::decide::Annotations;
use crate::policy::Bound;
use crate::wire::batch::{Batch, Contents};

/// Judges the upload: the annotations to forward it with (every request's, once each), or
/// `Answered` when it was refused.
pub async fn judge(
    ex: &mut Exchange,
    session: &mut Session,
    route: &Route,
    batch: Batch,
    bound: &[Bound],
    raw: &Bytes,
) -> pingora::Result<Flow<Annotations>> {
    let body = match decoded(ex, session, raw) {
        Ok(b) => b,
        Err(e) => {
            refuse_body(ex, session, e).await?;
            return Ok(Flow::Answered);
        }
    };
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let items = match batch.read(content_type, &body) {
        Ok(Contents::Requests(items)) => items,
        Ok(Contents::Opaque { purpose }) => {
            let what = || {
                format!("the file is uploaded for purpose {purpose:?}, and only batch files (purpose \"batch\") are read")
            };
            if let Flow::Answered = non_text_parts(ex, session, route, 1, what).await? {
                return Ok(Flow::Answered);
            }
            // Judged as a request with nothing to read, so that it is audited like one.
            let at = Judging::Request {
                unclassified_parts: 1,
            };
            let decision = ex.judge(bound, Vec::new(), at).await;
            let (verdict, annotations) = (decision.verdict.clone(), decision.annotations.clone());
            return Ok(match settle(ex, session, bound, verdict, None).await? {
                Flow::Continue(()) => Flow::Continue(annotations),
                Flow::Answered => Flow::Answered,
            });
        }
        Err(e) => {
            refuse_wire(ex, session, e).await?;
            return Ok(Flow::Answered);
        }
    };
    let mut all = Annotations::new();
    for item in items {
        let non_text = item.request.unclassified_parts;
        let what = || {
            format!(
                "batch request {:?} has {non_text} image, audio or file part(s)",
                item.custom_id
            )
        };
        if let Flow::Answered = non_text_parts(ex, session, route, non_text, what).await? {
            return Ok(Flow::Answered);
        }
        let at = Judging::Request {
            unclassified_parts: non_text,
        };
        let decision = ex.judge(bound, item.request.segments, at).await;
        let (verdict, annotations) = (decision.verdict.clone(), decision.annotations.clone());
        if let Flow::Answered = settle(ex, session, bound, verdict, Some(&item.custom_id)).await? {
            return Ok(Flow::Answered);
        }
        for a in annotations {
            if !all.contains(&a) {
                all.push(a);
            }
        }
    }
    Ok(Flow::Continue(all))
}
