//! The reply phase: the upstream's response header made fit for the client, then its body relayed
//! untouched (`untouched`), or judged against the route's output policies first (`plain` for a
//! whole reply, `stream` for a streamed one).

mod passed;
mod plain;
mod restored;
mod stream;
mod untouched;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use pingora::upstreams::peer::HttpPeer;
use serde_json::{json, Value};

use super::body::{content_codings, is_coded};
use super::exchange::{Exchange, Outcome};
use super::forward::UpstreamReply;
use super::upstream::HOP_BY_HOP;
use crate::config::FailMode;
use crate::decide::{Annotations, Final};
use crate::policy::Bound;
use crate::wire::ErrorKind;

pub use untouched::relay_untouched;

/// Relays the upstream's reply: judged against `bound` (the route's output policies) when there
/// are any and the upstream answered with success, as it is otherwise. `annotations` are the
/// request's, sent as headers.
pub async fn relay(
    ex: &mut Exchange,
    session: &mut Session,
    mut up: UpstreamReply,
    bound: &[Bound],
    annotations: &Annotations,
) -> pingora::Result<()> {
    client_header(ex, session, &mut up.header, annotations)?;
    let is_sse = up
        .header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    // Upstream errors carry no model output: they are relayed as they are.
    let mut judged = !bound.is_empty() && up.header.status.is_success();
    // A stream in a content coding (sent despite Accept-Encoding: identity) cannot be judged as
    // it flows: the route's fail mode decides.
    if judged && is_sse && is_coded(content_codings(&up.header.headers).as_deref()) {
        let why = "a stream in a content coding";
        if ex.unclassifiable(why) == FailMode::Closed {
            up.http.shutdown().await;
            return ex
                .refuse(
                    session,
                    ErrorKind::Unavailable,
                    &unclassifiable_message(why),
                    false,
                )
                .await;
        }
        judged = false;
    }
    match (judged, is_sse) {
        (true, true) => Box::pin(stream::relay(ex, session, up, bound)).await,
        // A reply whose placeholders are put back is rewritten before the client has it: it
        // takes the buffered path, which restores.
        (true, false) if passed::applies(bound) && crate::proxy::redact::restorer(ex).is_none() => {
            Box::pin(passed::relay(ex, session, up, bound)).await
        }
        (true, false) => Box::pin(plain::relay(ex, session, up, bound)).await,
        (false, _) => match crate::proxy::redact::restorer(ex) {
            Some(p) => Box::pin(restored::relay(ex, session, up, is_sse, p)).await,
            None => relay_untouched(ex, session, up, Bytes::new()).await,
        },
    }
}

/// The upstream's response header as the client gets it.
fn client_header(
    ex: &mut Exchange,
    session: &Session,
    resp: &mut ResponseHeader,
    annotations: &Annotations,
) -> pingora::Result<()> {
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
    resp.insert_header("x-guardgate-request-id", ex.request_id.as_str())?;
    // Annotate bindings judged off the request path: their findings join the headers if they
    // are in by now; otherwise the reply says they are pending, and the audit record has them.
    let (late, pending) = ex.late_annotations();
    if pending {
        resp.insert_header("x-guardgate-pending", "annotations")?;
    }
    let annotations: std::borrow::Cow<'_, Annotations> = if late.is_empty() {
        std::borrow::Cow::Borrowed(annotations)
    } else {
        std::borrow::Cow::Owned(annotations.iter().cloned().chain(late).collect())
    };
    ex.outcome = if annotations.is_empty() {
        Outcome::Forwarded
    } else {
        set_annotation_headers(resp, "x-guardgate", &annotations)?;
        Outcome::Annotated
    };
    Ok(())
}

/// `{prefix}-policies` and `{prefix}-codes` headers naming what annotate bindings found.
fn set_annotation_headers(
    resp: &mut ResponseHeader,
    prefix: &str,
    annotations: &Annotations,
) -> pingora::Result<()> {
    if annotations.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = annotations.iter().map(|(p, _)| p.as_str()).collect();
    let codes: Vec<&str> = annotations
        .iter()
        .filter_map(|(_, c)| c.as_deref())
        .collect();
    resp.insert_header(format!("{prefix}-policies"), ids.join(","))?;
    if !codes.is_empty() {
        resp.insert_header(format!("{prefix}-codes"), codes.join(","))?;
    }
    Ok(())
}

/// What annotate bindings found, as the `"guardgate"` member of a reply or a stream's event.
fn annotation_json(annotations: &Annotations) -> Value {
    json!({"annotations": annotations.iter().map(|(p, c)| json!({"policy": p, "code": c})).collect::<Vec<_>>()})
}

/// The message a withheld or cut reply carries instead of the model's output.
fn withheld_message(v: &Final) -> String {
    match v {
        Final::Block {
            policy_id,
            code: Some(c),
        } => format!("The reply was withheld by guardgate: policy {policy_id} (code {c})."),
        Final::Block {
            policy_id,
            code: None,
        } => format!("The reply was withheld by guardgate: policy {policy_id}."),
        Final::FailClosed { policy_id, .. } => format!(
            "The reply was withheld: guardgate could not classify it against policy {policy_id}."
        ),
        Final::Allow => String::new(),
    }
}

fn unclassifiable_message(why: &str) -> String {
    format!("guardgate could not classify the upstream reply ({why}); the route is fail-closed")
}

/// Gives the upstream connection back to the pool when its reply was read to the end, closes it
/// otherwise.
async fn release(ex: &Exchange, mut http: HttpSession, peer: &HttpPeer) {
    if http.response_done() {
        ex.gw.connections.release(http, peer).await;
    } else {
        http.shutdown().await;
    }
}
