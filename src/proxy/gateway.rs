//! The gateway's shared state, built once from the config: routes, upstreams, the policy registry,
//! the classifier cascade, the auditor and the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::upstream::Upstream;
use crate::audit::Auditor;
use crate::classify::cascade::Stage;
use crate::classify::model::ModelClassifier;
use crate::classify::remote::{RemoteModel, RemoteSettings};
use crate::classify::rules::RulesClassifier;
use crate::classify::{Cascade, Classifier};
use crate::config::{BackendConfig, BackendKind};
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

/// Every model backend, whatever hosts it, gets the metrics and (when configured) the verdict cache.
fn model_classifier<M: crate::classify::model::ChatModel + 'static>(
    c: ModelClassifier<M>,
    cache: Option<Arc<crate::classify::cache::VerdictCache>>,
    metrics: &Arc<Metrics>,
) -> Arc<dyn Classifier> {
    let c = c.with_metrics(metrics.clone());
    Arc::new(match cache {
        Some(cache) => c.with_cache(cache),
        None => c,
    })
}

/// Whether building the gateway loads model weights (`serve`) or only checks that they could be
/// loaded (`check-config`, which must stay fast and side-effect free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLoad {
    Load,
    CheckOnly,
}

/// Builds one configured model backend as a cascade stage.
pub fn build_backend(
    b: &BackendConfig,
    base_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    load: ModelLoad,
) -> anyhow::Result<Stage> {
    // Backend names live for the whole process (audit records and metrics borrow them).
    let name: &'static str =
        Box::leak(format!("{}:{}", kind_name(b.kind), b.name).into_boxed_str());
    let cache = (b.cache_entries > 0).then(|| {
        Arc::new(crate::classify::cache::VerdictCache::new(
            b.cache_entries,
            Duration::from_secs(b.cache_ttl_s.max(1)),
        ))
    });
    let classifier: Arc<dyn Classifier> = match b.kind {
        BackendKind::Remote => {
            let api_key = b.api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
            let model = RemoteModel::new(RemoteSettings {
                base_url: b.base_url.clone(),
                model: b.model.clone(),
                api_key,
                attempt_timeout: Duration::from_millis(b.timeout_ms),
                max_retries: b.max_retries,
                max_concurrency: b.max_concurrency,
                max_tokens: b.max_tokens,
                breaker_failures: b.breaker_failures,
                breaker_cooldown: Duration::from_millis(b.breaker_cooldown_ms),
            })
            .map_err(anyhow::Error::msg)?;
            model_classifier(
                ModelClassifier::new(name, model, b.family, b.reasoning_effort),
                cache,
                metrics,
            )
        }
        BackendKind::Local => build_local(b, base_dir, metrics, load, name, cache)?,
    };
    Ok(Stage {
        classifier,
        escalate_band: b.escalate_band.map(|[lo, hi]| (lo, hi)),
    })
}

#[cfg(feature = "local-model")]
fn build_local(
    b: &BackendConfig,
    base_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    load: ModelLoad,
    name: &'static str,
    cache: Option<Arc<crate::classify::cache::VerdictCache>>,
) -> anyhow::Result<Arc<dyn Classifier>> {
    use crate::classify::local::{LocalModel, LocalSettings, ModelSource};
    let source = match (&b.model_path, &b.hf_model_id) {
        (Some(p), _) => {
            let p = base_dir.join(p);
            if p.is_dir() {
                ModelSource::Safetensors(p)
            } else {
                ModelSource::Gguf(p)
            }
        }
        (None, Some(id)) => ModelSource::HuggingFace(id.clone()),
        (None, None) => anyhow::bail!("backend {}: no model source", b.name),
    };
    let settings = LocalSettings {
        source,
        dtype: b.dtype,
        weights: b.weights,
        device: b.device.clone(),
        threads: b.threads,
        max_concurrency: b.max_concurrency,
        max_queue: b.max_queue,
        prefix_cache_entries: b.prefix_cache_entries,
        max_tokens: b.max_tokens,
        family: b.family,
    };
    if load == ModelLoad::CheckOnly {
        settings
            .check()
            .map_err(|e| anyhow::anyhow!("backend {}: {e}", b.name))?;
        return Ok(Arc::new(Unloaded(name)));
    }
    let started = std::time::Instant::now();
    let model = LocalModel::load(&settings, name, Some(metrics.clone()))
        .map_err(|e| anyhow::anyhow!("backend {}: {e}", b.name))?;
    tracing::info!(
        backend = name,
        model = settings.model_id(),
        ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let c = ModelClassifier::new(name, model, b.family, b.reasoning_effort)
        .with_violation_threshold(b.violation_threshold);
    Ok(model_classifier(c, cache, metrics))
}

#[cfg(not(feature = "local-model"))]
fn build_local(
    b: &BackendConfig,
    _base_dir: &std::path::Path,
    _metrics: &Arc<Metrics>,
    _load: ModelLoad,
    _name: &'static str,
    _cache: Option<Arc<crate::classify::cache::VerdictCache>>,
) -> anyhow::Result<Arc<dyn Classifier>> {
    anyhow::bail!(
        "backend {}: kind = \"local\" needs a build with the `local-model` feature (it is on by \
         default; this binary was built with --no-default-features)",
        b.name
    )
}

/// Stands in for a model backend that `check-config` verified but did not load.
#[cfg(feature = "local-model")]
struct Unloaded(&'static str);

#[cfg(feature = "local-model")]
#[async_trait::async_trait]
impl Classifier for Unloaded {
    fn name(&self) -> &'static str {
        self.0
    }
    fn supports(&self, _policy: &crate::policy::Policy) -> bool {
        true
    }
    fn allow_is_final(&self) -> bool {
        true
    }
    async fn classify(
        &self,
        _policy: &crate::policy::Policy,
        _content: &crate::classify::Content,
        _deadline: std::time::Instant,
    ) -> Result<crate::classify::Verdict, crate::classify::ClassifyError> {
        Err(crate::classify::ClassifyError::Backend(
            "model not loaded (check-config)".into(),
        ))
    }
}

fn kind_name(k: BackendKind) -> &'static str {
    match k {
        BackendKind::Remote => "remote",
        BackendKind::Local => "local",
    }
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
        let mut stages = vec![Stage::new(Arc::new(RulesClassifier))];
        for b in &config.backends {
            stages.push(build_backend(b, &config.base_dir, &metrics, load)?);
        }
        stages.extend(extra_stages.into_iter().map(Stage::new));
        let cascade = Arc::new(Cascade::new(stages, metrics.clone()));
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
