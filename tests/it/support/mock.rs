//! A mock LLM API upstream that speaks the real wire formats (OpenAI chat completions, completions,
//! Responses; Anthropic messages; plain JSON and SSE) over real HTTP on loopback, and records every
//! request it receives so tests can check what reached it, byte for byte.
//!
//! Behaviour can be steered per request with headers:
//! - `x-mock-status: 500`      answer with that status and an error body
//! - `x-mock-delay-ms: 200`    wait before answering
//! - `x-mock-chunk-bytes: 1`   stream the body in pieces of this many bytes (SSE split anywhere)
//! - `x-mock-gap-ms: 5`        pause between those pieces (default 1 ms)
//! - `x-mock-token-ms: 2`      stream one SSE event every 2 ms (a model generating at a fixed rate)
//! - `x-mock-abort-after: N`   fail the stream (abort the connection) after N body bytes
//! - `x-mock-reply: text`      the assistant text to return (default "Hello from the mock upstream.")
//! - `x-mock-sse-hex: 6461..`  stream exactly these bytes (hex) as an SSE body: events of any shape
//! - `x-mock-echo: 1`          the assistant text is the request's last user text as received
//!
//! `GET /__mock/requests` returns the recorded requests as JSON (for tests in other languages).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The request target as sent (origin-form `/v1/...`, or absolute-form `http://host/...`).
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Clone, Default)]
pub struct MockState {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Streamed replies whose client went away before the end (the gateway cut the stream).
    pub aborted: Arc<std::sync::atomic::AtomicUsize>,
    /// Streamed replies sent to the end.
    pub completed: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// `notify_waiters` closes every open connection without a word, as an upstream does with
    /// connections idle past its keep-alive timeout.
    pub close_all: Arc<tokio::sync::Notify>,
}

impl MockState {
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    pub fn last(&self) -> Option<Recorded> {
        self.requests.lock().unwrap().last().cloned()
    }
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: MockState,
}

impl MockUpstream {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts the mock on 127.0.0.1 with an OS-chosen port, on the current tokio runtime.
pub async fn start() -> MockUpstream {
    start_on("127.0.0.1:0").await
}

pub async fn start_on(addr: &str) -> MockUpstream {
    let listener = TcpListener::bind(addr).await.expect("bind mock");
    let addr = listener.local_addr().unwrap();
    let state = MockState::default();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            st.connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let close = st.close_all.clone();
                let svc = service_fn(move |req| handle(req, st.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = close.notified() => {}
                }
            });
        }
    });
    MockUpstream { addr, state }
}

/// Body errors make hyper abort the connection mid-body: how the mock imitates an upstream that
/// fails while streaming.
type BodyError = Box<dyn std::error::Error + Send + Sync>;
type BoxBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

