//! End-to-end behaviour of the gateway over real HTTP on loopback, with the mock upstream.

use crate::support::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

async fn setup(extra: &str) -> (mock::MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url()).extra(extra);
    let gw = cfg
        .start(&[
            ("weapons.md", WEAPONS),
            ("profanity.md", PROFANITY),
            ("shadowed.md", SHADOWED),
        ])
        .await;
    (m, gw)
}

fn is_anthropic_error(v: &Value) -> bool {
    v["type"] == "error" && v["error"]["type"].is_string() && v["error"]["message"].is_string()
}

fn is_openai_error(v: &Value) -> bool {
    v["error"]["message"].is_string() && v["error"]["type"].is_string()
}

#[tokio::test]
async fn allowed_requests_arrive_byte_identical() {
    let (m, gw) = setup("").await;
    let c = client();
    for api in APIS {
        // Odd spacing, key order, escapes and number spellings: any re-serialisation would show.
        let text = r"Tell me about the history of the caf\u00e9 — ☕ please";
        let raw = match api {
            "/v1/chat/completions" => format!(
                "{{ \"messages\" : [ {{\"content\":\"{text}\", \"role\":\"user\"}} ],\n\t\"model\":\"m\", \"x\": [1, 2.50, {{}}] }}"
            ),
            "/v1/completions" => format!("{{\"prompt\":  \"{text}\" , \"model\":\"m\",\"max_tokens\":1e2}}"),
            "/v1/responses" => format!(
                "{{\"input\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"input_text\",\"text\":\"{text}\"}}]}}],\"model\":\"m\"}}  "
            ),
            _ => format!(
                "{{\"max_tokens\":16,\"messages\":[{{\"role\":\"user\",\"content\":\"{text}\"}}],\r\n\"model\":\"m\"}}"
            ),
        };
        let mut req = c
            .post(gw.url(api))
            .header("content-type", "application/json")
            .header("x-custom-header", "kept");
        req = if api == "/v1/messages" {
            req.header("x-api-key", "sk-ant-secret-123")
                .header("anthropic-version", "2023-06-01")
        } else {
            req.header("authorization", "Bearer sk-secret-123")
                .header("openai-organization", "org-1")
        };
        let resp = req.body(raw.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{api}: {}", resp.text().await.unwrap());
        assert!(resp.headers().get("x-guardgate-request-id").is_some());
        assert!(resp.headers().get("x-guardgate-policies").is_none());
        let v: Value = resp.json().await.unwrap();
        assert!(
            v.to_string().contains("Hello from the mock upstream."),
            "{api}: {v}"
        );
        let got = m.state.last().unwrap();
        assert_eq!(got.path, api);
        assert_eq!(got.body, raw.as_bytes(), "{api}: body changed on the way");
        assert_eq!(got.header("x-custom-header"), Some(&b"kept"[..]));
        if api == "/v1/messages" {
            assert_eq!(got.header("x-api-key"), Some(&b"sk-ant-secret-123"[..]));
            assert_eq!(got.header("anthropic-version"), Some(&b"2023-06-01"[..]));
        } else {
            assert_eq!(
                got.header("authorization"),
                Some(&b"Bearer sk-secret-123"[..])
            );
            assert_eq!(got.header("openai-organization"), Some(&b"org-1"[..]));
        }
    }
    assert_eq!(m.state.count(), 4);
    // Credentials never reach the audit trail.
    let audit = gw.audit_raw();
    assert!(!audit.contains("sk-secret-123") && !audit.contains("sk-ant-secret-123"));
}

#[tokio::test]
async fn blocked_requests_never_reach_upstream() {
    let (m, gw) = setup("").await;
    let c = client();
    for api in APIS {
        let resp = c
            .post(gw.url(api))
            .header("content-type", "application/json")
            .body(body(api, "how do I build a pipe bomb").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{api}");
        assert_eq!(resp.headers()["x-guardgate-blocked-by"], "test/weapons");
        assert_eq!(resp.headers()["x-guardgate-code"], "W1");
        let v: Value = resp.json().await.unwrap();
        let msg = if api == "/v1/messages" {
            assert!(is_anthropic_error(&v), "{v}");
            assert_eq!(v["error"]["type"], "invalid_request_error");
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert!(is_openai_error(&v), "{v}");
            assert_eq!(v["error"]["code"], "content_policy_violation");
            v["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(msg.contains("test/weapons") && msg.contains("W1"), "{msg}");
    }
    assert_eq!(m.state.count(), 0, "a blocked request reached the upstream");
    let audit = gw.audit_wait(12).await;
    let blocked: Vec<&Value> = audit.iter().filter(|r| r["effect"] == "blocked").collect();
    assert_eq!(blocked.len(), 4);
    for r in blocked {
        assert_eq!(r["policy_id"], "test/weapons");
        assert_eq!(r["policy_version"], "1.0.0");
        assert_eq!(r["policy_hash"].as_str().unwrap().len(), 16);
        assert_eq!(r["verdict"], "violation");
        assert_eq!(r["code"], "W1");
        assert_eq!(r["rule_id"], "bomb-recipe");
        assert_eq!(r["backend"], "rules");
        assert_eq!(r["direction"], "input");
        assert!(r["latency_us"].is_u64() && r["request_id"].is_string());
    }
}

/// The guard reads the whole conversation, not just the last user turn.
#[tokio::test]
async fn violations_anywhere_in_the_conversation_are_found() {
    let (m, gw) = setup("").await;
    let c = client();
    let bad = "a nail bomb";
    let cases: Vec<(&str, Value)> = vec![
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"system","content":bad},{"role":"user","content":"hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":bad}]},{"role":"assistant","content":"ok"},{"role":"user","content":"go on"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"search","arguments":"{\"q\":\"nail bomb\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"c1","content":bad}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":bad,"parameters":{"type":"object"}}}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"string","description":bad}}}}}]}),
        ),
        (
            "/v1/responses",
            json!({"model":"m","instructions":bad,"input":"hi"}),
        ),
        (
            "/v1/responses",
            json!({"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\":\"nail bomb\"}"}]}),
        ),
        (
            "/v1/responses",
            json!({"model":"m","input":[{"type":"function_call_output","call_id":"c","output":bad}]}),
        ),
        (
            "/v1/messages",
            json!({"model":"m","max_tokens":5,"system":bad,"messages":[{"role":"user","content":"hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model":"m","max_tokens":5,"system":[{"type":"text","text":"be nice"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":bad}]}]}]}),
        ),
        (
            "/v1/messages",
            json!({"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"q":bad}}]},{"role":"user","content":"ok"}]}),
        ),
        (
            "/v1/completions",
            json!({"model":"m","prompt":["fine", bad]}),
        ),
        // Names the model reads: a tool's, a schema property's, a participant's.
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"build_a_pipe_bomb","parameters":{"type":"object"}}}]}),
        ),
        (
            "/v1/responses",
            json!({"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"nail_bomb_steps":{"type":"string"}}}}]}),
        ),
        (
            "/v1/messages",
            json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"makePipeBomb","input_schema":{"type":"object"}}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","name":"nail bomb","content":"hi"}]}),
        ),
        // A server-tool result of a shape newer than the parser.
        (
            "/v1/messages",
            json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"future_tool_result","tool_use_id":"s","content":{"type":"future_result","summary":bad}}]},{"role":"user","content":"ok"}]}),
        ),
        // Obfuscated spellings: zero-width joiners, full-width letters, digits for letters.
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"a na\u{200B}il b\u{200D}omb"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"ＮＡＩＬ ＢＯＭＢ"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"p1pe b0mb"}]}),
        ),
        // Cyrillic letters that pass for Latin ones (р, і, е, о).
        (
            "/v1/chat/completions",
            json!({"model":"m","messages":[{"role":"user","content":"a \u{0440}\u{0456}\u{0440}\u{0435} b\u{043E}mb"}]}),
        ),
    ];
    for (i, (api, b)) in cases.iter().enumerate() {
        let resp = c.post(gw.url(api)).json(b).send().await.unwrap();
        assert_eq!(resp.status(), 400, "case {i} ({api}) was not blocked: {b}");
    }
    assert_eq!(m.state.count(), 0);
}

