//! Adversarial cases: endpoints. The providers' APIs have many more endpoints that feed a model
//! than the four the gateway started with: assistants and threads, conversations, realtime,
//! uploads, batches, Responses compaction, Azure OpenAI's deployment paths. With the shipped
//! config, each either is guarded (a blocked phrase in it is refused) or is refused outright;
//! none reaches the upstream unread.

use serde_json::{json, Value};

use super::paths::{assert_none_forwarded, send_raw, Case};
use super::{POLICY, WORD};
use crate::support::mock::{self, MockUpstream};
use crate::support::TestConfig;
use crate::support::APIS;

/// The adversarial config with what the shipped `config/guardgate.toml` adds around the four API
/// routes: its other routes (with the adversarial policy, blocking, on input) and its
/// `[unmatched]` section, every upstream replaced by the mock. What an attacker meets in a
/// default deployment.
pub fn shipped(m: &MockUpstream) -> TestConfig {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/guardgate.toml");
    let shipped: toml::Value = toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut extra = String::new();
    for r in shipped["routes"].as_array().unwrap() {
        if APIS.contains(&r["path"].as_str().unwrap()) {
            continue;
        }
        extra += "\n[[routes]]\nupstream = \"mock\"\n";
        for key in ["name", "path", "api", "non_text_parts"] {
            if let Some(v) = r.get(key) {
                extra += &format!("{key} = {v}\n");
            }
        }
        extra += "[[routes.policies]]\nselect = \"test/*\"\naction = \"block\"\n";
    }
    extra += "\n[unmatched]\n";
    if let Some(unmatched) = shipped.get("unmatched").and_then(|u| u.as_table()) {
        for (k, v) in unmatched {
            match k.as_str() {
                "upstream" => extra += "upstream = \"mock\"\n",
                _ => extra += &format!("{k} = {v}\n"),
            }
        }
    }
    super::config(m).extra(&extra)
}

fn phrase() -> String {
    format!("tell me about the {WORD}")
}

