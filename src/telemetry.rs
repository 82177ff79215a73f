//! Traces over OTLP/HTTP (`[telemetry]`): one SERVER span per request and one child span per
//! policy judgement, exported in batches by a background thread. Off by default; off, nothing
//! here runs on the request path.
//!
//! The request span is started when the exchange is made (so its trace id and span id exist
//! before the request goes upstream: the upstream gets a `traceparent` naming it, and the audit
//! records carry its trace id) and ended in the exchange's logging phase. Judgement spans are made
//! when their decisions are written (`proxy::exchange::ledger::write`), from the times the ledger
//! kept, rather than by carrying a span context through every await; judgements done off the
//! request path become late children of the request span when the background queue writes them.
//!
//! No span attribute holds request or reply text, a rationale, a header value or a key: only
//! names, ids, verdicts, counts and times.
//!
//! Export never blocks a request: finished spans go into a bounded queue (dropped when full), a
//! thread batches them, and the HTTP calls run on a small runtime of their own (the OTLP
//! exporter's reqwest client needs a Tokio reactor, which the batching thread does not have).
//! A failed export is logged and counted (`guardgate_telemetry_export_errors_total`).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::TelemetrySection;
use crate::decide::Outcome;
use crate::metrics::Metrics;

/// The tracer, when `[telemetry] otlp_endpoint` is set.
pub struct Telemetry {
    on: Option<On>,
}

struct On {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// No tracer: every method is a no-op.
    pub fn off() -> Telemetry {
        Telemetry { on: None }
    }

