//! Answers of the input phase that more than one reading of a request shares (a request in its
//! route's format, a batch upload, a request judged beside the upstream call): the body decoded,
//! refusals for what cannot be read or judged, and the answer to a verdict.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;

use super::body::{content_codings, decode, BodyError};
use super::exchange::{Exchange, Flow, Outcome};
use super::gateway::Route;
use super::refusal;
use crate::config::NonTextParts;
use crate::decide::Final;
use crate::metrics::BadRequest;
use crate::policy::Bound;
use crate::wire::{ErrorKind, WireError};

pub async fn refuse_body(
    ex: &mut Exchange,
    session: &mut Session,
    e: BodyError,
) -> pingora::Result<()> {
    ex.reject(e.reason());
    ex.refuse(session, e.kind(), &e.message(), e.leaves_body_unread())
        .await
}

/// Refuses a body that is not a valid request of the route's API.
pub async fn refuse_wire(
    ex: &mut Exchange,
    session: &mut Session,
    e: WireError,
) -> pingora::Result<()> {
    ex.reject(BadRequest::InvalidBody);
    let kind = ErrorKind::InvalidRequest { param: e.param };
    ex.refuse(session, kind, &e.message, false).await
}

/// Counts `count` parts no classifier reads, and refuses them when the route says so; `what`
/// describes them for the client.
pub async fn non_text_parts(
    ex: &mut Exchange,
    session: &mut Session,
    route: &Route,
    count: usize,
    what: impl FnOnce() -> String,
) -> pingora::Result<Flow<()>> {
    if count == 0 {
        return Ok(Flow::Continue(()));
    }
    ex.gw
        .metrics
        .unclassified_parts
        .with_label_values(&[&route.name])
        .inc_by(count as u64);
    if route.non_text_parts == NonTextParts::Refuse {
        ex.reject(BadRequest::NonTextParts);
        let msg = format!(
            "this route accepts text only: {} that guardgate cannot classify (the route's non_text_parts = \"forward\" would pass them unjudged)",
            what()
        );
        let kind = ErrorKind::InvalidRequest { param: None };
        ex.refuse(session, kind, &msg, false).await?;
        return Ok(Flow::Answered);
    }
    Ok(Flow::Continue(()))
}

/// Goes on with an allowed request, or refuses a blocked one (in the words of its refusal, see
/// `proxy::refusal`; `bound` are the bindings it was judged against) or one that could not be
/// judged on a fail-closed route; `within` names the request of a batch that it was.
pub async fn settle(
    ex: &mut Exchange,
    session: &mut Session,
    bound: &[Bound],
    verdict: Final,
    within: Option<&str>,
) -> pingora::Result<Flow<()>> {
    let within = within.map_or(String::new(), |id| format!(" in batch request {id:?}"));
    match verdict {
        Final::Allow => return Ok(Flow::Continue(())),
        Final::Block { policy_id, code } => {
            ex.outcome = Outcome::Blocked;
            let default = || match &code {
                Some(c) => {
                    format!("Request blocked by guardgate: policy {policy_id} (code {c}){within}")
                }
                None => format!("Request blocked by guardgate: policy {policy_id}{within}"),
            };
            let route = ex.route().map(|r| &**r);
            let words = refusal::for_block(
                route,
                ex.profile_refusal(),
                session,
                bound,
                &policy_id,
                default,
            );
            let kind = ErrorKind::PolicyViolation {
                policy: policy_id,
                code,
            };
            ex.refuse_with(session, kind, &words).await?;
        }
        Final::FailClosed { policy_id, reason } => {
            ex.outcome = Outcome::FailClosed;
            let msg = format!(
                "guardgate could not classify the request{within} against policy {policy_id} ({reason}); the route is fail-closed"
            );
            ex.refuse(session, ErrorKind::Unavailable, &msg, false)
                .await?;
        }
    }
    Ok(Flow::Answered)
}

/// The request body with its content codings undone, within the decoded-size limit.
pub fn decoded(ex: &Exchange, session: &Session, raw: &Bytes) -> Result<Bytes, BodyError> {
    let limits = &ex.gw.config.limits;
    let encoding = content_codings(&session.req_header().headers);
    decode(raw, encoding.as_deref(), limits.max_decoded_body_bytes)
}
