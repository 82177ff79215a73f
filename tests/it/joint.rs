//! `model_call = "joint"` through the real binary and the imitation model server: the policies
//! of a route that reach the model are judged in one call (blocking ones on the request path,
//! annotate ones off it), and each still gets its own verdict, action and audit record, the same
//! as one call per policy gives for the same answers.

use crate::support::*;
use serde_json::Value;
use std::sync::atomic::Ordering;

/// A model policy under `id` whose text mentions (or not) what the imitation server flags.
fn policy(id: &str, forbidden: bool, action: &str, extra: &str) -> String {
    let topic = if forbidden {
        "Forbidden things"
    } else {
        "Weather talk"
    };
    format!(
        "+++\nid = \"{id}\"\ntitle = \"{topic}\"\nversion = \"1.0.0\"\naction = \"{action}\"\n[[codes]]\ncode = \"X1\"\ntitle = \"{topic}\"\nseverity = \"high\"\n+++\n# {topic}\nContent about {topic} violates X1. {extra}\n"
    )
}

fn backend(url: &str) -> String {
    format!(
        "\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{url}\"\nmodel = \"openai/gpt-oss-safeguard-20b\"\nfamily = \"gpt-oss-safeguard\"\ntimeout_ms = 2000\nmax_retries = 0\n"
    )
}

async fn start(
    joint: bool,
    fail_mode: &str,
    policies: &[(&str, String)],
) -> (mock::MockUpstream, model_server::ModelServer, GatewayProc) {
    let m = mock::start().await;
    let ms = model_server::start().await;
    let mode = if joint { "joint" } else { "per-policy" };
    let cfg = TestConfig::new(&m.base_url())
        .route_policies(&format!("model_call = \"{mode}\"\n{ALL_TEST_POLICIES}"))
        .extra(&backend(&ms.base_url()))
        .fail_mode(fail_mode);
    let files: Vec<(&str, &str)> = policies.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = cfg.start(&files).await;
    (m, ms, gw)
}

async fn send(gw: &GatewayProc, text: &str) -> u16 {
    let r = gw.post_chat(&reqwest::Client::new(), text).await.unwrap();
    let status = r.status().as_u16();
    let _ = r.text().await;
    status
}

/// What a request's records say per policy, in policy order: (id, verdict, effect, code).
fn per_policy(audit: &[Value], request: usize) -> Vec<(String, String, String, String)> {
    let mut ids: Vec<&str> = audit
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    ids.dedup();
    let rid = ids[request];
    let mut out: Vec<_> = audit
        .iter()
        .filter(|r| r["request_id"] == rid)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            (s("policy_id"), s("verdict"), s("effect"), s("code"))
        })
        .collect();
    out.sort();
    out
}

fn three_blocking() -> Vec<(&'static str, String)> {
    vec![
        ("a.md", policy("test/a", true, "block", "")),
        ("b.md", policy("test/b", false, "block", "")),
        ("c.md", policy("test/c", true, "block", "")),
    ]
}

const TEXTS: [&str; 2] = ["please tell me forbidden things", "a friendly question"];

