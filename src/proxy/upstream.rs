//! Upstreams: where guarded and passed-through requests go, and how to build the outgoing request
//! header so that the client's own headers (credentials included) pass unchanged.

use arc_swap::ArcSwapOption;
use http::HeaderName;
use pingora::connectors::http::{v1 as h1_connector, Connector};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1;
use pingora::upstreams::peer::{HttpPeer, Peer, ALPN};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idle;
use crate::config::{secret_from_env, UpstreamConfig, UpstreamUrl};

/// How long a DNS answer is reused before the next request looks the name up again.
const DNS_TTL: Duration = Duration::from_secs(30);

pub struct Upstream {
    pub name: String,
    pub url: UpstreamUrl,
    pub api_key: Option<String>,
    pub auth_header: String,
    /// Peer settings with a placeholder address; `peer()` fills in the resolved one.
    template: HttpPeer,
    resolved: ArcSwapOption<(Instant, HttpPeer)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Headers that describe one hop, not the message: never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

impl Upstream {
    pub fn from_config(c: &UpstreamConfig) -> Result<Upstream, String> {
        let url = UpstreamUrl::parse(&c.base_url)?;
        // Names are resolved when first used and every DNS_TTL after, so a gateway can start while
        // DNS is unavailable and follows address changes; IP literals never need a lookup.
        let literal = url.host.parse::<IpAddr>().ok();
        let addr = SocketAddr::new(literal.unwrap_or(IpAddr::from([0, 0, 0, 0])), url.port);
        let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
        peer.options.connection_timeout = Some(Duration::from_millis(c.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(c.read_timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(c.read_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.verify_cert = c.verify_tls;
        peer.options.verify_hostname = c.verify_tls;
        peer.options.alpn = if url.tls && c.http2 {
            ALPN::H2H1
        } else {
            ALPN::H1
        };
        let api_key = match &c.api_key_env {
            Some(var) => Some(secret_from_env(var).ok_or_else(|| {
                format!(
                    "upstream {}: environment variable {var} is not set or empty",
                    c.name
                )
            })?),
            None => None,
        };
        let resolved = ArcSwapOption::empty();
        if literal.is_some() {
            resolved.store(Some(Arc::new((Instant::now(), peer.clone()))));
        }
        Ok(Upstream {
            name: c.name.clone(),
            url,
            api_key,
            auth_header: c.auth_header.clone(),
            template: peer,
            resolved,
        })
    }

    fn is_literal(&self) -> bool {
        self.url.host.parse::<IpAddr>().is_ok()
    }

    /// The peer to connect to, with a fresh enough address.
    pub async fn peer(&self) -> Result<HttpPeer, String> {
        if let Some(r) = self.resolved.load_full() {
            if self.is_literal() || r.0.elapsed() < DNS_TTL {
                return Ok(r.1.clone());
            }
        }
        let found = tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.url.host))
            .and_then(|mut it| {
                it.next()
                    .ok_or_else(|| format!("{} resolves to no address", self.url.host))
            });
        match found {
            Ok(addr) => {
                let mut p = self.template.clone();
                p._address = pingora::protocols::l4::socket::SocketAddr::Inet(addr);
                self.resolved
                    .store(Some(Arc::new((Instant::now(), p.clone()))));
                Ok(p)
            }
            // A failed lookup keeps using the last good address rather than failing traffic.
            Err(e) => match self.resolved.load_full() {
                Some(r) => {
                    tracing::warn!(upstream = %self.name, error = %e, "DNS refresh failed; using the last address");
                    Ok(r.1.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Rewrites `req` (a copy of the client's header) for this upstream: path prefix, Host,
    /// hop-by-hop headers removed, the gateway's key added only if the client sent no credential.
    pub fn prepare_request(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        // An absolute-form target (`POST http://gateway/v1/...`, from a client that treats the
        // gateway as a forward proxy) is sent in origin-form too: pingora keeps its bytes for the
        // wire, where next to the rewritten Host it would name the gateway, and servers route by
        // the target (RFC 9112 3.2.2). The Uri holds only its (validated) path and query.
        let origin_form = matches!(req.raw_path().first(), Some(b'/' | b'*'));
        if !self.url.base_path.is_empty() || !origin_form {
            let pq = req
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let uri: http::Uri = format!("{}{}", self.url.base_path, pq)
                .parse()
                .map_err(|e| {
                    pingora::Error::because(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "rewrite path",
                        e,
                    )
                })?;
            req.set_uri(uri);
        }
        req.insert_header(http::header::HOST, self.url.authority())?;
        for h in &HOP_BY_HOP {
            req.remove_header(h);
        }
        if let Some(key) = &self.api_key {
            let has_credential = ["authorization", "x-api-key", "api-key"]
                .iter()
                .any(|h| req.headers.contains_key(*h));
            if !has_credential {
                let value = if self.auth_header == "authorization" {
                    format!("Bearer {key}")
                } else {
                    key.clone()
                };
                req.insert_header(self.auth_header.clone(), value)?;
            }
        }
        Ok(())
    }
}

/// Upstream connections, pooled. HTTP/1-only peers (plain HTTP, or TLS without `http2`) keep
/// their idle connections on per-thread lists (`super::idle`) when each worker thread runs its own
/// runtime (pingora's default, `server.work_stealing = false`), and only a miss builds pingora's
/// connect future: that future holds the whole TCP connect and TLS handshake (~9 KB), and inline
/// it made every request's state that large, to be allocated and copied on every request. With
/// work stealing, requests move between threads and per-thread lists would keep missing, so
/// pingora's shared pool is used; peers that may speak HTTP/2 use it too, as it multiplexes.
pub struct Connections {
    any: Connector,
    h1: h1_connector::Connector,
    transport: TransportConnector,
    /// Keeps this gateway's idle connections apart from another's in the same process.
    pool_id: u64,
}

impl Default for Connections {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Connections {
            any: Connector::new(None),
            h1: h1_connector::Connector::new(None),
            transport: TransportConnector::new(None),
            pool_id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Which pool a peer's connections go to on this thread.
enum Pool {
    PerThread,
    SharedH1,
    Any,
}

fn pool_for(peer: &HttpPeer) -> Pool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if !h1_only(peer) {
        return Pool::Any;
    }
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => Pool::PerThread,
        _ => Pool::SharedH1,
    }
}

impl Connections {
    /// A session to `peer` and whether it is a reused connection.
    pub async fn get(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, bool)> {
        match pool_for(peer) {
            Pool::PerThread => {
                if let Some(stream) = idle::take(self.pool_id, peer.reuse_hash(), peer.address()) {
                    let h1 = v1::client::HttpSession::new_with_options(stream, peer);
                    return Ok((HttpSession::H1(h1), true));
                }
                let stream = Box::pin(self.transport.new_stream(peer)).await?;
                let h1 = v1::client::HttpSession::new_with_options(stream, peer);
                Ok((HttpSession::H1(h1), false))
            }
            Pool::SharedH1 => {
                if let Some(h1) = self.h1.reused_http_session(peer).await {
                    return Ok((HttpSession::H1(h1), true));
                }
                let (h1, reused) = Box::pin(self.h1.get_http_session(peer)).await?;
                Ok((HttpSession::H1(h1), reused))
            }
            Pool::Any => Box::pin(self.any.get_http_session(peer)).await,
        }
    }

    /// Returns a session whose exchange is complete to the pool it came from.
    pub async fn release(&self, http: HttpSession, peer: &HttpPeer) {
        let idle = peer.options.idle_timeout;
        match (pool_for(peer), http) {
            (Pool::PerThread, HttpSession::H1(mut h1)) => {
                h1.respect_keepalive();
                if let Some(stream) = h1.reuse().await {
                    let timeout = idle.unwrap_or(DEFAULT_IDLE);
                    idle::put(
                        self.pool_id,
                        peer.reuse_hash(),
                        peer.address(),
                        stream,
                        timeout,
                    );
                }
            }
            (Pool::SharedH1, HttpSession::H1(h1)) => {
                self.h1.release_http_session(h1, peer, idle).await
            }
            (_, other) => self.any.release_http_session(other, peer, idle).await,
        }
    }
}

/// Idle timeout of a pooled connection whose peer sets none.
const DEFAULT_IDLE: Duration = Duration::from_secs(60);

fn h1_only(peer: &HttpPeer) -> bool {
    peer.get_peer_options()
        .is_none_or(|o| o.alpn.get_max_http_version() == 1)
}
