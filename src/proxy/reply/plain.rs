//! A plain (non-streamed) reply judged before the client sees any of it: read whole (its status
//! and headers wait for the verdict), judged, then sent as it came, annotated, rewritten as the
//! API's filtered answer, or replaced by the API's error.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use serde_json::Value;

use super::untouched::upstream_body_failed;
use super::{
    annotation_json, relay_untouched, release, set_annotation_headers, unclassifiable_message,
    withheld_message,
};
use crate::config::{BlockStyle, FailMode};
use crate::decide::Final;
use crate::policy::Bound;
use crate::proxy::body::{content_codings, decode};
use crate::proxy::exchange::{Exchange, Judging, Outcome};
use crate::proxy::forward::UpstreamReply;
use crate::proxy::refusal::{self, Words};
use crate::wire::{splice_annotation, Api, ErrorKind, Segment};

/// A reply as read: the API's JSON, or the text segments of a body that is not JSON.
enum Reply {
    Json(Value),
    Text(Vec<Segment>),
}

impl Reply {
    fn segments(&self, api: Api) -> Vec<Segment> {
        match self {
            Reply::Json(v) => api.extract_reply(v),
            Reply::Text(segments) => segments.clone(),
        }
    }
}

/// The body as read from the upstream.
struct Read {
    raw: Bytes,
    /// Reading stopped at the size limit: the rest of the body is still upstream.
    over_limit: bool,
}

pub async fn relay(
    ex: &mut Exchange,
    session: &mut Session,
    mut up: UpstreamReply,
    bound: &[Bound],
) -> pingora::Result<()> {
    let (api, limit) = match ex.route() {
        Some(r) => (r.api, r.output.max_reply_bytes),
        None => (ex.api(), usize::MAX),
    };
    let read = match read_whole(&mut up.http, limit).await {
        Ok(read) => read,
        Err(e) => {
            up.http.shutdown().await;
            upstream_body_failed(ex, &e);
            let name = ex.route().map_or("-", |r| r.upstream.name.as_str());
            let msg = format!("upstream {name} failed while sending its reply");
            return ex.refuse(session, ErrorKind::BadGateway, &msg, false).await;
        }
    };
    let coded = content_codings(&up.header.headers);
    let parsed = if read.over_limit {
        Err(format!("the reply exceeds {limit} bytes"))
    } else {
        parse(api, &read.raw, coded.as_deref(), limit)
    };
    let reply = match parsed {
        Ok(reply) => reply,
        Err(why) => return unjudged(ex, session, up, read, &why).await,
    };
    let decision = ex.judge(bound, reply.segments(api), Judging::Reply).await;
    let (verdict, annotations) = (decision.verdict.clone(), decision.annotations.clone());
    if verdict != Final::Allow {
        return withhold(ex, session, up, bound, &verdict, &reply).await;
    }
    let mut body = read.raw;
    if !annotations.is_empty() {
        set_annotation_headers(&mut up.header, "x-guardgate-output", &annotations)?;
        // Only an uncompressed body can be edited; a coded one keeps just the headers.
        if coded.is_none() {
            if let Some(b) = splice_annotation(&body, &annotation_json(&annotations)) {
                body = Bytes::from(b);
            }
        }
        ex.outcome = Outcome::Annotated;
    }
    send_whole(ex, session, up, body).await
}

/// The body up to `limit` bytes (and a little over, to know that it is over).
async fn read_whole(http: &mut HttpSession, limit: usize) -> pingora::Result<Read> {
    let mut buf = BytesMut::new();
    while let Some(b) = http.read_response_body().await? {
        buf.extend_from_slice(&b);
        if buf.len() > limit {
            return Ok(Read {
                raw: buf.freeze(),
                over_limit: true,
            });
        }
    }
    Ok(Read {
        raw: buf.freeze(),
        over_limit: false,
    })
}

