//! The input phase of a guarded route: read the whole request, parse it in the route's wire
//! format, judge the conversation against the route's input policies, then refuse it or hand it
//! on (`serve`). The upstream sees nothing until the verdict is in, unless the route's
//! `input_mode` is `parallel` (`proxy::parallel`).

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;
use std::time::Duration;

use super::answer::{decoded, non_text_parts, refuse_body, refuse_wire, settle};
use super::body::{read_body, BodyError};
use super::exchange::{Exchange, Flow, Judging, Outcome};
use super::gateway::Route;
use super::{batch, forward, parallel, profile, reply};
use crate::config::{Action, Direction, InputMode};
use crate::decide::Annotations;
use crate::metrics::BadRequest;
use crate::policy::Bound;
use crate::wire::batch::Batch;
use crate::wire::{ErrorKind, ParsedRequest, Segment, WireError};

/// Handles a request on the exchange's route; on return the response has been written (or the
/// connection is being dropped because the client or upstream failed mid-response, signalled by
/// `Err`).
pub async fn serve(ex: &mut Exchange, session: &mut Session) -> pingora::Result<()> {
    let Some(route) = ex.route().cloned() else {
        return ex
            .refuse(session, ErrorKind::Internal, "no route", true)
            .await;
    };
    if let Some((reason, kind, msg)) = header_refusal(session, &route) {
        ex.reject(reason);
        return ex.refuse(session, kind, &msg, true).await;
    }
    let limits = &ex.gw.config.limits;
    let timeout = Duration::from_millis(limits.body_read_timeout_ms);
    let raw = match read_body(session, limits.max_body_bytes, timeout).await {
        Ok(b) => b,
        Err(e) => return refuse_body(ex, session, e).await,
    };
    // The reply guard reads the request's prefill (or a completion's prompt) with its first
    // window: the client shows the two as one text.
    ex.request_body = raw.clone();
    let snap = ex.snapshot();
    // Model matchers read the parsed body, so then it is parsed before the profile (and with it
    // the bindings) is known; the parse is used again for judging.
    let mut early = None;
    let binding = match snap.profiles.as_deref() {
        None => snap.routes.get(&route.name),
        Some(profiles) => {
            if profiles.uses_model && route.batch.is_none() {
                match parse(ex, session, &raw) {
                    Ok(p) => early = Some(p),
                    Err(e) => return refuse_unreadable(ex, session, e).await,
                }
            }
            let model = early.as_ref().and_then(|(_, p)| p.model.as_deref());
            match profile::choose(ex, session, &route.name, profiles, model) {
                Ok(p) => Some(&p.binding),
                Err(why) => {
                    ex.outcome = Outcome::NoProfile;
                    tracing::info!(request_id = %ex.request_id, route = %route.name, reason = why.reason(), "request refused: no policy profile");
                    return ex
                        .refuse(session, ErrorKind::Forbidden, why.reason(), false)
                        .await;
                }
            }
        }
    };
    let input = binding.map_or(&[][..], |b| b.for_direction(Direction::Input));
    // A batch upload's reply is a file or batch object, not model output (config validation
    // binds no output policy there).
    let output = match (binding, route.batch) {
        (Some(b), None) => b.for_direction(Direction::Output),
        _ => &[][..],
    };
    // Redact bindings rewrite the request (binding refuses them on batch routes).
    let redacting = match (binding, route.batch) {
        (Some(b), None) => &b.redact[..],
        _ => &[][..],
    };
    let mut body = raw.clone();
    // A route without input policies has nothing to judge: its body goes upstream unparsed (the
    // upstream validates it), which keeps pass-through routes as cheap as a plain proxy.
    let annotations = if input.is_empty() && redacting.is_empty() {
        Annotations::new()
    } else {
        let judged = match route.batch {
            Some(b) => batch::judge(ex, session, &route, b, input, &raw).await?,
            None => {
                let (segments, at) =
                    match readable(ex, session, &route, &raw, redacting, early).await? {
                        Flow::Continue((segments, at, redacted)) => {
                            if let Some(b) = redacted {
                                body = b;
                            }
                            (segments, at)
                        }
                        Flow::Answered => return Ok(()),
                    };
                if input.is_empty() {
                    Flow::Continue(Annotations::new())
                } else if route.input_mode == InputMode::Parallel && !settles_now(ex, input) {
                    return parallel::serve(ex, session, &body, input, output, segments, at).await;
                } else {
                    judge(ex, session, input, segments, at).await?
                }
            }
        };
        match judged {
            Flow::Continue(a) => a,
            Flow::Answered => return Ok(()),
        }
    };
    let upstream = match forward::send(ex, session, &body, !output.is_empty()).await? {
        Flow::Continue(u) => u,
        Flow::Answered => return Ok(()),
    };
    reply::relay(ex, session, upstream, output, &annotations).await
}