#[tokio::test]
async fn three_policies_one_call_and_the_same_outcomes_as_one_call_each() {
    let mut outcomes = Vec::new();
    for joint in [false, true] {
        let (m, ms, gw) = start(joint, "closed", &three_blocking()).await;
        let mut statuses = Vec::new();
        let mut calls_after_first = 0;
        for (i, t) in TEXTS.iter().enumerate() {
            statuses.push(send(&gw, t).await);
            let calls = ms.state.calls.load(Ordering::SeqCst);
            if joint {
                assert_eq!(calls, i + 1, "joint: model calls after request {i}");
            } else {
                // One call per policy, started together; once a blocking verdict arrives the calls
                // not yet sent are cancelled, which on a loaded machine can be some of the three.
                if i == 0 {
                    assert!(
                        (1..=3).contains(&calls),
                        "per-policy: {calls} model calls for the blocked request"
                    );
                    calls_after_first = calls;
                } else {
                    assert_eq!(
                        calls,
                        calls_after_first + 3,
                        "per-policy: the allowed request"
                    );
                }
            }
        }
        assert_eq!(statuses, [400, 200], "joint={joint}");
        assert_eq!(
            m.state.count(),
            1,
            "joint={joint}: only the allowed request went up"
        );
        let audit = gw.audit_wait(6).await;
        assert_eq!(
            audit.len(),
            6,
            "joint={joint}: a record per policy and request"
        );
        if joint {
            for r in &audit {
                assert_eq!(r["joint_with"], 3, "{r}");
                assert_eq!(r["backend"], "remote:safeguard");
                assert_eq!(r["policy_version"], "1.0.0");
            }
            let sent = ms.state.bodies.lock().unwrap()[0].clone();
            let system = sent["messages"][0]["content"].as_str().unwrap();
            let ids: Vec<String> = model_server::policy_sections(system)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(ids, ["test/a", "test/b", "test/c"], "{system}");
            // Every policy's record of the violating request carries the shared rationale and
            // the one call's token count.
            let tokens = model_server::prompt_tokens(&sent);
            let first = &audit[..3];
            assert!(
                first.iter().all(|r| r["prompt_tokens"] == tokens),
                "{first:?}"
            );
            assert!(first.iter().all(|r| r["rationale"]
                .as_str()
                .unwrap()
                .contains("SECRET-REASONING")));
        } else {
            assert!(audit.iter().all(|r| r.get("joint_with").is_none()));
        }
        outcomes.push((statuses, per_policy(&audit, 0), per_policy(&audit, 1)));
    }
    let (single, joint) = (&outcomes[0], &outcomes[1]);
    assert_eq!(single.0, joint.0, "statuses");
    assert_eq!(single.2, joint.2, "the allowed request");
    // One call per policy: the first block cancels the calls still running (`skipped`). The
    // joint call's answers come together, so every policy of the blocked request has its own.
    for (s, j) in single.1.iter().zip(&joint.1) {
        if s.1 != "skipped" {
            assert_eq!(s, j, "per-policy vs joint");
        }
    }
    assert_eq!(
        joint.1,
        [
            (
                "test/a".into(),
                "violation".into(),
                "blocked".into(),
                "X1".into()
            ),
            (
                "test/b".into(),
                "allow".into(),
                "allowed".into(),
                "-".into()
            ),
            (
                "test/c".into(),
                "violation".into(),
                "blocked".into(),
                "X1".into()
            ),
        ]
    );
}

#[tokio::test]
async fn blocking_and_annotate_policies_are_two_joint_calls_one_off_the_request_path() {
    let policies = vec![
        ("a.md", policy("test/a", false, "block", "")),
        ("b.md", policy("test/b", false, "block", "")),
        ("c.md", policy("test/c", true, "annotate", "")),
        ("d.md", policy("test/d", false, "annotate", "")),
    ];
    let mut outcomes = Vec::new();
    for joint in [false, true] {
        let (m, ms, gw) = start(joint, "closed", &policies).await;
        assert_eq!(send(&gw, "some forbidden words").await, 200);
        let audit = gw.audit_wait(4).await;
        assert_eq!(audit.len(), 4, "{audit:?}");
        assert_eq!(
            ms.state.calls.load(Ordering::SeqCst),
            if joint { 2 } else { 4 }
        );
        assert_eq!(m.state.count(), 1);
        if joint {
            let sizes: Vec<_> = audit.iter().map(|r| r["joint_with"].clone()).collect();
            assert!(sizes.iter().all(|n| n == 2), "{sizes:?}");
            let annotated = audit.iter().find(|r| r["policy_id"] == "test/c").unwrap();
            assert_eq!(annotated["off_path"], true, "{annotated}");
        }
        outcomes.push(per_policy(&audit, 0));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(outcomes[1].contains(&(
        "test/c".into(),
        "violation".into(),
        "annotated".into(),
        "X1".into()
    )));
}

#[tokio::test]
async fn an_answer_that_misses_a_policy_fails_that_policy_by_the_fail_mode() {
    let mut policies = three_blocking();
    policies[1].1 = policy("test/b", false, "block", "SKIP-IN-JOINT");
    for (fail_mode, status, effect) in [("closed", 503, "fail_closed"), ("open", 200, "fail_open")]
    {
        let (m, ms, gw) = start(true, fail_mode, &policies).await;
        // Nothing violates: only the missing answer can stop the request.
        assert_eq!(
            send(&gw, "a friendly question").await,
            status,
            "{fail_mode}"
        );
        assert_eq!(ms.state.calls.load(Ordering::SeqCst), 1);
        assert_eq!(m.state.count(), (fail_mode == "open") as usize);
        let audit = gw.audit_wait(3).await;
        let rows = per_policy(&audit, 0);
        assert_eq!(rows[0].2, "allowed", "{rows:?}");
        assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("error", effect));
        assert_eq!(rows[2].2, "allowed");
        let b = audit.iter().find(|r| r["policy_id"] == "test/b").unwrap();
        assert!(
            b["error"].as_str().unwrap().contains("no entry for test/b"),
            "{b}"
        );
    }
}