    /// Builds the exporter and the batching span processor when the config turns tracing on.
    pub fn new(cfg: &TelemetrySection, metrics: &Metrics) -> anyhow::Result<Telemetry> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(Telemetry::off());
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            metrics.registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counts = Counts {
            errors: counter(
                "guardgate_telemetry_export_errors_total",
                "OTLP span exports that failed (collector down, refused or too slow)",
            )?,
            exported: counter(
                "guardgate_telemetry_spans_exported_total",
                "Spans the OTLP collector accepted",
            )?,
            failing: Arc::default(),
        };
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .with_headers(cfg.export_headers().into_iter().collect())
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("guardgate-otlp")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry: cannot start the export runtime: {e}"))?;
        let exporter = Exporter {
            inner: Arc::new(otlp),
            runtime: Some(runtime),
            counts,
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_max_export_batch_size(cfg.max_export_batch_size)
            .with_scheduled_delay(Duration::from_millis(cfg.scheduled_delay_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(cfg.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("guardgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(endpoint = %endpoint, sample_ratio = cfg.sample_ratio, "tracing: spans go to the OTLP collector");
        Ok(Telemetry {
            on: Some(On {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
            }),
        })
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// Starts a request's span, as a child of the caller's `traceparent` when it has a valid one
    /// (a malformed one is ignored: the span starts a new trace), and points the request's
    /// `traceparent` at the new span so the upstream's spans join the trace. `None` when off.
    pub fn start(&self, req: &mut RequestHeader) -> Option<Box<RequestSpan>> {
        let on = self.on.as_ref()?;
        let caller = on.propagator.extract(&Headers(&*req));
        let span = on.tracer.build_with_context(
            SpanBuilder::from_name(req.method.as_str().to_string())
                .with_kind(SpanKind::Server)
                .with_start_time(SystemTime::now()),
            &caller,
        );
        let sc = span.span_context().clone();
        let mut out = Outgoing(Vec::with_capacity(2));
        on.propagator.inject_context(
            &Context::new().with_remote_span_context(sc.clone()),
            &mut out,
        );
        for (name, value) in out.0 {
            // A value the propagator wrote is always a valid header; a failure leaves the
            // caller's header, which only costs the upstream's spans their parent.
            let _ = req.insert_header(name, value);
        }
        Some(Box::new(RequestSpan {
            span,
            method: req.method.as_str().to_string(),
            parent: Parent::of(sc),
        }))
    }

    /// Makes the span of one policy judgement, a child of `parent`. Nothing when the request's
    /// trace is not sampled.
    pub fn judgement(&self, parent: &Parent, j: &Judgement<'_>) {
        let Some(on) = &self.on else { return };
        if !parent.cx.is_sampled() {
            return;
        }
        let o = j.outcome;
        let verdict = o.result.as_ref().ok();
        let mut attrs = Vec::with_capacity(16);
        attrs.extend([
            KeyValue::new("guardgate.policy.id", o.policy.id.clone()),
            KeyValue::new("guardgate.policy.version", o.policy.version.clone()),
            KeyValue::new("guardgate.direction", j.direction),
            KeyValue::new("guardgate.verdict", o.verdict()),
            KeyValue::new("guardgate.action", o.action.as_str()),
            KeyValue::new("guardgate.effect", j.effect),
            KeyValue::new("guardgate.latency_us", o.latency.as_micros() as i64),
            KeyValue::new("guardgate.timing", j.timing),
            KeyValue::new("guardgate.off_path", j.timing == "off_path"),
        ]);
        if let Some(v) = verdict {
            attrs.push(KeyValue::new("guardgate.backend", v.backend));
            if let Some(code) = &v.code {
                attrs.push(KeyValue::new("guardgate.code", code.clone()));
            }
            if let Some(rule) = &v.rule_id {
                attrs.push(KeyValue::new("guardgate.rule_id", rule.clone()));
            }
            if let Some(model) = &v.model {
                attrs.push(KeyValue::new("guardgate.model", model.clone()));
                attrs.push(KeyValue::new("guardgate.cache_hit", v.cache_hit));
            }
            if v.sampled_out {
                attrs.push(KeyValue::new("guardgate.sampled_out", true));
            }
        }
        if let Some(s) = o.severity() {
            attrs.push(KeyValue::new("guardgate.severity", s.as_str()));
        }
        if let Some(w) = j.windows {
            attrs.push(KeyValue::new("guardgate.windows", i64::from(w)));
        }
        if j.candidate {
            attrs.push(KeyValue::new("guardgate.candidate", true));
        }
        let end = j.started + o.latency;
        let mut span = on.tracer.build_with_context(
            SpanBuilder::from_name(format!("judge {}", o.policy.id))
                .with_kind(SpanKind::Internal)
                .with_start_time(j.started)
                .with_attributes(attrs),
            &Context::new().with_remote_span_context(parent.cx.clone()),
        );
        // The error's text can quote a backend's answer: the span says only that it failed.
        if o.result.as_ref().is_err_and(|e| e.is_failure()) {
            span.set_status(Status::error("classifier failed"));
        }
        span.end_with_timestamp(end);
    }

    /// Exports what is still buffered and stops the exporter; waits at most `limit`. The last
    /// thing a shutdown does with traces.
    pub fn shutdown(&self, limit: Duration) {
        let Some(on) = &self.on else { return };
        if let Err(e) = on.provider.shutdown_with_timeout(limit) {
            tracing::warn!(error = %e, "tracing: spans still unexported at exit");
        }
    }
}

/// A request's span, held by its exchange from the header to the logging phase.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    method: String,
    pub parent: Parent,
}

/// What the span of a finished request says.
pub struct Ending<'a> {
    pub request_id: &'a str,
    /// The route's name (or the moderation endpoint's).
    pub route: Option<&'a str>,
    /// The route's path pattern.
    pub path: Option<&'a str>,
    pub api: &'a str,
    pub outcome: &'a str,
    pub status: Option<u16>,
    pub failed: bool,
}

impl RequestSpan {
    /// The policy profile the request was judged under.
    pub fn set_profile(&mut self, name: &str) {
        self.span
            .set_attribute(KeyValue::new("guardgate.profile", name.to_string()));
    }

    pub fn end(self: Box<Self>, e: &Ending<'_>) {
        let RequestSpan {
            span: mut s,
            method,
            ..
        } = *self;
        if let Some(path) = e.path {
            s.update_name(format!("{method} {path}"));
            s.set_attribute(KeyValue::new("http.route", path.to_string()));
        } else if let Some(name) = e.route {
            s.update_name(format!("{method} {name}"));
        }
        if let Some(name) = e.route {
            s.set_attribute(KeyValue::new("guardgate.route", name.to_string()));
        }
        s.set_attribute(KeyValue::new("http.request.method", method));
        s.set_attribute(KeyValue::new("guardgate.api", e.api.to_string()));
        s.set_attribute(KeyValue::new("guardgate.outcome", e.outcome.to_string()));
        s.set_attribute(KeyValue::new(
            "guardgate.request_id",
            e.request_id.to_string(),
        ));
        if let Some(code) = e.status {
            s.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        // Server spans: a 4xx is the client's error, not the server's (semantic conventions).
        if e.failed || e.status.is_some_and(|c| c >= 500) {
            s.set_status(Status::error(""));
            if let Some(code) = e.status.filter(|c| *c >= 500) {
                s.set_attribute(KeyValue::new("error.type", code.to_string()));
            } else {
                s.set_attribute(KeyValue::new("error.type", "_OTHER"));
            }
        }
        s.end();
    }
}

/// The request span as a parent of judgement spans, and its trace id for the audit records.
#[derive(Debug, Clone)]
pub struct Parent {
    cx: SpanContext,
    /// 32 lowercase hex digits, as in `traceparent`.
    pub trace_id: String,
}

impl Parent {
    fn of(sc: SpanContext) -> Parent {
        // Children are made in this process: their parent is local, whatever the caller's was.
        let cx = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            false,
            sc.trace_state().clone(),
        );
        Parent {
            trace_id: cx.trace_id().to_string(),
            cx,
        }
    }
}

/// One judgement as its span tells it.
pub struct Judgement<'a> {
    pub outcome: &'a Outcome,
    pub direction: &'static str,
    pub effect: &'static str,
    /// inline | parallel | off_path
    pub timing: &'static str,
    pub started: SystemTime,
    pub windows: Option<u32>,
    /// A shadow candidate's judgement rather than the live policy's.
    pub candidate: bool,
}

struct Headers<'a>(&'a RequestHeader);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.keys().map(|k| k.as_str()).collect()
    }
}

