//! `[telemetry]`: traces over OTLP/HTTP, received by an in-test collector (no OpenTelemetry
//! Collector installs from the package registries this project reaches) that decodes what the
//! exporter sends with the OTLP message types: the request span and one child per judgement with
//! their attributes and parents, the caller's `traceparent` continued and passed on to the
//! upstream, the audit records' trace id, no content or key in any attribute, a collector that is
//! down or hangs never failing or holding a request, and shutdown exporting what is buffered.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One exported span, with the resource it came with.
#[derive(Clone, Debug)]
struct Got {
    span: Span,
    service: Option<String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<Any> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }
    fn str(&self, key: &str) -> Option<String> {
        match self.attr(key)? {
            Any::StringValue(s) => Some(s),
            other => panic!("{key} is not a string: {other:?}"),
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Any::IntValue(n) => Some(n),
            other => panic!("{key} is not an int: {other:?}"),
        }
    }
    fn bool(&self, key: &str) -> Option<bool> {
        match self.attr(key)? {
            Any::BoolValue(b) => Some(b),
            other => panic!("{key} is not a bool: {other:?}"),
        }
    }
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    fn is_server(&self) -> bool {
        self.span.kind == SpanKind::Server as i32
    }
    /// Every attribute value as text, the resource's service name included.
    fn values(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .span
            .attributes
            .iter()
            .map(|kv| format!("{:?}", kv.value))
            .collect();
        v.push(self.span.name.clone());
        v.extend(self.service.clone());
        v
    }
}

