//! Model judgement off the critical path: shadow and annotate bindings never hold a request, the
//! background queue sheds when full, `input_mode = "parallel"` overlaps the verdict with the
//! upstream call, and a blocking verdict spares the other bindings' model calls. The imitation
//! model server holds its answers on demand (`[hold]`, `HOLD-ME`), so every assertion is about
//! order (what had happened while a verdict was outstanding), never about timings.

use crate::support::*;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn backend(url: &str) -> String {
    format!(
        "\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{url}\"\nmodel = \"openai/gpt-oss-safeguard-20b\"\nfamily = \"gpt-oss-safeguard\"\ntimeout_ms = 30000\nmax_retries = 0\n"
    )
}

/// A second model-only policy whose text makes the imitation server hold its answer.
const HELD_POLICY: &str = "+++\nid = \"test/held\"\ntitle = \"Held\"\nversion = \"1.0.0\"\n[[codes]]\ncode = \"H1\"\ntitle = \"Held\"\nseverity = \"high\"\n+++\n# Held\nHOLD-ME. Content that asks for forbidden things violates H1.\n";

async fn setup(
    route: &str,
    extra: &str,
    policies: &[(&str, &str)],
) -> (mock::MockUpstream, model_server::ModelServer, GatewayProc) {
    let m = mock::start().await;
    let ms = model_server::start().await;
    let gw = TestConfig::new(&m.base_url())
        .route_policies(route)
        .extra(&format!("{}{extra}", backend(&ms.base_url())))
        .start(policies)
        .await;
    (m, ms, gw)
}

/// A route's policy bindings, with a deadline long enough that a held verdict is outstanding
/// rather than failed.
fn route(bindings: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!("classifier_deadline_ms = 30000\n{extra}");
    for (id, action) in bindings {
        s += &format!("[[routes.policies]]\nselect = \"{id}\"\naction = \"{action}\"\n");
    }
    s
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn record<'a>(audit: &'a [Value], policy: &str) -> Option<&'a Value> {
    audit.iter().find(|r| r["policy_id"] == policy)
}

