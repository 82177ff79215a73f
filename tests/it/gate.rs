//! The reload gate: a changed policy with `gate = true` goes live only if its case file meets its
//! thresholds; otherwise the old version keeps serving and the report says why.

use crate::support::*;
use std::time::{Duration, Instant};

fn version(v: &str, keywords: &str) -> String {
    format!("+++\nid = \"test/gated\"\ntitle = \"Gated\"\nversion = \"{v}\"\ngate = true\n[thresholds]\nmin_recall = 1.0\nmax_fpr = 0.0\n[[codes]]\ncode = \"G1\"\ntitle = \"Bombs\"\n[[rules]]\nid = \"bombs\"\ncode = \"G1\"\nkeywords = [{keywords}]\n+++\nGated.\n")
}

const CASES: &str = "{\"id\":\"g1\",\"text\":\"a pipe bomb\",\"label\":1}\n{\"id\":\"g2\",\"text\":\"a nail bomb\",\"label\":1}\n{\"id\":\"g3\",\"text\":\"hello there\",\"label\":0}\n";

async fn blocked(c: &reqwest::Client, gw: &GatewayProc, text: &str) -> bool {
    gw.post_chat(c, text).await.unwrap().status() == 400
}

#[tokio::test]
async fn failing_candidates_are_refused_and_the_old_version_keeps_serving() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let gw = cfg
        .start(&[
            ("gated.md", &version("1", "\"pipe bomb\", \"nail bomb\"")),
            ("gated.cases.jsonl", CASES),
        ])
        .await;
    let c = reqwest::Client::new();
    assert!(blocked(&c, &gw, "nail bomb").await);
    // v2 forgets "nail bomb": recall 0.5 < 1.0, refused.
    std::fs::write(
        gw.policies_dir().join("gated.md"),
        version("2", "\"pipe bomb\""),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let p = gw.admin_json("/admin/policies").await;
        if p["last_gate_report"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the gate never ran: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let g = &report["last_gate_report"][0];
    assert_eq!(g["version"], "2");
    assert_eq!(g["passed"], false);
    assert!(
        g["detail"]
            .as_str()
            .unwrap()
            .contains("recall 0.500 < min 1.000"),
        "{g}"
    );
    assert_eq!(
        report["policies"][0]["version"], "1",
        "the refused version went live"
    );
    assert!(
        blocked(&c, &gw, "nail bomb").await,
        "the old version must keep serving"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("guardgate_policy_reloads_total{result=\"gated\"} 1"),
        "{metrics}"
    );
    // The refusal is the reload's error, not a silent "nothing changed".
    let why = report["last_reload_error"]["errors"][0]
        .as_str()
        .unwrap_or("");
    assert!(
        why.contains("refused by the reload gate") && why.contains("recall 0.500"),
        "{report}"
    );
    let (status, v) = gw.admin_reload().await;
    assert_eq!(status, 422);
    assert_eq!(v["reloaded"], false);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("refused by the reload gate"),
        "{v}"
    );
    // v3 keeps both and adds one: passes, goes live.
    std::fs::write(
        gw.policies_dir().join("gated.md"),
        version("3", "\"pipe bomb\", \"nail bomb\", \"zip gun\""),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !blocked(&c, &gw, "zip gun").await {
        assert!(
            Instant::now() < deadline,
            "v3 never went live: {}",
            gw.admin_json("/admin/policies").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = gw.admin_json("/admin/policies").await;
    assert_eq!(p["policies"][0]["version"], "3");
    assert_eq!(p["last_gate_report"][0]["passed"], true);
    assert!(p["last_reload_error"].is_null(), "{p}");
}

#[tokio::test]
async fn gate_without_thresholds_is_an_error() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let bad = version("1", "\"x\"").replace("[thresholds]\nmin_recall = 1.0\nmax_fpr = 0.0\n", "");
    let e = cfg.try_start(&[("gated.md", &bad)]).await.err().unwrap();
    assert!(e.contains("gate = true needs a [thresholds] table"), "{e}");
}
