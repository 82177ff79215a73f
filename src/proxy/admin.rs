//! The admin listener: health, readiness, metrics, the live policies and manual reload.
//! Separate from the traffic listener and bound to loopback by default; when a token is configured
//! every endpoint but the probes requires `Authorization: Bearer <token>`.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

use super::gateway::Gateway;

pub struct AdminApp {
    pub gw: Arc<Gateway>,
    /// The review page's replay, started from the page.
    pub replays: crate::review::web::Jobs,
}

impl AdminApp {
    pub fn new(gw: Arc<Gateway>) -> AdminApp {
        AdminApp {
            gw,
            replays: Default::default(),
        }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: u16, v: serde_json::Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    )
}

/// Constant-time comparison so the token cannot be guessed byte by byte from response timing.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(want) = &self.gw.admin_token else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| token_matches(t.as_bytes(), want.as_bytes()))
    }

    /// The review page (`/review...`), which checks the token itself: a browser signs in with a
    /// form and a cookie rather than a bearer header.
    async fn review(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        if session.req_header().method == http::Method::POST {
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) if body.len() + chunk.len() <= crate::review::web::MAX_BODY => {
                        body.extend_from_slice(&chunk)
                    }
                    Ok(Some(_)) => return reply(413, "text/plain", b"form too large\n".to_vec()),
                    Ok(None) => break,
                    Err(_) => return reply(400, "text/plain", b"cannot read the form\n".to_vec()),
                }
            }
        }
        let h = &session.req_header().headers;
        let header = |name: http::header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
        let req = crate::review::web::Request {
            method: session.req_header().method.as_str(),
            path: session.req_header().uri.path(),
            query: session.req_header().uri.query().unwrap_or(""),
            body: &body,
            bearer_ok: self.authorized(session),
            cookie: header(http::header::COOKIE),
            host: header(http::header::HOST),
            origin: header(http::header::ORIGIN),
            fetch_site: h.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        };
        let ctx = crate::review::web::Ctx {
            review: self.gw.auditor.review(),
            registry: &self.gw.registry,
            cascade: &self.gw.cascade,
            jobs: &self.replays,
            token: self.gw.admin_token.as_deref(),
        };
        let r = crate::review::web::handle(&ctx, &req).await;
        let mut b = Response::builder()
            .status(r.status)
            .header("content-type", r.content_type)
            .header("content-length", r.body.len())
            // Captured text is on these pages: never cached, never framed by another site.
            .header("cache-control", "no-store")
            .header("x-frame-options", "DENY")
            .header("referrer-policy", "no-referrer");
        for (k, v) in r.headers {
            b = b.header(k, v);
        }
        b.body(r.body).unwrap_or_else(|_| Response::new(Vec::new()))
    }

    fn policies(&self) -> serde_json::Value {
        // The reload status first: it is published after its snapshot went live, so a report
        // read here never names versions newer than the snapshot read next.
        let (last_error, gate_report) = self.gw.registry.reload_status();
        let snap = self.gw.registry.snapshot();
        let policies: Vec<_> = snap
            .policies
            .values()
            .map(|p| {
                json!({
                    "id": p.id,
                    "title": p.title,
                    "version": p.version,
                    "hash": p.content_hash,
                    "path": p.path.display().to_string(),
                    "directions": p.directions,
                    "action": p.action,
                    "severity_threshold": p.severity_threshold,
                    "codes": p.codes,
                    "rules": p.rules.rules.len(),
                })
            })
            .collect();
        let routes: serde_json::Map<String, serde_json::Value> = snap
            .routes
            .iter()
            .map(|(name, b)| {
                let ids = |v: &[crate::policy::Bound]| -> Vec<serde_json::Value> {
                    v.iter()
                        .map(|x| json!({"id": x.policy.id, "action": x.action}))
                        .collect()
                };
                (
                    name.clone(),
                    json!({"input": ids(&b.input), "output": ids(&b.output), "redact": ids(&b.redact)}),
                )
            })
            .collect();
        json!({
            "generation": snap.generation,
            "loaded_at": humantime::format_rfc3339_millis(snap.loaded_at).to_string(),
            "policies": policies,
            "routes": routes,
            "profiles": snap.profiles.as_deref().map(profiles_json),
            "last_reload_error": last_error,
            "last_gate_report": gate_report,
        })
    }
}

