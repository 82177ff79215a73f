//! Prometheus metrics. One `Metrics` per process, registered on its own registry (not the global
//! default) so tests can build several side by side. Labels with a fixed set of values are typed
//! ([`Fault`], [`BadRequest`]), so a new kind of error is a new variant, not a new string.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    /// Spans the redact action replaced with placeholders, by kind.
    pub redactions: IntCounterVec,
    /// Verdict cache lookups by backend and result (hit, miss).
    pub verdict_cache: IntCounterVec,
    /// Model calls refused before they ran, by backend and reason (queue_full, deadline): the
    /// route's fail mode then applies.
    pub model_rejections: IntCounterVec,
    /// Model calls waiting for a slot, by backend.
    pub model_queue_depth: IntGaugeVec,
    /// Model decisions skipped by a policy's sampling rate, by policy.
    pub sampled_out: IntCounterVec,
    /// Images, audio and files in guarded requests, which no text classifier read, by route.
    pub unclassified_parts: IntCounterVec,
    /// Judgement jobs off the request path, by result (done, shed, cut_off).
    pub background_jobs: IntCounterVec,
    /// Judgement jobs off the request path queued or running.
    pub background_pending: IntGauge,
    /// Requests by the policy profile they were judged under (names from the profiles file).
    pub profile_requests: IntCounterVec,
    /// Requests whose profile could not be determined, by what `unknown_profile` did with them
    /// (default, refused).
    pub profile_unknown: IntCounterVec,
}

/// An error of the gateway itself, counted in `guardgate_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A request ended with an error of pingora's (the client or the upstream failed mid-way).
    Proxy,
    /// A classifier failed to judge a policy.
    Classifier,
    /// The upstream failed while sending its reply body.
    UpstreamBody,
    /// A reply that could not be judged (too large, neither JSON nor text, content-coded stream).
    OutputUnclassifiable,
    UpstreamDns,
    UpstreamConnect,
    /// The upstream failed between the request and its reply header.
    UpstreamIo,
    AuditSerialize,
    /// Audit records dropped because the writer fell behind.
    AuditDrop,
    AuditWrite,
    /// Requests still running when the shutdown grace period ended.
    ShutdownCutOff,
    /// Captured decisions shed because the review store's writer fell behind.
    ReviewDrop,
    /// Captured decisions the review store failed to write (or purge).
    ReviewWrite,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Proxy => "proxy",
            Fault::Classifier => "classifier",
            Fault::UpstreamBody => "upstream_body",
            Fault::OutputUnclassifiable => "output_unclassifiable",
            Fault::UpstreamDns => "upstream_dns",
            Fault::UpstreamConnect => "upstream_connect",
            Fault::UpstreamIo => "upstream_io",
            Fault::AuditSerialize => "audit_serialize",
            Fault::AuditDrop => "audit_drop",
            Fault::AuditWrite => "audit_write",
            Fault::ShutdownCutOff => "shutdown_cut_off",
            Fault::ReviewDrop => "review_drop",
            Fault::ReviewWrite => "review_write",
        }
    }
}

/// Why a request was refused as malformed, counted in `guardgate_bad_requests_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Method,
    ContentType,
    /// The body does not parse in the route's wire format.
    InvalidBody,
    NonTextParts,
    NotFound,
    /// The path could be read two ways (see `urlpath::check`).
    Path,
    TooLarge,
    BodyTimeout,
    UnsupportedEncoding,
    BadEncoding,
    BodyIo,
}

impl BadRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::Method => "method",
            BadRequest::ContentType => "content_type",
            BadRequest::InvalidBody => "invalid_body",
            BadRequest::NonTextParts => "non_text_parts",
            BadRequest::NotFound => "not_found",
            BadRequest::Path => "path",
            BadRequest::TooLarge => "too_large",
            BadRequest::BodyTimeout => "body_timeout",
            BadRequest::UnsupportedEncoding => "unsupported_encoding",
            BadRequest::BadEncoding => "bad_encoding",
            BadRequest::BodyIo => "body_io",
        }
    }
}

/// Registers what it makes on one registry.
struct Maker<'a>(&'a Registry);

