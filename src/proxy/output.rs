//! The output guard: replies are judged against the route's output policies before the client
//! sees them. Plain replies are buffered whole (their headers wait for the verdict); streamed
//! replies go through a hold-back window, and a violation ends the stream the way the API ends a
//! filtered reply, closing the upstream so generation stops.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use pingora::upstreams::peer::HttpPeer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

use super::app::Ctx;
use super::body::decode;
use super::exchange::record;
use super::gateway::{Gateway, Route};
use super::respond;
use crate::audit::RecordContext;
use crate::classify::Content;
use crate::config::{Action, BlockStyle, Direction};
use crate::decide::{decide, Decision, Final};
use crate::guard::window::HoldBack;
use crate::policy::Bound;
use crate::wire::output::{
    blocked_reply, extract_reply, extract_text_reply, segments_of_keys, splice_annotation,
    StreamTracker,
};
use crate::wire::sse::SseParser;
use crate::wire::ErrorKind;

pub struct OutputCtx<'a> {
    pub gw: &'a Gateway,
    pub route: &'a Route,
    pub bound: &'a [Bound],
    pub generation: u64,
}

impl OutputCtx<'_> {
    async fn judge(&self, segments: Vec<crate::wire::Segment>) -> Decision {
        let content = Content::from_segments(segments);
        let deadline = Instant::now() + self.route.deadline;
        decide(
            &self.gw.cascade,
            self.bound,
            &content,
            deadline,
            self.route.fail_mode,
        )
        .await
    }

    fn record(&self, ctx: &Ctx, d: &Decision, windows: Option<u32>) {
        let rctx = RecordContext {
            request_id: &ctx.request_id,
            route: &self.route.name,
            api: self.route.api.name(),
            direction: Direction::Output,
            fail_mode: self.route.fail_mode,
            generation: self.generation,
            unclassified_parts: 0,
        };
        record(self.gw, &rctx, d, windows);
    }

    fn withheld_message(&self, v: &Final) -> String {
        match v {
            Final::Block { policy_id, code: Some(c) } => {
                format!("The reply was withheld by guardgate: policy {policy_id} (code {c}).")
            }
            Final::Block { policy_id, code: None } => {
                format!("The reply was withheld by guardgate: policy {policy_id}.")
            }
            Final::FailClosed { policy_id, .. } => format!(
                "The reply was withheld: guardgate could not classify it against policy {policy_id}."
            ),
            Final::Allow => String::new(),
        }
    }
}

fn annotation_json(annotations: &[(String, Option<String>)]) -> Value {
    json!({"annotations": annotations.iter().map(|(p, c)| json!({"policy": p, "code": c})).collect::<Vec<_>>()})
}

fn set_annotation_headers(
    resp: &mut ResponseHeader,
    annotations: &[(String, Option<String>)],
) -> pingora::Result<()> {
    if annotations.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = annotations.iter().map(|(p, _)| p.as_str()).collect();
    let codes: Vec<&str> = annotations
        .iter()
        .filter_map(|(_, c)| c.as_deref())
        .collect();
    resp.insert_header("x-guardgate-output-policies", ids.join(","))?;
    if !codes.is_empty() {
        resp.insert_header("x-guardgate-output-codes", codes.join(","))?;
    }
    Ok(())
}