fn full(status: u16, ct: &str, body: Vec<u8>) -> Response<BoxBody> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("x-mock", "1")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn chunked(
    st: &MockState,
    status: u16,
    ct: &str,
    pieces: Vec<Bytes>,
    gap: Duration,
    abort_after: Option<usize>,
) -> Response<BoxBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(1);
    let st = st.clone();
    tokio::spawn(async move {
        let mut sent = 0usize;
        for c in pieces {
            if abort_after.is_some_and(|n| sent >= n) {
                let _ = tx.send(Err("mock upstream failed mid-stream".into())).await;
                return;
            }
            sent += c.len();
            let frame = Ok(Frame::data(c));
            if tx.send(frame).await.is_err() {
                st.aborted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return;
            }
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        // With capacity 1, a free slot means hyper has taken the last frame: count delivery then.
        if tx.reserve().await.is_err() {
            st.aborted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        drop(tx);
        st.completed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("cache-control", "no-cache")
        .header("x-mock", "1")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BodyError>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BodyError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `x-mock-sse-hex`'s bytes: a header carries any byte sequence as hex.
fn from_hex(h: &str) -> Option<Vec<u8>> {
    let h = h.trim().as_bytes();
    h.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn hdr(req: &Request<Incoming>, name: &str) -> Option<String> {
    // Lossy UTF-8 rather than to_str(): tests send non-ASCII replies through this header.
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn handle(req: Request<Incoming>, st: MockState) -> Result<Response<BoxBody>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req.uri().to_string();
    let headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let status: u16 = hdr(&req, "x-mock-status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let delay = hdr(&req, "x-mock-delay-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    let piece: Option<usize> = hdr(&req, "x-mock-chunk-bytes").and_then(|s| s.parse().ok());
    let gap_ms: u64 = hdr(&req, "x-mock-gap-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let gap = Duration::from_millis(gap_ms);
    let token_ms: Option<u64> = hdr(&req, "x-mock-token-ms").and_then(|s| s.parse().ok());
    let abort_after: Option<usize> = hdr(&req, "x-mock-abort-after").and_then(|s| s.parse().ok());
    let reply = hdr(&req, "x-mock-reply").unwrap_or_else(|| "Hello from the mock upstream.".into());
    let scripted = hdr(&req, "x-mock-sse-hex").and_then(|h| from_hex(&h));
    let echo = hdr(&req, "x-mock-echo").is_some();

    if path == "/__mock/requests" {
        let list: Vec<Value> = st
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": r.path,
                    "headers": r.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect::<std::collections::BTreeMap<_,_>>(),
                    "body": String::from_utf8_lossy(&r.body),
                })
            })
            .collect();
        return Ok(full(
            200,
            "application/json",
            serde_json::to_vec(&list).unwrap(),
        ));
    }
    if path == "/__mock/reset" {
        st.take();
        return Ok(full(200, "application/json", b"{}".to_vec()));
    }

    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    st.requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        target,
        headers,
        body: body.clone(),
    });
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(events) = scripted {
        let pieces = events
            .chunks(piece.unwrap_or(64).max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        let gap = if piece.is_some() { gap } else { Duration::ZERO };
        return Ok(chunked(
            &st,
            200,
            "text/event-stream",
            pieces,
            gap,
            abort_after,
        ));
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let stream = parsed
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let anthropic = path.ends_with("/messages");
    let reply = match echo {
        true => echo_text(&parsed)
            .or_else(|| echo_prompt(&parsed))
            .unwrap_or(reply),
        false => reply,
    };

    if status != 200 {
        let b = if anthropic {
            json!({"type":"error","error":{"type":"api_error","message":"mock upstream error"}})
        } else {
            json!({"error":{"message":"mock upstream error","type":"server_error","param":null,"code":null}})
        };
        return Ok(full(
            status,
            "application/json",
            serde_json::to_vec(&b).unwrap(),
        ));
    }

    let (ct, out): (&str, Vec<u8>) = match (method.as_str(), path.as_str(), stream) {
        ("GET", p, _) if p.ends_with("/models") => (
            "application/json",
            serde_json::to_vec(&json!({"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]})).unwrap(),
        ),
        ("POST", p, false) if p.ends_with("/chat/completions") => ("application/json", serde_json::to_vec(&chat_completion(&model, &reply)).unwrap()),
        ("POST", p, true) if p.ends_with("/chat/completions") => ("text/event-stream", chat_sse(&model, &reply)),
        ("POST", p, false) if p.ends_with("/completions") => ("application/json", serde_json::to_vec(&completion(&model, &reply)).unwrap()),
        ("POST", p, false) if p.ends_with("/responses") => ("application/json", serde_json::to_vec(&response_obj(&model, &reply)).unwrap()),
        ("POST", p, true) if p.ends_with("/responses") => ("text/event-stream", responses_sse(&model, &reply)),
        ("POST", p, false) if p.ends_with("/messages") => ("application/json", serde_json::to_vec(&anthropic_message(&model, &reply)).unwrap()),
        ("POST", p, true) if p.ends_with("/messages") => ("text/event-stream", anthropic_sse(&model, &reply)),
        ("POST", _, _) => ("application/json", serde_json::to_vec(&json!({"echo": true, "path": path})).unwrap()),
        _ => return Ok(full(404, "application/json", br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}"#.to_vec())),
    };
    let split =
        |n: usize| -> Vec<Bytes> { out.chunks(n.max(1)).map(Bytes::copy_from_slice).collect() };
    Ok(match (piece, token_ms) {
        // One SSE event (one token) every `token_ms`: a model generating at a fixed rate.
        (_, Some(ms)) if ct == "text/event-stream" => {
            let events: Vec<Bytes> = out
                .split_inclusive(|&b| b == b'\n')
                .collect::<Vec<_>>()
                .chunk_by(|a, _| *a != b"\n")
                .map(|ls| Bytes::from(ls.concat()))
                .collect();
            chunked(&st, 200, ct, events, Duration::from_millis(ms), abort_after)
        }
        (Some(n), _) => chunked(&st, 200, ct, split(n), gap, abort_after),
        (None, _) if ct == "text/event-stream" => {
            chunked(&st, 200, ct, split(64), Duration::ZERO, abort_after)
        }
        (None, _) => full(200, ct, out),
    })
}

/// The text of the request's last user turn (`x-mock-echo`): the last message's content (a
/// string, or its parts' text), a completion's prompt, or a response's input.
fn echo_text(req: &Value) -> Option<String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => {
                let texts: Vec<String> = parts
                    .iter()
                    .filter_map(|p| match p {
                        Value::String(s) => Some(s.clone()),
                        _ => p
                            .get("text")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or_else(|| p.get("content").and_then(text)),
                    })
                    .collect();
                Some(texts.join(" "))
            }
            _ => None,
        }
    }
    if let Some(last) = req.get("messages").and_then(Value::as_array)?.last() {
        return last.get("content").and_then(text);
    }
    None
}

/// See [`echo_text`]: the request's own text for the APIs without `messages`.
fn echo_prompt(req: &Value) -> Option<String> {
    match req.get("prompt").or_else(|| req.get("input"))? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.last().and_then(|i| match i {
            Value::String(s) => Some(s.clone()),
            _ => i.get("content").and_then(|c| match c {
                Value::String(s) => Some(s.clone()),
                Value::Array(ps) => Some(
                    ps.iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            }),
        }),
        _ => None,
    }
}

pub fn chat_completion(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock1", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
        "system_fingerprint": null
    })
}

pub fn completion(model: &str, text: &str) -> Value {
    json!({
        "id": "cmpl-mock1", "object": "text_completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    })
}

pub fn response_obj(model: &str, text: &str) -> Value {
    json!({
        "id": "resp_mock1", "object": "response", "created_at": 1700000000, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_mock1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "error": null, "incomplete_details": null,
        "instructions": null, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        "usage": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    })
}

pub fn anthropic_message(model: &str, text: &str) -> Value {
    json!({
        "id": "msg_mock1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 7}
    })
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if c == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {}\n\n", data),
        None => format!("data: {}\n\n", data),
    }
}

pub fn chat_sse(model: &str, text: &str) -> Vec<u8> {
    let mut s = String::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id":"chatcmpl-mock1","object":"chat.completion.chunk","created":1700000000,"model":model,
               "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]})
    };
    s += &sse(
        None,
        &chunk(json!({"role":"assistant","content":""}), Value::Null),
    );
    for w in words(text) {
        s += &sse(None, &chunk(json!({"content": w}), Value::Null));
    }
    s += &sse(None, &chunk(json!({}), json!("stop")));
    s += "data: [DONE]\n\n";
    s.into_bytes()
}

pub fn responses_sse(model: &str, text: &str) -> Vec<u8> {
    let mut s = String::new();
    let mut resp = response_obj(model, "");
    resp["status"] = json!("in_progress");
    resp["output"] = json!([]);
    let mut seq = 0;
    let mut ev = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse(Some(name), &v)
    };
    s += &ev("response.created", json!({"response": resp.clone()}));
    s += &ev(
        "response.output_item.added",
        json!({"output_index":0,"item":{"type":"message","id":"msg_mock1","status":"in_progress","role":"assistant","content":[]}}),
    );
    s += &ev(
        "response.content_part.added",
        json!({"item_id":"msg_mock1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}),
    );
    for w in words(text) {
        s += &ev(
            "response.output_text.delta",
            json!({"item_id":"msg_mock1","output_index":0,"content_index":0,"delta":w,"logprobs":[]}),
        );
    }
    s += &ev(
        "response.output_text.done",
        json!({"item_id":"msg_mock1","output_index":0,"content_index":0,"text":text,"logprobs":[]}),
    );
    s += &ev(
        "response.completed",
        json!({"response": response_obj(model, text)}),
    );
    s.into_bytes()
}

pub fn anthropic_sse(model: &str, text: &str) -> Vec<u8> {
    let mut s = String::new();
    let mut start = anthropic_message(model, "");
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    s += &sse(
        Some("message_start"),
        &json!({"type":"message_start","message":start}),
    );
    s += &sse(
        Some("content_block_start"),
        &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    s += "event: ping\ndata: {\"type\": \"ping\"}\n\n";
    for w in words(text) {
        s += &sse(
            Some("content_block_delta"),
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":w}}),
        );
    }
    s += &sse(
        Some("content_block_stop"),
        &json!({"type":"content_block_stop","index":0}),
    );
    s += &sse(
        Some("message_delta"),
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}),
    );
    s += &sse(Some("message_stop"), &json!({"type":"message_stop"}));
    s.into_bytes()
}
