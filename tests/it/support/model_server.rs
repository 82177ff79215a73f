//! An imitation of an OpenAI-compatible model server (vLLM, Ollama, ...) hosting a safeguard
//! model, over real HTTP on loopback. It reads the policy (system) and content (user) messages
//! and answers in the gpt-oss-safeguard JSON format. Markers in the content steer it:
//! `[slow]` sleeps 3 s, `[error]` answers 500, `[malformed]` answers non-JSON, `[empty]` gives
//! reasoning but no final answer, `[prose]` answers prose; content containing "forbidden"
//! violates (code X1) a policy whose text mentions "Forbidden". `fail_next` makes the next N calls answer 503.
//! `[hold]` in the content, or `HOLD-ME` in the policy, holds the answer until `release` is set
//! (at most 20 s), so a test can look at the gateway while a verdict is outstanding.
//! `delay_ms` adds a fixed time to every answer: a model server of known speed, for the
//! benchmarks (`examples/imitation_model.rs`).
//!
//! A joint prompt (several policies under `=== POLICY <id> ===` headers, `classify::joint`) gets
//! one JSON object keyed by policy id, each policy's entry decided as a single prompt's answer
//! is, from that policy's section; a section that says `SKIP-IN-JOINT` gets no entry (an answer
//! that misses a policy). `usage.prompt_tokens` is an estimate, a token per 4 characters of the
//! two messages, so that prompts of different sizes cost differently.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Clone, Default)]
pub struct ModelState {
    pub calls: Arc<AtomicUsize>,
    /// Calls answered (or failed) so far.
    pub answered: Arc<AtomicUsize>,
    pub release: Arc<std::sync::atomic::AtomicBool>,
    pub fail_next: Arc<AtomicUsize>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    /// Added to every answer, in milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Stop keeping request bodies in `bodies`, which a benchmark's long run would grow without
    /// bound.
    pub forget_bodies: Arc<std::sync::atomic::AtomicBool>,
}

pub struct ModelServer {
    pub addr: SocketAddr,
    pub state: ModelState,
}

impl ModelServer {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub async fn start() -> ModelServer {
    start_on("127.0.0.1:0").await
}

pub async fn start_on(addr: &str) -> ModelServer {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ModelState::default();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, st.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    ModelServer { addr, state }
}

/// Counts a call as answered when its handler returns, whichever way.
struct Answered(Arc<AtomicUsize>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    st: ModelState,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.calls.fetch_add(1, Ordering::SeqCst);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !st.forget_bodies.load(Ordering::Relaxed) {
        st.bodies.lock().unwrap().push(v.clone());
    }
    let delay = st.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if st
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Ok(reply(503, r#"{"error":{"message":"overloaded"}}"#.into()));
    }
    let system = v["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let user = v["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if user.contains("[slow]") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if user.contains("[hold]") || system.contains("HOLD-ME") {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while !st.release.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _answered = Answered(st.answered.clone());
    if user.contains("[error]") {
        return Ok(reply(500, r#"{"error":{"message":"boom"}}"#.into()));
    }
    if user.contains("[malformed]") {
        return Ok(reply(200, "this is not json".into()));
    }
    let joint = policy_sections(&system);
    let (content, reasoning) = if user.contains("[empty]") {
        (String::new(), "I keep thinking and thinking".to_string())
    } else if user.contains("[prose]") {
        ("The content looks fine to me.".to_string(), String::new())
    } else if !joint.is_empty() {
        let mut answer = serde_json::Map::new();
        let mut any = false;
        for (id, text) in &joint {
            if text.contains("SKIP-IN-JOINT") {
                continue;
            }
            let v = violates(&user, text);
            any |= v;
            answer.insert(
                id.clone(),
                if v {
                    json!({"violation": 1, "policy_category": "X1"})
                } else {
                    json!({"violation": 0, "policy_category": null})
                },
            );
        }
        let reasoning = if any {
            "SECRET-REASONING: the user asks for forbidden things, which X1 covers."
        } else {
            "Nothing here violates."
        };
        (Value::Object(answer).to_string(), reasoning.to_string())
    } else if violates(&user, &system) {
        (
            r#"{"violation": 1, "policy_category": "X1", "confidence": 0.97}"#.to_string(),
            "SECRET-REASONING: the user asks for forbidden things, which X1 covers.".to_string(),
        )
    } else {
        (
            r#"{"violation": 0, "policy_category": null}"#.to_string(),
            "Nothing here violates.".to_string(),
        )
    };
    let out = json!({
        "id": "chatcmpl-model", "object": "chat.completion", "created": 1, "model": v["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content, "reasoning_content": reasoning}}],
        "usage": {"prompt_tokens": prompt_tokens(&v), "completion_tokens": 12,
                  "total_tokens": prompt_tokens(&v) + 12}
    });
    Ok(reply(200, out.to_string()))
}

/// How a policy's answer is decided: content that says "forbidden" violates (X1) a policy whose
/// text mentions "Forbidden".
fn violates(user: &str, policy: &str) -> bool {
    user.contains("forbidden") && policy.contains("Forbidden")
}

/// The prompt tokens this server reports for a request body: one per 4 characters of the
/// messages, rounded up.
pub fn prompt_tokens(body: &Value) -> u64 {
    let chars: usize = body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["content"].as_str())
                .map(|c| c.chars().count())
                .sum()
        })
        .unwrap_or(0);
    chars.div_ceil(4) as u64
}

/// A joint prompt's policies: (id, its section's text) in order; empty for a one-policy prompt.
pub fn policy_sections(system: &str) -> Vec<(String, String)> {
    const HEADER: &str = "=== POLICY ";
    system
        .split(HEADER)
        .skip(1)
        .filter_map(|part| {
            let (id, text) = part.split_once(" ===")?;
            Some((id.to_string(), text.to_string()))
        })
        .collect()
}