/// The profiles as `/admin/policies` shows them. A key matcher shows how many keys it holds, not
/// their hashes: an unsalted SHA-256 (or a prefix of one) lets whoever reads it test guessed keys
/// offline, and the admin API's readers need not be trusted with that.
fn profiles_json(p: &crate::policy::profile::Profiles) -> serde_json::Value {
    use crate::policy::profile::Selector;
    let bound = |v: &[crate::policy::Bound]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|x| json!({"id": x.policy.id, "version": x.policy.version, "action": x.action}))
            .collect()
    };
    let list: Vec<_> = p
        .list
        .iter()
        .map(|x| {
            json!({
                "name": &*x.name,
                "default": x.default,
                "fail_mode": x.fail_mode,
                "input": bound(&x.binding.input),
                "output": bound(&x.binding.output),
            })
        })
        .collect();
    let matchers: Vec<_> = p
        .matchers
        .iter()
        .map(|m| {
            let profile = m.profile.map(|i| &*p.list[i].name);
            match &m.selector {
                Selector::Keys(set) => json!({"api_keys": set.len(), "profile": profile}),
                Selector::Header { name, value } => {
                    json!({"header": name, "value": value, "profile": profile})
                }
                Selector::Model { pattern, prefix } => {
                    let model = if *prefix {
                        format!("{pattern}*")
                    } else {
                        pattern.clone()
                    };
                    json!({"model": model, "profile": profile})
                }
                Selector::Route(r) => json!({"route": r, "profile": profile}),
            }
        })
        .collect();
    json!({
        "file": p.path.display().to_string(),
        "hash": p.content_hash,
        "unknown_profile": p.unknown,
        "trusted_headers": p.trusted_headers,
        "profiles": list,
        "matchers": matchers,
    })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return reply(200, "text/plain", b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                return if self.gw.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    reply(503, "text/plain", b"shutting down\n".to_vec())
                } else if !self.gw.warmed.load(std::sync::atomic::Ordering::Relaxed) {
                    // Until the model has seen each bound policy once, the first requests would
                    // each pay a cold prefill (seconds on CPU): keep traffic away until then.
                    reply(503, "text/plain", b"warming up the model\n".to_vec())
                } else {
                    reply(200, "text/plain", b"ready\n".to_vec())
                };
            }
            _ => {}
        }
        if path == "/review" || path.starts_with("/review/") {
            return self.review(session).await;
        }
        if !self.authorized(session) {
            return json_reply(401, json!({"error": "missing or wrong admin bearer token"}));
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                reply(200, "text/plain; version=0.0.4", self.gw.metrics.render())
            }
            ("GET", "/admin/policies") => json_reply(200, self.policies()),
            ("GET", "/admin/shadow") => {
                let snap = self.gw.registry.snapshot();
                let live: Vec<_> = snap
                    .candidates
                    .values()
                    .map(|c| json!({"id": c.id, "candidate_version": c.version, "hash": c.content_hash, "path": c.path.display().to_string()}))
                    .collect();
                json_reply(
                    200,
                    json!({"candidates": live, "comparisons": self.gw.shadow.report()}),
                )
            }
            ("POST", "/admin/reload") => match self.gw.registry.reload("admin").await {
                Ok(changed) => {
                    let mut body = json!({"reloaded": changed.is_some(), "generation": self.gw.registry.snapshot().generation});
                    // Versions the reload gate refused while the rest went live.
                    if let Some(e) = self.gw.registry.last_error() {
                        body["errors"] = json!(e.errors);
                    }
                    json_reply(200, body)
                }
                Err(errors) => json_reply(
                    422,
                    json!({"reloaded": false, "generation": self.gw.registry.snapshot().generation, "errors": errors}),
                ),
            },
            _ => json_reply(
                404,
                json!({"error": format!("no admin endpoint {method} {path}")}),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_compare() {
        assert!(super::token_matches(b"abc", b"abc"));
        assert!(!super::token_matches(b"abd", b"abc"));
        assert!(!super::token_matches(b"ab", b"abc"));
    }
}
