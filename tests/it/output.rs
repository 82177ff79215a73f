//! The output guard: plain and streamed replies judged against output policies.

use crate::support::*;
use guardgate::wire::sse::SseParser;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const LONG_BAD: &str = "Sure, here is a long and friendly introduction that goes on for a while so that the first windows are clean and released to the client. Now the bad part: to make a pipe bomb you would need things I will not list. And then even more text that must never be sent after the cut.";
const LONG_GOOD: &str = "Here is a long and friendly answer about gardening: water the tomatoes in the morning, mulch the beds, and rotate the crops every season so the soil stays healthy and the harvest stays big.";

fn output_policies(on_block: &str) -> String {
    format!(
        "[[routes.policies]]\nselect = \"test/weapons\"\ndirections = [\"output\"]\n[[routes.policies]]\nselect = \"test/profanity\"\ndirections = [\"output\"]\n[routes.output]\nwindow_chars = 40\noverlap_chars = 15\nmax_hold_ms = 300\non_block = \"{on_block}\"\nannotate_event = true\n"
    )
}

async fn setup(on_block: &str) -> (mock::MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url()).route_policies(&output_policies(on_block));
    let gw = cfg
        .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
        .await;
    (m, gw)
}

/// The standard request for `api` ("hi"), streamed or not.
fn req(api: &str, stream: bool) -> Value {
    let mut b = body(api, "hi");
    if stream {
        b["stream"] = json!(true);
    }
    b
}

