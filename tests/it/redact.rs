//! The redact action through the real binary: the upstream gets placeholders and never the
//! values, the request stays valid for its API, and with `restore = true` the client gets its
//! values back in plain replies and in streams of all four APIs, a placeholder split across two
//! events included.

use crate::support::*;
use guardgate::wire::sse::SseParser;
use serde_json::{json, Value};
use std::io::Write;

const EMAIL: &str = "jane.doe+bills@corp.example";

/// A redact policy: e-mail addresses (the other detectors too), and a rule of its own for
/// references that may hold quotes and backslashes.
fn redact_policy(restore: bool) -> String {
    format!(
        r#"+++
id = "pii/redact"
title = "PII"
version = "1.2.0"
action = "redact"
[redact]
restore = {restore}
[[rules]]
id = "ref-code"
regex = 'ref:\S+'
+++
# PII
Redacted before it goes upstream.
"#
    )
}

const BIND: &str = "[[routes.policies]]\nselect = \"pii/redact\"\n";

async fn setup(
    restore: bool,
    routes: &str,
    extra: &[(&str, &str)],
) -> (mock::MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let policy = redact_policy(restore);
    let mut files = vec![("redact.md", policy.as_str())];
    files.extend_from_slice(extra);
    let gw = TestConfig::new(&m.base_url())
        .route_policies(routes)
        .start(&files)
        .await;
    (m, gw)
}

fn sent(m: &mock::MockUpstream) -> (Value, String) {
    let r = m.state.last().expect("the upstream got the request");
    let text = String::from_utf8(r.body.clone()).unwrap();
    (
        serde_json::from_str(&text).expect("the upstream can parse it"),
        text,
    )
}

