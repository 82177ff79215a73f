//! The gateway's shared state, built once from the config: routes, upstreams, the policy registry,
//! the classifier cascade, the auditor and the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::upstream::Upstream;
use crate::audit::Auditor;
use crate::classify::backends::{build_cascade, BuildContext, ModelLoad};
use crate::classify::{Cascade, Classifier};
use crate::config::{Config, FailMode, OutputConfig, UnmatchedAction};
use crate::metrics::Metrics;
use crate::policy::Registry;
use crate::wire::Api;

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path: String,
    pub api: Api,
    pub upstream: Arc<Upstream>,
    pub fail_mode: FailMode,
    pub deadline: Duration,
    pub output: OutputConfig,
    pub non_text_parts: crate::config::NonTextParts,
    pub input_mode: crate::config::InputMode,
}

pub struct Gateway {
    pub config: Config,
    /// Keyed by canonical path (see `canonical_path`).
    pub routes: HashMap<String, Arc<Route>>,
    pub passthrough: Option<Arc<Upstream>>,
    pub registry: Arc<Registry>,
    pub cascade: Arc<Cascade>,
    pub auditor: Arc<Auditor>,
    pub metrics: Arc<Metrics>,
    pub connections: super::upstream::Connections,
    pub admin_token: Option<String>,
    /// Set once shutdown begins, so `/readyz` turns away new traffic while requests drain.
    pub draining: std::sync::atomic::AtomicBool,
    /// Requests being handled on the traffic listener (see `server::wait_for_in_flight`).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Set once the model backends have been warmed with every policy live at start.
    pub warmed: std::sync::atomic::AtomicBool,
    pub shadow: crate::shadow::ShadowStats,
    /// Judgement off the request path: annotate and shadow bindings that need a model.
    pub background: super::exchange::Background,
}

/// The path a route is matched on. Upstream servers commonly treat `/v1//chat/completions/`,
/// `/v1/chat/completions/` or `/v1/%63hat/completions` as the chat endpoint; matching on the raw
/// path would let such spellings skip the guard, so percent-decoding, empty and dot segments and
/// trailing slashes are all normalised away before matching.
pub fn canonical_path(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/")).to_ascii_lowercase()
}

/// Whether `canonical_path(path)` would return `path` unchanged.
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.is_empty()
        || (!path.bytes().any(|b| b == b'%' || b.is_ascii_uppercase())
            && rest
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Gateway {
    /// Builds everything the proxy needs; any error here stops the gateway at start.
    pub fn build(
        config: Config,
        extra_stages: Vec<Arc<dyn Classifier>>,
    ) -> anyhow::Result<Gateway> {
        Self::build_with(config, extra_stages, ModelLoad::Load)
    }

    pub fn build_with(
        config: Config,
        extra_stages: Vec<Arc<dyn Classifier>>,
        load: ModelLoad,
    ) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let mut upstreams = HashMap::new();
        for u in &config.upstreams {
            upstreams.insert(
                u.name.clone(),
                Arc::new(Upstream::from_config(u).map_err(anyhow::Error::msg)?),
            );
        }
        let mut routes = HashMap::new();
        for r in &config.routes {
            let api = Api::from_name(&r.api)
                .ok_or_else(|| anyhow::anyhow!("route {}: unknown api {}", r.name, r.api))?;
            let upstream = upstreams.get(&r.upstream).cloned().ok_or_else(|| {
                anyhow::anyhow!("route {}: unknown upstream {}", r.name, r.upstream)
            })?;
            let key = canonical_path(&r.path);
            if routes.contains_key(&key) {
                anyhow::bail!(
                    "route {}: path {} collides with another route after normalisation",
                    r.name,
                    r.path
                );
            }
            routes.insert(
                key,
                Arc::new(Route {
                    name: r.name.clone(),
                    path: r.path.clone(),
                    api,
                    upstream,
                    fail_mode: r.fail_mode,
                    deadline: Duration::from_millis(r.classifier_deadline_ms),
                    output: r.output.clone(),
                    non_text_parts: r.non_text_parts,
                    input_mode: r.input_mode,
                }),
            );
        }
        let passthrough = match config.unmatched.action {
            UnmatchedAction::Passthrough => config
                .unmatched
                .upstream
                .as_ref()
                .and_then(|u| upstreams.get(u).cloned()),
            UnmatchedAction::Refuse => None,
        };
        let backends: Vec<_> = config.backends.iter().collect();
        let cx = BuildContext {
            base_dir: &config.base_dir,
            metrics: &metrics,
            load,
        };
        let cascade = build_cascade(&backends, &cx, extra_stages)?;
        let gate: Arc<dyn crate::policy::registry::Gate> =
            Arc::new(crate::eval::gate::CaseGate::new(cascade.clone()));
        let registry = Registry::load(
            config.policy_dirs(),
            config.routes.clone(),
            cascade.clone(),
            metrics.clone(),
            Some(gate),
        )
        .map_err(|errs| anyhow::anyhow!("policies are invalid:\n  {}", errs.join("\n  ")))?;
        let auditor = Auditor::new(&config.audit, &config.base_dir, metrics.clone())
            .map_err(|e| anyhow::anyhow!("audit sink: {e}"))?;
        let admin_token = config
            .admin
            .token_env
            .as_deref()
            .and_then(crate::config::secret_from_env);
        let background = super::exchange::Background::new(&config.background, metrics.clone());
        Ok(Gateway {
            config,
            routes,
            passthrough,
            registry: Arc::new(registry),
            cascade,
            auditor: Arc::new(auditor),
            metrics,
            connections: Default::default(),
            admin_token,
            draining: std::sync::atomic::AtomicBool::new(false),
            in_flight: Default::default(),
            warmed: std::sync::atomic::AtomicBool::new(false),
            shadow: Default::default(),
            background,
        })
    }

    pub fn route_for(&self, path: &str) -> Option<&Arc<Route>> {
        if is_canonical(path) {
            // The common spelling: no allocation per request.
            return self.routes.get(path);
        }
        self.routes.get(&canonical_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::{canonical_path, is_canonical};

    #[test]
    fn canonical_spellings_are_recognised_exactly() {
        for p in [
            "/",
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/chat/completions/",
            "//v1/chat",
            "/v1/./chat",
            "/v1/../chat",
            "/v1/%63hat",
            "/V1/chat",
            "/v1/chat/.",
            "/v1/chat/..",
            "v1/chat",
            "",
            "/v1/ch%at",
            "/v1/\u{e9}t\u{e9}",
            "/.hidden/x",
        ] {
            // The shortcut may decline a path that is canonical (`%` that decodes to nothing),
            // never take one that is not.
            if is_canonical(p) {
                assert_eq!(canonical_path(p), p);
            } else {
                assert!(canonical_path(p) != p || p.contains('%'), "{p:?}");
            }
        }
        for p in ["/", "/v1/chat/completions", "/v1/messages", "/v1/responses"] {
            assert!(is_canonical(p), "{p:?}");
        }
    }

    #[test]
    fn path_spellings_collapse() {
        for p in [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "//v1//chat/completions",
            "/v1/./chat/completions",
            "/v1/x/../chat/completions",
            "/v1/%63hat/completions",
            "/V1/Chat/Completions",
        ] {
            assert_eq!(canonical_path(p), "/v1/chat/completions", "{p}");
        }
        assert_eq!(canonical_path("/v1/models"), "/v1/models");
        assert_eq!(canonical_path("/%zz"), "/%zz");
    }
}
