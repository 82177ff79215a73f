//! The pingora `ProxyHttp` implementation: routing, and the hooks pingora calls for passthrough
//! traffic. Guarded routes are handled entirely in `request_filter` by `exchange::guarded`,
//! because pingora 0.9 connects upstream before a request body filter could see the whole body.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::exchange;
use super::gateway::Gateway;
use super::moderation;
use super::respond;
use crate::wire::{Api, ErrorKind};

pub struct GuardProxy {
    pub gw: Arc<Gateway>,
}

pub struct Ctx {
    pub request_id: String,
    pub route: Option<String>,
    pub outcome: &'static str,
    /// pingora makes a context per request and drops it when the request ends, however it ends.
    _in_flight: InFlight,
}

/// Counts a request as in flight for as long as it lives, so a graceful shutdown can wait for it.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

#[async_trait]
impl ProxyHttp for GuardProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            route: None,
            outcome: "unknown",
            _in_flight: InFlight::new(&self.gw.in_flight),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.gw.draining.load(std::sync::atomic::Ordering::Relaxed) {
            // Upgrade or shutdown under way: finish this request, then let the client reconnect.
            session.set_keepalive(None);
        }
        let path = session.req_header().uri.path().to_string();
        if moderation::handle(&self.gw, &path, session, ctx).await? {
            return Ok(true);
        }
        if let Some(route) = self.gw.route_for(&path).cloned() {
            ctx.route = Some(route.name.clone());
            exchange::guarded(&self.gw, &route, session, ctx).await?;
            return Ok(true);
        }
        if self.gw.passthrough.is_some() {
            ctx.outcome = "passthrough";
            return Ok(false);
        }
        ctx.outcome = "not_found";
        self.gw
            .metrics
            .bad_requests
            .with_label_values(&["not_found"])
            .inc();
        let msg = format!("guardgate routes no endpoint at {path}");
        respond::error(
            session,
            Api::OpenAiChat,
            ErrorKind::NotFound,
            &msg,
            &ctx.request_id,
            true,
        )
        .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        match &self.gw.passthrough {
            Some(up) => up
                .peer()
                .await
                .map(Box::new)
                .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e)),
            None => Err(Error::explain(
                ErrorType::InternalError,
                "no passthrough upstream configured",
            )),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(up) = &self.gw.passthrough {
            up.prepare_request(req)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.route.as_deref().unwrap_or("-");
        let outcome = if e.is_some() && ctx.outcome == "passthrough" {
            "passthrough_error"
        } else {
            ctx.outcome
        };
        self.gw
            .metrics
            .requests
            .with_label_values(&[route, outcome])
            .inc();
        if let Some(e) = e {
            self.gw.metrics.errors.with_label_values(&["proxy"]).inc();
            tracing::warn!(request_id = %ctx.request_id, route, error = %e, "request ended with an error");
        }
        tracing::debug!(
            request_id = %ctx.request_id,
            route,
            outcome,
            status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0),
            "request done"
        );
    }
}
