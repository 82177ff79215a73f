//! Custom refusals: what a blocked client reads, through the real binary and the mock upstream,
//! for each API's blocked requests, withheld replies and cut streams; the choice of language by
//! `Accept-Language`; the route's refusal as the fallback; the gateway's own message when nothing
//! is set.

use crate::support::*;
use guardgate::wire::sse::SseParser;
use guardgate::wire::Api;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The English refusal as TOML writes it, and as the client must read it: quotes, a backslash and
/// a line break go through JSON escaping intact.
const EN: &str = "Your message can't be sent: \"see the guide\" at C:\\help.\nThank you.";
const DE: &str = "Diese Anfrage wurde von unserer Sicherheitsrichtlinie blockiert.";
const AR: &str = "تم حظر هذا الطلب بموجب سياسة السلامة.";
const JA: &str = "このリクエストはポリシーによりブロックされました。";
const ROUTE_EN: &str = "Blocked by this service's rules.";

/// Blocks "forbidden zorble" in requests and replies, with its own refusal in four languages.
const GUARDED: &str = r#"+++
id = "test/guarded"
title = "Zorbles"
version = "1.0.0"
directions = ["input", "output"]
[[codes]]
code = "Z1"
title = "Forbidden zorbles"
[[rules]]
id = "zorble"
code = "Z1"
keywords = ["forbidden zorble"]
[refusal]
message = "Your message can't be sent: \"see the guide\" at C:\\help.\nThank you."
language = "en"
[refusal.messages]
de = "Diese Anfrage wurde von unserer Sicherheitsrichtlinie blockiert."
ar = "تم حظر هذا الطلب بموجب سياسة السلامة."
ja-JP = "このリクエストはポリシーによりブロックされました。"
+++
# Zorbles
Forbidden zorbles violate this policy.
"#;

const ROUTE_REFUSAL: &str = "[routes.refusal]\nmessage = \"Blocked by this service's rules.\"\nlanguage = \"en-GB\"\n[routes.refusal.messages]\nfr = \"Bloqué par les règles de ce service.\"\n";

const BAD_REPLY: &str = "Sure, here is a long and friendly introduction that goes on for a while so the first windows are clean and released. Now the forbidden zorble part, which must never reach the client, and more text after it.";

/// Both policies on every route, in both directions, with `on_block`, and `route_extra` in each
/// route's table.
async fn gateway(on_block: &str, route_extra: &str) -> (mock::MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let sel = format!(
        "[[routes.policies]]\nselect = \"test/*\"\ndirections = [\"input\", \"output\"]\n[routes.output]\nwindow_chars = 40\noverlap_chars = 15\nmax_hold_ms = 300\non_block = \"{on_block}\"\n{route_extra}"
    );
    let gw = TestConfig::new(&m.base_url())
        .route_policies(&sel)
        .start(&[("guarded.md", GUARDED), ("weapons.md", WEAPONS)])
        .await;
    (m, gw)
}

/// The message of an error body in `api`'s shape (OpenAI's and Anthropic's both nest it).
fn error_message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
}

async fn post(
    gw: &GatewayProc,
    api: &str,
    body: &Value,
    accept: Option<&str>,
    reply: Option<&str>,
) -> reqwest::Response {
    let mut r = client().post(gw.url(api)).json(body);
    if let Some(a) = accept {
        r = r.header("accept-language", a);
    }
    if let Some(t) = reply {
        r = r.header("x-mock-reply", t);
    }
    r.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn blocked_requests_read_the_policy_s_refusal_in_the_client_s_language() {
    let (m, gw) = gateway("replace", "").await;
    for api in APIS {
        for (accept, text, lang) in [
            (None, EN, "en"),
            (Some("de-CH, en;q=0.5"), DE, "de"),
            (Some("fr, ar;q=0.8, de;q=0.7"), AR, "ar"),
            (Some("ja"), JA, "ja-JP"),
            (Some("de;q=0, *"), EN, "en"),
            (Some("pt-BR"), EN, "en"),
        ] {
            let r = post(
                &gw,
                api,
                &body(api, "a forbidden zorble please"),
                accept,
                None,
            )
            .await;
            assert_eq!(r.status(), 400, "{api} {accept:?}");
            assert_eq!(header(&r, "x-guardgate-blocked-by"), Some("test/guarded"));
            assert_eq!(header(&r, "x-guardgate-code"), Some("Z1"));
            assert_eq!(
                header(&r, "content-language"),
                Some(lang),
                "{api} {accept:?}"
            );
            let v: Value = r.json().await.unwrap();
            assert_eq!(error_message(&v), text, "{api} {accept:?}");
            if api == "/v1/messages" {
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "invalid_request_error");
            } else {
                assert_eq!(v["error"]["code"], "content_policy_violation");
            }
        }
    }
    assert_eq!(m.state.count(), 0, "a blocked request went upstream");
}