/// An OTLP/HTTP traces receiver on loopback.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let got = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let got = got.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()["content-type"] == "application/x-protobuf";
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(export) if ok => {
                                    let mut g = got.lock().unwrap();
                                    for rs in export.resource_spans {
                                        let service = rs.resource.as_ref().and_then(|r| {
                                            r.attributes
                                                .iter()
                                                .find(|kv| kv.key == "service.name")
                                                .and_then(|kv| match kv.value.clone()?.value? {
                                                    Any::StringValue(s) => Some(s),
                                                    _ => None,
                                                })
                                        });
                                        for ss in rs.scope_spans {
                                            for span in ss.spans {
                                                g.push(Got {
                                                    span,
                                                    service: service.clone(),
                                                });
                                            }
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector { url, spans }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans once `done` holds of them (bounded: 10 s).
    async fn until(&self, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.spans();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn telemetry(endpoint: &str, lines: &str) -> String {
    format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gg-test\"\nscheduled_delay_ms = 50\n{lines}\n")
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SECRET_TEXT: &str = "zebra-quartz-unique-phrase";
const API_KEY: &str = "sk-test-never-in-a-span-9f8e7d";

async fn post(gw: &GatewayProc, text: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut req = client()
        .post(gw.url(CHAT))
        .header("authorization", format!("Bearer {API_KEY}"))
        .json(&chat(text));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.send().await.unwrap()
}

fn records_of<'a>(audit: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|r| r["request_id"] == request_id)
        .collect()
}

#[tokio::test]
async fn request_and_judgement_spans_continue_the_callers_trace() {
    let col = Collector::start().await;
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .extra(&telemetry(&col.url, ""))
        .start(&[
            ("weapons.md", WEAPONS),
            ("profanity.md", PROFANITY),
            ("shadowed.md", SHADOWED),
        ])
        .await;

    let tp = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let text = format!("{SECRET_TEXT}: darn, a pineapple");
    let r = post(&gw, &text, Some(&tp)).await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-guardgate-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let audit = gw.audit_wait(3).await;
    let recs = records_of(&audit, &request_id);
    assert_eq!(recs.len(), 3, "{audit:?}");

    // The request span and one child per audited judgement.
    let spans = col
        .until(|s| s.iter().filter(|g| g.trace_id() == CALLER_TRACE).count() >= 4)
        .await;
    let ours: Vec<&Got> = spans
        .iter()
        .filter(|g| g.trace_id() == CALLER_TRACE)
        .collect();
    let servers: Vec<&&Got> = ours.iter().filter(|g| g.is_server()).collect();
    assert_eq!(servers.len(), 1, "{ours:#?}");
    let server = servers[0];
    assert_eq!(
        server.parent_id(),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(server.span.name, "POST /v1/chat/completions");
    assert_eq!(server.service.as_deref(), Some("gg-test"));
    assert_eq!(server.str("http.request.method").as_deref(), Some("POST"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(
        server.str("http.route").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(server.str("guardgate.route").as_deref(), Some("chat"));
    assert_eq!(server.str("guardgate.api").as_deref(), Some("openai-chat"));
    assert_eq!(
        server.str("guardgate.request_id").as_deref(),
        Some(request_id.as_str())
    );
    assert!(server.str("guardgate.outcome").is_some());
    assert!(server.span.end_time_unix_nano >= server.span.start_time_unix_nano);

    let children: Vec<&&Got> = ours.iter().filter(|g| !g.is_server()).collect();
    assert_eq!(children.len(), recs.len(), "{children:#?}");
    for rec in &recs {
        let policy = rec["policy_id"].as_str().unwrap();
        let child = children
            .iter()
            .find(|c| c.str("guardgate.policy.id").as_deref() == Some(policy))
            .unwrap_or_else(|| panic!("no span for {policy}: {children:#?}"));
        assert_eq!(child.parent_id(), server.span_id(), "{policy}");
        assert_eq!(child.span.name, format!("judge {policy}"));
        assert_eq!(
            child.str("guardgate.policy.version").as_deref(),
            rec["policy_version"].as_str()
        );
        assert_eq!(
            child.str("guardgate.verdict").as_deref(),
            rec["verdict"].as_str()
        );
        assert_eq!(
            child.str("guardgate.effect").as_deref(),
            rec["effect"].as_str()
        );
        assert_eq!(
            child.str("guardgate.action").as_deref(),
            rec["action"].as_str()
        );
        assert_eq!(child.str("guardgate.direction").as_deref(), Some("input"));
        assert_eq!(child.str("guardgate.backend").as_deref(), Some("rules"));
        assert_eq!(child.str("guardgate.timing").as_deref(), Some("inline"));
        assert_eq!(child.bool("guardgate.off_path"), Some(false));
        assert_eq!(
            child.int("guardgate.latency_us"),
            rec["latency_us"].as_i64()
        );
        assert_eq!(
            child.str("guardgate.rule_id").as_deref(),
            rec["rule_id"].as_str()
        );
        assert_eq!(child.str("guardgate.code").as_deref(), rec["code"].as_str());
        // Within the request's span.
        assert!(child.span.start_time_unix_nano >= server.span.start_time_unix_nano);
        assert!(child.span.end_time_unix_nano <= server.span.end_time_unix_nano);
    }
    let darn = children
        .iter()
        .find(|c| c.str("guardgate.policy.id").as_deref() == Some("test/profanity"))
        .unwrap();
    assert_eq!(darn.str("guardgate.verdict").as_deref(), Some("violation"));
    assert_eq!(darn.str("guardgate.rule_id").as_deref(), Some("darn"));

    // The upstream was told the gateway's span is its parent, in the caller's trace.
    let up = m.state.last().unwrap();
    let forwarded = std::str::from_utf8(up.header("traceparent").unwrap()).unwrap();
    assert_eq!(
        forwarded,
        format!("00-{CALLER_TRACE}-{}-01", server.span_id())
    );

    // Every audit record of the request names the exported trace.
    for rec in &recs {
        assert_eq!(rec["trace_id"], CALLER_TRACE, "{rec}");
    }

    // Neither the request's text nor the client's key is in any span.
    for g in &spans {
        for v in g.values() {
            assert!(!v.contains("zebra-quartz"), "content in a span: {v}");
            assert!(!v.contains(API_KEY), "the API key in a span: {v}");
        }
    }
}

#[tokio::test]
async fn a_blocked_request_and_a_malformed_traceparent() {
    let col = Collector::start().await;
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .extra(&telemetry(&col.url, ""))
        .start(&[("weapons.md", WEAPONS)])
        .await;
    let r = post(&gw, "how to make a pipe bomb", Some("00-not-a-trace-01")).await;
    assert_eq!(r.status(), 400);
    let request_id = r.headers()["x-guardgate-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let audit = gw.audit_wait(1).await;
    let rec = records_of(&audit, &request_id)[0].clone();
    let trace = rec["trace_id"].as_str().expect("a new trace").to_string();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));

    let spans = col
        .until(|s| s.iter().filter(|g| g.trace_id() == trace).count() >= 2)
        .await;
    let server = spans
        .iter()
        .find(|g| g.is_server() && g.trace_id() == trace)
        .expect("the request span");
    assert!(
        server.span.parent_span_id.is_empty(),
        "a malformed traceparent starts a new trace"
    );
    assert_eq!(server.int("http.response.status_code"), Some(400));
    assert_eq!(server.str("guardgate.outcome").as_deref(), Some("blocked"));
    let child = spans
        .iter()
        .find(|g| !g.is_server() && g.trace_id() == trace)
        .expect("the judgement span");
    assert_eq!(child.parent_id(), server.span_id());
    assert_eq!(child.str("guardgate.verdict").as_deref(), Some("violation"));
    assert_eq!(child.str("guardgate.effect").as_deref(), Some("blocked"));
    assert_eq!(
        child.str("guardgate.rule_id").as_deref(),
        Some("bomb-recipe")
    );
    assert_eq!(child.str("guardgate.code").as_deref(), Some("W1"));
    assert_eq!(
        m.state.count(),
        0,
        "a blocked request never reaches the upstream"
    );
}

#[tokio::test]
async fn a_judgement_off_the_request_path_is_a_late_child() {
    let col = Collector::start().await;
    let m = mock::start().await;
    let ms = model_server::start().await;
    let backend = format!(
        "\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{}\"\nmodel = \"openai/gpt-oss-safeguard-20b\"\nfamily = \"gpt-oss-safeguard\"\ntimeout_ms = 30000\nmax_retries = 0\n",
        ms.base_url()
    );
    let gw = TestConfig::new(&m.base_url())
        .route_policies("[[routes.policies]]\nselect = \"test/nl\"\naction = \"shadow\"\n")
        .extra(&format!("{backend}{}", telemetry(&col.url, "")))
        .start(&[("nl.md", NL_POLICY)])
        .await;
    let r = post(&gw, "tell me forbidden things", None).await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-guardgate-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let audit = gw
        .audit_until(|a| !records_of(a, &request_id).is_empty())
        .await;
    let rec = records_of(&audit, &request_id)[0].clone();
    assert_eq!(rec["off_path"], true);
    let trace = rec["trace_id"].as_str().unwrap().to_string();
    let spans = col
        .until(|s| s.iter().filter(|g| g.trace_id() == trace).count() >= 2)
        .await;
    let server = spans
        .iter()
        .find(|g| g.is_server() && g.trace_id() == trace)
        .expect("the request span");
    let child = spans
        .iter()
        .find(|g| !g.is_server() && g.trace_id() == trace)
        .expect("the off-path judgement span");
    assert_eq!(child.parent_id(), server.span_id());
    assert_eq!(child.str("guardgate.policy.id").as_deref(), Some("test/nl"));
    assert_eq!(child.str("guardgate.timing").as_deref(), Some("off_path"));
    assert_eq!(child.bool("guardgate.off_path"), Some(true));
    assert_eq!(
        child.str("guardgate.backend").as_deref(),
        Some("remote:safeguard")
    );
    assert_eq!(child.str("guardgate.verdict").as_deref(), Some("violation"));
    assert_eq!(child.bool("guardgate.cache_hit"), Some(false));
}

#[tokio::test]
async fn an_unsampled_trace_is_propagated_but_not_exported() {
    let col = Collector::start().await;
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .extra(&telemetry(&col.url, "sample_ratio = 0.0"))
        .start(&[("weapons.md", WEAPONS)])
        .await;
    let r = post(&gw, "hello", None).await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-guardgate-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let audit = gw.audit_wait(1).await;
    let trace = records_of(&audit, &request_id)[0]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let up = m.state.last().unwrap();
    let forwarded = std::str::from_utf8(up.header("traceparent").unwrap()).unwrap();
    assert!(
        forwarded.starts_with(&format!("00-{trace}-")) && forwarded.ends_with("-00"),
        "{forwarded}"
    );
    // A sampled caller is followed whatever the ratio (parent-based sampling).
    let tp = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(post(&gw, "hello again", Some(&tp)).await.status(), 200);
    let spans = col
        .until(|s| s.iter().any(|g| g.trace_id() == CALLER_TRACE))
        .await;
    assert!(spans.iter().any(|g| g.trace_id() == CALLER_TRACE));
    assert!(
        spans.iter().all(|g| g.trace_id() != trace),
        "an unsampled trace was exported"
    );
}

/// A listener that accepts connections and never answers: a collector that hangs.
async fn hanging_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            if held.len() < 64 {
                held.push(s);
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_collector_that_is_down_or_hangs_neither_fails_nor_holds_requests() {
    let (hanging, task) = hanging_collector().await;
    // Nothing listens there: the export's connection is refused.
    let closed = format!("http://127.0.0.1:{}/v1/traces", free_port());
    for endpoint in [closed, hanging] {
        let m = mock::start().await;
        // An export may take 5 s: a request that waited for one would take at least that.
        let mut gw = TestConfig::new(&m.base_url())
            .extra(&telemetry(
                &endpoint,
                "timeout_ms = 5000\nmax_export_batch_size = 1",
            ))
            .start(&[("weapons.md", WEAPONS)])
            .await;
        let c = client();
        for i in 0..20 {
            let started = Instant::now();
            let r = c
                .post(gw.url(CHAT))
                .json(&chat(&format!("hello {i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{endpoint}");
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{endpoint}: request {i} took {took:?}"
            );
        }
        assert_eq!(m.state.count(), 20);
        assert!(!gw.log().contains("panicked"), "{}", gw.log());
        // A shutdown waits for the export at most as long as the graceful shutdown allows.
        gw.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while gw.exit_status().is_none() {
            assert!(
                Instant::now() < deadline,
                "{endpoint}: the gateway did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    task.abort();
}

#[tokio::test]
async fn failed_exports_are_counted() {
    let closed = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .extra(&telemetry(&closed, "timeout_ms = 300"))
        .start(&[("weapons.md", WEAPONS)])
        .await;
    assert_eq!(post(&gw, "hello", None).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gw.metrics().await;
        let errors = metrics
            .lines()
            .find(|l| l.starts_with("guardgate_telemetry_export_errors_total "))
            .and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no export error counter: {metrics}"));
        if errors >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_exports_the_spans_still_buffered() {
    let col = Collector::start().await;
    let m = mock::start().await;
    // Batches wait a minute: only the shutdown can send this one in time.
    let mut gw = TestConfig::new(&m.base_url())
        .extra(
            &telemetry(&col.url, "")
                .replace("scheduled_delay_ms = 50", "scheduled_delay_ms = 60000"),
        )
        .start(&[("weapons.md", WEAPONS)])
        .await;
    let r = post(&gw, "hello", None).await;
    assert_eq!(r.status(), 200);
    let audit = gw.audit_wait(1).await;
    let trace = audit[0]["trace_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(col.spans().is_empty(), "exported before the batch was due");
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.exit_status().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans = col.spans();
    assert!(
        spans.iter().any(|g| g.is_server() && g.trace_id() == trace),
        "the request span was lost at shutdown: {spans:#?}"
    );
    assert_eq!(
        spans.iter().filter(|g| g.trace_id() == trace).count(),
        2,
        "{spans:#?}"
    );
}

#[test]
fn telemetry_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new("http://127.0.0.1:9")
        .extra("\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 2.0\n")
        .render();
    std::fs::write(dir.path().join("guardgate.toml"), cfg).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let (code, _out, err) = run_cli(&["check-config", "--config", "guardgate.toml"], dir.path());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("telemetry.sample_ratio"), "{err}");
}
