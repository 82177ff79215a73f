//! The remote model backend against an imitation OpenAI-compatible model server: verdicts,
//! rationale capture, retries, timeouts, the circuit breaker and fail modes, end to end through
//! the gateway.

use crate::support::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn backend(url: &str, extra: &str) -> String {
    format!(
        "\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{url}\"\nmodel = \"openai/gpt-oss-safeguard-20b\"\nfamily = \"gpt-oss-safeguard\"\ntimeout_ms = 1000\nmax_retries = 2\nbreaker_failures = 3\nbreaker_cooldown_ms = 60000\n{extra}\n"
    )
}

async fn setup(
    fail_mode: &str,
    extra: &str,
) -> (mock::MockUpstream, model_server::ModelServer, GatewayProc) {
    setup_with(fail_mode, extra, &[("nl.md", NL_POLICY)]).await
}

async fn setup_with(
    fail_mode: &str,
    extra: &str,
    policies: &[(&str, &str)],
) -> (mock::MockUpstream, model_server::ModelServer, GatewayProc) {
    let m = mock::start().await;
    let ms = model_server::start().await;
    let cfg = TestConfig::new(&m.base_url())
        .extra(&backend(&ms.base_url(), extra))
        .fail_mode(fail_mode);
    let gw = cfg.start(policies).await;
    (m, ms, gw)
}

async fn send(gw: &GatewayProc, text: &str) -> (u16, String) {
    let r = gw.post_chat(&reqwest::Client::new(), text).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn model_verdicts_block_and_allow_with_audited_reasoning() {
    let (m, ms, gw) = setup("closed", "").await;
    let (status, body) = send(&gw, "please tell me forbidden things").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("test/nl") && body.contains("X1"), "{body}");
    assert!(
        !body.contains("SECRET-REASONING"),
        "the rationale reached the client"
    );
    let (status, body) = send(&gw, "a friendly question").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("SECRET-REASONING"));
    assert_eq!(m.state.count(), 1);
    // The model got the policy as system message and the content as user message, with effort.
    let sent = ms.state.bodies.lock().unwrap()[0].clone();
    assert!(sent["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("# Forbidden things"));
    assert_eq!(
        sent["messages"][1]["content"],
        "please tell me forbidden things"
    );
    assert_eq!(sent["reasoning_effort"], "low");
    assert_eq!(sent["model"], "openai/gpt-oss-safeguard-20b");
    let audit = gw.audit_wait(2).await;
    let r = audit
        .iter()
        .find(|r| r["policy_id"] == "test/nl" && r["verdict"] == "violation")
        .unwrap();
    assert_eq!(r["backend"], "remote:safeguard");
    assert_eq!(r["model"], "openai/gpt-oss-safeguard-20b");
    assert_eq!(r["code"], "X1");
    assert_eq!(r["prompt_tokens"], model_server::prompt_tokens(&sent));
    assert_eq!(r["policy_version"], "2.0.0");
    assert!(r["rationale"]
        .as_str()
        .unwrap()
        .contains("SECRET-REASONING"));
    assert!((r["confidence"].as_f64().unwrap() - 0.97).abs() < 1e-6);
}

#[tokio::test]
async fn rules_settle_before_the_model_is_asked() {
    let (_m, ms, gw) = setup_with(
        "closed",
        "",
        &[("nl.md", NL_POLICY), ("weapons.md", WEAPONS)],
    )
    .await;
    let (status, _) = send(&gw, "how to build a pipe bomb").await;
    assert_eq!(status, 400);
    // The weapons rule fired, which blocks the request: the model is asked about neither policy
    // (test/nl is audited as skipped).
    let audit = gw.audit_wait(2).await;
    let nl = audit.iter().find(|r| r["policy_id"] == "test/nl").unwrap();
    assert_eq!(nl["effect"], "skipped", "{nl}");
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 0);
    // A rule miss asks the model, once per policy that needs it.
    let (status, _) = send(&gw, "a friendly question").await;
    assert_eq!(status, 200);
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failures_apply_the_fail_mode() {
    let (m, ms, gw) = setup("closed", "").await;
    // (Prose first: the third failure opens the circuit breaker, and later texts never reach
    // the model server.)
    for (text, why) in [
        ("[prose] hi", "unparseable"),
        ("[slow] hi", "deadline"),
        ("[malformed] hi", "malformed"),
        ("[empty] hi", "empty"),
    ] {
        let (status, body) = send(&gw, text).await;
        assert_eq!(status, 503, "{why}: {body}");
        assert!(body.contains("could not classify"), "{why}: {body}");
        // The model's own words (quoted in the parse error) stay in the audit record.
        for model_text in ["looks fine", "not json", "thinking"] {
            assert!(
                !body.contains(model_text),
                "{why}: model output reached the client: {body}"
            );
        }
    }
    assert_eq!(m.state.count(), 0, "fail-closed let a request through");
    let audit = gw.audit_wait(4).await;
    assert!(
        audit.iter().any(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("looks fine"))),
        "{audit:?}"
    );

    // [empty] was retried once with lower effort... but low is already the lowest: one call.
    let _ = ms;
    let (m, _ms, gw) = setup("open", "").await;
    let (status, _) = send(&gw, "[malformed] hi").await;
    assert_eq!(status, 200);
    assert_eq!(m.state.count(), 1);
    let audit = gw.audit_wait(2).await;
    assert!(
        audit.iter().any(
            |r| r["effect"] == "fail_open" && r["error"].as_str().unwrap().contains("not JSON")
        ),
        "{audit:?}"
    );
}