#[tokio::test]
async fn plain_replies_are_judged_before_the_client_sees_them() {
    let (m, gw) = setup("replace").await;
    let c = client();
    // Allowed: byte-identical to what the mock sent.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", LONG_GOOD)
        .json(&req("/v1/chat/completions", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert_eq!(
        &got[..],
        &serde_json::to_vec(&mock::chat_completion("m", LONG_GOOD)).unwrap()[..]
    );
    // Blocked: a well-formed reply with the API's filtered stop reason, none of the bad text.
    for (api, check) in [
        (
            "/v1/chat/completions",
            "choices.0.finish_reason=content_filter",
        ),
        ("/v1/completions", "choices.0.finish_reason=content_filter"),
        ("/v1/responses", "status=incomplete"),
        ("/v1/messages", "stop_reason=refusal"),
    ] {
        let r = c
            .post(gw.url(api))
            .header("x-mock-reply", LONG_BAD)
            .json(&req(api, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{api}");
        assert_eq!(r.headers()["x-guardgate-blocked-by"], "test/weapons");
        let text = r.text().await.unwrap();
        assert!(!text.contains("pipe bomb"), "{api} leaked: {text}");
        assert!(text.contains("withheld by guardgate"), "{api}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let (path, want) = check.split_once('=').unwrap();
        let mut cur = &v;
        for k in path.split('.') {
            cur = match k.parse::<usize>() {
                Ok(i) => &cur[i],
                Err(_) => &cur[k],
            };
        }
        assert_eq!(cur, want, "{api}: {v}");
    }
    assert_eq!(m.state.count(), 5);
    let audit = gw.audit_wait(10).await;
    let out: Vec<&Value> = audit
        .iter()
        .filter(|r| r["direction"] == "output" && r["effect"] == "blocked")
        .collect();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["rule_id"], "bomb-recipe");
}

#[tokio::test]
async fn plain_block_as_error_and_annotation() {
    let (_m, gw) = setup("error").await;
    let c = client();
    let r = c
        .post(gw.url("/v1/messages"))
        .header("x-mock-reply", LONG_BAD)
        .json(&req("/v1/messages", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("test/weapons"));
    // Annotate: forwarded with headers and a `guardgate` member, otherwise unchanged.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", "darn, that is all")
        .json(&req("/v1/chat/completions", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-guardgate-output-policies"], "test/profanity");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["guardgate"]["annotations"][0]["policy"], "test/profanity");
    assert_eq!(v["choices"][0]["message"]["content"], "darn, that is all");
}

/// Reads a streamed reply to the end and returns its bytes.
async fn stream(
    c: &reqwest::Client,
    gw: &GatewayProc,
    api: &str,
    reply: &str,
    chunk: usize,
) -> (Vec<u8>, Duration) {
    stream_paced(c, gw, api, reply, chunk, 0).await
}

/// Like `stream`, with a pause between upstream pieces so the stream is still being produced
/// when the gateway cuts it.
async fn stream_paced(
    c: &reqwest::Client,
    gw: &GatewayProc,
    api: &str,
    reply: &str,
    chunk: usize,
    gap_ms: u64,
) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let r = c
        .post(gw.url(api))
        .header("x-mock-reply", reply)
        .header("x-mock-chunk-bytes", chunk.to_string())
        .header("x-mock-gap-ms", gap_ms.to_string())
        .json(&req(api, true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b = r.bytes().await.unwrap();
    (b.to_vec(), t0.elapsed())
}

#[tokio::test]
async fn allowed_streams_pass_byte_exact_at_any_split() {
    let (_m, gw) = setup("replace").await;
    let c = client();
    for chunk in [1, 3, 64, 100_000] {
        for (api, want) in [
            ("/v1/chat/completions", mock::chat_sse("m", LONG_GOOD)),
            ("/v1/responses", mock::responses_sse("m", LONG_GOOD)),
            ("/v1/messages", mock::anthropic_sse("m", LONG_GOOD)),
        ] {
            let (got, _) = stream(&c, &gw, api, LONG_GOOD, chunk).await;
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{api} chunk {chunk}"
            );
        }
    }
    // Multi-byte characters split across reads survive too.
    let uni = "Ünïcödé ☕ tëxt with émojis 🎉 and more 日本語 so that the windows fill up nicely.";
    let (got, _) = stream(&c, &gw, "/v1/chat/completions", uni, 1).await;
    assert_eq!(got, mock::chat_sse("m", uni));
}

#[tokio::test]
async fn violating_streams_are_cut_with_the_apis_terminal_events() {
    let (m, gw) = setup("replace").await;
    let c = client();
    for (api, full) in [
        ("/v1/chat/completions", mock::chat_sse("m", LONG_BAD)),
        ("/v1/responses", mock::responses_sse("m", LONG_BAD)),
        ("/v1/messages", mock::anthropic_sse("m", LONG_BAD)),
    ] {
        let before = m.state.aborted.load(Ordering::SeqCst);
        let (got, _) = stream_paced(&c, &gw, api, LONG_BAD, 5, 2).await;
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(
            // A window released on the hold timer may end inside the phrase ("... a pipe"), but
            // the phrase itself and anything after it must never reach the client.
            !text.contains("pipe bomb") && !text.contains("never be sent"),
            "{api} leaked: {text}"
        );
        // What was released is a clean prefix of the upstream's events, then the cut events.
        let events = SseParser::new().push(&got);
        let upstream_events = SseParser::new().push(&full);
        let released = events
            .iter()
            .zip(&upstream_events)
            .take_while(|(a, b)| a.raw == b.raw)
            .count();
        assert!(
            released > 0,
            "{api}: nothing before the violation was released"
        );
        for (a, b) in events[..released].iter().zip(&upstream_events) {
            assert_eq!(
                a.raw, b.raw,
                "{api}: released events are not the upstream's prefix"
            );
        }
        let tail: Vec<&guardgate::wire::sse::SseEvent> = events[released..].iter().collect();
        match api {
            "/v1/chat/completions" => {
                let v: Value = serde_json::from_str(tail[0].data.as_deref().unwrap()).unwrap();
                assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
                assert_eq!(tail.last().unwrap().data.as_deref(), Some("[DONE]"));
            }
            "/v1/responses" => {
                assert_eq!(
                    tail.last().unwrap().event.as_deref(),
                    Some("response.incomplete")
                );
            }
            _ => {
                let kinds: Vec<&str> = tail.iter().map(|e| e.event.as_deref().unwrap()).collect();
                assert_eq!(
                    kinds,
                    vec!["content_block_stop", "message_delta", "message_stop"]
                );
                assert!(tail[1].data.as_deref().unwrap().contains("refusal"));
            }
        }
        // The upstream stream was abandoned (connection closed), so generation stops.
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.state.aborted.load(Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "{api}: upstream was not closed after the cut"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let is_cut = |r: &&Value| r["direction"] == "output" && r["effect"] == "blocked";
    let audit = gw
        .audit_until(|a| a.iter().filter(is_cut).count() >= 3)
        .await;
    let cut: Vec<&Value> = audit.iter().filter(is_cut).collect();
    assert_eq!(cut.len(), 3, "{audit:#?}");
    assert!(cut[0]["windows"].as_u64().unwrap() >= 2, "{:?}", cut[0]);
}

#[tokio::test]
async fn stream_cut_as_error_event() {
    let (_m, gw) = setup("error").await;
    let c = client();
    let (got, _) = stream(&c, &gw, "/v1/messages", LONG_BAD, 7).await;
    let events = SseParser::new().push(&got);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert!(last.data.as_deref().unwrap().contains("test/weapons"));
}

#[tokio::test]
async fn slow_streams_are_released_after_max_hold() {
    let (_m, gw) = setup("replace").await;
    let c = client();
    // 40-char window, short text, 150 ms between chunks: text must still arrive within max_hold.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", "Hi there.")
        .header("x-mock-chunk-bytes", "400")
        .header("x-mock-gap-ms", "1500")
        .json(&req("/v1/chat/completions", true))
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut r = r;
    let mut got = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
        if String::from_utf8_lossy(&got).contains("Hi ") {
            break;
        }
    }
    assert!(String::from_utf8_lossy(&got).contains("Hi "));
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "text waited {:?} for a window that never filled",
        t0.elapsed()
    );
}

#[tokio::test]
async fn annotate_only_streams_flow_untouched_and_are_recorded() {
    let m = mock::start().await;
    let sel = "[[routes.policies]]\nselect = \"test/profanity\"\ndirections = [\"output\"]\n[routes.output]\nannotate_event = true\n";
    let cfg = TestConfig::new(&m.base_url()).route_policies(sel);
    let gw = cfg.start(&[("profanity.md", PROFANITY)]).await;
    let c = client();
    let text = "well darn, that is the answer";
    let (got, _) = stream(&c, &gw, "/v1/chat/completions", text, 9).await;
    let want = mock::chat_sse("m", text);
    assert_eq!(
        &got[..want.len()],
        &want[..],
        "annotate-only must not change the stream"
    );
    let extra = String::from_utf8_lossy(&got[want.len()..]).to_string();
    assert!(
        extra.starts_with("event: guardgate\n") && extra.contains("test/profanity"),
        "{extra}"
    );
    let audit = gw.audit_wait(1).await;
    assert_eq!(audit[0]["effect"], "annotated");
    assert_eq!(audit[0]["direction"], "output");
}

#[tokio::test]
async fn an_annotate_hit_in_an_early_window_of_a_blocking_stream_is_recorded() {
    // weapons blocks, profanity annotates; the hit is in the first window of many, and later
    // clean windows used to replace its decision before anything was recorded.
    let (_m, gw) = setup("replace").await;
    let c = client();
    let text = format!(
        "well darn, {}",
        "the garden needs water and sun. ".repeat(12)
    );
    let (got, _) = stream(&c, &gw, "/v1/chat/completions", &text, 7).await;
    assert!(String::from_utf8_lossy(&got).contains("[DONE]"));
    let audit = gw.audit_wait(2).await;
    let out: Vec<&Value> = audit
        .iter()
        .filter(|r| r["direction"] == "output")
        .collect();
    assert!(
        out.iter()
            .any(|r| r["policy_id"] == "test/profanity" && r["effect"] == "annotated"),
        "{out:?}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("guardgate_requests_total")
                && l.contains("outcome=\"annotated\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_upstream() {
    let (m, gw) = setup("replace").await;
    let c = client();
    let long = LONG_GOOD.repeat(20);
    let mut r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", &long)
        .header("x-mock-chunk-bytes", "20")
        .header("x-mock-gap-ms", "5")
        .json(&req("/v1/chat/completions", true))
        .send()
        .await
        .unwrap();
    let _ = r.chunk().await.unwrap();
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.state.aborted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "upstream kept streaming to nobody"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The gateway is fine afterwards.
    let (got, _) = stream(&c, &gw, "/v1/chat/completions", LONG_GOOD, 50).await;
    assert_eq!(got, mock::chat_sse("m", LONG_GOOD));
}

#[tokio::test]
async fn upstream_failure_mid_stream_is_not_passed_off_as_a_clean_end() {
    let (_m, gw) = setup("replace").await;
    let c = client();
    let long = LONG_GOOD.repeat(5);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", &long)
        .header("x-mock-chunk-bytes", "50")
        .header("x-mock-gap-ms", "1")
        .header("x-mock-abort-after", "600")
        .json(&req("/v1/chat/completions", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The client sees a broken stream (no [DONE], an error reading the body), never a clean end.
    let body = r.bytes().await;
    match body {
        Err(_) => {}
        Ok(b) => assert!(
            !String::from_utf8_lossy(&b).contains("[DONE]"),
            "an aborted upstream looked complete"
        ),
    }
    let metrics = gw
        .metrics_eventually("guardgate_errors_total{kind=\"upstream_body\"} 1")
        .await;
    assert!(
        metrics.contains("guardgate_errors_total{kind=\"upstream_body\"} 1"),
        "{metrics}"
    );
    let (got, _) = stream(&c, &gw, "/v1/chat/completions", LONG_GOOD, 64).await;
    assert_eq!(
        got,
        mock::chat_sse("m", LONG_GOOD),
        "the gateway is fine afterwards"
    );
}

/// A streamed event that never ends within `routes.output.max_reply_bytes` cannot be judged:
/// fail-closed routes end the stream with the reason, fail-open routes judge what they hold and
/// let the rest through unchanged; either way the gateway stops buffering it.
#[tokio::test]
async fn oversized_stream_events_follow_the_fail_mode() {
    let huge = "a".repeat(3000);
    let reply = format!("{LONG_GOOD} {huge} and the end.");
    let want = mock::chat_sse("m", &reply);
    for fail_mode in ["closed", "open"] {
        let m = mock::start().await;
        let gw = TestConfig::new(&m.base_url())
            .route_policies(&(output_policies("error") + "max_reply_bytes = 2048\n"))
            .fail_mode(fail_mode)
            .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
            .await;
        let (got, _) = stream(&client(), &gw, "/v1/chat/completions", &reply, 64).await;
        let text = String::from_utf8_lossy(&got);
        if fail_mode == "closed" {
            assert!(
                !text.contains(&huge),
                "the unjudged event reached the client"
            );
            assert!(
                text.contains("could not classify the upstream reply")
                    && text.contains("max_reply_bytes"),
                "{text}"
            );
            // Text judged before the oversized event still went out.
            assert!(text.contains("{\"content\":\"Here \"}"), "{text}");
        } else {
            assert_eq!(
                text,
                String::from_utf8_lossy(&want),
                "fail-open changes nothing"
            );
        }
        gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 1")
            .await;
    }
    // Annotate-only: the stream flows untouched, and parsing stops at the oversized event.
    let m = mock::start().await;
    let sel = "[[routes.policies]]\nselect = \"test/profanity\"\ndirections = [\"output\"]\n[routes.output]\nmax_reply_bytes = 2048\n";
    let gw = TestConfig::new(&m.base_url())
        .route_policies(sel)
        .start(&[("profanity.md", PROFANITY)])
        .await;
    let (got, _) = stream(&client(), &gw, "/v1/chat/completions", &reply, 64).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 1")
        .await;
}

#[tokio::test]
async fn informational_responses_before_the_reply_are_skipped() {
    let body = serde_json::to_vec(&mock::chat_completion("m", LONG_GOOD)).unwrap();
    let mut reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n".to_vec();
    reply.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    reply.extend_from_slice(&body);
    let up = raw::upstream(reply).await;
    let gw = TestConfig::new(&up)
        .route_policies(&output_policies("replace"))
        .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
        .await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&req("/v1/chat/completions", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);

    // An endless run of them is a broken upstream, not a hang or a crash.
    let up = raw::upstream(b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(20)).await;
    let gw = TestConfig::new(&up)
        .route_policies(&output_policies("replace"))
        .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
        .await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&req("/v1/chat/completions", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn guarded_requests_ask_for_an_uncoded_reply_and_a_coded_stream_follows_the_fail_mode() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .route_policies(&output_policies("replace"))
        .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
        .await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("accept-encoding", "gzip, br")
        .json(&req("/v1/chat/completions", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        m.state.last().unwrap().header("accept-encoding"),
        Some(&b"identity"[..])
    );

    // A stream sent gzip-coded anyway cannot be judged as it flows.
    let sse = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n".to_vec();
    let mut reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: identity\r\ncontent-encoding: gzip\r\nconnection: close\r\n\r\n".to_vec();
    reply.extend_from_slice(&sse);
    for fail_mode in ["closed", "open"] {
        let up = raw::upstream(reply.clone()).await;
        let gw = TestConfig::new(&up)
            .route_policies(&output_policies("replace"))
            .fail_mode(fail_mode)
            .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
            .await;
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&req("/v1/chat/completions", true))
            .send()
            .await
            .unwrap();
        if fail_mode == "closed" {
            assert_eq!(r.status(), 503);
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("content coding"),
                "{v}"
            );
        } else {
            assert_eq!(r.status(), 200);
            assert_eq!(&r.bytes().await.unwrap()[..], &sse[..]);
        }
        gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 1")
            .await;
    }
}

/// A plain reply over `routes.output.max_reply_bytes` cannot be judged: fail-closed routes refuse
/// it, fail-open ones relay all of it, not the part read before the limit.
#[tokio::test]
async fn oversized_plain_replies_follow_the_fail_mode_and_are_never_truncated() {
    let reply = format!("{LONG_GOOD} {} and the end.", "a".repeat(6000));
    let want = serde_json::to_vec(&mock::chat_completion("m", &reply)).unwrap();
    for fail_mode in ["closed", "open"] {
        let m = mock::start().await;
        let gw = TestConfig::new(&m.base_url())
            .route_policies(&(output_policies("replace") + "max_reply_bytes = 2048\n"))
            .fail_mode(fail_mode)
            .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
            .await;
        for chunk in [None, Some("700")] {
            let mut rb = client()
                .post(gw.url("/v1/chat/completions"))
                .header("x-mock-reply", &reply)
                .json(&req("/v1/chat/completions", false));
            if let Some(c) = chunk {
                rb = rb.header("x-mock-chunk-bytes", c);
            }
            let r = rb.send().await.unwrap();
            if fail_mode == "closed" {
                assert_eq!(r.status(), 503);
                let v: Value = r.json().await.unwrap();
                assert!(
                    v["error"]["message"].as_str().unwrap().contains("2048"),
                    "{v}"
                );
            } else {
                assert_eq!(r.status(), 200);
                let got = r.bytes().await.unwrap();
                assert_eq!(got.len(), want.len(), "chunk {chunk:?}");
                assert_eq!(&got[..], &want[..]);
            }
        }
        gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 2")
            .await;
    }
}

/// A reply that is not JSON still reaches the client, so it is judged as text: an event stream
/// sent to a non-streaming request (as some upstreams do), or plain text. A fail-open route must
/// not let it through unjudged; only bytes that are not text at all follow the fail mode.
#[tokio::test]
async fn non_json_plain_replies_are_judged_as_text() {
    let http = |ctype: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("application/json", mock::chat_sse("m", LONG_BAD), true),
        ("application/json", mock::chat_sse("m", LONG_GOOD), false),
        ("text/plain", LONG_BAD.as_bytes().to_vec(), true),
        ("text/plain", LONG_GOOD.as_bytes().to_vec(), false),
        (
            "application/octet-stream",
            b"\xff\xfe pipe bomb \xff".to_vec(),
            false,
        ),
    ];
    for (ctype, body, blocked) in cases {
        let up = raw::upstream(http(ctype, &body)).await;
        let gw = TestConfig::new(&up)
            .route_policies(&output_policies("replace"))
            .fail_mode("open")
            .start(&[("weapons.md", WEAPONS), ("profanity.md", PROFANITY)])
            .await;
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&req("/v1/chat/completions", false))
            .send()
            .await
            .unwrap();
        if blocked {
            assert_eq!(r.status(), 400, "{ctype}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "content_policy_violation", "{v}");
            assert!(!v.to_string().contains("pipe bomb"), "{v}");
        } else {
            assert_eq!(r.status(), 200, "{ctype}");
            assert_eq!(&r.bytes().await.unwrap()[..], &body[..], "{ctype}");
        }
        if std::str::from_utf8(&body).is_err() {
            gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 1")
                .await;
        }
    }
}