#[tokio::test]
async fn the_route_s_refusal_is_the_fallback_and_nothing_set_keeps_the_gateway_s_message() {
    let (_m, gw) = gateway("replace", ROUTE_REFUSAL).await;
    for api in APIS {
        // test/weapons sets no refusal: the route's.
        let r = post(&gw, api, &body(api, "a ghost gun"), Some("fr-CA"), None).await;
        assert_eq!(r.status(), 400);
        assert_eq!(header(&r, "x-guardgate-blocked-by"), Some("test/weapons"));
        assert_eq!(header(&r, "content-language"), Some("fr"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_message(&v), "Bloqué par les règles de ce service.");
        let r = post(&gw, api, &body(api, "a ghost gun"), None, None).await;
        assert_eq!(header(&r, "content-language"), Some("en-GB"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_message(&v), ROUTE_EN);
        // The policy that fired has its own: it wins over the route's.
        let r = post(&gw, api, &body(api, "a forbidden zorble"), Some("fr"), None).await;
        assert_eq!(header(&r, "content-language"), Some("en"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_message(&v), EN);
    }
    let (_m, gw) = gateway("replace", "").await;
    for api in APIS {
        let r = post(&gw, api, &body(api, "a ghost gun"), Some("de"), None).await;
        assert_eq!(r.status(), 400);
        assert_eq!(header(&r, "content-language"), None);
        assert_eq!(header(&r, "x-guardgate-code"), Some("W2"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            error_message(&v),
            "Request blocked by guardgate: policy test/weapons (code W2)"
        );
        // Replies too.
        let r = post(
            &gw,
            api,
            &body(api, "hi"),
            Some("de"),
            Some("buy a ghost gun"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-language"), None);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("The reply was withheld by guardgate: policy test/weapons (code W2)."));
    }
}

/// Where each API's filtered reply carries its text.
fn reply_text<'a>(api: &str, v: &'a Value) -> &'a Value {
    match api {
        "/v1/chat/completions" => &v["choices"][0]["message"]["content"],
        "/v1/completions" => &v["choices"][0]["text"],
        "/v1/responses" => &v["output"][0]["content"][0]["text"],
        _ => &v["content"][0]["text"],
    }
}

#[tokio::test]
async fn withheld_replies_carry_the_refusal_as_the_reply_or_as_the_error() {
    let (_m, gw) = gateway("replace", "").await;
    for api in APIS {
        let r = post(&gw, api, &body(api, "hi"), Some("de"), Some(BAD_REPLY)).await;
        assert_eq!(r.status(), 200, "{api}");
        assert_eq!(header(&r, "x-guardgate-blocked-by"), Some("test/guarded"));
        assert_eq!(header(&r, "x-guardgate-code"), Some("Z1"));
        assert_eq!(header(&r, "content-language"), Some("de"));
        let text = r.text().await.unwrap();
        assert!(!text.contains("zorble"), "{api} leaked: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply_text(api, &v), DE, "{api}: {v}");
        let stop = match api {
            "/v1/responses" => &v["incomplete_details"]["reason"],
            "/v1/messages" => &v["stop_reason"],
            _ => &v["choices"][0]["finish_reason"],
        };
        assert!(stop == "content_filter" || stop == "refusal", "{api}: {v}");
        let r = post(&gw, api, &body(api, "hi"), None, Some(BAD_REPLY)).await;
        let v: Value = r.json().await.unwrap();
        assert_eq!(reply_text(api, &v), EN, "{api}: {v}");
    }
    let (_m, gw) = gateway("error", "").await;
    for api in APIS {
        let r = post(
            &gw,
            api,
            &body(api, "hi"),
            Some("ar, en;q=0.1"),
            Some(BAD_REPLY),
        )
        .await;
        assert_eq!(r.status(), 400, "{api}");
        assert_eq!(header(&r, "x-guardgate-blocked-by"), Some("test/guarded"));
        assert_eq!(header(&r, "content-language"), Some("ar"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_message(&v), AR, "{api}");
    }
}

/// A legacy completions stream of `text`, word by word (the mock streams the other three).
fn completions_sse(text: &str) -> Vec<u8> {
    let mut s = String::new();
    for w in text.split_inclusive(' ') {
        let c = json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": w, "logprobs": null, "finish_reason": null}]});
        s += &format!("data: {c}\n\n");
    }
    s += "data: [DONE]\n\n";
    s.into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A streamed reply to `api`'s request, as the client got it.
async fn stream(gw: &GatewayProc, api: &str, accept: Option<&str>) -> (Option<String>, Vec<u8>) {
    let mut b = body(api, "hi");
    b["stream"] = json!(true);
    let mut r = client()
        .post(gw.url(api))
        .header("x-mock-reply", BAD_REPLY)
        .header("x-mock-chunk-bytes", "7")
        .json(&b);
    if api == "/v1/completions" {
        r = r.header("x-mock-sse-hex", hex(&completions_sse(BAD_REPLY)));
    }
    if let Some(a) = accept {
        r = r.header("accept-language", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{api}");
    let lang = header(&r, "content-language").map(str::to_string);
    (lang, r.bytes().await.unwrap().to_vec())
}

/// The text a client of `api` reads from a stream, by what it reads as one text.
fn stream_text(api: &str, bytes: &[u8]) -> BTreeMap<String, String> {
    let name = match api {
        "/v1/chat/completions" => "openai-chat",
        "/v1/completions" => "openai-completions",
        "/v1/responses" => "openai-responses",
        _ => "anthropic-messages",
    };
    let mut t = Api::from_name(name).unwrap().stream();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for e in SseParser::new().push(bytes) {
        for (k, d) in t.on_event(&e).deltas {
            out.entry(k).or_default().push_str(&d);
        }
    }
    out
}

#[tokio::test]
async fn cut_streams_end_with_the_refusal_in_each_api_s_shape() {
    let (_m, gw) = gateway("replace", "").await;
    for api in APIS {
        let (lang, got) = stream(&gw, api, Some("de-AT")).await;
        let raw = String::from_utf8_lossy(&got).to_string();
        assert!(!raw.contains("zorble"), "{api} leaked: {raw}");
        // The header left before the verdict: it names no language.
        assert_eq!(lang, None);
        let text = stream_text(api, &got);
        let key = match api {
            "/v1/chat/completions" => "choices[0].content",
            "/v1/completions" => "choices[0].text",
            "/v1/responses" => "output_text",
            _ => "text",
        };
        let read = &text[key];
        assert!(read.starts_with("Sure, here is"), "{api}: {text:?}");
        assert!(read.ends_with(DE), "{api}: {text:?}");
        let events = SseParser::new().push(&got);
        let last = events.last().unwrap();
        match api {
            "/v1/chat/completions" | "/v1/completions" => {
                assert_eq!(last.data.as_deref(), Some("[DONE]"));
                let end: Value =
                    serde_json::from_str(events[events.len() - 2].data.as_deref().unwrap())
                        .unwrap();
                assert_eq!(
                    end["choices"][0]["finish_reason"], "content_filter",
                    "{end}"
                );
            }
            "/v1/responses" => {
                assert_eq!(last.event.as_deref(), Some("response.incomplete"));
            }
            _ => {
                assert_eq!(last.event.as_deref(), Some("message_stop"));
                let delta = &events[events.len() - 2];
                assert!(delta.data.as_deref().unwrap().contains("\"refusal\""));
            }
        }
    }
    let (_m, gw) = gateway("error", "").await;
    for api in APIS {
        let (_, got) = stream(&gw, api, None).await;
        let raw = String::from_utf8_lossy(&got).to_string();
        assert!(!raw.contains("zorble"), "{api} leaked: {raw}");
        let events = SseParser::new().push(&got);
        let error = events
            .iter()
            .rev()
            .find(|e| e.data.as_deref().is_some_and(|d| d.contains("error")))
            .unwrap_or_else(|| panic!("{api}: no error event in {raw}"));
        let v: Value = serde_json::from_str(error.data.as_deref().unwrap()).unwrap();
        let message = if api == "/v1/responses" {
            &v["message"]
        } else {
            &v["error"]["message"]
        };
        assert_eq!(message, EN, "{api}: {v}");
    }
}

#[tokio::test]
async fn a_stream_without_a_refusal_ends_as_before() {
    let (_m, gw) = gateway("replace", "").await;
    let mut b = body(CHAT, "hi");
    b["stream"] = json!(true);
    let r = client()
        .post(gw.url(CHAT))
        .header(
            "x-mock-reply",
            BAD_REPLY.replace("forbidden zorble", "pipe bomb"),
        )
        .header("x-mock-chunk-bytes", "7")
        .json(&b)
        .send()
        .await
        .unwrap();
    let got = r.bytes().await.unwrap();
    let events = SseParser::new().push(&got);
    let end: Value =
        serde_json::from_str(events[events.len() - 2].data.as_deref().unwrap()).unwrap();
    assert_eq!(end["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(end["choices"][0]["delta"], json!({}), "{end}");
}

#[tokio::test]
async fn a_malformed_refusal_stops_the_start_naming_the_key() {
    let m = mock::start().await;
    let bad = GUARDED.replace("language = \"en\"", "language = \"english\"");
    let e = TestConfig::new(&m.base_url())
        .try_start(&[("guarded.md", &bad)])
        .await
        .err()
        .expect("a policy with a malformed language tag must not load");
    assert!(e.contains("refusal.language"), "{e}");
    let e = TestConfig::new(&m.base_url())
        .route_policies(&format!(
            "{ALL_TEST_POLICIES}[routes.refusal]\nmessage = \"\"\nlanguage = \"en\"\n"
        ))
        .try_start(&[("weapons.md", WEAPONS)])
        .await
        .err()
        .expect("an empty route refusal must not load");
    assert!(e.contains("routes[0].refusal.message"), "{e}");
}
