//! The pingora `ProxyHttp` for requests no route guards that the config lets through (on
//! `unmatched.allow`, or all of them with `unmatched.action = "passthrough"`): they are proxied
//! as they are, with pingora-proxy streaming both bodies. Everything else is
//! answered by `app::GuardApp` before pingora-proxy sees it.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;

use super::exchange::{Exchange, Outcome};
use super::gateway::Gateway;

pub struct Passthrough {
    pub gw: Arc<Gateway>,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = Exchange;

    fn new_ctx(&self) -> Exchange {
        Exchange::new(&self.gw)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Exchange) -> Result<bool> {
        if self.gw.draining.load(std::sync::atomic::Ordering::Relaxed) {
            // Upgrade or shutdown under way: finish this request, then let the client reconnect.
            session.set_keepalive(None);
        }
        ctx.outcome = Outcome::Passthrough;
        ctx.trace(session.req_header_mut());
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Exchange,
    ) -> Result<Box<HttpPeer>> {
        match &self.gw.unmatched.upstream {
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
        _ctx: &mut Exchange,
    ) -> Result<()> {
        if let Some(up) = &self.gw.unmatched.upstream {
            up.prepare_request(req)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Exchange) {
        let status = session.response_written().map(|r| r.status.as_u16());
        ctx.finish(status, e);
    }
}