/// A refusal for what the request header alone says is wrong: the method or the content type.
fn header_refusal(session: &Session, route: &Route) -> Option<(BadRequest, ErrorKind, String)> {
    let req = session.req_header();
    if req.method != http::Method::POST {
        let msg = format!("{} accepts POST only", req.uri.path());
        return Some((BadRequest::Method, ErrorKind::MethodNotAllowed, msg));
    }
    let types = req.headers.get_all(http::header::CONTENT_TYPE);
    if route.batch.is_some() && types.iter().count() != 1 {
        // An upload is read by its content type (a multipart boundary): two of them could mean
        // two readings.
        let msg = "a batch upload needs exactly one Content-Type".to_string();
        return Some((
            BadRequest::ContentType,
            ErrorKind::UnsupportedMediaType,
            msg,
        ));
    }
    let ct = types.iter().next()?;
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    let accepted = match route.batch {
        Some(b) => b.accepts(essence),
        None => essence == "application/json" || essence.ends_with("+json"),
    };
    if accepted {
        return None;
    }
    let wanted = match route.batch {
        Some(Batch::OpenAiFiles) => "multipart/form-data",
        _ => "application/json",
    };
    let msg = format!("Content-Type must be {wanted}, not {essence:?}");
    Some((
        BadRequest::ContentType,
        ErrorKind::UnsupportedMediaType,
        msg,
    ))
}

/// Whether rules alone settle every blocking binding of `bound`: then there is no model verdict
/// to overlap with the upstream call.
fn settles_now(ex: &Exchange, bound: &[Bound]) -> bool {
    bound
        .iter()
        .filter(|b| b.action == Action::Block)
        .all(|b| ex.gw.cascade.answers_now(&b.policy, true))
}

/// The request parsed in the route's wire format, as the segments to judge, and the body the
/// redact bindings `redacting` rewrote (if they found anything); `Answered` when it was refused
/// as unreadable, or for parts no classifier can read on a route that refuses them.
/// `parsed`: the body as already decoded and parsed, if it was.
async fn readable(
    ex: &mut Exchange,
    session: &mut Session,
    route: &Route,
    raw: &Bytes,
    redacting: &[Bound],
    parsed: Option<(Bytes, ParsedRequest)>,
) -> pingora::Result<Flow<(Vec<Segment>, Judging, Option<Bytes>)>> {
    let (decoded, parsed) = match parsed.map_or_else(|| parse(ex, session, raw), Ok) {
        Ok(p) => p,
        Err(e) => {
            refuse_unreadable(ex, session, e).await?;
            return Ok(Flow::Answered);
        }
    };
    let non_text = parsed.unclassified_parts;
    let what = || format!("the request has {non_text} image, audio or file part(s)");
    if let Flow::Answered = non_text_parts(ex, session, route, non_text, what).await? {
        return Ok(Flow::Answered);
    }
    let at = Judging::Request {
        unclassified_parts: non_text,
    };
    let redacted = if redacting.is_empty() {
        None
    } else {
        super::redact::apply(ex, session, redacting, &decoded, &parsed)
    };
    Ok(Flow::Continue((parsed.segments, at, redacted)))
}

/// Judges the request against the route's input policies: the annotations to forward it with,
/// or `Answered` when it was refused.
async fn judge(
    ex: &mut Exchange,
    session: &mut Session,
    bound: &[Bound],
    segments: Vec<Segment>,
    at: Judging,
) -> pingora::Result<Flow<Annotations>> {
    let decision = ex.judge(bound, segments, at).await;
    let (verdict, annotations) = (decision.verdict.clone(), decision.annotations.clone());
    Ok(match settle(ex, session, bound, verdict, None).await? {
        Flow::Continue(()) => Flow::Continue(annotations),
        Flow::Answered => Flow::Answered,
    })
}

/// Why a request body cannot be judged.
enum Unreadable {
    /// Its content coding fails to decode.
    Body(BodyError),
    /// It is not a valid request of the route's API.
    Wire(WireError),
}

/// Answers a request whose body cannot be judged.
async fn refuse_unreadable(
    ex: &mut Exchange,
    session: &mut Session,
    e: Unreadable,
) -> pingora::Result<()> {
    match e {
        Unreadable::Body(e) => refuse_body(ex, session, e).await,
        Unreadable::Wire(e) => refuse_wire(ex, session, e).await,
    }
}

/// The request body decoded and parsed in the route's wire format.
fn parse(
    ex: &Exchange,
    session: &Session,
    raw: &Bytes,
) -> Result<(Bytes, ParsedRequest), Unreadable> {
    let decoded = decoded(ex, session, raw).map_err(Unreadable::Body)?;
    let parsed = ex.api().parse_request(&decoded).map_err(Unreadable::Wire)?;
    Ok((decoded, parsed))
}