#[tokio::test]
async fn retries_then_breaker_fails_fast() {
    let (_m, ms, gw) = setup("closed", "").await;
    // Two 503s then success: retried within one request.
    ms.state.fail_next.store(2, Ordering::SeqCst);
    let (status, _) = send(&gw, "a friendly question").await;
    assert_eq!(status, 200);
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 3);
    // A persistent 500: 1 + 2 retries, and the third failure trips the breaker. The model
    // server's error body is the server's business, not the client's.
    let (status, body) = send(&gw, "[error] hi").await;
    assert_eq!(status, 503);
    assert!(!body.contains("boom"), "{body}");
    let after_trip = ms.state.calls.load(Ordering::SeqCst);
    assert_eq!(after_trip, 6);
    // While open, requests fail fast without reaching the server.
    let t0 = Instant::now();
    // (Texts never seen before: a cached verdict would be served even while the model is down.)
    for i in 0..5 {
        let (status, body) = send(&gw, &format!("a friendly question number {i}")).await;
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), after_trip);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "breaker did not fail fast"
    );
    let audit = gw.audit_wait(8).await;
    assert!(audit.iter().any(|r| r["error"]
        .as_str()
        .is_some_and(|e| e.contains("circuit open"))));
}

#[tokio::test]
async fn empty_final_answer_retries_with_lower_effort() {
    let (_m, ms, gw) = setup("closed", "reasoning_effort = \"medium\"").await;
    let (status, _) = send(&gw, "[empty] hi").await;
    assert_eq!(status, 503);
    let efforts: Vec<Value> = ms
        .state
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["reasoning_effort"].clone())
        .collect();
    assert_eq!(efforts, vec![json!("medium"), json!("low")]);
}

#[tokio::test]
async fn per_policy_backend_choice() {
    // This policy is judged by its rules only: a miss never reaches the model.
    let rules_only = WEAPONS.replace(
        "action = \"block\"",
        "action = \"block\"\nbackends = [\"rules\"]",
    );
    let (_m, ms, gw) = setup_with(
        "closed",
        "",
        &[("nl.md", NL_POLICY), ("weapons.md", &rules_only)],
    )
    .await;
    let (status, _) = send(&gw, "a friendly question").await;
    assert_eq!(status, 200);
    let bodies = ms.state.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "only test/nl should reach the model");
    assert!(bodies[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("Forbidden"));
    // Naming a backend that is not configured stops the start.
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let bad = WEAPONS.replace(
        "action = \"block\"",
        "action = \"block\"\nbackends = [\"rules\", \"nope\"]",
    );
    let e = cfg.try_start(&[("weapons.md", &bad)]).await.err().unwrap();
    assert!(e.contains("\"nope\", which is not configured"), "{e}");
}

#[tokio::test]
async fn a_window_the_model_could_not_judge_is_counted_and_audited() {
    // A fail-open stream whose middle window the model cannot judge (it answers prose for
    // "[prose]"): that window is released unjudged, as the fail mode says, and the failure is
    // logged, counted and audited although later windows pass.
    let m = mock::start().await;
    let ms = model_server::start().await;
    let gw = TestConfig::new(&m.base_url())
        .extra(&backend(&ms.base_url(), ""))
        .fail_mode("open")
        .route_policies(
            "[[routes.policies]]\nselect = \"test/nl\"\ndirections = [\"output\"]\n[routes.output]\nwindow_chars = 40\noverlap_chars = 10\nmax_hold_ms = 5000\n",
        )
        .start(&[("nl.md", NL_POLICY)])
        .await;
    let reply = "A first stretch of calm and friendly text that is fine. [prose] Then a long, calm and friendly ending that goes on well past the window and its overlap, all of it fine.";
    let r = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-mock-reply", reply)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    let audit = gw.audit_wait(2).await;
    let out: Vec<&Value> = audit
        .iter()
        .filter(|r| r["direction"] == "output")
        .collect();
    assert!(
        out.iter().any(|r| r["effect"] == "fail_open"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("looks fine"))),
        "{out:?}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"guardgate_errors_total{kind="classifier"}"#),
        "{metrics}"
    );
}
