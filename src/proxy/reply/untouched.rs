//! A reply relayed as it comes: the header, then the body chunk by chunk, unjudged.

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;

use super::release;
use crate::metrics::Fault;
use crate::proxy::exchange::{Exchange, Outcome};
use crate::proxy::forward::UpstreamReply;

/// Sends the upstream's response header and then its body as it arrives, starting with `read`
/// (bytes already taken from the body), without judging any of it.
pub async fn relay_untouched(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    read: Bytes,
) -> pingora::Result<()> {
    let UpstreamReply {
        mut http,
        peer,
        header,
    } = up;
    let mut sent = session.write_response_header(Box::new(header)).await;
    if sent.is_ok() && !read.is_empty() {
        sent = session.write_response_body(read, false).await;
    }
    if let Err(e) = sent {
        http.shutdown().await;
        ex.outcome = Outcome::ClientGone;
        return Err(e);
    }
    loop {
        match http.read_response_body().await {
            Ok(Some(chunk)) => {
                if let Err(e) = session.write_response_body(chunk, false).await {
                    // Client went away: close upstream so generation (and billing) stops.
                    http.shutdown().await;
                    ex.outcome = Outcome::ClientGone;
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                http.shutdown().await;
                upstream_body_failed(ex, &e);
                // The header is out; dropping the connection is the only honest signal left.
                return Err(e);
            }
        }
    }
    session.write_response_body(Bytes::new(), true).await?;
    release(ex, http, &peer).await;
    Ok(())
}

/// The upstream failed while sending its reply's body.
pub(super) fn upstream_body_failed(ex: &mut Exchange, e: &pingora::Error) {
    ex.gw.metrics.fault(Fault::UpstreamBody);
    ex.outcome = Outcome::UpstreamError;
    let route = ex.route().map_or("-", |r| r.name.as_str());
    tracing::warn!(request_id = %ex.request_id, route, error = %e, "upstream failed mid-response");
}
