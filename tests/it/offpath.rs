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
    // test/held's call is cancelled in flight, or, on a loaded machine where test/nl's verdict
    // came first, before it was sent: either way the request did not wait for it (above).
    let calls = ms.state.calls.load(Ordering::SeqCst);
    assert!((1..=2).contains(&calls), "{calls} model calls");
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

/// A model-only policy whose calls the imitation server holds, and which "forbidden" violates.
const HELD_FORBIDDEN: &str = "+++\nid = \"test/heldout\"\ntitle = \"Forbidden things\"\nversion = \"1.0.0\"\n[[codes]]\ncode = \"X1\"\ntitle = \"Forbidden things\"\nseverity = \"high\"\n+++\n# Forbidden things\nHOLD-ME. Content that asks for forbidden things violates X1.\n";

/// A route's output bindings (`directions = ["output"]`), with a deadline long enough that a
/// held verdict is outstanding rather than failed.
fn output_route(bindings: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!("classifier_deadline_ms = 30000\n{extra}");
    for (id, action) in bindings {
        s += &format!(
            "[[routes.policies]]\nselect = \"{id}\"\naction = \"{action}\"\ndirections = [\"output\"]\n"
        );
    }
    s
}

/// How long the imitation model holds a verdict before the test releases it.
const HOLD: Duration = Duration::from_millis(3000);

/// Releases the model's held verdicts `HOLD` after now.
fn release_after_hold(ms: &model_server::ModelServer) {
    let release = ms.state.release.clone();
    tokio::spawn(async move {
        tokio::time::sleep(HOLD).await;
        release.store(true, Ordering::SeqCst);
    });
}

const FORBIDDEN_REPLY: &str = "Here are the forbidden things you asked about, in some detail.";

/// A reply as the client read it.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    /// Until the first byte of the body.
    first: Duration,
    /// Until the last.
    took: Duration,
}

