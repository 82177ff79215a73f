//! A guarded exchange: read the whole request, parse it in its wire format, classify the
//! conversation against the route's input policies, then block, or forward the original bytes and
//! relay the reply. The upstream sees nothing until the verdict is in.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::Ctx;
use super::body::{content_codings, decode, is_coded, read_body, BodyError};
use super::gateway::{Gateway, Route};
use super::output::{relay_buffered, relay_stream, OutputCtx};
use super::respond;
use super::upstream::HOP_BY_HOP;
use crate::audit::RecordContext;
use crate::classify::Content;
use crate::config::Direction;
use crate::decide::{decide, Decision, Final, Outcome};
use crate::wire::{self, ErrorKind};

/// Handles the whole exchange; on return the response has been written (or the connection is
/// being dropped because the client or upstream failed mid-response, signalled by `Err`).
pub async fn guarded(
    gw: &Gateway,
    route: &Arc<Route>,
    session: &mut Session,
    ctx: &mut Ctx,
) -> pingora::Result<()> {
    let api = route.api;
    let reject = |ctx: &mut Ctx, reason: &'static str| {
        ctx.outcome = "rejected";
        gw.metrics.bad_requests.with_label_values(&[reason]).inc();
    };

    if session.req_header().method != http::Method::POST {
        reject(ctx, "method");
        let msg = format!("{} accepts POST only", session.req_header().uri.path());
        return respond::error(
            session,
            api,
            ErrorKind::MethodNotAllowed,
            &msg,
            &ctx.request_id,
            true,
        )
        .await;
    }
    if let Some(ct) = session.req_header().headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            reject(ctx, "content_type");
            let msg = format!("Content-Type must be application/json, not {essence:?}");
            return respond::error(
                session,
                api,
                ErrorKind::UnsupportedMediaType,
                &msg,
                &ctx.request_id,
                true,
            )
            .await;
        }
    }

    let limits = &gw.config.limits;
    let raw = match read_body(
        session,
        limits.max_body_bytes,
        Duration::from_millis(limits.body_read_timeout_ms),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return body_error(gw, session, api, ctx, e).await,
    };
    let snap = gw.registry.snapshot();
    let bound = snap
        .routes
        .get(&route.name)
        .map(|b| b.for_direction(Direction::Input))
        .unwrap_or(&[]);
    let mut annotations = Vec::new();
    // A route without input policies has nothing to judge: its body goes upstream unparsed (the
    // upstream validates it), which keeps pass-through routes as cheap as a plain proxy.
    if !bound.is_empty() {
        let encoding = content_codings(&session.req_header().headers);
        let decoded = match decode(&raw, encoding.as_deref(), limits.max_decoded_body_bytes) {
            Ok(b) => b,
            Err(e) => return body_error(gw, session, api, ctx, e).await,
        };
        let parsed = match wire::parse_request(api, &decoded) {
            Ok(p) => p,
            Err(e) => {
                reject(ctx, "invalid_body");
                return respond::error(
                    session,
                    api,
                    ErrorKind::InvalidRequest {
                        param: e.param.clone(),
                    },
                    &e.message,
                    &ctx.request_id,
                    false,
                )
                .await;
            }
        };

        let non_text = parsed.unclassified_parts;
        if non_text > 0 {
            gw.metrics
                .unclassified_parts
                .with_label_values(&[&route.name])
                .inc_by(non_text as u64);
            if route.non_text_parts == crate::config::NonTextParts::Refuse {
                reject(ctx, "non_text_parts");
                let msg = format!(
                    "this route accepts text only: the request has {non_text} image, audio or file part(s) that guardgate cannot classify"
                );
                return respond::error(
                    session,
                    api,
                    ErrorKind::InvalidRequest { param: None },
                    &msg,
                    &ctx.request_id,
                    false,
                )
                .await;
            }
        }
        let content = Content::from_segments(parsed.segments);
        let deadline = Instant::now() + route.deadline;
        // Boxed, like the output relays below: these futures are kilobytes large, and inline
        // they would make every request's future as large (allocated and copied per request),
        // pass-through included.
        let decision = Box::pin(decide(
            &gw.cascade,
            bound,
            &content,
            deadline,
            route.fail_mode,
        ))
        .await;
        let rctx = RecordContext {
            request_id: &ctx.request_id,
            route: &route.name,
            api: api.name(),
            direction: Direction::Input,
            fail_mode: route.fail_mode,
            generation: snap.generation,
            unclassified_parts: non_text,
        };
        record(gw, &rctx, &decision, None);
        match decision.verdict {
            Final::Block { policy_id, code } => {
                ctx.outcome = "blocked";
                let msg = match &code {
                    Some(c) => {
                        format!("Request blocked by guardgate: policy {policy_id} (code {c})")
                    }
                    None => format!("Request blocked by guardgate: policy {policy_id}"),
                };
                let kind = ErrorKind::PolicyViolation {
                    policy: policy_id,
                    code,
                };
                return respond::error(session, api, kind, &msg, &ctx.request_id, false).await;
            }
            Final::FailClosed { policy_id, reason } => {
                ctx.outcome = "fail_closed";
                let msg = format!(
                    "guardgate could not classify the request against policy {policy_id} ({reason}); the route is fail-closed"
                );
                return respond::error(
                    session,
                    api,
                    ErrorKind::Unavailable,
                    &msg,
                    &ctx.request_id,
                    false,
                )
                .await;
            }
            Final::Allow => annotations = decision.annotations,
        }
    }
    let output = snap
        .routes
        .get(&route.name)
        .map(|b| b.for_direction(Direction::Output))
        .unwrap_or(&[]);
    let oc = OutputCtx {
        gw,
        route,
        bound: output,
        generation: snap.generation,
    };
    forward(&oc, session, ctx, raw, &annotations).await
}