#[tokio::test]
async fn the_upstream_gets_placeholders_and_valid_json() {
    let (m, gw) = setup(false, BIND, &[]).await;
    let args = json!({"to": EMAIL, "note": "say \"hi\" to ref:a\"b\\c", "cc": ["x@y.example"]})
        .to_string();
    let req = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": format!("Escalate to {EMAIL}.")},
            {"role": "user", "content": [
                {"type": "text", "text": format!("Mail \"{EMAIL}\" and x@y.example, then {EMAIL} again. Unicode: é✓ ref:q\"\\\\z")},
                {"type": "image_url", "image_url": {"url": "https://img.example/x@y.example.png"}}
            ]},
            {"role": "assistant", "tool_calls": [{"id": "call_x@y.example", "type": "function",
                "function": {"name": "send_mail", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "call_x@y.example", "content": format!("sent to {EMAIL}")}
        ]
    });
    let r = client()
        .post(gw.url(CHAT))
        .header("x-mock-echo", "1")
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    let (got, raw) = sent(&m);
    assert!(!raw.contains(EMAIL) && !raw.contains("jane"), "{raw}");
    assert!(!raw.contains("ref:a") && !raw.contains("ref:q"), "{raw}");
    assert_eq!(got["model"], "gpt-4o");
    assert_eq!(got["messages"][0]["content"], "Escalate to [EMAIL_1].");
    assert_eq!(
        got["messages"][1]["content"][0]["text"],
        "Mail \"[EMAIL_1]\" and [EMAIL_2], then [EMAIL_1] again. Unicode: é✓ [REF_CODE_1]"
    );
    // Ids and URLs are not text.
    assert_eq!(
        got["messages"][2]["tool_calls"][0]["id"],
        "call_x@y.example"
    );
    assert_eq!(
        got["messages"][1]["content"][1]["image_url"]["url"],
        "https://img.example/x@y.example.png"
    );
    let args: Value = serde_json::from_str(
        got["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .expect("the arguments stay JSON");
    assert_eq!(
        args,
        json!({"to": "[EMAIL_1]", "note": "say \"hi\" to [REF_CODE_2]", "cc": ["[EMAIL_2]"]})
    );
    assert_eq!(got["messages"][3]["content"], "sent to [EMAIL_1]");
    // Without restore, the client reads what the model wrote.
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("[EMAIL_1]"), "{text}");
    // One record for the binding, counts by kind, no values.
    let audit = gw
        .audit_until(|a| a.iter().any(|r| r["action"] == "redact"))
        .await;
    let rec = audit.iter().find(|r| r["action"] == "redact").unwrap();
    assert_eq!(rec["verdict"], "redacted");
    assert_eq!(rec["policy_id"], "pii/redact");
    assert_eq!(rec["policy_version"], "1.2.0");
    assert_eq!(rec["redactions"], json!({"email": 7, "ref_code": 2}));
    assert!(!gw.audit_raw().contains("corp.example"));
    let metrics = gw
        .metrics_eventually("guardgate_redactions_total{kind=\"email\"} 7")
        .await;
    assert!(metrics.contains("guardgate_redactions_total{kind=\"ref_code\"} 2"));
}

#[tokio::test]
async fn a_body_with_nothing_to_redact_goes_byte_for_byte() {
    let (m, gw) = setup(true, BIND, &[]).await;
    // Spacing, key order and escapes that a re-serialisation would change.
    let raw = "{ \"messages\" : [ {\"role\":\"user\", \"content\": \"caf\\u00e9 \\/ no addresses here\"} ],\n  \"model\":\"m\" }";
    let r = client()
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(m.state.last().unwrap().body, raw.as_bytes());
    let audit = gw
        .audit_until(|a| a.iter().any(|r| r["action"] == "redact"))
        .await;
    let rec = audit.iter().find(|r| r["action"] == "redact").unwrap();
    assert_eq!(rec["verdict"], "clean");
    assert!(rec.get("redactions").is_none());
}

#[tokio::test]
async fn a_gzip_request_is_redacted_and_sent_uncompressed() {
    let (m, gw) = setup(false, BIND, &[]).await;
    let body = serde_json::to_vec(&chat(&format!("write to {EMAIL}"))).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let r = client()
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = m.state.last().unwrap();
    assert_eq!(rec.header("content-encoding"), None);
    let (got, _) = sent(&m);
    assert_eq!(got["messages"][0]["content"], "write to [EMAIL_1]");
}

/// The assistant text of a plain reply of each API.
fn reply_text(api: &str, v: &Value) -> String {
    match api {
        "/v1/chat/completions" => v["choices"][0]["message"]["content"].as_str(),
        "/v1/completions" => v["choices"][0]["text"].as_str(),
        "/v1/responses" => v["output"][0]["content"][0]["text"].as_str(),
        _ => v["content"][0]["text"].as_str(),
    }
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn restore_puts_the_values_back_in_plain_replies() {
    let (m, gw) = setup(true, BIND, &[]).await;
    // A value with a quote and a backslash must come back JSON-escaped.
    let text = format!("Mail {EMAIL} about ref:a\"b\\c today");
    for api in APIS {
        let r = client()
            .post(gw.url(api))
            .header("x-mock-echo", "1")
            .json(&body(api, &text))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{api}");
        let raw = r.text().await.unwrap();
        assert!(
            !raw.contains("[EMAIL_") && !raw.contains("[REF_CODE_"),
            "{api}: {raw}"
        );
        let v: Value = serde_json::from_str(&raw).expect("a valid JSON reply");
        assert_eq!(reply_text(api, &v), text, "{api}");
        let (_, up) = sent(&m);
        assert!(!up.contains(EMAIL), "{api}: {up}");
    }
    // A placeholder the request did not make is the model's own text.
    let r = client()
        .post(gw.url(CHAT))
        .header("x-mock-reply", "[EMAIL_1] and [EMAIL_9]")
        .json(&chat(&format!("to {EMAIL}")))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(reply_text(CHAT, &v), format!("{EMAIL} and [EMAIL_9]"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ev(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A stream of `api` whose text comes in two deltas, `a` then `b`.
fn two_deltas(api: &str, a: &str, b: &str) -> String {
    let whole = format!("{a}{b}");
    match api {
        "/v1/chat/completions" => {
            let chunk = |d: Value, f: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": f}]});
            ev(
                None,
                &chunk(json!({"role": "assistant", "content": a}), Value::Null),
            ) + &ev(None, &chunk(json!({"content": b}), Value::Null))
                + &ev(None, &chunk(json!({}), json!("stop")))
                + "data: [DONE]\n\n"
        }
        "/v1/completions" => {
            let chunk = |t: &str, f: Value| json!({"id": "c1", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": t, "finish_reason": f}]});
            ev(None, &chunk(a, Value::Null))
                + &ev(None, &chunk(b, Value::Null))
                + &ev(None, &chunk("", json!("stop")))
                + "data: [DONE]\n\n"
        }
        "/v1/responses" => {
            let delta = |d: &str| json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": d});
            let response = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
                "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                            "content": [{"type": "output_text", "text": whole, "annotations": []}]}]});
            ev(Some("response.output_text.delta"), &delta(a))
                + &ev(Some("response.output_text.delta"), &delta(b))
                + &ev(
                    Some("response.output_text.done"),
                    &json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": whole}),
                )
                + &ev(
                    Some("response.completed"),
                    &json!({"type": "response.completed", "response": response}),
                )
        }
        _ => {
            let delta = |t: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
            ev(
                Some("message_start"),
                &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            ) + &ev(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ) + &ev(Some("content_block_delta"), &delta(a))
                + &ev(Some("content_block_delta"), &delta(b))
                + &ev(
                    Some("content_block_stop"),
                    &json!({"type": "content_block_stop", "index": 0}),
                )
                + &ev(
                    Some("message_delta"),
                    &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                )
                + &ev(Some("message_stop"), &json!({"type": "message_stop"}))
        }
    }
}

/// The text a client assembles from a stream of `api` (deltas only), and whether the stream
/// ended as the API ends one.
fn streamed_text(api: &str, bytes: &[u8]) -> (String, bool) {
    let mut text = String::new();
    let mut ended = false;
    for e in SseParser::new().push(bytes) {
        let data = e.data.unwrap_or_default();
        if data == "[DONE]" {
            ended = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data).expect("every event is JSON");
        let piece = match api {
            "/v1/chat/completions" => v["choices"][0]["delta"]["content"].as_str(),
            "/v1/completions" => v["choices"][0]["text"].as_str(),
            "/v1/responses" => {
                if v["type"] == "response.completed" {
                    ended = true;
                }
                v["delta"]
                    .as_str()
                    .filter(|_| v["type"] == "response.output_text.delta")
            }
            _ => {
                if v["type"] == "message_stop" {
                    ended = true;
                }
                v["delta"]["text"].as_str()
            }
        };
        text.push_str(piece.unwrap_or(""));
    }
    (text, ended)
}

async fn restored_streams(routes: &str, extra: &[(&str, &str)]) {
    let (_m, gw) = setup(true, routes, extra).await;
    let whole = "Sure, [EMAIL_1] it is.";
    let want = format!("Sure, {EMAIL} it is.");
    for api in APIS {
        // Every offset, so the placeholder is split at each of its bytes and at its edges.
        for cut in 0..=whole.len() {
            let (a, b) = whole.split_at(cut);
            let mut req = body(api, &format!("reply to {EMAIL}"));
            req["stream"] = json!(true);
            let r = client()
                .post(gw.url(api))
                .header("x-mock-sse-hex", hex(two_deltas(api, a, b).as_bytes()))
                .json(&req)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let bytes = r.bytes().await.unwrap();
            let raw = String::from_utf8_lossy(&bytes);
            let (text, ended) = streamed_text(api, &bytes);
            assert_eq!(text, want, "{api}, cut at {cut}: {raw}");
            assert!(ended, "{api}, cut at {cut}: {raw}");
            assert!(
                !raw.contains("[EMAIL_1]") && !raw.contains("IL_1]"),
                "{api}, cut at {cut}: {raw}"
            );
            if api == "/v1/responses" {
                // The whole texts at the end are restored too.
                assert_eq!(raw.matches(EMAIL).count(), 3, "{raw}");
            }
        }
    }
}

#[tokio::test]
async fn restore_in_streams_of_every_api_split_anywhere() {
    restored_streams(BIND, &[]).await;
}

/// With an output policy bound the stream goes through the hold-back window: it judges the text
/// as the model wrote it, and the client still gets the values back.
#[tokio::test]
async fn restore_behind_an_output_guard() {
    let routes = format!(
        "{BIND}[[routes.policies]]\nselect = \"test/weapons\"\ndirections = [\"output\"]\n[routes.output]\nwindow_chars = 16\noverlap_chars = 4\n"
    );
    restored_streams(&routes, &[("weapons.md", WEAPONS)]).await;
}

/// A plain reply that only a shadow binding judges would go out as it arrives; with placeholders
/// to put back it is rewritten first, so none reaches the client.
#[tokio::test]
async fn restore_in_a_plain_reply_that_only_shadow_bindings_judge() {
    let routes = format!(
        "{BIND}[[routes.policies]]\nselect = \"test/weapons\"\ndirections = [\"output\"]\naction = \"shadow\"\n"
    );
    let (_m, gw) = setup(true, &routes, &[("weapons.md", WEAPONS)]).await;
    let text = format!("Mail {EMAIL} today");
    for api in APIS {
        let r = client()
            .post(gw.url(api))
            .header("x-mock-echo", "1")
            .json(&body(api, &text))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{api}");
        let raw = r.text().await.unwrap();
        assert!(!raw.contains("[EMAIL_"), "{api}: {raw}");
        let v: Value = serde_json::from_str(&raw).expect("a valid JSON reply");
        assert_eq!(reply_text(api, &v), text, "{api}");
    }
}

#[tokio::test]
async fn without_restore_the_client_sees_placeholders_in_streams() {
    let (_m, gw) = setup(false, BIND, &[]).await;
    let mut req = chat(&format!("reply to {EMAIL}"));
    req["stream"] = json!(true);
    let r = client()
        .post(gw.url(CHAT))
        .header("x-mock-echo", "1")
        .json(&req)
        .send()
        .await
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let (text, _) = streamed_text(CHAT, &bytes);
    assert_eq!(text, "reply to [EMAIL_1]");
}

#[tokio::test]
async fn an_output_redact_policy_is_refused_at_load_and_by_lint() {
    let m = mock::start().await;
    let bad = redact_policy(false).replace(
        "action = \"redact\"",
        "action = \"redact\"\ndirections = [\"output\"]",
    );
    let err = TestConfig::new(&m.base_url())
        .route_policies(BIND)
        .try_start(&[("redact.md", &bad)])
        .await
        .err()
        .expect("the gateway refuses to start");
    assert!(err.contains("applies to input only"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("redact.md"), &bad).unwrap();
    let (code, out, err) = run_cli(&["policy", "lint", "redact.md"], dir.path());
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("applies to input only"), "{out}{err}");
    // The policy as shipped lints clean of errors.
    std::fs::write(dir.path().join("redact.md"), redact_policy(true)).unwrap();
    let (code, out, err) = run_cli(&["policy", "lint", "redact.md"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
}
