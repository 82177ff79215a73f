//! A reply no output policy judges, on a request whose redaction restores: the placeholders the
//! request made are put back for the client, in a whole reply (read whole, its length set again)
//! or event by event in a stream (`redact::StreamRestore`, sent chunked).

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession as Session;
use std::sync::Arc;

use super::untouched::upstream_body_failed;
use super::{relay_untouched, release};
use crate::proxy::body::{content_codings, is_coded};
use crate::proxy::exchange::{Exchange, Outcome};
use crate::proxy::forward::UpstreamReply;
use crate::proxy::redact::restore_whole;
use crate::redact::{Placeholders, StreamRestore};

pub async fn relay(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    is_sse: bool,
    placeholders: Arc<Placeholders>,
) -> pingora::Result<()> {
    // Asked for without a content coding; one sent all the same cannot be read here.
    if is_coded(content_codings(&up.header.headers).as_deref()) {
        return relay_untouched(ex, session, up, Bytes::new()).await;
    }
    if is_sse {
        stream(ex, session, up, placeholders).await
    } else {
        whole(ex, session, up, &placeholders).await
    }
}

async fn stream(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    placeholders: Arc<Placeholders>,
) -> pingora::Result<()> {
    let UpstreamReply {
        mut http,
        peer,
        mut header,
    } = up;
    header.remove_header(&http::header::CONTENT_LENGTH);
    if !session.is_http2() {
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    let mut restore = StreamRestore::new(ex.api(), placeholders);
    if let Err(e) = session.write_response_header(Box::new(header)).await {
        http.shutdown().await;
        ex.outcome = Outcome::ClientGone;
        return Err(e);
    }
    loop {
        match http.read_response_body().await {
            Ok(Some(chunk)) => {
                let out = restore.push(&chunk);
                if out.is_empty() {
                    continue;
                }
                if let Err(e) = session.write_response_body(out, false).await {
                    http.shutdown().await;
                    ex.outcome = Outcome::ClientGone;
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                http.shutdown().await;
                upstream_body_failed(ex, &e);
                return Err(e);
            }
        }
    }
    let rest = restore.finish();
    if !rest.is_empty() {
        session.write_response_body(rest, false).await?;
    }
    session.write_response_body(Bytes::new(), true).await?;
    release(ex, http, &peer).await;
    Ok(())
}

async fn whole(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    placeholders: &Placeholders,
) -> pingora::Result<()> {
    let limit = ex.route().map_or(usize::MAX, |r| r.output.max_reply_bytes);
    let UpstreamReply {
        mut http,
        peer,
        mut header,
    } = up;
    let mut buf = BytesMut::new();
    loop {
        match http.read_response_body().await {
            Ok(Some(b)) => {
                buf.extend_from_slice(&b);
                if buf.len() > limit {
                    // Too large to hold: sent as it comes, with the upstream's framing.
                    let up = UpstreamReply { http, peer, header };
                    return relay_untouched(ex, session, up, buf.freeze()).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                http.shutdown().await;
                upstream_body_failed(ex, &e);
                return Err(e);
            }
        }
    }
    release(ex, http, &peer).await;
    let body = match restore_whole(placeholders, &header, &buf) {
        Some(b) => Bytes::from(b),
        None => buf.freeze(),
    };
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}