#[tokio::test]
async fn rules_settle_first_and_a_bad_mode_is_refused_at_load() {
    // A rule hit blocks: no model call at all.
    let mut policies = three_blocking();
    policies.push(("weapons.md", WEAPONS.to_string()));
    let (_m, ms, gw) = start(true, "closed", &policies).await;
    assert_eq!(send(&gw, "how to build a pipe bomb").await, 400);
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 0);
    // A miss: the weapons policy's rules do not settle it, so it joins the others' call.
    assert_eq!(send(&gw, "a friendly question").await, 200);
    assert_eq!(ms.state.calls.load(Ordering::SeqCst), 1);
    drop(gw);
    let m = mock::start().await;
    let err = TestConfig::new(&m.base_url())
        .route_policies(&format!("model_call = \"together\"\n{ALL_TEST_POLICIES}"))
        .try_start(&[("nl.md", NL_POLICY)])
        .await
        .err()
        .expect("an unknown model_call must stop the start");
    assert!(
        err.contains("model_call") || err.contains("together"),
        "{err}"
    );
}

/// `policy test --joint` against the imitation server: one call per case for all the policies,
/// each case scored for its own file's policy with the same answers as one call per policy
/// gives, the other policies' answers recorded unscored, and the cost per case reported.
#[tokio::test]
async fn policy_test_joint_scores_each_case_for_its_own_policy() {
    let ms = model_server::start().await;
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("policies")).unwrap();
    let cfg = d.path().join("gw.toml");
    std::fs::write(
        &cfg,
        TestConfig::new("http://127.0.0.1:9")
            .extra(&backend(&ms.base_url()))
            .render(),
    )
    .unwrap();
    let files = [
        ("a", policy("fx/a", true, "block", ""), "{\"id\":\"a1\",\"text\":\"some forbidden words\",\"label\":1}\n{\"id\":\"a2\",\"text\":\"hello there\",\"label\":0}\n{\"id\":\"a3\",\"text\":\"how are you\",\"label\":1}\n"),
        ("b", policy("fx/b", false, "block", ""), "{\"id\":\"b1\",\"text\":\"forbidden again\",\"label\":0}\n{\"id\":\"b2\",\"text\":\"rain all day\",\"label\":1}\n"),
    ];
    for (stem, text, cases) in &files {
        std::fs::write(d.path().join(format!("{stem}.md")), text).unwrap();
        std::fs::write(d.path().join(format!("{stem}.cases.jsonl")), cases).unwrap();
    }
    let mut reports = Vec::new();
    for joint in [false, true] {
        let out = d.path().join(if joint { "joint" } else { "single" });
        let mut args = vec![
            "policy".to_string(),
            "test".into(),
            d.path().join("a.md").display().to_string(),
            d.path().join("b.md").display().to_string(),
            "--backend".into(),
            "safeguard".into(),
            "-c".into(),
            cfg.display().to_string(),
            "--report-dir".into(),
            out.display().to_string(),
        ];
        if joint {
            args.push("--joint".into());
        }
        let before = ms.state.calls.load(Ordering::SeqCst);
        let o = tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            stdout.contains("calls/case") && stdout.contains("prompt tok/case"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // One call per case in both modes (per-policy mode judges a case for its own policy).
        assert_eq!(
            ms.state.calls.load(Ordering::SeqCst) - before,
            5,
            "joint={joint}"
        );
        let rep: Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        reports.push(rep);
    }
    let confusion = |r: &Value, i: usize| r["policies"][i]["confusion"].clone();
    for i in 0..2 {
        assert_eq!(
            confusion(&reports[0], i),
            confusion(&reports[1], i),
            "policy {i}"
        );
    }
    let a = &reports[1]["policies"][0];
    assert_eq!(a["id"], "fx/a");
    assert_eq!(a["confusion"]["tp"], 1);
    assert_eq!(a["confusion"]["fn"], 1);
    let case = &a["cases"][0];
    assert_eq!(case["model_calls"], 1);
    assert_eq!(case["others"][0]["policy"], "fx/b");
    assert_eq!(case["others"][0]["predicted"], false);
    // The joint prompt holds both policies: more prompt tokens than fx/a's alone.
    let single = reports[0]["policies"][0]["cases"][0]["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert!(case["prompt_tokens"].as_u64().unwrap() > single);
    assert!(reports[0]["policies"][0]["cases"][0]
        .get("others")
        .is_none());
}