/// A `multipart/form-data` body of `fields` (name, file name, content) and its content type.
pub fn form(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let mut b = Vec::new();
    for (name, file, content) in fields {
        b.extend(b"--gg-boundary\r\n");
        match file {
            Some(f) => b.extend(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/jsonl\r\n\r\n").bytes(),
            ),
            None => {
                b.extend(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").bytes())
            }
        }
        b.extend(*content);
        b.extend(b"\r\n");
    }
    b.extend(b"--gg-boundary--\r\n");
    ("multipart/form-data; boundary=gg-boundary".into(), b)
}

/// A batch input file line for `url` with `body`.
fn line(id: &str, url: &str, body: Value) -> String {
    json!({"custom_id": id, "method": "POST", "url": url, "body": body}).to_string()
}

fn upload(name: &'static str, purpose: &str, file: &str) -> Case {
    let (ct, body) = form(&[
        ("purpose", None, purpose.as_bytes()),
        ("file", Some("input.jsonl"), file.as_bytes()),
    ]);
    Case {
        name,
        method: "POST",
        target: "/v1/files".into(),
        headers: vec![("content-type", ct)],
        body,
    }
}

fn chat(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn model_facing_endpoints_are_guarded_or_refused() {
    let m = mock::start().await;
    let gw = shipped(&m).start(&[("adversarial.md", POLICY)]).await;
    let p = phrase();
    let clean = chat("hello");
    let msg = json!({"type": "message", "role": "user", "content": p});
    let cases = vec![
        // Assistants and threads: instructions and messages a model reads on the next run.
        Case::post("assistants_create", "/v1/assistants", &json!({"model": "m", "instructions": p})),
        Case::post("threads_create", "/v1/threads", &json!({"messages": [{"role": "user", "content": p}]})),
        Case::post("thread_message", "/v1/threads/thread_1/messages", &json!({"role": "user", "content": p})),
        Case::post("threads_runs", "/v1/threads/runs", &json!({"assistant_id": "asst_1", "thread": {"messages": [{"role": "user", "content": p}]}})),
        Case::post("thread_run_instructions", "/v1/threads/thread_1/runs", &json!({"assistant_id": "asst_1", "additional_instructions": p})),
        // Conversations: items stored upstream and read by a later response.
        Case::post("conversations_create", "/v1/conversations", &json!({"items": [msg]})),
        Case::post("conversation_items", "/v1/conversations/conv_1/items", &json!({"items": [msg]})),
        // Realtime: sessions, client secrets, WebRTC calls and the WebSocket itself.
        Case::post("realtime_sessions", "/v1/realtime/sessions", &json!({"model": "m", "instructions": p})),
        Case::post("realtime_client_secrets", "/v1/realtime/client_secrets", &json!({"session": {"type": "realtime", "instructions": p}})),
        Case {
            name: "realtime_calls_sdp",
            method: "POST",
            target: "/v1/realtime/calls".into(),
            headers: vec![("content-type", "application/sdp".into())],
            body: format!("v=0\r\ns={p}\r\n").into_bytes(),
        },
        Case {
            name: "realtime_websocket",
            method: "GET",
            target: "/v1/realtime?model=m".into(),
            headers: vec![
                ("upgrade", "websocket".into()),
                ("connection", "Upgrade".into()),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
                ("sec-websocket-version", "13".into()),
            ],
            body: Vec::new(),
        },
        // Uploads and batches that reach a model later.
        Case::post("uploads_create", "/v1/uploads", &json!({"filename": "b.jsonl", "purpose": "batch", "bytes": 100, "mime_type": "text/jsonl"})),
        Case::post("batches_create_unseen_file", "/v1/batches", &json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"})),
        Case::post("fine_tuning_job", "/v1/fine_tuning/jobs", &json!({"training_file": "file-1", "model": "m", "suffix": WORD})),
        // Other model inputs guardgate has no format for.
        Case::post("embeddings", "/v1/embeddings", &json!({"model": "m", "input": p})),
        Case::post("images_generations", "/v1/images/generations", &json!({"prompt": p})),
        Case::post("audio_speech", "/v1/audio/speech", &json!({"model": "m", "input": p, "voice": "alloy"})),
        Case::post("moderations_when_disabled", "/v1/moderations", &json!({"input": p})),
        Case::post("anthropic_count_tokens", "/v1/messages/count_tokens", &json!({"model": "m", "messages": [{"role": "user", "content": p}]})),
        Case::post("anthropic_legacy_complete", "/v1/complete", &json!({"model": "m", "max_tokens_to_sample": 8, "prompt": format!("\n\nHuman: {p}\n\nAssistant:")})),
        Case::post("stored_completion_subpath", "/v1/chat/completions/chatcmpl_1", &chat(&p)),
        // Azure OpenAI paths, with no Azure route configured.
        Case::post("azure_deployment_unrouted", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", &chat(&p)),
        Case::post("azure_v1_responses_unrouted", "/openai/v1/responses?api-version=preview", &json!({"model": "m", "input": p})),
        // Responses compaction: guarded as Responses input.
        Case::post("responses_compact_input", "/v1/responses/compact", &json!({"model": "m", "input": [{"role": "user", "content": p}]})),
        Case::post("responses_compact_instructions", "/v1/responses/compact", &json!({"model": "m", "instructions": p, "previous_response_id": "resp_1"})),
        // Batch input files: each line judged in its URL's format.
        upload("batch_file_chat_line", "batch", &line("a", "/v1/chat/completions", chat(&p))),
        upload(
            "batch_file_second_line_responses",
            "batch",
            &format!(
                "{}\n{}\n",
                line("a", "/v1/chat/completions", clean.clone()),
                line("b", "/v1/responses", json!({"model": "m", "input": p}))
            ),
        ),
        upload("batch_file_azure_url", "batch", &line("a", "/chat/completions", chat(&p))),
        upload("batch_file_unjudgeable_url", "batch", &line("a", "/v1/embeddings", json!({"model": "m", "input": p}))),
        upload("file_other_purpose", "user_data", &p),
        // A lenient multipart parser would see a second `file` part after an LF-only delimiter.
        upload(
            "batch_file_smuggled_part",
            "batch",
            &format!(
                "{}\n--gg-boundary\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\n\n{}",
                line("a", "/v1/chat/completions", clean.clone()),
                line("b", "/v1/chat/completions", chat(&p))
            ),
        ),
        {
            let (ct, body) = form(&[
                ("purpose", None, b"user_data"),
                ("purpose", None, b"batch"),
                ("file", Some("x.jsonl"), line("a", "/v1/chat/completions", chat(&p)).as_bytes()),
            ]);
            Case { name: "file_purpose_twice", method: "POST", target: "/v1/files".into(), headers: vec![("content-type", ct)], body }
        },
        // Anthropic message batches: each request judged as a Messages request.
        Case::post(
            "message_batch_second_request",
            "/v1/messages/batches",
            &json!({"requests": [
                {"custom_id": "a", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}},
                {"custom_id": "b", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": p}]}}
            ]}),
        ),
        Case::post(
            "message_batch_system",
            "/v1/messages/batches",
            &json!({"requests": [{"custom_id": "a", "params": {"model": "m", "max_tokens": 8, "system": p, "messages": [{"role": "user", "content": "hi"}]}}]}),
        ),
        // An allowed endpoint used to carry input: a body, or a second method.
        Case {
            name: "models_listing_with_body",
            method: "GET",
            target: "/v1/models".into(),
            headers: vec![("content-type", "application/json".into())],
            body: chat(&p).to_string().into_bytes(),
        },
        Case {
            name: "models_listing_method_override",
            method: "GET",
            target: "/v1/models/gpt-4o".into(),
            headers: vec![("x-http-method-override", "POST".into())],
            body: Vec::new(),
        },
        // After a 101 the connection is a tunnel whose frames nobody reads.
        Case {
            name: "models_listing_websocket_upgrade",
            method: "GET",
            target: "/v1/models".into(),
            headers: vec![
                ("upgrade", "websocket".into()),
                ("connection", "Upgrade".into()),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
                ("sec-websocket-version", "13".into()),
            ],
            body: Vec::new(),
        },
    ];
    assert_none_forwarded(&m, &gw, &cases).await;
}

#[tokio::test]
async fn azure_deployment_paths_are_judged_once_routed() {
    let m = mock::start().await;
    let routes = [
        (
            "azure-chat",
            "/openai/deployments/{deployment}/chat/completions",
            "openai-chat",
        ),
        (
            "azure-completions",
            "/openai/deployments/{deployment}/completions",
            "openai-completions",
        ),
        (
            "azure-responses",
            "/openai/v1/responses",
            "openai-responses",
        ),
    ];
    let mut extra = String::new();
    for (name, path, api) in routes {
        extra += &format!(
            "\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\napi = \"{api}\"\nupstream = \"mock\"\n[[routes.policies]]\nselect = \"test/*\"\naction = \"block\"\n"
        );
    }
    let gw = super::config(&m)
        .extra(&extra)
        .start(&[("adversarial.md", POLICY)])
        .await;
    let p = phrase();
    let cases = [
        Case::post(
            "azure_deployment_chat",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            &chat(&p),
        ),
        Case::post(
            "azure_deployment_completions",
            "/openai/deployments/davinci/completions?api-version=2024-10-21",
            &json!({"prompt": p}),
        ),
        Case::post(
            "azure_deployment_case_folded",
            "/OpenAI/Deployments/GPT-4o/Chat/Completions?api-version=2024-10-21",
            &chat(&p),
        ),
        Case::post(
            "azure_v1_responses",
            "/openai/v1/responses?api-version=preview",
            &json!({"model": "gpt-4o", "input": p}),
        ),
    ];
    assert_none_forwarded(&m, &gw, &cases).await;

    // A clean request goes upstream as it was sent: deployment, path and api-version.
    let target = "/openai/deployments/GPT-4o_prod/chat/completions?api-version=2024-10-21";
    let (status, reply) = send_raw(&gw, &Case::post("clean", target, &chat("hello"))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(m.state.last().unwrap().target, target);
}

#[tokio::test]
async fn guarded_endpoints_forward_what_passes_unchanged() {
    let m = mock::start().await;
    let gw = shipped(&m).start(&[("adversarial.md", POLICY)]).await;
    let compact = json!({"model": "m", "input": [{"role": "user", "content": "hello"}]});
    let (status, reply) = send_raw(
        &gw,
        &Case::post("compact", "/v1/responses/compact", &compact),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        m.state.last().unwrap().body,
        compact.to_string().into_bytes()
    );

    let file = format!(
        "{}\n{}\n",
        line("a", "/v1/chat/completions", chat("hello")),
        line("b", "/v1/responses", json!({"model": "m", "input": "hi"}))
    );
    let c = upload("batch", "batch", &file);
    let (status, reply) = send_raw(&gw, &c).await;
    assert_eq!(status, 200, "{reply}");
    let got = m.state.last().unwrap();
    assert_eq!((got.path.as_str(), &got.body), ("/v1/files", &c.body));
    assert_eq!(got.header("content-type"), Some(c.headers[0].1.as_bytes()));

    let batch = json!({"requests": [{"custom_id": "a", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}]});
    let (status, reply) =
        send_raw(&gw, &Case::post("batches", "/v1/messages/batches", &batch)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(m.state.last().unwrap().path, "/v1/messages/batches");

    // The model listings are on the default allow list.
    let list = Case {
        name: "models",
        method: "GET",
        target: "/v1/models".into(),
        headers: vec![],
        body: vec![],
    };
    let (status, reply) = send_raw(&gw, &list).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(m.state.last().unwrap().target, "/v1/models");
}

#[tokio::test]
async fn refusals_say_why_and_name_the_setting_that_opens_them() {
    let m = mock::start().await;
    let gw = shipped(&m).start(&[("adversarial.md", POLICY)]).await;
    let (status, reply) = send_raw(&gw, &Case::post("x", "/v1/assistants", &json!({}))).await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        reply.contains("unmatched.allow") && reply.contains("POST /v1/assistants"),
        "{reply}"
    );
    let (status, reply) = send_raw(
        &gw,
        &Case::post("x", "/v1/chat//../completions", &json!({})),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("empty segment"), "{reply}");
    // An Anthropic client gets the refusal in Anthropic's error shape.
    let mut c = Case::post("x", "/v1/messages;x", &json!({}));
    c.headers.push(("anthropic-version", "2023-06-01".into()));
    let (status, reply) = send_raw(&gw, &c).await;
    assert_eq!(status, 400, "{reply}");
    let body: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(body["type"], "error", "{reply}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{reply}");
    let (status, reply) = send_raw(&gw, &upload("x", "user_data", "hello")).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("non_text_parts"), "{reply}");
    assert_eq!(m.state.count(), 0);

    // What the allow list names passes, unjudged, and nothing else.
    let gw = super::config(&m)
        .extra("[unmatched]\nupstream = \"mock\"\nallow = [\"POST /v1/embeddings\"]\n")
        .start(&[("adversarial.md", POLICY)])
        .await;
    let (status, _) = send_raw(
        &gw,
        &Case::post("x", "/v1/embeddings", &json!({"input": "hi"})),
    )
    .await;
    assert_eq!((status, m.state.count()), (200, 1));
    let list = Case {
        name: "models",
        method: "GET",
        target: "/v1/models".into(),
        headers: vec![],
        body: vec![],
    };
    let (status, _) = send_raw(&gw, &list).await;
    assert_eq!((status, m.state.count()), (404, 1));
}
