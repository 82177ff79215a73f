//! Prometheus metrics. One `Metrics` per process, registered on its own registry (not the global
//! default) so tests can build several side by side.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Requests by route and outcome (forwarded, blocked, rejected, error, passthrough).
    pub requests: IntCounterVec,
    /// Policy decisions by policy, direction, verdict (violation, allow, error) and action taken.
    pub decisions: IntCounterVec,
    pub classifier_latency: HistogramVec,
    pub reloads: IntCounterVec,
    pub policy_generation: IntGauge,
    /// Errors of the gateway itself, by kind (upstream_connect, upstream_io, classifier, audit_drop, ...).
    pub errors: IntCounterVec,
    /// Client mistakes refused with a 4xx, by reason.
    pub bad_requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    /// Upstream connections opened (not taken from the idle pool), by upstream.
    pub upstream_connects: IntCounterVec,
    /// Verdict cache lookups by backend and result (hit, miss).
    pub verdict_cache: IntCounterVec,
    /// Model calls refused before they ran, by backend and reason (queue_full, deadline): the
    /// route's fail mode then applies.
    pub model_rejections: IntCounterVec,
    /// Model calls waiting for a slot, by backend.
    pub model_queue_depth: prometheus::IntGaugeVec,
    /// Model decisions skipped by a policy's sampling rate, by policy.
    pub sampled_out: IntCounterVec,
    /// Images, audio and files in guarded requests, which no text classifier read, by route.
    pub unclassified_parts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "guardgate_requests_total",
                "Requests handled, by route and outcome",
            ),
            &["route", "outcome"],
        )
        .expect("metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "guardgate_decisions_total",
                "Policy decisions, by policy, direction, verdict and action",
            ),
            &["policy", "direction", "verdict", "action"],
        )
        .expect("metric");
        let classifier_latency = HistogramVec::new(
            HistogramOpts::new(
                "guardgate_classifier_latency_seconds",
                "Time to a verdict, by backend",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0,
            ]),
            &["backend"],
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "guardgate_policy_reloads_total",
                "Policy reloads, by result",
            ),
            &["result"],
        )
        .expect("metric");
        let policy_generation = IntGauge::new(
            "guardgate_policy_generation",
            "Generation of the live policy snapshot",
        )
        .expect("metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "guardgate_errors_total",
                "Errors of the gateway itself, by kind",
            ),
            &["kind"],
        )
        .expect("metric");
        let bad_requests = IntCounterVec::new(
            Opts::new(
                "guardgate_bad_requests_total",
                "Requests refused as malformed, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "guardgate_upstream_response_header_seconds",
                "Time from sending the request upstream to its response header",
            ),
            &["upstream"],
        )
        .expect("metric");
        let upstream_connects = IntCounterVec::new(
            Opts::new(
                "guardgate_upstream_connects_total",
                "Upstream connections opened rather than reused from the idle pool, by upstream",
            ),
            &["upstream"],
        )
        .expect("metric");
        let verdict_cache = IntCounterVec::new(
            Opts::new(
                "guardgate_verdict_cache_total",
                "Verdict cache lookups, by backend and result",
            ),
            &["backend", "result"],
        )
        .expect("metric");
        let model_rejections = IntCounterVec::new(
            Opts::new(
                "guardgate_model_rejections_total",
                "Model calls refused before running (queue full or deadline passed while queued)",
            ),
            &["backend", "reason"],
        )
        .expect("metric");
        let model_queue_depth = prometheus::IntGaugeVec::new(
            Opts::new(
                "guardgate_model_queue_depth",
                "Model calls waiting for a slot",
            ),
            &["backend"],
        )
        .expect("metric");
        let sampled_out = IntCounterVec::new(
            Opts::new(
                "guardgate_model_sampled_out_total",
                "Decisions where a sampled policy skipped the model",
            ),
            &["policy"],
        )
        .expect("metric");
        let unclassified_parts = IntCounterVec::new(
            Opts::new(
                "guardgate_unclassified_parts_total",
                "Non-text parts (images, audio, files) of guarded requests, which the text classifiers cannot read",
            ),
            &["route"],
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(unclassified_parts.clone()),
            Box::new(verdict_cache.clone()),
            Box::new(model_rejections.clone()),
            Box::new(model_queue_depth.clone()),
            Box::new(sampled_out.clone()),
            Box::new(decisions.clone()),
            Box::new(classifier_latency.clone()),
            Box::new(reloads.clone()),
            Box::new(policy_generation.clone()),
            Box::new(errors.clone()),
            Box::new(bad_requests.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(upstream_connects.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        // Make the reload series exist from the start so dashboards and alerts see zeros.
        reloads.with_label_values(&["success"]);
        reloads.with_label_values(&["failure"]);
        reloads.with_label_values(&["gated"]);
        Metrics {
            registry,
            requests,
            decisions,
            classifier_latency,
            reloads,
            policy_generation,
            errors,
            bad_requests,
            upstream_latency,
            upstream_connects,
            verdict_cache,
            model_rejections,
            model_queue_depth,
            sampled_out,
            unclassified_parts,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            buf.clear();
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