#[tokio::test]
async fn shadow_and_annotate_verdicts_never_hold_the_request() {
    for action in ["shadow", "annotate"] {
        let (m, ms, gw) = setup(
            &route(&[("test/nl", action)], ""),
            "",
            &[("nl.md", NL_POLICY)],
        )
        .await;
        let c = client();
        let r = gw
            .post_chat(&c, "[hold] please tell me forbidden things")
            .await
            .unwrap();
        // The client has its reply while the model's verdict is still outstanding.
        assert_eq!(r.status(), 200, "{action}");
        assert_eq!(m.state.count(), 1);
        until("the model call", || {
            ms.state.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(ms.state.answered.load(Ordering::SeqCst), 0, "{action}");
        let pending = r
            .headers()
            .get("x-guardgate-pending")
            .map(|v| v.to_str().unwrap().to_string());
        if action == "annotate" {
            assert_eq!(pending.as_deref(), Some("annotations"));
        } else {
            assert_eq!(pending, None);
        }
        assert!(r.headers().get("x-guardgate-policies").is_none());
        assert!(
            record(&gw.audit(), "test/nl").is_none(),
            "recorded before the verdict"
        );
        // The verdict lands in the audit log when the model answers.
        ms.state.release.store(true, Ordering::SeqCst);
        let audit = gw.audit_until(|a| record(a, "test/nl").is_some()).await;
        let rec = record(&audit, "test/nl").expect("the off-path verdict is audited");
        assert_eq!(rec["verdict"], "violation");
        assert_eq!(rec["off_path"], true);
        let effect = if action == "shadow" {
            "recorded"
        } else {
            "annotated"
        };
        assert_eq!(rec["effect"], effect);
        assert_eq!(rec["code"], "X1");
    }
}

#[tokio::test]
async fn an_annotate_verdict_that_is_in_by_the_reply_becomes_headers() {
    // The upstream takes longer than the model: the verdict is ready when its header arrives.
    let (_m, _ms, gw) = setup(
        &route(&[("test/nl", "annotate")], ""),
        "",
        &[("nl.md", NL_POLICY)],
    )
    .await;
    let r = client()
        .post(gw.url(CHAT))
        .header("x-mock-delay-ms", "1500")
        .json(&chat("please tell me forbidden things"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("x-guardgate-policies").unwrap(),
        "test/nl",
        "{:?}",
        r.headers()
    );
    assert_eq!(r.headers().get("x-guardgate-codes").unwrap(), "X1");
    assert!(r.headers().get("x-guardgate-pending").is_none());
}

#[tokio::test]
async fn a_full_background_queue_sheds_and_says_so() {
    let (m, ms, gw) = setup(
        &route(&[("test/nl", "shadow")], ""),
        "\n[background]\nmax_concurrent = 1\nmax_pending = 1\n",
        &[("nl.md", NL_POLICY)],
    )
    .await;
    let c = client();
    for _ in 0..3 {
        let r = gw.post_chat(&c, "[hold] forbidden things").await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(m.state.count(), 3, "shedding never touches traffic");
    let shed = |a: &[Value]| a.iter().filter(|r| r["effect"] == "shed").count();
    let audit = gw.audit_until(|a| shed(a) == 2).await;
    assert_eq!(shed(&audit), 2, "{audit:#?}");
    let metrics = gw
        .metrics_eventually("guardgate_background_jobs_total{result=\"shed\"} 2")
        .await;
    assert!(
        metrics.contains("guardgate_background_pending 1"),
        "{metrics}"
    );
    // Only the one job in the queue reached the model.
    until("the model call", || {
        ms.state.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    ms.state.release.store(true, Ordering::SeqCst);
    let audit = gw
        .audit_until(|a| a.iter().any(|r| r["effect"] == "recorded"))
        .await;
    assert_eq!(
        audit.iter().filter(|r| r["effect"] == "recorded").count(),
        1
    );
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn parallel_mode_starts_the_upstream_call_before_the_verdict() {
    let (m, ms, gw) = setup(
        &route(&[("test/nl", "block")], "input_mode = \"parallel\"\n"),
        "",
        &[("nl.md", NL_POLICY)],
    )
    .await;
    // Allowed: the upstream has the request while the verdict is outstanding; the client's
    // reply waits for the verdict.
    let url = gw.url(CHAT);
    let allowed = tokio::spawn(async move {
        client()
            .post(url)
            .json(&chat("[hold] a friendly question"))
            .send()
            .await
            .unwrap()
    });
    until("the upstream call", || m.state.count() == 1).await;
    until("the model call", || {
        ms.state.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !allowed.is_finished(),
        "the reply went out before the verdict"
    );
    ms.state.release.store(true, Ordering::SeqCst);
    let r = allowed.await.unwrap();
    assert_eq!(r.status(), 200);
    let audit = gw.audit_until(|a| record(a, "test/nl").is_some()).await;
    let rec = record(&audit, "test/nl").unwrap();
    assert_eq!(rec["input_mode"], "parallel");
    assert!(rec["hidden_us"].as_u64().unwrap() > 0, "{rec}");
}

#[tokio::test]
async fn parallel_mode_cuts_the_upstream_when_the_verdict_blocks() {
    let (m, ms, gw) = setup(
        &route(&[("test/nl", "block")], "input_mode = \"parallel\"\n"),
        "",
        &[("nl.md", NL_POLICY)],
    )
    .await;
    // A streamed reply the upstream is still generating when the verdict arrives.
    let url = gw.url(CHAT);
    let mut body = chat("[hold] please tell me forbidden things");
    body["stream"] = true.into();
    let blocked = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-mock-token-ms", "20")
            .json(&body)
            .send()
            .await
            .unwrap()
    });
    until("the upstream call", || m.state.count() == 1).await;
    until("the model call", || {
        ms.state.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!blocked.is_finished());
    ms.state.release.store(true, Ordering::SeqCst);
    let r = blocked.await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("test/nl") && text.contains("X1"), "{text}");
    assert!(
        !text.contains("Hello"),
        "upstream output reached the client: {text}"
    );
    // The upstream connection was closed, so generation stopped.
    until("the upstream stream to be abandoned", || {
        m.state.aborted.load(Ordering::SeqCst) == 1
    })
    .await;
    let audit = gw.audit_until(|a| record(a, "test/nl").is_some()).await;
    let rec = record(&audit, "test/nl").unwrap();
    assert_eq!(rec["effect"], "blocked");
    assert_eq!(rec["input_mode"], "parallel");
}

#[tokio::test]
async fn a_rule_hit_spares_every_other_model_call() {
    // A rules policy that blocks, a model policy that blocks, and a model policy that annotates.
    let (m, ms, gw) = setup(
        &route(
            &[
                ("test/weapons", "block"),
                ("test/nl", "block"),
                ("test/held", "annotate"),
            ],
            "",
        ),
        "",
        &[
            ("weapons.md", WEAPONS),
            ("nl.md", NL_POLICY),
            ("held.md", HELD_POLICY),
        ],
    )
    .await;
    let r = gw
        .post_chat(
            &client(),
            "how to make a pipe bomb, and other forbidden things",
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(m.state.count(), 0);
    let audit = gw.audit_wait(3).await;
    assert_eq!(record(&audit, "test/weapons").unwrap()["effect"], "blocked");
    for id in ["test/nl", "test/held"] {
        let rec = record(&audit, id).unwrap();
        assert_eq!(rec["effect"], "skipped", "{rec}");
        assert_eq!(rec["verdict"], "skipped", "{rec}");
    }
    // No model call was started for either.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_model_block_cancels_the_other_pending_model_calls() {
    let (m, ms, gw) = setup(
        &route(&[("test/nl", "block"), ("test/held", "block")], ""),
        "",
        &[("nl.md", NL_POLICY), ("held.md", HELD_POLICY)],
    )
    .await;
    // test/nl answers at once (a violation); test/held's call would be held for 20 s.
    let started = Instant::now();
    let r = gw
        .post_chat(&client(), "please tell me forbidden things")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the request waited for the held call"
    );
    assert_eq!(m.state.count(), 0);
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 2);
    let audit = gw.audit_wait(2).await;
    assert_eq!(record(&audit, "test/nl").unwrap()["effect"], "blocked");
    assert_eq!(record(&audit, "test/held").unwrap()["effect"], "skipped");
}

#[tokio::test]
async fn shutdown_waits_for_pending_background_judgements() {
    let (_m, ms, mut gw) = setup(
        &route(&[("test/nl", "shadow")], ""),
        "",
        &[("nl.md", NL_POLICY)],
    )
    .await;
    let r = gw
        .post_chat(&client(), "[hold] forbidden things")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until("the model call", || {
        ms.state.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    signal(gw.pid(), "TERM");
    // No request is in flight, but a judgement is: the process stays up for it (within
    // graceful_shutdown_timeout_seconds), then writes its record and exits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.exit_status().is_none(),
        "exited with a judgement pending"
    );
    ms.state.release.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.exit_status().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit = gw.audit();
    let rec = record(&audit, "test/nl").expect("the pending judgement was written before exit");
    assert_eq!(rec["effect"], "recorded");
}