struct Outgoing(Vec<(&'static str, String)>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

#[derive(Clone)]
struct Counts {
    errors: IntCounter,
    exported: IntCounter,
    /// Set while exports fail: a collector that is down is logged once when it goes and once
    /// when it is back, not once per batch (the counter has every failure).
    failing: Arc<std::sync::atomic::AtomicBool>,
}

/// The OTLP exporter, run on the export runtime, with its results counted.
struct Exporter {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    /// Dropped without waiting (the batching thread drops the exporter, outside any runtime).
    runtime: Option<tokio::runtime::Runtime>,
    counts: Counts,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl SpanExporter for Exporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len() as u64;
        let inner = self.inner.clone();
        let task = self
            .runtime
            .as_ref()
            .map(|rt| rt.spawn(async move { inner.export(batch).await }));
        let counts = self.counts.clone();
        async move {
            let res = match task {
                Some(t) => t
                    .await
                    .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string()))),
                None => Err(OTelSdkError::AlreadyShutdown),
            };
            use std::sync::atomic::Ordering::Relaxed;
            match &res {
                Ok(()) => {
                    counts.exported.inc_by(n);
                    if counts.failing.swap(false, Relaxed) {
                        tracing::info!("tracing: span exports succeed again");
                    }
                }
                Err(e) => {
                    counts.errors.inc();
                    if !counts.failing.swap(true, Relaxed) {
                        tracing::warn!(spans = n, error = %e, "tracing: span export failed; further failures are only counted (guardgate_telemetry_export_errors_total) until one succeeds");
                    }
                }
            }
            res
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called while the provider is built, before any export shares the exporter.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(endpoint: &str) -> TelemetrySection {
        toml::from_str(&format!(
            "otlp_endpoint = \"{endpoint}\"\nscheduled_delay_ms = 10\ntimeout_ms = 300"
        ))
        .unwrap()
    }

    fn request(traceparent: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        if let Some(tp) = traceparent {
            req.insert_header("traceparent", tp).unwrap();
        }
        req
    }

    fn traceparent(req: &RequestHeader) -> String {
        req.headers["traceparent"].to_str().unwrap().to_string()
    }

    #[test]
    fn off_makes_no_span_and_leaves_the_header() {
        let t = Telemetry::off();
        let mut req = request(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        assert!(t.start(&mut req).is_none());
        assert_eq!(
            traceparent(&req),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_a_malformed_one_starts_a_trace() {
        let m = Metrics::new();
        // A closed port: nothing is exported, and nothing here waits for it.
        let t = Telemetry::new(&section("http://127.0.0.1:9/v1/traces"), &m).unwrap();
        let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut req = request(Some(caller));
        let span = t.start(&mut req).unwrap();
        assert_eq!(span.parent.trace_id, "0af7651916cd43dd8448eb211c80319c");
        let out = traceparent(&req);
        let parts: Vec<&str> = out.split('-').collect();
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "{out}");
        assert_ne!(
            parts[2], "b7ad6b7169203331",
            "the upstream's parent is the gateway's span"
        );
        assert_eq!(parts[3], "01", "{out}");

        for bad in [
            "00-zz-11-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            let mut req = request(Some(bad));
            let span = t.start(&mut req).unwrap();
            assert_ne!(span.parent.trace_id, "00000000000000000000000000000000");
            assert!(traceparent(&req).contains(&span.parent.trace_id));
        }
        let mut req = request(None);
        let a = t.start(&mut req).unwrap();
        let b = t.start(&mut request(None)).unwrap();
        assert_ne!(
            a.parent.trace_id, b.parent.trace_id,
            "each root is a new trace"
        );
        t.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn an_unsampled_caller_is_followed() {
        let m = Metrics::new();
        let t = Telemetry::new(&section("http://127.0.0.1:9/v1/traces"), &m).unwrap();
        let mut req = request(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ));
        let span = t.start(&mut req).unwrap();
        assert!(!span.parent.cx.is_sampled());
        assert!(traceparent(&req).ends_with("-00"));
        t.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn a_collector_that_is_down_counts_export_errors() {
        let m = Metrics::new();
        let t = Telemetry::new(&section("http://127.0.0.1:9/v1/traces"), &m).unwrap();
        let span = t.start(&mut request(None)).unwrap();
        span.end(&Ending {
            request_id: "r1",
            route: None,
            path: None,
            api: "-",
            outcome: "allowed",
            status: Some(200),
            failed: false,
        });
        t.shutdown(Duration::from_secs(5));
        let text = String::from_utf8(m.render()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("guardgate_telemetry_export_errors_total"))
            .unwrap_or_else(|| panic!("{text}"));
        assert_ne!(line.split(' ').nth(1), Some("0"), "{line}");
    }
}