/// Writes one audit record per policy outcome and counts the decisions.
pub(crate) fn record(
    gw: &Gateway,
    rctx: &RecordContext<'_>,
    decision: &Decision,
    windows: Option<u32>,
) {
    let dir = match rctx.direction {
        Direction::Input => "input",
        Direction::Output => "output",
    };
    let audit = gw.auditor.enabled();
    let ts = if audit {
        crate::audit::timestamp()
    } else {
        String::new()
    };
    // Shadow candidates' outcomes as records see them, kept alive here for the records that
    // borrow them; nothing is built unless there are records to write and a candidate.
    let with_candidate = decision.outcomes.iter().any(|o| o.candidate.is_some());
    let shadows: Vec<Option<Outcome>> = if audit && with_candidate {
        decision
            .outcomes
            .iter()
            .map(|o| {
                o.candidate.as_ref().map(|(cand, cres)| Outcome {
                    policy: cand.clone(),
                    action: crate::config::Action::Shadow,
                    result: cres.clone(),
                    latency: o.latency,
                    candidate: None,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut recs = Vec::with_capacity(if audit { decision.outcomes.len() } else { 0 });
    for (i, o) in decision.outcomes.iter().enumerate() {
        gw.metrics
            .decisions
            .with_label_values(&[&o.policy.id, dir, o.verdict(), o.effect(rctx.fail_mode)])
            .inc();
        if let Err(e) = &o.result {
            gw.metrics.errors.with_label_values(&["classifier"]).inc();
            tracing::warn!(request_id = %rctx.request_id, policy = %o.policy.id, direction = dir, error = %e, "classifier failed");
        }
        // The shadow comparison counts whether or not records are written.
        let agrees = o.candidate.as_ref().map(|(cand, cres)| {
            gw.shadow.compare(&crate::shadow::Comparison {
                policy_id: &o.policy.id,
                live_version: &o.policy.version,
                candidate_version: &cand.version,
                candidate_hash: &cand.content_hash,
                request_id: rctx.request_id,
                route: rctx.route,
                direction: rctx.direction,
                live: &o.result,
                candidate: cres,
            })
        });
        if !audit {
            continue;
        }
        let mut rec = gw.auditor.build(rctx, &ts, o);
        rec.windows = windows;
        rec.candidate_agrees = agrees.flatten();
        recs.push(rec);
        if let Some(shadow) = shadows.get(i).and_then(Option::as_ref) {
            let mut crec = gw.auditor.build(rctx, &ts, shadow);
            crec.effect = "candidate";
            crec.candidate_agrees = agrees.flatten();
            recs.push(crec);
        }
    }
    gw.auditor.record_all(&recs);
}

async fn body_error(
    gw: &Gateway,
    session: &mut Session,
    api: wire::Api,
    ctx: &mut Ctx,
    e: BodyError,
) -> pingora::Result<()> {
    ctx.outcome = "rejected";
    gw.metrics
        .bad_requests
        .with_label_values(&[e.reason()])
        .inc();
    let kind = match &e {
        BodyError::TooLarge { .. } | BodyError::DecodedTooLarge { .. } => {
            ErrorKind::PayloadTooLarge
        }
        BodyError::Timeout => ErrorKind::RequestTimeout,
        BodyError::UnsupportedEncoding(_) => ErrorKind::UnsupportedMediaType,
        BodyError::BadEncoding(_) | BodyError::Io(_) => ErrorKind::InvalidRequest { param: None },
    };
    // The body may be partly unread: close rather than misread the rest as a new request.
    let close = !matches!(
        e,
        BodyError::UnsupportedEncoding(_)
            | BodyError::BadEncoding(_)
            | BodyError::DecodedTooLarge { .. }
    );
    respond::error(session, api, kind, &e.message(), &ctx.request_id, close).await
}

/// Bodies up to this size are copied behind the header and sent with it; larger ones are sent as
/// they are, where one more segment costs little next to the copy.
const ONE_WRITE_MAX: usize = 64 * 1024;

/// 1xx responses skipped before an upstream's reply before it is treated as broken.
const MAX_INFORMATIONAL: usize = 8;

/// The client's request header as the upstream gets it.
fn upstream_header(
    session: &Session,
    up: &super::upstream::Upstream,
    guard_output: bool,
    body_len: usize,
) -> pingora::Result<Box<pingora::http::RequestHeader>> {
    let mut req = Box::new(session.req_header().clone());
    up.prepare_request(&mut req)?;
    if guard_output {
        // The reply must be read to be judged: ask for it uncompressed. Explicitly, because a
        // request without Accept-Encoding accepts any coding (RFC 9110 12.5.3).
        req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    }
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::EXPECT);
    req.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    Ok(req)
}

/// Sends the original request bytes upstream and streams the reply back as it arrives.
async fn forward(
    oc: &OutputCtx<'_>,
    session: &mut Session,
    ctx: &mut Ctx,
    body: Bytes,
    annotations: &[(String, Option<String>)],
) -> pingora::Result<()> {
    let (gw, route) = (oc.gw, oc.route);
    let up = &route.upstream;
    let guard_output = !oc.bound.is_empty();
    // Built again only for a retry, which is rare: one copy of the client's header per request.
    let mut first = Some(upstream_header(session, up, guard_output, body.len())?);

    let peer = match up.peer().await {
        Ok(p) => p,
        Err(e) => {
            let e = pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, e);
            return upstream_failed(gw, session, route, ctx, "upstream_dns", &e).await;
        }
    };
    let sent = Instant::now();
    let mut attempt = 0;
    let mut http = loop {
        attempt += 1;
        let (mut http, reused) = match gw.connections.get(&peer).await {
            Ok(x) => x,
            Err(e) => {
                return upstream_failed(gw, session, route, ctx, "upstream_connect", &e).await;
            }
        };
        if !reused {
            gw.metrics
                .upstream_connects
                .with_label_values(&[&up.name])
                .inc();
        }
        let req = match first.take() {
            Some(r) => r,
            None => upstream_header(session, up, guard_output, body.len())?,
        };
        if attempt == 1 {
            // Let every other request that is ready reach this point first, so the upstream
            // writes of one scheduler pass go out together and the upstream (often on the same
            // cores) reads them in one wake-up instead of being woken, and switched to, per
            // request: measured, this halves the context switches per request behind a
            // rules-bound route.
            tokio::task::yield_now().await;
        }
        let res: pingora::Result<()> = async {
            match &mut http {
                // Header and body in one write: one segment, one wake-up of the upstream.
                HttpSession::H1(h1) if body.len() <= ONE_WRITE_MAX => {
                    h1.write_request_header_with_body(req, &body).await?;
                }
                _ => {
                    http.write_request_header(req).await?;
                    http.write_request_body(body.clone(), true).await?;
                }
            }
            http.finish_request_body().await?;
            http.read_response_header().await?;
            // 100 Continue and 103 Early Hints may come before the response (RFC 9110 15.2);
            // they are not relayed, and the reply's header is the next one. Bounded, so an
            // upstream cannot hold the request with an endless run of them.
            let mut informational = 0;
            while http
                .response_header()
                .is_some_and(|h| h.status.is_informational() && h.status.as_u16() != 101)
            {
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return Err(pingora::Error::explain(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "too many informational (1xx) responses from the upstream",
                    ));
                }
                http.read_response_header().await?;
            }
            Ok(())
        }
        .await;
        match res {
            Ok(()) => break http,
            Err(mut e) => {
                http.shutdown().await;
                // pingora leaves "retry only if the connection was reused" undecided in the error
                // (a closed or reset connection before any reply header); reading it undecided
                // panics, so settle it first, as pingora-proxy does.
                e.retry.decide_reuse(reused);
                // A pooled connection the upstream had already closed: one retry on a fresh
                // connection (the body is buffered, and no reply header was read).
                if e.retry() && attempt == 1 {
                    continue;
                }
                return upstream_failed(gw, session, route, ctx, "upstream_io", &e).await;
            }
        }
    };
    gw.metrics
        .upstream_latency
        .with_label_values(&[&up.name])
        .observe(sent.elapsed().as_secs_f64());

    let mut resp: ResponseHeader = match http.response_header() {
        Some(r) => r.clone(),
        None => {
            let e = pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "no response header",
            );
            return upstream_failed(gw, session, route, ctx, "upstream_io", &e).await;
        }
    };
    for h in &HOP_BY_HOP {
        resp.remove_header(h);
    }
    if resp.version == http::Version::HTTP_2 && !session.is_http2() {
        // An h2 upstream's reply says HTTP/2, which an HTTP/1 status line cannot carry (pingora
        // refuses to write it: every forwarded reply was a 500); and h2 has no chunked coding, so
        // a reply without a length is sent chunked rather than delimited by closing the client's
        // connection. pingora-proxy does the same.
        resp.set_version(http::Version::HTTP_11);
        if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
    }
    resp.insert_header("x-guardgate-request-id", ctx.request_id.as_str())?;
    if !annotations.is_empty() {
        let ids: Vec<&str> = annotations.iter().map(|(p, _)| p.as_str()).collect();
        let codes: Vec<&str> = annotations
            .iter()
            .filter_map(|(_, c)| c.as_deref())
            .collect();
        resp.insert_header("x-guardgate-policies", ids.join(","))?;
        if !codes.is_empty() {
            resp.insert_header("x-guardgate-codes", codes.join(","))?;
        }
        ctx.outcome = "annotated";
    } else {
        ctx.outcome = "forwarded";
    }
    let is_sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    // A stream in a content coding (sent despite Accept-Encoding: identity) cannot be judged
    // as it flows: it is unclassifiable, and the route's fail mode decides.
    let encoded = is_coded(content_codings(&resp.headers).as_deref());
    let mut guard_output = guard_output;
    if guard_output && resp.status.is_success() && is_sse && encoded {
        gw.metrics
            .errors
            .with_label_values(&["output_unclassifiable"])
            .inc();
        tracing::warn!(request_id = %ctx.request_id, route = %route.name, "streamed reply has a content coding and could not be classified");
        if route.fail_mode == crate::config::FailMode::Closed {
            http.shutdown().await;
            ctx.outcome = "fail_closed";
            let msg = "guardgate could not classify the upstream reply (a stream in a content coding); the route is fail-closed";
            return respond::error(
                session,
                route.api,
                ErrorKind::Unavailable,
                msg,
                &ctx.request_id,
                false,
            )
            .await;
        }
        guard_output = false;
    }
    // Upstream errors carry no model output: they are relayed as they are.
    if guard_output && resp.status.is_success() {
        return if is_sse {
            Box::pin(relay_stream(oc, session, ctx, http, &peer, resp)).await
        } else {
            Box::pin(relay_buffered(oc, session, ctx, http, &peer, resp)).await
        };
    }
    relay_untouched(
        gw,
        session,
        ctx,
        &route.name,
        http,
        &peer,
        resp,
        Bytes::new(),
    )
    .await
}

/// Sends the upstream's response header and then its body as it arrives, starting with `read`
/// (bytes already taken from the body), without judging any of it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_untouched(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    route_name: &str,
    mut http: HttpSession,
    peer: &HttpPeer,
    resp: ResponseHeader,
    read: Bytes,
) -> pingora::Result<()> {
    if let Err(e) = session.write_response_header(Box::new(resp)).await {
        http.shutdown().await;
        ctx.outcome = "client_gone";
        return Err(e);
    }
    if !read.is_empty() {
        if let Err(e) = session.write_response_body(read, false).await {
            http.shutdown().await;
            ctx.outcome = "client_gone";
            return Err(e);
        }
    }
    loop {
        match http.read_response_body().await {
            Ok(Some(chunk)) => {
                if let Err(e) = session.write_response_body(chunk, false).await {
                    // Client went away: close upstream so generation (and billing) stops.
                    http.shutdown().await;
                    ctx.outcome = "client_gone";
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                http.shutdown().await;
                gw.metrics
                    .errors
                    .with_label_values(&["upstream_body"])
                    .inc();
                ctx.outcome = "upstream_error";
                tracing::warn!(request_id = %ctx.request_id, route = %route_name, error = %e, "upstream failed mid-response");
                // The header is out; dropping the connection is the only honest signal left.
                return Err(e);
            }
        }
    }
    session.write_response_body(Bytes::new(), true).await?;
    if http.response_done() {
        gw.connections.release(http, peer).await;
    } else {
        http.shutdown().await;
    }
    Ok(())
}

async fn upstream_failed(
    gw: &Gateway,
    session: &mut Session,
    route: &Route,
    ctx: &mut Ctx,
    kind: &'static str,
    e: &pingora::Error,
) -> pingora::Result<()> {
    gw.metrics.errors.with_label_values(&[kind]).inc();
    ctx.outcome = "upstream_error";
    tracing::warn!(request_id = %ctx.request_id, route = %route.name, upstream = %route.upstream.name, error = %e, "upstream request failed");
    let timeout = matches!(
        e.etype(),
        pingora::ErrorType::ConnectTimedout
            | pingora::ErrorType::ReadTimedout
            | pingora::ErrorType::WriteTimedout
    );
    let (k, msg) = if timeout {
        (
            ErrorKind::GatewayTimeout,
            format!("upstream {} timed out", route.upstream.name),
        )
    } else {
        (
            ErrorKind::BadGateway,
            format!("upstream {} is unreachable or failed", route.upstream.name),
        )
    };
    respond::error(session, route.api, k, &msg, &ctx.request_id, false).await
}
