//! The traffic listener's front door: a pingora-core `HttpServerApp` that reads each request
//! header, asks `routing` who answers it, serves the guarded routes, the moderation endpoints and
//! its own refusals itself, and hands only pass-through requests to pingora-proxy.
//!
//! A guarded exchange runs its own phases (`input`, `forward`, `reply` over one `Exchange`), so it
//! needs none of pingora-proxy's phases, HTTP cache state or module contexts;
//! building those for every request was a measurable part of the allow path's CPU (see
//! docs/BENCHMARKS.md). The header is read by pingora-proxy's own `handle_new_request` (patched
//! public), so both kinds of request get the same shutdown handling, 400 for a malformed header
//! and CONNECT refusal.

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::exchange::{Exchange, Outcome};
use super::gateway::Gateway;
use super::passthrough::Passthrough;
use super::routing::{self, Target};
use super::{input, moderation};
use crate::wire::ErrorKind;

pub struct GuardApp {
    gw: Arc<Gateway>,
    proxy: Arc<HttpProxy<Passthrough>>,
}

impl GuardApp {
    pub fn new(gw: Arc<Gateway>, proxy: HttpProxy<Passthrough>) -> GuardApp {
        GuardApp {
            gw,
            proxy: Arc::new(proxy),
        }
    }

    /// Serves a request on a guarded route, a moderation endpoint, or refuses an unrouted path.
    async fn serve(
        &self,
        mut session: Box<ServerSession>,
        target: Target,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if *shutdown.borrow() || self.gw.draining.load(Ordering::Relaxed) {
            // Upgrade or shutdown under way: finish this request, then let the client reconnect.
            session.set_keepalive(None);
        }
        let mut ex = Exchange::new(&self.gw);
        ex.trace(session.req_header_mut());
        let res = self.dispatch(&mut session, target, &mut ex).await;
        ex.finish(
            session.response_written().map(|r| r.status.as_u16()),
            res.as_ref().err().map(|e| e.as_ref()),
        );
        match res {
            Ok(()) => {
                let settings = HttpPersistentSettings::for_session(&session);
                session
                    .finish()
                    .await
                    .ok()
                    .flatten()
                    .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
            }
            Err(e) => {
                // Nothing written yet (an error before the reply started): say so in the API's
                // shape. Once the header is out, dropping the connection is the only signal left.
                // A `100 Continue` counts as nothing written: the client still waits for a reply.
                let replied = session
                    .response_written()
                    .is_some_and(|h| !h.status.is_informational());
                if !replied {
                    if let Some((kind, msg)) = unanswered(&e) {
                        let _ = ex.refuse(&mut session, kind, msg, true).await;
                    }
                }
                session.shutdown().await;
                None
            }
        }
    }

    async fn dispatch(
        &self,
        session: &mut ServerSession,
        target: Target,
        ex: &mut Exchange,
    ) -> pingora::Result<()> {
        match target {
            Target::Moderation(path) => moderation::handle(ex, &path, session).await,
            Target::Route(route) => {
                ex.for_route(route);
                input::serve(ex, session).await
            }
            Target::Refused(why) => {
                ex.answer_as(routing::shape_of(session.req_header()));
                ex.reject(why.reason());
                if why.kind() == ErrorKind::NotFound {
                    ex.outcome = Outcome::NotFound;
                }
                let msg = why.message(session.req_header());
                ex.refuse(session, why.kind(), &msg, true).await
            }
            Target::Passthrough => Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "a pass-through request reached the guarded path",
            )),
        }
    }
}

/// The refusal for an error that ended a request before any reply was written, or `None` when
/// the client is gone and nothing can be said (pingora-proxy's `fail_to_proxy` draws the same
/// line).
fn unanswered(e: &pingora::Error) -> Option<(ErrorKind, &'static str)> {
    use pingora::{ErrorSource, ErrorType};
    match (e.esource(), e.etype()) {
        (ErrorSource::Downstream, ErrorType::WriteError)
        | (ErrorSource::Downstream, ErrorType::ReadError)
        | (ErrorSource::Downstream, ErrorType::ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some((
            ErrorKind::InvalidRequest { param: None },
            "the request could not be read",
        )),
        (ErrorSource::Upstream, _) => Some((
            ErrorKind::BadGateway,
            "the upstream failed before it answered",
        )),
        _ => Some((
            ErrorKind::Internal,
            "guardgate failed to handle the request",
        )),
    }
}

#[async_trait]
impl HttpServerApp for GuardApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let prev_user_ctx = session.take_connection_user_context();
        let session = self.proxy.handle_new_request(Box::new(session)).await?;
        let gw = &self.gw;
        let is_moderation = |path: &str| moderation::is_endpoint(gw, path);
        match routing::target(
            &gw.routes,
            &gw.unmatched,
            is_moderation,
            session.req_header(),
        ) {
            Target::Passthrough => {
                // Boxed: pingora-proxy's request future is several kilobytes, and inline it would
                // make every guarded request's future (allocated and moved per request) as large.
                Box::pin(
                    self.proxy
                        .process_read_request(session, prev_user_ctx, shutdown),
                )
                .await
            }
            target => self.serve(session, target, shutdown).await,
        }
    }

    async fn http_cleanup(&self) {
        // Wakes keep-alive connections waiting for their next header (in the proxy's read).
        self.proxy.http_cleanup().await;
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.proxy.h2_options()
    }
}

#[cfg(test)]
mod tests {
    use super::unanswered;
    use crate::wire::ErrorKind;
    use pingora::{Error, ErrorType};

    #[test]
    fn errors_before_a_reply_get_one_unless_the_client_is_gone() {
        let mut gone = Error::new(ErrorType::WriteError);
        gone.as_down();
        assert_eq!(unanswered(&gone), None);
        let mut up = Error::new(ErrorType::ReadError);
        up.as_up();
        assert_eq!(unanswered(&up).map(|x| x.0), Some(ErrorKind::BadGateway));
        let header = Error::new(ErrorType::InvalidHTTPHeader);
        assert_eq!(unanswered(&header).map(|x| x.0), Some(ErrorKind::Internal));
    }
}
