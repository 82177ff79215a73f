//! The gateway's shared state, built once from the config: routes, upstreams, the policy registry,
//! the classifier cascade, the auditor and the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use super::routing::Route;
use super::routing::{Routes, Unmatched};
use super::upstream::Upstream;
use crate::audit::Auditor;
use crate::classify::backends::{build_cascade, BuildContext, ModelLoad};
use crate::classify::{Cascade, Classifier};
use crate::config::{Config, UnmatchedAction};
use crate::metrics::Metrics;
use crate::policy::Registry;
use crate::urlpath::{Endpoint, Pattern};
use crate::wire::batch::Batch;
use crate::wire::Api;

pub struct Gateway {
    pub config: Config,
    pub routes: Routes,
    pub unmatched: Unmatched,
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
    pub background: super::queue::Queue,
    /// Traces over OTLP (`[telemetry]`); off unless configured.
    pub telemetry: crate::telemetry::Telemetry,
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
        let mut routes = Routes::default();
        for r in &config.routes {
            let batch = Batch::from_name(&r.api);
            let api = batch
                .map(Batch::api)
                .or_else(|| Api::from_name(&r.api))
                .ok_or_else(|| anyhow::anyhow!("route {}: unknown api {}", r.name, r.api))?;
            let upstream = upstreams.get(&r.upstream).cloned().ok_or_else(|| {
                anyhow::anyhow!("route {}: unknown upstream {}", r.name, r.upstream)
            })?;
            let pattern = Pattern::parse(&r.path)
                .map_err(|e| anyhow::anyhow!("route {}: path {}: {e}", r.name, r.path))?;
            routes.insert(
                pattern,
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
                    batch,
                    refusal: r.refusal.clone(),
                }),
            );
        }
        let unmatched = Unmatched {
            upstream: config
                .unmatched
                .upstream
                .as_ref()
                .and_then(|u| upstreams.get(u).cloned()),
            action: config.unmatched.action,
            allow: config
                .unmatched
                .allow_list()
                .into_iter()
                .map(Endpoint::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("unmatched.allow: {e}"))?,
        };
        if unmatched.action == UnmatchedAction::Passthrough {
            tracing::warn!(
                "unmatched.action = \"passthrough\": every endpoint no route guards goes upstream unjudged"
            );
        }
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
            config.profiles_file(),
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
        let background = super::queue::Queue::new(&config.background, metrics.clone());
        let telemetry = crate::telemetry::Telemetry::new(&config.telemetry, &metrics)?;
        Ok(Gateway {
            config,
            routes,
            unmatched,
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
            telemetry,
        })
    }
}