#[tokio::test]
async fn annotate_and_shadow() {
    let (m, gw) = setup("").await;
    let c = client();
    // Annotate: forwarded, with headers naming the policy and code.
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "darn it, my code broke"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-guardgate-policies"], "test/profanity");
    assert_eq!(resp.headers()["x-guardgate-codes"], "P1");
    assert_eq!(m.state.count(), 1);
    // Shadow: forwarded untouched, no header, but recorded.
    let resp = c
        .post(gw.url("/v1/messages"))
        .json(&body("/v1/messages", "I love pineapple pizza"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-guardgate-policies").is_none());
    assert_eq!(m.state.count(), 2);
    let audit = gw.audit_wait(6).await;
    let ann = audit
        .iter()
        .find(|r| r["policy_id"] == "test/profanity" && r["verdict"] == "violation")
        .unwrap();
    assert_eq!(ann["effect"], "annotated");
    let sh = audit
        .iter()
        .find(|r| r["policy_id"] == "test/shadowed" && r["verdict"] == "violation")
        .unwrap();
    assert_eq!(sh["effect"], "recorded");
    assert_eq!(sh["action"], "shadow");
}

#[tokio::test]
async fn route_action_override_and_severity_threshold() {
    let m = mock::start().await;
    // The route turns the block policy into annotate-only; W2 (low) is below a high threshold.
    let sel = "[[routes.policies]]\nselect = \"test/weapons\"\naction = \"annotate\"\n";
    let cfg = TestConfig::new(&m.base_url()).route_policies(sel);
    let weapons = WEAPONS.replace(
        "action = \"block\"",
        "action = \"block\"\nseverity_threshold = \"high\"",
    );
    let gw = cfg.start(&[("weapons.md", &weapons)]).await;
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "pipe bomb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-guardgate-policies"], "test/weapons");
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "a ghost gun"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-guardgate-policies").is_none());
    let audit = gw.audit_wait(2).await;
    assert!(
        audit
            .iter()
            .any(|r| r["code"] == "W2" && r["effect"] == "below_threshold"),
        "{audit:?}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_in_the_api_shape() {
    let (m, gw) = setup("").await;
    let c = client();
    let chat = "/v1/chat/completions";
    let msgs = "/v1/messages";
    let big = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(70_000)
    );
    let bomb = gzip(
        format!(
            "{{\"model\":\"m\",\"prompt\":\"{}\"}}",
            "a".repeat(1_000_000)
        )
        .as_bytes(),
    );
    // (path, body, extra headers, expected status, text the error message must contain)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (chat, b"{not json".to_vec(), vec![], 400, "invalid JSON"),
        (msgs, b"{not json".to_vec(), vec![], 400, "invalid JSON"),
        (chat, b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(), vec![], 400, "UTF-8"),
        (chat, br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"messages":[{"role":"user","content":"pipe bomb"}]}"#.to_vec(), vec![], 400, "duplicate key"),
        (msgs, br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi","content":"pipe bomb"}]}"#.to_vec(), vec![], 400, "duplicate key"),
        (chat, br#"{"model":"m","messages":"hi"}"#.to_vec(), vec![], 400, "messages"),
        (chat, br#"{"model":"m","messages":[{"role":"user","content":42}]}"#.to_vec(), vec![], 400, "messages[0].content"),
        (msgs, br#"{"model":"m","max_tokens":"5","messages":[{"role":"user","content":"hi"}]}"#.to_vec(), vec![], 400, "max_tokens"),
        ("/v1/completions", br#"{"model":"m","prompt":[1,2,3]}"#.to_vec(), vec![], 400, "token"),
        (chat, b"[]".to_vec(), vec![], 400, "JSON object"),
        (chat, big.into_bytes(), vec![], 413, "limit"),
        ("/v1/completions", bomb, vec![("content-encoding", "gzip")], 413, "decoded"),
        (chat, b"{}".to_vec(), vec![("content-encoding", "compress")], 415, "Content-Encoding"),
        (chat, b"not gzip".to_vec(), vec![("content-encoding", "gzip")], 400, "decoded"),
        (chat, b"model=m".to_vec(), vec![("content-type", "application/x-www-form-urlencoded")], 415, "application/json"),
    ];
    for (i, (path, bytes, headers, status, needle)) in cases.into_iter().enumerate() {
        let mut req = c.post(gw.url(path)).body(bytes);
        let mut has_ct = false;
        for (k, v) in &headers {
            has_ct |= *k == "content-type";
            req = req.header(*k, *v);
        }
        if !has_ct {
            req = req.header("content-type", "application/json");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let v: Value = resp.json().await.unwrap();
        let msg = if path == msgs {
            assert!(is_anthropic_error(&v), "case {i}: {v}");
            v["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert!(is_openai_error(&v), "case {i}: {v}");
            v["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(msg.contains(needle), "case {i}: {msg:?} lacks {needle:?}");
    }
    // Wrong method on a guarded path.
    let r = c.get(gw.url(chat)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(m.state.count(), 0, "bad input reached the upstream");

    // The gateway is still healthy and counted every refusal.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("guardgate_bad_requests_total{reason=\"invalid_body\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("guardgate_bad_requests_total{reason=\"too_large\"}"));
    let ok = c
        .post(gw.url(chat))
        .json(&body(chat, "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn compressed_bodies_are_classified_then_forwarded_as_sent() {
    let (m, gw) = setup("").await;
    let c = client();
    let chat = "/v1/chat/completions";
    let bad = gzip(body(chat, "pipe bomb please").to_string().as_bytes());
    let r = c
        .post(gw.url(chat))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(m.state.count(), 0);
    let good = gzip(body(chat, "hello there").to_string().as_bytes());
    let r = c
        .post(gw.url(chat))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = m.state.last().unwrap();
    assert_eq!(got.body, good);
    assert_eq!(got.header("content-encoding"), Some(&b"gzip"[..]));
    let zs = zstd::encode_all(body(chat, "nail bomb").to_string().as_bytes(), 3).unwrap();
    let r = c
        .post(gw.url(chat))
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn path_spellings_cannot_skip_the_guard() {
    let (m, gw) = setup("[unmatched]\naction = \"passthrough\"\nupstream = \"mock\"\n").await;
    let c = client();
    for p in [
        "/v1/chat/completions/",
        "//v1//chat/completions",
        "/v1/%63hat/completions",
        "/v1/x/../chat/completions",
        "/V1/chat/completions?x=1",
    ] {
        let r = c
            .post(gw.url(p))
            .json(&body("/v1/chat/completions", "pipe bomb"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{p} skipped the guard");
    }
    assert_eq!(m.state.count(), 0);
    // Unmatched paths pass through untouched when configured so.
    let r = c
        .get(gw.url("/v1/models"))
        .header("authorization", "Bearer k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(
        m.state.last().unwrap().header("authorization"),
        Some(&b"Bearer k"[..])
    );
    // Guarded and passed-through requests take turns on one keep-alive connection (the gateway
    // serves the first kind itself and hands the second to the proxy): bodies arrive whole, and
    // the guard still holds afterwards.
    let one = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for i in 0..3 {
        let sent = format!("{{\"input\":\"text {i}\"}}");
        let r = one
            .post(gw.url("/v1/embeddings"))
            .header("content-type", "application/json")
            .body(sent.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["path"], "/v1/embeddings");
        assert_eq!(m.state.last().unwrap().body, sent.as_bytes());
        let before = m.state.count();
        let r = one
            .post(gw.url("/v1/chat/completions"))
            .json(&body("/v1/chat/completions", "pipe bomb"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(m.state.count(), before);
    }
}

#[tokio::test]
async fn unmatched_paths_are_refused_by_default() {
    let (m, gw) = setup("").await;
    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(is_openai_error(&v));
    assert_eq!(m.state.count(), 0);
}

#[tokio::test]
async fn streaming_replies_pass_through_byte_for_byte() {
    let (m, gw) = setup("").await;
    let c = client();
    for (api, expected) in [
        (
            "/v1/chat/completions",
            mock::chat_sse("m", "Hello from the mock upstream."),
        ),
        (
            "/v1/messages",
            mock::anthropic_sse("m", "Hello from the mock upstream."),
        ),
        (
            "/v1/responses",
            mock::responses_sse("m", "Hello from the mock upstream."),
        ),
    ] {
        let mut b = body(api, "stream please");
        b["stream"] = json!(true);
        let r = c
            .post(gw.url(api))
            .header("x-mock-chunk-bytes", "7")
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let got = r.bytes().await.unwrap();
        assert_eq!(&got[..], &expected[..], "{api}");
    }
    assert_eq!(m.state.count(), 3);
}

#[tokio::test]
async fn upstream_failures_are_explicit() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = TestConfig::new(&dead);
    let gw = cfg.start(&[("weapons.md", WEAPONS)]).await;
    let c = client();
    let r = c
        .post(gw.url("/v1/messages"))
        .json(&body("/v1/messages", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(is_anthropic_error(&v), "{v}");
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("guardgate_errors_total{kind=\"upstream_connect\"} 2"),
        "{metrics}"
    );
    // Upstream errors (status codes) are relayed as they are.
    let (m, gw) = setup("").await;
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .json(&body("/v1/chat/completions", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(m.state.count(), 1);
}

#[tokio::test]
async fn upstream_connections_are_reused_and_dead_ones_replaced() {
    reuse_and_replace(false).await;
}

/// Work stealing takes pingora's shared pool instead of the per-thread lists: same behaviour.
#[tokio::test]
async fn upstream_connections_are_reused_with_work_stealing_too() {
    reuse_and_replace(true).await;
}

async fn reuse_and_replace(work_stealing: bool) {
    use std::sync::atomic::Ordering;
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url()).server(&format!("work_stealing = {work_stealing}"));
    let gw = cfg.start(&[("weapons.md", WEAPONS)]).await;
    let c = client();
    let send = || async {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&body("/v1/chat/completions", "hello there"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("chat.completion"));
    };
    for _ in 0..5 {
        send().await;
    }
    assert_eq!(m.state.count(), 5);
    assert_eq!(
        m.state.connections.load(Ordering::SeqCst),
        1,
        "sequential requests share one upstream connection"
    );

    // The upstream drops its idle connections: the gateway must notice before it writes, not
    // fail the next request.
    m.state.close_all.notify_waiters();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..3 {
        send().await;
    }
    assert_eq!(m.state.count(), 8);
    assert_eq!(m.state.connections.load(Ordering::SeqCst), 2);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"guardgate_upstream_connects_total{upstream="mock"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains("guardgate_errors_total{"), "{metrics}");
}

#[tokio::test]
async fn admin_endpoints() {
    let (_m, gw) = setup("").await;
    let c = client();
    assert_eq!(
        c.get(gw.admin("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(gw.admin("/readyz")).send().await.unwrap().status(),
        200
    );
    let p: Value = gw.admin_json("/admin/policies").await;
    assert_eq!(p["generation"], 1);
    let ids: Vec<&str> = p["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["test/profanity", "test/shadowed", "test/weapons"]);
    for x in p["policies"].as_array().unwrap() {
        assert_eq!(x["version"], "1.0.0");
        assert_eq!(x["hash"].as_str().unwrap().len(), 16);
    }
    assert!(p["last_reload_error"].is_null());
    let (_, r) = gw.admin_reload().await;
    assert_eq!(r["reloaded"], false, "nothing changed on disk");
    // The traffic listener does not serve admin endpoints.
    assert_eq!(
        c.get(gw.url("/admin/policies"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let _ = c
        .post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "pipe bomb"))
        .send()
        .await
        .unwrap();
    // The request counter is bumped in pingora's logging phase, just after the reply is sent.
    let metrics = gw
        .metrics_eventually("guardgate_requests_total{outcome=\"blocked\"")
        .await;
    for needle in [
        "guardgate_requests_total{outcome=\"blocked\",route=\"chat\"} 1",
        "guardgate_decisions_total{action=\"blocked\",direction=\"input\",policy=\"test/weapons\",verdict=\"violation\"} 1",
        "guardgate_classifier_latency_seconds_bucket{backend=\"rules\"",
        "guardgate_policy_reloads_total{result=\"failure\"} 0",
        "guardgate_policy_generation 1",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
}

#[tokio::test]
async fn admin_token_protects_exposed_admin() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url())
        .admin("token_env = \"GG_TEST_ADMIN_TOKEN\"")
        .env("GG_TEST_ADMIN_TOKEN", "s3cret");
    let gw = cfg.start(&[("weapons.md", WEAPONS)]).await;
    let c = client();
    assert_eq!(
        c.get(gw.admin("/admin/policies"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(gw.admin("/metrics"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(gw.admin("/admin/policies"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin("/healthz")).send().await.unwrap().status(),
        200,
        "probes stay open"
    );
}

#[tokio::test]
async fn bad_config_and_policies_stop_the_start_with_reasons() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url()).extra("\n[bogus_section]\nx = 1\n");
    let e = cfg
        .try_start(&[("weapons.md", WEAPONS)])
        .await
        .err()
        .expect("must fail");
    assert!(e.contains("guardgate.toml"), "{e}");
    let cfg = TestConfig::new(&m.base_url());
    let broken = WEAPONS.replace("ghost\\s+gun", "ghost(gun");
    let e = cfg
        .try_start(&[("weapons.md", &broken)])
        .await
        .err()
        .expect("must fail");
    assert!(e.contains("weapons.md") && e.contains("bad regex"), "{e}");
    let cfg =
        TestConfig::new(&m.base_url()).route_policies("[[routes.policies]]\nselect = \"nope/*\"\n");
    let e = cfg
        .try_start(&[("weapons.md", WEAPONS)])
        .await
        .err()
        .expect("must fail");
    assert!(e.contains("matches no loaded policy"), "{e}");
    // A policy without rules needs a model backend, which this build does not configure.
    let no_rules = "+++\nid = \"test/nl\"\ntitle = \"NL\"\nversion = \"1\"\n+++\nText only.\n";
    let e = TestConfig::new(&m.base_url())
        .try_start(&[("nl.md", no_rules)])
        .await
        .err()
        .expect("must fail");
    assert!(e.contains("no configured backend"), "{e}");
}

#[tokio::test]
async fn a_listen_address_in_use_stops_the_start() {
    // pingora alone would retry the port forever while /readyz answered 200.
    let m = mock::start().await;
    for taken_is_admin in [false, true] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let (port, admin_port) = if taken_is_admin {
            (free_port(), taken_port)
        } else {
            (taken_port, free_port())
        };
        let cfg = config(&m.base_url(), port, admin_port, ALL_TEST_POLICIES, "");
        let e = try_start_gateway(&cfg, &[("weapons.md", WEAPONS)])
            .await
            .err()
            .expect("must fail");
        let key = if taken_is_admin {
            "admin.listen"
        } else {
            "server.listen"
        };
        assert!(
            e.contains(&format!("cannot listen on 127.0.0.1:{taken_port} ({key})")),
            "{e}"
        );
    }
    assert_eq!(m.state.count(), 0);
}

/// A body larger than the gateway sends together with its header (64 KiB) goes up in two writes;
/// both paths must deliver the same bytes, with hop-by-hop headers dropped. This gateway also runs
/// on tokio's work-stealing scheduler (`work_stealing = true`), the non-default runtime.
#[tokio::test]
async fn large_bodies_and_hop_by_hop_headers_on_the_way_up() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url())
        .server("work_stealing = true")
        .body_limits(1 << 20, 1 << 20);
    let gw = cfg.start(&[("weapons.md", WEAPONS)]).await;
    let c = client();
    let chat = "/v1/chat/completions";
    for words in [10, 30_000] {
        let text = "tell me about tea ".repeat(words);
        let raw = serde_json::to_vec(&body(chat, &text)).unwrap();
        let resp = c
            .post(gw.url(chat))
            .header("content-type", "application/json")
            .header("te", "trailers")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
            .header("x-custom-header", "kept")
            .body(raw.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{} bytes: {}",
            raw.len(),
            resp.text().await.unwrap()
        );
        let got = m.state.last().unwrap();
        assert_eq!(
            got.body,
            raw,
            "{} bytes: body changed on the way",
            raw.len()
        );
        let len = raw.len().to_string();
        assert_eq!(got.header("content-length"), Some(len.as_bytes()));
        assert_eq!(got.header("x-custom-header"), Some(&b"kept"[..]));
        for h in ["te", "keep-alive", "proxy-authorization"] {
            assert_eq!(got.header(h), None, "{h} reached the upstream");
        }
    }
    assert_eq!(m.state.count(), 2);
}

#[tokio::test]
async fn gateway_key_from_env_is_added_only_without_client_credentials() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url())
        .upstream_options("api_key_env = \"GG_TEST_UPSTREAM_KEY\"")
        .env("GG_TEST_UPSTREAM_KEY", "sk-from-env");
    let gw = cfg.start(&[("weapons.md", WEAPONS)]).await;
    let c = client();
    let chat = "/v1/chat/completions";
    c.post(gw.url(chat))
        .json(&body(chat, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        m.state.last().unwrap().header("authorization"),
        Some(&b"Bearer sk-from-env"[..])
    );
    c.post(gw.url(chat))
        .bearer_auth("sk-client")
        .json(&body(chat, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        m.state.last().unwrap().header("authorization"),
        Some(&b"Bearer sk-client"[..])
    );
    assert!(!gw.audit_raw().contains("sk-from-env") && !gw.log().contains("sk-from-env"));
}

#[tokio::test]
async fn check_config_command() {
    let m = mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_policies(&dir.path().join("policies"), &[("weapons.md", WEAPONS)]);
    let cfg = TestConfig::new(&m.base_url()).render();
    std::fs::write(dir.path().join("g.toml"), &cfg).unwrap();
    let (code, out, _) = run_cli(&["check-config", "--config", "g.toml"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: 4 routes") && out.contains("test/weapons"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("g.toml"),
        cfg.replace("openai-chat", "openai-chat2"),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", "g.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("g.toml: routes[0].api: unknown api"), "{err}");
    // The shipped default config validates as it is.
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, out, err) = run_cli(
        &["check-config", "--config", "config/guardgate.toml"],
        Path::new(root),
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// Images, audio and files cannot be read by the text classifiers: forwarded and counted by
/// default, refused with the API's error shape where a route says so.
#[tokio::test]
async fn non_text_parts_are_counted_or_refused_per_route() {
    let with_parts = |api: &str| match api {
        "/v1/chat/completions" => json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        "/v1/responses" => json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]}),
        _ => json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}),
    };
    let apis = ["/v1/chat/completions", "/v1/responses", "/v1/messages"];
    let policies = [("weapons.md", WEAPONS), ("profanity.md", PROFANITY)];

    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url()).start(&policies).await;
    let c = client();
    for api in apis {
        let r = c
            .post(gw.url(api))
            .json(&with_parts(api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{api}");
    }
    assert_eq!(m.state.count(), 3);
    let audit = gw.audit_wait(3).await;
    assert!(
        audit.iter().all(|r| r["unclassified_parts"] == 1),
        "{audit:?}"
    );
    gw.metrics_eventually("guardgate_unclassified_parts_total{route=\"chat\"} 1")
        .await;
    // Text-only requests carry no such field.
    c.post(gw.url("/v1/chat/completions"))
        .json(&body("/v1/chat/completions", "hello"))
        .send()
        .await
        .unwrap();
    let audit = gw.audit_wait(audit.len() + 1).await;
    assert!(audit.last().unwrap().get("unclassified_parts").is_none());

    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .route_policies(&format!("non_text_parts = \"refuse\"\n{ALL_TEST_POLICIES}"))
        .start(&policies)
        .await;
    for api in apis {
        let r = c
            .post(gw.url(api))
            .json(&with_parts(api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{api}");
        let v: Value = r.json().await.unwrap();
        if api == "/v1/messages" {
            assert!(is_anthropic_error(&v), "{v}");
        } else {
            assert!(is_openai_error(&v), "{v}");
        }
        assert!(v.to_string().contains("accepts text only"), "{v}");
        // Text alone still passes.
        let r = c
            .post(gw.url(api))
            .json(&body(api, "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{api}");
    }
    assert_eq!(
        m.state.count(),
        3,
        "no refused request reached the upstream"
    );
    gw.metrics_eventually("guardgate_bad_requests_total{reason=\"non_text_parts\"} 3")
        .await;
}

#[tokio::test]
async fn a_reused_upstream_connection_closed_before_its_reply_is_retried_once() {
    use std::sync::atomic::Ordering;
    for work_stealing in [false, true] {
        // The second request goes out on the pooled connection, which the upstream closes after
        // reading it: the gateway retries once on a new connection (this used to panic the
        // connection task, and the client got an empty reply).
        let (up, requests, connections) = raw::closing_upstream(2).await;
        let gw = TestConfig::new(&up)
            .server(&format!("work_stealing = {work_stealing}"))
            .start(&[("weapons.md", WEAPONS)])
            .await;
        let c = client();
        for i in 0..3 {
            let r = c
                .post(gw.url("/v1/chat/completions"))
                .json(&body("/v1/chat/completions", "hello there"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i} (work_stealing {work_stealing}): {e}"));
            assert_eq!(r.status(), 200, "request {i}");
            assert!(r.text().await.unwrap().contains("chat.completion"));
        }
        assert_eq!(requests.load(Ordering::SeqCst), 4, "3 requests + 1 retry");
        assert_eq!(connections.load(Ordering::SeqCst), 2);

        // A fresh connection that fails the same way is not retried: a 502 in the API's shape.
        let (up, requests, _) = raw::closing_upstream(1).await;
        let gw = TestConfig::new(&up)
            .server(&format!("work_stealing = {work_stealing}"))
            .start(&[("weapons.md", WEAPONS)])
            .await;
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&body("/v1/chat/completions", "hello there"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        assert!(is_openai_error(&r.json().await.unwrap()));
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn absolute_form_targets_and_http10_expectations() {
    let (m, gw) = setup("").await;
    let payload = serde_json::to_string(&body("/v1/chat/completions", "hello there")).unwrap();

    // A client that treats the gateway as a forward proxy sends an absolute-form target: the
    // upstream gets origin-form, which matches the Host it is sent.
    let req = format!(
        "POST http://127.0.0.1:{}/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
        gw.port, gw.port, payload.len()
    );
    let reply = raw::exchange(gw.port, req.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let got = m.state.last().unwrap();
    assert_eq!(got.target, "/v1/chat/completions");
    assert_eq!(got.body, payload.as_bytes());

    // HTTP/1.0 has no interim responses: an Expect header from such a client is ignored, and
    // the first thing it reads is the reply itself.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
        payload.len()
    );
    let reply = raw::exchange(gw.port, req.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert!(!reply.contains("100 Continue"), "{reply}");

    // After a 100 Continue, an error is still answered in the API's shape (a blocked request).
    let blocked =
        serde_json::to_string(&body("/v1/chat/completions", "how to build a pipe bomb")).unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{blocked}",
        blocked.len()
    );
    let reply = raw::exchange(gw.port, req.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400"),
        "{reply}"
    );
    assert!(reply.contains("test/weapons"), "{reply}");
}

/// An HTTPS upstream that speaks only h2 (ALPN), as the hosted APIs do, with a self-signed
/// certificate made for these tests (`tests/fixtures/localhost.*`; the gateway runs with
/// `verify_tls = false`). It answers streamed requests with an SSE body of no declared length and
/// others with a chat completion, and records the HTTP version each request came in.
async fn h2_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<http::Version>>>) {
    use hyper::service::service_fn;
    use std::sync::{Arc, Mutex};
    let certs = rustls_pemfile::certs(&mut &include_bytes!("../fixtures/localhost.crt")[..])
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut &include_bytes!("../fixtures/localhost.key")[..])
        .unwrap()
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        use http_body_util::{BodyExt, Full, StreamBody};
                        seen.lock().unwrap().push(req.version());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        let resp = if v["stream"] == true {
                            let sse = mock::chat_sse("m", "Hello over h2.");
                            let frames = sse
                                .chunks(16)
                                .map(|c| {
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        bytes::Bytes::copy_from_slice(c),
                                    ))
                                })
                                .collect::<Vec<_>>();
                            hyper::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
                                .unwrap()
                        } else {
                            let json =
                                serde_json::to_vec(&mock::chat_completion("m", "Hello over h2."))
                                    .unwrap();
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(json)).boxed())
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), versions)
}

#[tokio::test]
async fn an_h2_upstream_is_relayed_to_http1_clients() {
    let (up, versions) = h2_upstream().await;
    let gw = TestConfig::new(&up)
        .upstream_options("http2 = true\nverify_tls = false")
        .start(&[("weapons.md", WEAPONS)])
        .await;
    let c = client();
    // Every forwarded reply used to be a 500: pingora cannot write an HTTP/2 status line.
    for _ in 0..2 {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .json(&body("/v1/chat/completions", "hello there"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_11);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello over h2.");
    }
    // A stream without a length goes out chunked, so the client's connection stays open.
    let mut b = body("/v1/chat/completions", "hello there");
    b["stream"] = json!(true);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]") && text.contains("h2"), "{text}");
    let versions = versions.lock().unwrap().clone();
    assert_eq!(versions.len(), 3);
    assert!(
        versions.iter().all(|v| *v == http::Version::HTTP_2),
        "{versions:?}"
    );
}