/// The reply decoded and read as JSON, or as text when it is not JSON; `Err` says why it cannot
/// be judged.
fn parse(api: Api, raw: &Bytes, coded: Option<&str>, limit: usize) -> Result<Reply, String> {
    let plain = decode(raw, coded, limit.saturating_mul(4)).map_err(|e| e.message())?;
    match serde_json::from_slice::<Value>(&plain) {
        Ok(v) => Ok(Reply::Json(v)),
        // Not JSON, but the client reads it all the same (an event stream sent as
        // application/json, plain text): it is judged as text.
        Err(e) => match std::str::from_utf8(&plain) {
            Ok(text) => Ok(Reply::Text(api.extract_text_reply(text))),
            Err(_) => Err(format!("the reply is neither JSON nor UTF-8 text: {e}")),
        },
    }
}

/// A reply that could not be judged: the route's fail mode decides.
async fn unjudged(
    ex: &mut Exchange,
    session: &mut Session,
    mut up: UpstreamReply,
    read: Read,
    why: &str,
) -> pingora::Result<()> {
    if ex.unclassifiable(why) == FailMode::Closed {
        up.http.shutdown().await;
        let msg = unclassifiable_message(why);
        return ex
            .refuse(session, ErrorKind::Unavailable, &msg, false)
            .await;
    }
    if read.over_limit {
        // Sent as it comes, the upstream's own framing kept: what was read, then the rest.
        // Sending only what was read would be a truncated reply passed off as whole.
        return relay_untouched(ex, session, up, read.raw).await;
    }
    send_whole(ex, session, up, read.raw).await
}

/// A reply a policy withheld: rewritten as the API's filtered answer (`on_block = "replace"`, for a
/// JSON reply), or the API's error; a block in the words of its refusal (see `proxy::refusal`).
async fn withhold(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    bound: &[Bound],
    verdict: &Final,
    reply: &Reply,
) -> pingora::Result<()> {
    ex.outcome = Outcome::OutputBlocked;
    let UpstreamReply {
        http,
        peer,
        mut header,
    } = up;
    release(ex, http, &peer).await;
    let words = match verdict {
        Final::Block { policy_id, .. } => refusal::for_block(
            ex.route().map(|r| &**r),
            ex.profile_refusal(),
            session,
            bound,
            policy_id,
            || withheld_message(verdict),
        ),
        _ => Words::plain(withheld_message(verdict)),
    };
    let style = ex.route().map_or(BlockStyle::Error, |r| r.output.on_block);
    if let (Final::Block { policy_id, code }, BlockStyle::Replace, Reply::Json(reply)) =
        (verdict, style, reply)
    {
        let body = ex.api().blocked_reply(reply, &words.text);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        header.remove_header(&http::header::CONTENT_ENCODING);
        header.remove_header(&http::header::TRANSFER_ENCODING);
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        header.insert_header("x-guardgate-blocked-by", policy_id.as_str())?;
        if let Some(c) = code {
            header.insert_header("x-guardgate-code", c.as_str())?;
        }
        // The upstream's language, if it named one, was the withheld reply's.
        header.remove_header(&http::header::CONTENT_LANGUAGE);
        if let Some(l) = &words.language {
            header.insert_header(http::header::CONTENT_LANGUAGE, l.as_str())?;
        }
        session.write_response_header(Box::new(header)).await?;
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
    ex.refuse_with(session, kind, &words).await
}

/// The upstream's header with `body` (read whole) behind it.
async fn send_whole(
    ex: &Exchange,
    session: &mut Session,
    up: UpstreamReply,
    body: Bytes,
) -> pingora::Result<()> {
    let UpstreamReply {
        http,
        peer,
        mut header,
    } = up;
    release(ex, http, &peer).await;
    // The output policies judged the reply as the model wrote it; the client reads the originals.
    let coded = content_codings(&header.headers).is_some();
    let body = match crate::proxy::redact::restorer(ex).filter(|_| !coded) {
        Some(p) => {
            crate::proxy::redact::restore_whole(&p, &header, &body).map_or(body, Bytes::from)
        }
        None => body,
    };
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

/// The text to judge in a reply read whole (decoded, then read as JSON or as text); `Err` says
/// why there is none.
pub(super) fn reply_segments(
    api: Api,
    raw: &Bytes,
    coded: Option<&str>,
    limit: usize,
) -> Result<Vec<Segment>, String> {
    parse(api, raw, coded, limit).map(|r| r.segments(api))
}