impl Maker<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("unique metric names");
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("metric"))
    }

    fn histogram(&self, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
        self.register(HistogramVec::new(opts, labels).expect("metric"))
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Maker(&registry);
        let requests = m.counter(
            "guardgate_requests_total",
            "Requests handled, by route and outcome",
            &["route", "outcome"],
        );
        let decisions = m.counter(
            "guardgate_decisions_total",
            "Policy decisions, by policy, direction, verdict and action",
            &["policy", "direction", "verdict", "action"],
        );
        let classifier_latency = m.histogram(
            HistogramOpts::new(
                "guardgate_classifier_latency_seconds",
                "Time to a verdict, by backend",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0,
            ]),
            &["backend"],
        );
        let reloads = m.counter(
            "guardgate_policy_reloads_total",
            "Policy reloads, by result",
            &["result"],
        );
        let policy_generation = m.register(
            IntGauge::new(
                "guardgate_policy_generation",
                "Generation of the live policy snapshot",
            )
            .expect("metric"),
        );
        let errors = m.counter(
            "guardgate_errors_total",
            "Errors of the gateway itself, by kind",
            &["kind"],
        );
        let bad_requests = m.counter(
            "guardgate_bad_requests_total",
            "Requests refused as malformed, by reason",
            &["reason"],
        );
        let upstream_latency = m.histogram(
            HistogramOpts::new(
                "guardgate_upstream_response_header_seconds",
                "Time from sending the request upstream to its response header",
            ),
            &["upstream"],
        );
        let background_jobs = m.counter(
            "guardgate_background_jobs_total",
            "Judgement jobs off the request path (annotate and shadow bindings), by result: done, shed (the queue was full), cut_off (still running at shutdown)",
            &["result"],
        );
        let background_pending = m.register(
            IntGauge::new(
                "guardgate_background_pending",
                "Judgement jobs off the request path queued or running",
            )
            .expect("metric"),
        );
        let upstream_connects = m.counter(
            "guardgate_upstream_connects_total",
            "Upstream connections opened rather than reused from the idle pool, by upstream",
            &["upstream"],
        );
        let redactions = m.counter(
            "guardgate_redactions_total",
            "Spans the redact action replaced with placeholders in requests, by kind (a detector, or a redact policy's rule id)",
            &["kind"],
        );
        let verdict_cache = m.counter(
            "guardgate_verdict_cache_total",
            "Verdict cache lookups, by backend and result",
            &["backend", "result"],
        );
        let model_rejections = m.counter(
            "guardgate_model_rejections_total",
            "Model calls refused before running (queue full or deadline passed while queued)",
            &["backend", "reason"],
        );
        let model_queue_depth = m.gauges(
            "guardgate_model_queue_depth",
            "Model calls waiting for a slot",
            &["backend"],
        );
        let sampled_out = m.counter(
            "guardgate_model_sampled_out_total",
            "Decisions where a sampled policy skipped the model",
            &["policy"],
        );
        let unclassified_parts = m.counter(
            "guardgate_unclassified_parts_total",
            "Non-text parts (images, audio, files) of guarded requests, which the text classifiers cannot read",
            &["route"],
        );
        let profile_requests = m.counter(
            "guardgate_profile_requests_total",
            "Guarded requests, by the policy profile they were judged under",
            &["profile"],
        );
        let profile_unknown = m.counter(
            "guardgate_profile_unknown_total",
            "Requests no profile matcher placed (or whose trusted header named no profile), by what unknown_profile did: default, refused",
            &["outcome"],
        );
        // Make the reload series exist from the start so dashboards and alerts see zeros.
        for result in ["success", "failure", "gated"] {
            reloads.with_label_values(&[result]);
        }
        for result in ["done", "shed", "cut_off"] {
            background_jobs.with_label_values(&[result]);
        }
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
            redactions,
            verdict_cache,
            model_rejections,
            model_queue_depth,
            sampled_out,
            unclassified_parts,
            background_jobs,
            background_pending,
            profile_requests,
            profile_unknown,
        }
    }

    /// Counts an error of the gateway's own.
    pub fn fault(&self, f: Fault) {
        self.faults(f, 1);
    }

    pub fn faults(&self, f: Fault, n: u64) {
        self.errors.with_label_values(&[f.as_str()]).inc_by(n);
    }

    /// Counts a request refused as malformed.
    pub fn bad_request(&self, reason: BadRequest) {
        self.bad_requests
            .with_label_values(&[reason.as_str()])
            .inc();
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