/// Sends a chat request whose reply is `reply`, sent by the upstream in 16-byte pieces `gap_ms`
/// apart (so it arrives over time), and reads it whole.
async fn chat_reply(gw: &GatewayProc, reply: &str, gap_ms: u64) -> Got {
    let started = Instant::now();
    let mut r = client()
        .post(gw.url(CHAT))
        .header("x-mock-reply", reply)
        .header("x-mock-chunk-bytes", "16")
        .header("x-mock-gap-ms", gap_ms.to_string())
        .json(&chat("hello"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let mut body = Vec::new();
    let mut first = None;
    while let Some(chunk) = r.chunk().await.unwrap() {
        first.get_or_insert_with(|| started.elapsed());
        body.extend_from_slice(&chunk);
    }
    let took = started.elapsed();
    Got {
        status,
        headers,
        body,
        first: first.unwrap_or(took),
        took,
    }
}

/// The upstream's pace for `FORBIDDEN_REPLY`: its ~300 bytes take about 0.6 s to arrive.
const PACED_MS: u64 = 30;

/// Model calls for the held policy (the system message carries its text).
fn held_calls(ms: &model_server::ModelServer) -> usize {
    let bodies = ms.state.bodies.lock().unwrap();
    bodies
        .iter()
        .filter(|b| {
            b["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.contains("HOLD-ME"))
        })
        .count()
}

fn output_record<'a>(audit: &'a [Value], policy: &str) -> Option<&'a Value> {
    audit
        .iter()
        .find(|r| r["policy_id"] == policy && r["direction"] == "output")
}

#[tokio::test]
async fn shadow_output_judgement_never_holds_a_plain_reply() {
    let (_m, ms, gw) = setup(
        &output_route(&[("test/heldout", "shadow")], ""),
        "",
        &[("held.md", HELD_FORBIDDEN)],
    )
    .await;
    release_after_hold(&ms);
    let got = chat_reply(&gw, FORBIDDEN_REPLY, PACED_MS).await;
    // The whole reply, byte for byte, well before the held verdict could have come back.
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        serde_json::to_vec(&mock::chat_completion("m", FORBIDDEN_REPLY)).unwrap()
    );
    assert!(
        got.took < HOLD / 2,
        "the reply took {:?} against a {HOLD:?} hold",
        got.took
    );
    assert_eq!(ms.state.answered.load(Ordering::SeqCst), 0);
    // Relayed as it arrived: the first bytes reached the client long before the last left
    // the upstream (a reply read whole first would have sent them all at the end).
    assert!(
        got.first < got.took / 2,
        "first byte after {:?}, last after {:?}",
        got.first,
        got.took
    );
    assert!(
        got.headers.get("x-guardgate-pending").is_none(),
        "{:?}",
        got.headers
    );
    // The copy is judged once the reply is out: the call is made, and held.
    until("the model call", || {
        ms.state.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(output_record(&gw.audit(), "test/heldout").is_none());
    let audit = gw
        .audit_until(|a| output_record(a, "test/heldout").is_some())
        .await;
    let rec = output_record(&audit, "test/heldout").expect("the off-path verdict is audited");
    assert!(ms.state.answered.load(Ordering::SeqCst) == 1);
    assert_eq!(rec["off_path"], true, "{rec}");
    assert_eq!(rec["verdict"], "violation", "{rec}");
    assert_eq!(rec["effect"], "recorded", "{rec}");
    assert_eq!(rec["code"], "X1");
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn annotate_output_on_a_plain_reply_says_pending_and_audits_the_finding() {
    let (_m, ms, gw) = setup(
        &output_route(&[("test/heldout", "annotate")], ""),
        "",
        &[("held.md", HELD_FORBIDDEN)],
    )
    .await;
    release_after_hold(&ms);
    let got = chat_reply(&gw, FORBIDDEN_REPLY, PACED_MS).await;
    assert_eq!(got.status, 200);
    assert!(
        got.took < HOLD / 2 && got.first < got.took / 2,
        "the reply's first byte after {:?}, last after {:?}, against a {HOLD:?} hold",
        got.first,
        got.took
    );
    assert_eq!(got.headers["x-guardgate-pending"], "annotations");
    assert!(got.headers.get("x-guardgate-output-policies").is_none());
    // Untouched: no `guardgate` member spliced in.
    assert_eq!(
        got.body,
        serde_json::to_vec(&mock::chat_completion("m", FORBIDDEN_REPLY)).unwrap()
    );
    let audit = gw
        .audit_until(|a| output_record(a, "test/heldout").is_some())
        .await;
    let rec = output_record(&audit, "test/heldout").expect("the finding is audited");
    assert_eq!(rec["effect"], "annotated", "{rec}");
    assert_eq!(rec["code"], "X1");
    assert_eq!(rec["off_path"], true);
}

#[tokio::test]
async fn a_blocking_output_binding_still_holds_the_plain_reply() {
    let (_m, ms, gw) = setup(
        &output_route(&[("test/heldout", "block")], ""),
        "",
        &[("held.md", HELD_FORBIDDEN)],
    )
    .await;
    release_after_hold(&ms);
    let got = chat_reply(&gw, FORBIDDEN_REPLY, PACED_MS).await;
    assert!(
        got.first >= HOLD * 9 / 10,
        "the reply went out after {:?}, before the verdict",
        got.first
    );
    let text = String::from_utf8_lossy(&got.body);
    assert!(!text.contains("forbidden things"), "{}: {text}", got.status);
    let audit = gw
        .audit_until(|a| output_record(a, "test/heldout").is_some())
        .await;
    let rec = output_record(&audit, "test/heldout").unwrap();
    assert_eq!(rec["effect"], "blocked", "{rec}");
    assert!(rec.get("off_path").is_none(), "{rec}");
}

#[tokio::test]
async fn mixed_output_bindings_block_inline_and_judge_the_rest_once_off_the_path() {
    // weapons blocks by rules; the held model policy only records.
    let (_m, ms, gw) = setup(
        &output_route(&[("test/weapons", "block"), ("test/heldout", "shadow")], ""),
        "",
        &[("weapons.md", WEAPONS), ("held.md", HELD_FORBIDDEN)],
    )
    .await;
    release_after_hold(&ms);
    // The blocking binding decides at once: the reply does not wait for the shadow's verdict.
    let got = chat_reply(&gw, FORBIDDEN_REPLY, 1).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        serde_json::to_vec(&mock::chat_completion("m", FORBIDDEN_REPLY)).unwrap()
    );
    assert!(
        got.took < HOLD / 2,
        "the reply took {:?} against a {HOLD:?} hold",
        got.took
    );
    let audit = gw
        .audit_until(|a| output_record(a, "test/heldout").is_some())
        .await;
    assert_eq!(
        output_record(&audit, "test/weapons").unwrap()["effect"],
        "allowed"
    );
    let rec = output_record(&audit, "test/heldout").unwrap();
    assert_eq!(rec["effect"], "recorded", "{rec}");
    assert_eq!(rec["off_path"], true);
    // The shadow binding was judged once, on the content the blocking one saw (weapons' rules
    // miss, so the model judged it too, inline).
    assert_eq!(held_calls(&ms), 1);
    // A rule block withholds the reply and spares the shadow's model call.
    let got = chat_reply(&gw, "how to make a pipe bomb, forbidden things", 1).await;
    assert!(!String::from_utf8_lossy(&got.body).contains("pipe bomb"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held_calls(&ms), 1);
}

#[tokio::test]
async fn a_plain_reply_over_max_reply_bytes_passes_whole_and_is_audited_as_not_judged() {
    // A fail-closed route (the test config's default): the fail mode has nothing to refuse,
    // the reply is already out.
    let (_m, ms, gw) = setup(
        &output_route(
            &[("test/heldout", "shadow"), ("test/profanity", "annotate")],
            "[routes.output]\nmax_reply_bytes = 2048\n",
        ),
        "",
        &[("held.md", HELD_FORBIDDEN), ("profanity.md", PROFANITY)],
    )
    .await;
    ms.state.release.store(true, Ordering::SeqCst);
    let reply = format!("darn, forbidden things {} and the end.", "a".repeat(6000));
    let got = chat_reply(&gw, &reply, 1).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        serde_json::to_vec(&mock::chat_completion("m", &reply)).unwrap()
    );
    assert_eq!(got.headers["x-guardgate-pending"], "annotations");
    let audit = gw.audit_wait(2).await;
    for id in ["test/heldout", "test/profanity"] {
        let rec = output_record(&audit, id).unwrap_or_else(|| panic!("{id}: {audit:?}"));
        assert_eq!(rec["verdict"], "not_judged", "{rec}");
        assert_eq!(rec["effect"], "not_judged", "{rec}");
        assert!(rec["error"].as_str().unwrap().contains("2048"), "{rec}");
    }
    gw.metrics_eventually("guardgate_errors_total{kind=\"output_unclassifiable\"} 1")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 0);
    // Under the bound, the same route judges: the rule finds "darn" once the reply is out.
    chat_reply(&gw, "darn, that is all", 1).await;
    let audit = gw
        .audit_until(|a| {
            a.iter()
                .any(|r| r["policy_id"] == "test/profanity" && r["effect"] == "annotated")
        })
        .await;
    let rec = audit
        .iter()
        .find(|r| r["policy_id"] == "test/profanity" && r["effect"] == "annotated")
        .expect("the small reply is judged");
    assert_eq!(rec["off_path"], true);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_plain_reply_passes_as_sent_and_its_copy_is_judged_decoded() {
    let json = serde_json::to_vec(&mock::chat_completion("m", FORBIDDEN_REPLY)).unwrap();
    let coded = gzip(&json);
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        coded.len()
    )
    .into_bytes();
    reply.extend_from_slice(&coded);
    let up = raw::upstream(reply).await;
    let ms = model_server::start().await;
    ms.state.release.store(true, Ordering::SeqCst);
    let gw = TestConfig::new(&up)
        .route_policies(&output_route(&[("test/heldout", "shadow")], ""))
        .extra(&backend(&ms.base_url()))
        .start(&[("held.md", HELD_FORBIDDEN)])
        .await;
    let r = client()
        .post(gw.url(CHAT))
        .json(&chat("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(&r.bytes().await.unwrap()[..], &coded[..]);
    let audit = gw
        .audit_until(|a| output_record(a, "test/heldout").is_some())
        .await;
    let rec = output_record(&audit, "test/heldout").unwrap();
    // The model saw the decoded text: "forbidden" is only there once the body is unzipped.
    assert_eq!(rec["verdict"], "violation", "{rec}");
    assert_eq!(rec["off_path"], true);
}
