//! Sending a judged request upstream: the original bytes, over a pooled connection (one retry on a
//! fresh one when a pooled connection turns out closed), up to the upstream's response header.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use pingora::upstreams::peer::HttpPeer;
use std::time::Instant;

use super::exchange::{Exchange, Flow, Outcome};
use super::gateway::Gateway;
use super::upstream::Upstream;
use crate::metrics::Fault;
use crate::wire::ErrorKind;

/// An upstream's answer, up to its response header; the body is still to be read from `http`.
pub struct UpstreamReply {
    pub http: HttpSession,
    pub peer: HttpPeer,
    pub header: ResponseHeader,
}

/// Bodies up to this size are copied behind the header and sent with it; larger ones are sent as
/// they are, where one more segment costs little next to the copy.
const ONE_WRITE_MAX: usize = 64 * 1024;

/// 1xx responses skipped before an upstream's reply before it is treated as broken.
const MAX_INFORMATIONAL: usize = 8;

/// Sends the request (its header as the client sent it, and `body`) to the route's upstream and
/// reads the response header. `guard_output`: the reply will be judged, so it is asked for
/// uncompressed. `Answered` when the upstream failed and the client got a 502 or 504.
pub async fn send(
    ex: &mut Exchange,
    session: &mut Session,
    body: &Bytes,
    guard_output: bool,
) -> pingora::Result<Flow<UpstreamReply>> {
    let Some(route) = ex.route().cloned() else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "forwarding a request with no route",
        ));
    };
    let up = &route.upstream;
    let header = || upstream_header(session, up, guard_output, body.len());
    match talk(&ex.gw, up, header, body).await {
        Ok(reply) => Ok(Flow::Continue(reply)),
        Err(Failure::Header(e)) => Err(e),
        Err(Failure::Upstream(fault, e)) => failed(ex, session, up, fault, &e).await,
    }
}

/// Why the upstream gave no reply header.
pub enum Failure {
    /// The request header could not be built for the upstream.
    Header(Box<pingora::Error>),
    /// The upstream could not be reached or failed.
    Upstream(Fault, Box<pingora::Error>),
}

/// The upstream side of [`send`]: sends the request with the header `header` builds (once, or
/// twice for a retry) and reads up to the reply's header. It touches no client state, so it can
/// run beside the input verdict (`input_mode = "parallel"`).
pub async fn talk(
    gw: &Gateway,
    up: &Upstream,
    header: impl Fn() -> pingora::Result<Box<RequestHeader>>,
    body: &Bytes,
) -> Result<UpstreamReply, Failure> {
    let peer = match up.peer().await {
        Ok(p) => p,
        Err(e) => {
            let e = pingora::Error::explain(pingora::ErrorType::ConnectNoRoute, e);
            return Err(Failure::Upstream(Fault::UpstreamDns, e));
        }
    };
    let sent = Instant::now();
    let mut first = Some(header().map_err(Failure::Header)?);
    let mut attempt = 0;
    let http = loop {
        attempt += 1;
        let (mut http, reused) = match gw.connections.get(&peer).await {
            Ok(x) => x,
            Err(e) => return Err(Failure::Upstream(Fault::UpstreamConnect, e)),
        };
        if !reused {
            gw.metrics
                .upstream_connects
                .with_label_values(&[&up.name])
                .inc();
        }
        // Built again only for a retry, which is rare: one copy of the client's header per request.
        let req = match first.take() {
            Some(r) => r,
            None => header().map_err(Failure::Header)?,
        };
        if attempt == 1 {
            // Let every other request that is ready reach this point first, so the upstream
            // writes of one scheduler pass go out together and the upstream (often on the same
            // cores) reads them in one wake-up instead of being woken, and switched to, per
            // request: measured, this halves the context switches per request behind a
            // rules-bound route.
            tokio::task::yield_now().await;
        }
        match exchange_once(&mut http, req, body).await {
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
                return Err(Failure::Upstream(Fault::UpstreamIo, e));
            }
        }
    };
    gw.metrics
        .upstream_latency
        .with_label_values(&[&up.name])
        .observe(sent.elapsed().as_secs_f64());
    match http.response_header().cloned() {
        Some(header) => Ok(UpstreamReply { http, peer, header }),
        None => {
            let e = pingora::Error::explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "no response header",
            );
            Err(Failure::Upstream(Fault::UpstreamIo, e))
        }
    }
}

/// The client's request header as the upstream gets it.
pub fn upstream_header(
    session: &Session,
    up: &Upstream,
    guard_output: bool,
    body_len: usize,
) -> pingora::Result<Box<RequestHeader>> {
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

/// Writes the request and reads up to the reply's header.
async fn exchange_once(
    http: &mut HttpSession,
    req: Box<RequestHeader>,
    body: &Bytes,
) -> pingora::Result<()> {
    match http {
        // Header and body in one write: one segment, one wake-up of the upstream.
        HttpSession::H1(h1) if body.len() <= ONE_WRITE_MAX => {
            h1.write_request_header_with_body(req, body).await?;
        }
        _ => {
            http.write_request_header(req).await?;
            http.write_request_body(body.clone(), true).await?;
        }
    }
    http.finish_request_body().await?;
    http.read_response_header().await?;
    // 100 Continue and 103 Early Hints may come before the response (RFC 9110 15.2); they are not
    // relayed, and the reply's header is the next one. Bounded, so an upstream cannot hold the
    // request with an endless run of them.
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

/// The upstream could not be reached or failed before its reply: a 504 when it timed out, a 502
/// otherwise.
pub async fn failed<T>(
    ex: &mut Exchange,
    session: &mut Session,
    up: &Upstream,
    fault: Fault,
    e: &pingora::Error,
) -> pingora::Result<Flow<T>> {
    ex.gw.metrics.fault(fault);
    ex.outcome = Outcome::UpstreamError;
    let route = ex.route().map_or("-", |r| r.name.as_str());
    tracing::warn!(request_id = %ex.request_id, route, upstream = %up.name, error = %e, "upstream request failed");
    let timeout = matches!(
        e.etype(),
        pingora::ErrorType::ConnectTimedout
            | pingora::ErrorType::ReadTimedout
            | pingora::ErrorType::WriteTimedout
    );
    let (kind, msg) = if timeout {
        (
            ErrorKind::GatewayTimeout,
            format!("upstream {} timed out", up.name),
        )
    } else {
        (
            ErrorKind::BadGateway,
            format!("upstream {} is unreachable or failed", up.name),
        )
    };
    ex.refuse(session, kind, &msg, false).await?;
    Ok(Flow::Answered)
}