/// A plain (non-streamed) reply: read whole, judge, then send it, a rewritten reply or an error.
pub async fn relay_buffered(
    oc: &OutputCtx<'_>,
    session: &mut Session,
    ctx: &mut Ctx,
    mut http: HttpSession,
    peer: &HttpPeer,
    mut resp: ResponseHeader,
) -> pingora::Result<()> {
    let gw = oc.gw;
    let api = oc.route.api;
    let limit = oc.route.output.max_reply_bytes;
    let mut buf = BytesMut::new();
    let mut problem: Option<String> = None;
    // Set when reading stopped at the limit: the rest of the body is still upstream.
    let mut cut_short = false;
    loop {
        match http.read_response_body().await {
            Ok(Some(b)) => {
                buf.extend_from_slice(&b);
                if buf.len() > limit {
                    problem = Some(format!("the reply exceeds {limit} bytes"));
                    cut_short = true;
                    break;
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
                let msg = format!(
                    "upstream {} failed while sending its reply",
                    oc.route.upstream.name
                );
                tracing::warn!(request_id = %ctx.request_id, error = %e, "{msg}");
                return respond::error(
                    session,
                    api,
                    ErrorKind::BadGateway,
                    &msg,
                    &ctx.request_id,
                    false,
                )
                .await;
            }
        }
    }
    let raw = buf.freeze();
    let encoding = super::body::content_codings(&resp.headers);
    let parsed = match problem {
        Some(p) => Err(p),
        None => decode(&raw, encoding.as_deref(), limit.saturating_mul(4))
            .map_err(|e| e.message())
            .and_then(|plain| match serde_json::from_slice::<Value>(&plain) {
                Ok(v) => Ok(Reply::Json(v)),
                // Not JSON, but the client reads it all the same (an event stream sent as
                // application/json, plain text): it is judged as text.
                Err(e) => match std::str::from_utf8(&plain) {
                    Ok(text) => Ok(Reply::Text(extract_text_reply(api, text))),
                    Err(_) => Err(format!("the reply is neither JSON nor UTF-8 text: {e}")),
                },
            }),
    };
    let reply = match parsed {
        Ok(v) => v,
        Err(why) => {
            // Nothing was judged, so this is a classifier failure: the route's fail mode decides.
            gw.metrics
                .errors
                .with_label_values(&["output_unclassifiable"])
                .inc();
            tracing::warn!(request_id = %ctx.request_id, route = %oc.route.name, reason = %why, "reply could not be classified");
            if oc.route.fail_mode == crate::config::FailMode::Closed {
                http.shutdown().await;
                ctx.outcome = "fail_closed";
                let msg = unclassifiable_message(&why);
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
            ctx.outcome = "fail_open";
            if cut_short {
                // Sent as it comes, the upstream's own framing kept: what was read, then the
                // rest. Sending only what was read would be a truncated reply passed off as whole.
                return super::exchange::relay_untouched(
                    gw,
                    session,
                    ctx,
                    &oc.route.name,
                    http,
                    peer,
                    resp,
                    raw,
                )
                .await;
            }
            return finish_plain(gw, session, http, peer, resp, raw).await;
        }
    };
    let segments = match &reply {
        Reply::Json(v) => extract_reply(api, v),
        Reply::Text(segments) => segments.clone(),
    };
    let decision = oc.judge(segments).await;
    oc.record(ctx, &decision, None);
    match &decision.verdict {
        Final::Allow => {
            let mut body = raw;
            if !decision.annotations.is_empty() {
                set_annotation_headers(&mut resp, &decision.annotations)?;
                if encoding.is_none() {
                    if let Some(b) =
                        splice_annotation(&body, &annotation_json(&decision.annotations))
                    {
                        body = Bytes::from(b);
                    }
                }
                ctx.outcome = "annotated";
            }
            finish_plain(gw, session, http, peer, resp, body).await
        }
        verdict => {
            ctx.outcome = "output_blocked";
            release(gw, http, peer).await;
            let msg = oc.withheld_message(verdict);
            // Only a JSON reply can be rewritten into a filtered answer of the same shape.
            if let (Final::Block { policy_id, code }, BlockStyle::Replace, Reply::Json(reply)) =
                (verdict, oc.route.output.on_block, &reply)
            {
                let body = serde_json::to_vec(&blocked_reply(api, reply, &msg)).unwrap_or_default();
                resp.remove_header(&http::header::CONTENT_ENCODING);
                resp.remove_header(&http::header::TRANSFER_ENCODING);
                resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                resp.insert_header("x-guardgate-blocked-by", policy_id.as_str())?;
                if let Some(c) = code {
                    resp.insert_header("x-guardgate-code", c.as_str())?;
                }
                session.write_response_header(Box::new(resp)).await?;
                session.write_response_body(Bytes::from(body), true).await?;
                return Ok(());
            }
            let kind = match verdict {
                Final::Block { policy_id, code } => ErrorKind::PolicyViolation {
                    policy: policy_id.clone(),
                    code: code.clone(),
                },
                _ => ErrorKind::Unavailable,
            };
            respond::error(session, api, kind, &msg, &ctx.request_id, false).await
        }
    }
}

/// A plain reply as read: the API's JSON, or the text segments of a body that is not JSON.
enum Reply {
    Json(Value),
    Text(Vec<crate::wire::Segment>),
}

async fn release(gw: &Gateway, mut http: HttpSession, peer: &HttpPeer) {
    if http.response_done() {
        gw.connections.release(http, peer).await;
    } else {
        http.shutdown().await;
    }
}

async fn finish_plain(
    gw: &Gateway,
    session: &mut Session,
    http: HttpSession,
    peer: &HttpPeer,
    mut resp: ResponseHeader,
    body: Bytes,
) -> pingora::Result<()> {
    release(gw, http, peer).await;
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

enum Read {
    Chunk(Bytes),
    Failed(pingora::Error),
}

/// A streamed (SSE) reply. With a blocking policy bound, text waits in the hold-back window
/// until judged; otherwise (annotate or shadow only) the stream flows untouched and is judged
/// whole at the end.
pub async fn relay_stream(
    oc: &OutputCtx<'_>,
    session: &mut Session,
    ctx: &mut Ctx,
    http: HttpSession,
    peer: &HttpPeer,
    mut resp: ResponseHeader,
) -> pingora::Result<()> {
    let gw = oc.gw;
    let out = &oc.route.output;
    let enforce = oc.bound.iter().any(|b| b.action == Action::Block);
    resp.remove_header(&http::header::CONTENT_LENGTH);
    session.write_response_header(Box::new(resp)).await?;

    // The upstream is read by its own task so that waiting for bytes can be raced against the
    // hold deadline without cancelling a read half-way; aborting the task drops (closes) the
    // upstream connection at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(16);
    let reader = tokio::spawn(async move {
        let mut http = http;
        loop {
            let item = match http.read_response_body().await {
                Ok(Some(b)) => Read::Chunk(b),
                Ok(None) => return Some(http),
                Err(e) => Read::Failed(*e),
            };
            let failed = matches!(item, Read::Failed(_));
            if tx.send(item).await.is_err() || failed {
                http.shutdown().await;
                return None;
            }
        }
    });

    let mut parser = SseParser::new();
    let mut streams = Streams::new(oc.route.api);
    let mut hold = HoldBack::new(
        out.window_chars,
        out.overlap_chars,
        std::time::Duration::from_millis(out.max_hold_ms),
    );
    let mut whole: BTreeMap<String, String> = BTreeMap::new();
    let mut whole_len = 0usize;
    let mut last: Option<Decision> = None;
    let mut ended = false;
    // Whether events are still being parsed: annotate-only streams stop after an event too large
    // to judge, and just flow.
    let mut inspecting = true;

    while !ended {
        let deadline = hold
            .hold_deadline()
            .filter(|_| enforce && hold.has_pending_text());
        let next = tokio::select! {
            r = rx.recv() => r,
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()).await }, if deadline.is_some() => {
                // Text waited long enough: judge what there is.
                if let Some(stop) = judge_window(oc, ctx, session, &mut hold, &mut streams, &mut last).await? {
                    reader.abort();
                    return stop;
                }
                continue;
            }
        };
        let events = match next {
            Some(Read::Chunk(b)) => {
                if !enforce {
                    // Annotate-only: bytes flow untouched; text is kept to judge at the end.
                    if let Err(e) = session.write_response_body(b.clone(), false).await {
                        reader.abort();
                        ctx.outcome = "client_gone";
                        return Err(e);
                    }
                }
                if inspecting {
                    parser.push(&b)
                } else {
                    Vec::new()
                }
            }
            Some(Read::Failed(e)) => {
                gw.metrics
                    .errors
                    .with_label_values(&["upstream_body"])
                    .inc();
                ctx.outcome = "upstream_error";
                tracing::warn!(request_id = %ctx.request_id, error = %e, "upstream failed mid-stream");
                if let Some(d) = &last {
                    oc.record(ctx, d, Some(hold.windows_judged));
                }
                return Err(Box::new(e));
            }
            None => {
                ended = true;
                parser.finish().into_iter().collect()
            }
        };
        let mut terminal = ended;
        for ev in events {
            let t = streams.upstream.on_event(&ev);
            terminal |= t.terminal;
            if enforce {
                hold.push(ev.raw, t.deltas);
            } else {
                for (k, d) in t.deltas {
                    if whole_len < out.max_reply_bytes {
                        whole_len += d.len();
                        whole.entry(k).or_default().push_str(&d);
                    }
                }
            }
        }
        // An event that never ends (no blank line) cannot be judged, and buffering it without a
        // bound would let one reply grow the gateway's memory: past max_reply_bytes the stream is
        // unclassifiable, and the route's fail mode decides.
        if inspecting && parser.buffered() > out.max_reply_bytes {
            let why = format!(
                "a stream event exceeds {} bytes (routes.output.max_reply_bytes)",
                out.max_reply_bytes
            );
            gw.metrics
                .errors
                .with_label_values(&["output_unclassifiable"])
                .inc();
            tracing::warn!(request_id = %ctx.request_id, route = %oc.route.name, reason = %why, "streamed reply could not be classified");
            if !enforce {
                // Its bytes are already on their way to the client; only the parsing stops.
                inspecting = false;
                parser.take_buffered();
                continue;
            }
            let stop = oversized_event(
                oc,
                ctx,
                session,
                &mut hold,
                &mut streams,
                &mut last,
                &mut parser,
                &mut rx,
                &why,
            )
            .await;
            reader.abort();
            return stop;
        }
        if !enforce {
            continue;
        }
        if let Some(b) = release_now(&mut hold, &mut streams) {
            if let Err(e) = session.write_response_body(b, false).await {
                reader.abort();
                ctx.outcome = "client_gone";
                return Err(e);
            }
        }
        if hold.window_full() || (terminal && hold.has_pending_text()) {
            if let Some(stop) =
                judge_window(oc, ctx, session, &mut hold, &mut streams, &mut last).await?
            {
                reader.abort();
                return stop;
            }
        }
    }

    if !enforce {
        let d = oc.judge(segments_of_keys(whole)).await;
        if out.annotate_event && !d.annotations.is_empty() {
            let ev = format!(
                "event: guardgate\ndata: {}\n\n",
                annotation_json(&d.annotations)
            );
            session.write_response_body(Bytes::from(ev), false).await?;
        }
        ctx.outcome = if d.annotations.is_empty() {
            "forwarded"
        } else {
            "annotated"
        };
        last = Some(d);
    } else if ctx.outcome != "annotated" {
        ctx.outcome = "forwarded";
    }
    if let Some(d) = &last {
        oc.record(ctx, d, Some(hold.windows_judged));
    }
    session.write_response_body(Bytes::new(), true).await?;
    if let Ok(Some(http)) = reader.await {
        release(gw, http, peer).await;
    }
    Ok(())
}

/// A stream as the upstream sent it and as the client has been sent it: a cut must end what the
/// client saw (held events that were discarded never reached it), with the upstream's ids.
struct Streams {
    upstream: StreamTracker,
    /// The upstream's state when the hold-back queue last went out.
    released: StreamTracker,
}

impl Streams {
    fn new(api: crate::wire::Api) -> Streams {
        Streams {
            upstream: StreamTracker::new(api),
            released: StreamTracker::new(api),
        }
    }

    /// The hold-back queue went out. Every event the upstream tracker has followed was queued
    /// before any release point, so the client now has exactly what it followed: a copy of its
    /// state, not a second parse of every event.
    fn released(&mut self) {
        self.released.clone_from(&self.upstream);
    }

    fn cut(&self, error_message: Option<&str>) -> Vec<u8> {
        self.released.cut_after(&self.upstream, error_message)
    }
}

/// `HoldBack::releasable_now`, keeping `streams` in step.
fn release_now(hold: &mut HoldBack, streams: &mut Streams) -> Option<Bytes> {
    let b = hold.releasable_now();
    if b.is_some() {
        streams.released();
    }
    b
}

fn unclassifiable_message(why: &str) -> String {
    format!("guardgate could not classify the upstream reply ({why}); the route is fail-closed")
}

/// Ends a stream the way the API ends a filtered reply, or with its error event carrying `msg`
/// (`on_block = "error"`).
async fn cut_stream(
    oc: &OutputCtx<'_>,
    session: &mut Session,
    streams: &Streams,
    msg: &str,
) -> pingora::Result<()> {
    let style = match oc.route.output.on_block {
        BlockStyle::Replace => None,
        BlockStyle::Error => Some(msg),
    };
    session
        .write_response_body(Bytes::from(streams.cut(style)), false)
        .await?;
    session.write_response_body(Bytes::new(), true).await
}

/// A blocking stream that turned unclassifiable mid-way (see `relay_stream`). Fail-closed: the
/// stream ends the way a block ends it, with the reason. Fail-open: the text held so far is still
/// judged (and may be cut), then the event that could not be judged and the rest of the stream
/// pass through unparsed.
#[allow(clippy::too_many_arguments)]
async fn oversized_event(
    oc: &OutputCtx<'_>,
    ctx: &mut Ctx,
    session: &mut Session,
    hold: &mut HoldBack,
    streams: &mut Streams,
    last: &mut Option<Decision>,
    parser: &mut SseParser,
    rx: &mut tokio::sync::mpsc::Receiver<Read>,
    why: &str,
) -> pingora::Result<()> {
    if oc.route.fail_mode == crate::config::FailMode::Closed {
        hold.reject();
        if let Some(d) = last.as_ref() {
            oc.record(ctx, d, Some(hold.windows_judged));
        }
        ctx.outcome = "fail_closed";
        return cut_stream(oc, session, streams, &unclassifiable_message(why)).await;
    }
    if hold.has_pending_text() {
        if let Some(stop) = judge_window(oc, ctx, session, hold, streams, last).await? {
            return stop;
        }
    } else if let Some(b) = release_now(hold, streams) {
        session.write_response_body(b, false).await?;
    }
    if let Some(d) = last.as_ref() {
        oc.record(ctx, d, Some(hold.windows_judged));
    }
    ctx.outcome = "fail_open";
    session
        .write_response_body(parser.take_buffered(), false)
        .await?;
    while let Some(item) = rx.recv().await {
        match item {
            Read::Chunk(b) => session.write_response_body(b, false).await?,
            Read::Failed(e) => {
                oc.gw
                    .metrics
                    .errors
                    .with_label_values(&["upstream_body"])
                    .inc();
                ctx.outcome = "upstream_error";
                return Err(Box::new(e));
            }
        }
    }
    session.write_response_body(Bytes::new(), true).await
}

/// An outcome other than "judged and allowed", for the live version and a shadow candidate.
fn worth_recording(o: &crate::decide::Outcome) -> bool {
    let notable = |r: &Result<crate::classify::Verdict, crate::classify::ClassifyError>| {
        r.as_ref().map_or(true, |v| v.violation)
    };
    notable(&o.result) || o.candidate.as_ref().is_some_and(|(_, r)| notable(r))
}

/// Judges the current window. `Ok(Some(result))` means the stream is over (cut, or the client
/// left) and `result` is what the exchange returns.
async fn judge_window(
    oc: &OutputCtx<'_>,
    ctx: &mut Ctx,
    session: &mut Session,
    hold: &mut HoldBack,
    streams: &mut Streams,
    last: &mut Option<Decision>,
) -> pingora::Result<Option<pingora::Result<()>>> {
    let d = oc.judge(hold.window()).await;
    match &d.verdict {
        Final::Allow => {
            // Only the last window's decision is recorded when the stream ends. A window with
            // something to say is recorded now, or it was lost to the next window's decision:
            // a classifier that failed to judge it (fail-open, or a binding whose failure never
            // blocks), an annotate or shadow hit, a hit below the threshold, a candidate's hit.
            if d.outcomes.iter().any(worth_recording) {
                if !d.annotations.is_empty() {
                    ctx.outcome = "annotated";
                }
                oc.record(ctx, &d, Some(hold.windows_judged));
            } else {
                *last = Some(d);
            }
            let approved = hold.approve();
            streams.released();
            if let Some(b) = approved {
                if let Err(e) = session.write_response_body(b, false).await {
                    ctx.outcome = "client_gone";
                    return Ok(Some(Err(e)));
                }
            }
            Ok(None)
        }
        verdict => {
            hold.reject();
            oc.record(ctx, &d, Some(hold.windows_judged));
            ctx.outcome = "output_blocked";
            let msg = oc.withheld_message(verdict);
            Ok(Some(cut_stream(oc, session, streams, &msg).await))
        }
    }
}
