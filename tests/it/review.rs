//! The review loop against the real binary: capture of flagged decisions with credentials
//! masked, the review page behind the admin token, labels exported as cases that `policy test`
//! runs, replay of a candidate over captured traffic, retention, shedding when the store stalls,
//! and the same store on PostgreSQL shared by two replicas.

use crate::support::postgres::PgCluster;
use crate::support::*;
use guardgate::review::capture::Segment;
use guardgate::review::store::{
    Filter, Label, LabelFilter, Location, NewCapture, NewDecision, PolicyText, Store, WriteBatch,
};
use serde_json::Value;
use std::time::{Duration, Instant};

/// An OpenAI-shaped key, made at run time so no key-shaped literal sits in the repository.
fn fake_key() -> String {
    format!("sk-proj-{}", "Qw3rTy7UiOp9".repeat(4))
}

const CAPTURE_FLAGGED: &str = "capture = \"flagged\"\nstore_path = \"review.db\"";

fn sqlite(gw: &GatewayProc) -> std::sync::Arc<Store> {
    std::sync::Arc::new(Store::open(Location::Sqlite(gw.dir.path().join("review.db"))).unwrap())
}

/// Runs blocking store calls off the test's runtime (the PostgreSQL client runs one of its own).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The store's page once it holds `n` decisions matching `f` (the writer is asynchronous).
async fn rows(
    s: &std::sync::Arc<Store>,
    f: &Filter,
    n: usize,
) -> Vec<guardgate::review::store::Decision> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s2, f2) = (s.clone(), f.clone());
        let p = blocking(move || s2.page(&f2, None, 500).unwrap()).await;
        if p.rows.len() >= n || Instant::now() > deadline {
            return p.rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_texts(gw: &GatewayProc, texts: &[&str]) -> Vec<u16> {
    let c = client();
    let mut out = Vec::new();
    for t in texts {
        out.push(gw.post_chat(&c, t).await.unwrap().status().as_u16());
    }
    out
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn flagged_decisions_are_captured_masked_and_nothing_else() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .audit(CAPTURE_FLAGGED)
        .start(&[
            ("weapons.md", WEAPONS),
            ("profanity.md", PROFANITY),
            ("shadowed.md", SHADOWED),
        ])
        .await;
    let key = fake_key();
    let blocked = format!("how do I build a pipe bomb? my key is {key}");
    let codes = post_texts(
        &gw,
        &[
            "what a lovely morning",
            &blocked,
            "darn it",
            "pineapple pizza",
        ],
    )
    .await;
    assert_eq!(codes, [200, 400, 200, 200]);

    let s = sqlite(&gw);
    let got = rows(&s, &Filter::default(), 3).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|d| (d.policy_id.clone(), d.effect.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("test/profanity".to_string(), "annotated".to_string()),
            ("test/shadowed".into(), "recorded".into()),
            ("test/weapons".into(), "blocked".into()),
        ],
        "only the flagged decisions, one per policy that flagged"
    );
    let w = got.iter().find(|d| d.policy_id == "test/weapons").unwrap();
    assert_eq!(
        (w.verdict.as_str(), w.code.as_deref(), w.rule_id.as_deref()),
        ("violation", Some("W1"), Some("bomb-recipe"))
    );
    let d = s.detail(w.id).unwrap().unwrap();
    let c = d.capture.unwrap();
    assert_eq!(c.masked, 1);
    assert_eq!(
        c.segments,
        [Segment {
            source: "user".into(),
            location: "messages[0].content".into(),
            text: "how do I build a pipe bomb? my key is [MASKED:openai-api-key]".into()
        }]
    );
    // The policy file's text at the version that judged.
    assert_eq!(
        s.policy_text(&w.policy_hash).unwrap().unwrap().text,
        WEAPONS
    );

    // The key is nowhere on disk, and the judged text is in no log, audit record or metric.
    for f in ["review.db", "review.db-wal", "audit.jsonl", "stderr.log"] {
        let bytes = std::fs::read(gw.dir.path().join(f)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&key), "{f} holds the key");
        if f != "review.db" && f != "review.db-wal" {
            assert!(
                !text.contains("pipe bomb? my key"),
                "{f} holds the judged text"
            );
        }
    }
    assert!(!gw.metrics().await.contains("pipe bomb"));
}

#[tokio::test]
async fn labels_on_the_page_become_cases_that_policy_test_runs() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .admin("token_env = \"GG_REVIEW_TOKEN\"")
        .env("GG_REVIEW_TOKEN", "review-token-123")
        .audit(CAPTURE_FLAGGED)
        .start(&[("weapons.md", WEAPONS)])
        .await;
    assert_eq!(
        post_texts(&gw, &["the pipe bomb attacks of the 1970s, a history"]).await,
        [400]
    );
    let s = sqlite(&gw);
    let id = rows(&s, &Filter::default(), 1).await[0].id;
    let c = no_redirects();
    let bearer = "Bearer review-token-123";

    // Without the token: sent to the login form; with it, the queue.
    let r = c.get(gw.admin("/review")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/review/login");
    let page = c
        .get(gw.admin("/review"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("test/weapons") && html.contains("pipe bomb attacks"),
        "{html}"
    );

    // The login form sets a cookie that holds no token and opens the page.
    let r = c
        .post(gw.admin("/review/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(gw.admin("/review/login"))
        .form(&[("token", "review-token-123")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(!cookie.contains("review-token-123"));
    let r = c
        .get(gw.admin(&format!("/review/d/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A label that does not apply is refused; a form from another site too.
    let label = |l: &'static str, note: &'static str| {
        c.post(gw.admin(&format!("/review/d/{id}/label")))
            .header("cookie", cookie.clone())
            .form(&[("label", l), ("note", note)])
    };
    assert_eq!(
        label("false_negative", "").send().await.unwrap().status(),
        422
    );
    let r = label("false_positive", "")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = label("false_positive", "history, not instructions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = c
        .get(gw.admin(&format!("/review/d/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("l-false_positive") && html.contains("history, not instructions"));
    let f = Filter {
        label: LabelFilter::Is(Label::FalsePositive),
        ..Default::default()
    };
    assert_eq!(s.page(&f, None, 10).unwrap().rows.len(), 1);

    // The export page's JSONL, then the command that appends to the policy's case file.
    let lines = c
        .get(gw.admin("/review/export.jsonl?policy=test/weapons"))
        .header("authorization", bearer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let case: Value = serde_json::from_str(lines.trim()).unwrap();
    assert_eq!(
        (case["label"].as_u64(), case["text"].as_str()),
        (
            Some(0),
            Some("the pipe bomb attacks of the 1970s, a history")
        )
    );
    assert!(case["id"].as_str().unwrap().starts_with("review-"));

    let dir = gw.dir.path();
    // The config names the token's variable, so the command needs it set too.
    let export = || {
        let out = std::process::Command::new(BIN)
            .args(["review", "export", "--policy", "test/weapons"])
            .args(["-c", "guardgate.toml"])
            .current_dir(dir)
            .env("GG_REVIEW_TOKEN", "review-token-123")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (rc, err) = export();
    assert_eq!(rc, Some(0), "{err}");
    assert!(err.contains("1 new case(s) appended"), "{err}");
    let cases = std::fs::read_to_string(dir.join("policies/weapons.cases.jsonl")).unwrap();
    assert_eq!(cases.lines().count(), 1);
    let (rc, err) = export();
    assert_eq!(rc, Some(0), "{err}");
    assert!(
        err.contains("0 new case(s) appended, 1 already in"),
        "{err}"
    );

    // The next policy test runs the exported case: the rule still flags it, a false positive.
    let (rc, out, err) = run_cli(
        &[
            "policy",
            "test",
            "policies/weapons.md",
            "--report-dir",
            "report",
        ],
        dir,
    );
    assert_eq!(rc, 0, "{out}{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap())
            .unwrap();
    let p = &report["policies"][0];
    assert_eq!(
        (p["n"].as_u64(), p["confusion"]["fp"].as_u64()),
        (Some(1), Some(1)),
        "{p}"
    );
}

const CANDIDATE: &str = "+++\nid = \"test/weapons\"\ntitle = \"Weapons\"\nversion = \"1.1.0\"\ncandidate = true\n[[codes]]\ncode = \"W1\"\ntitle = \"Build\"\n[[codes]]\ncode = \"W3\"\ntitle = \"Improvised firearms\"\n[[rules]]\nid = \"bombs\"\ncode = \"W1\"\nkeywords = [\"pipe bomb\"]\n[[rules]]\nid = \"zip-gun\"\ncode = \"W3\"\nkeywords = [\"zip gun\"]\n+++\n# Weapons\nCandidate.\n";

#[tokio::test]
async fn replay_reports_what_a_candidate_would_change() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .audit("capture = \"all\"\nstore_path = \"review.db\"")
        .start(&[("weapons.md", WEAPONS), ("weapons.next.md", CANDIDATE)])
        .await;
    let texts = [
        "a pipe bomb recipe",
        "buy a ghost gun",
        "make a zip gun",
        "bake a cake",
    ];
    assert_eq!(post_texts(&gw, &texts).await, [400, 400, 200, 200]);
    let s = sqlite(&gw);
    let all = rows(&s, &Filter::default(), 4).await;
    assert_eq!(all.len(), 4, "capture = all keeps allowed decisions too");
    // The live shadow comparison is kept with each decision: the disagreement filter.
    let dis = s
        .page(
            &Filter {
                disagree: true,
                ..Default::default()
            },
            None,
            10,
        )
        .unwrap()
        .rows;
    let mut dis_texts: Vec<_> = dis.iter().map(|d| d.preview.clone().unwrap()).collect();
    dis_texts.sort();
    assert_eq!(dis_texts, ["buy a ghost gun", "make a zip gun"]);

    // A reviewer says the zip gun should have been caught.
    let zip = all
        .iter()
        .find(|d| d.preview.as_deref() == Some("make a zip gun"))
        .unwrap();
    let r = no_redirects()
        .post(gw.admin(&format!("/review/d/{}/label", zip.id)))
        .form(&[("label", "false_negative")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    let cand = gw.dir.path().join("candidate.md");
    std::fs::write(&cand, CANDIDATE).unwrap();
    let (rc, out, err) = run_cli(
        &[
            "policy",
            "replay",
            cand.to_str().unwrap(),
            "--since",
            "1h",
            "-c",
            "guardgate.toml",
            "--format",
            "json",
        ],
        gw.dir.path(),
    );
    assert_eq!(rc, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["replayed"], 4);
    assert_eq!(
        (
            r["unchanged"].as_u64(),
            r["to_violation"].as_u64(),
            r["to_allow"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["by_code"]["W3"]["to_violation"], 1);
    assert_eq!(r["by_code"]["W2"]["to_allow"], 1);
    assert_eq!(r["live_quality"]["confusion"]["fn"], 1);
    assert_eq!(r["candidate_quality"]["confusion"]["tp"], 1);
    assert_eq!(
        r["cost"]["model_calls"], 0,
        "the rules decide: no model call"
    );
    let flips: Vec<&str> = r["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(
        flips.contains(&"[user] make a zip gun") && flips.contains(&"[user] buy a ghost gun"),
        "{flips:?}"
    );

    // The same from the page, for the loaded shadow candidate.
    let c = no_redirects();
    let r = c
        .post(gw.admin("/review/replay"))
        .form(&[("candidate", "test/weapons"), ("since", "1h")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(10);
    let html = loop {
        let html = c
            .get(gw.admin("/review/replay"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if html.contains("replay-result") || Instant::now() > deadline {
            break html;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        html.contains("test/weapons 1.1.0 over 4 captured decisions"),
        "{html}"
    );
}

#[tokio::test]
async fn captured_text_is_purged_after_its_retention() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .audit("capture = \"flagged\"\nstore_path = \"review.db\"\ncapture_retention = \"2s\"")
        .start(&[("weapons.md", WEAPONS)])
        .await;
    post_texts(&gw, &["a pipe bomb"]).await;
    let s = sqlite(&gw);
    let id = rows(&s, &Filter::default(), 1).await[0].id;
    assert!(s.detail(id).unwrap().unwrap().capture.is_some());
    let deadline = Instant::now() + Duration::from_secs(8);
    while s.detail(id).unwrap().unwrap().capture.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = s.detail(id).unwrap().unwrap();
    assert_eq!((d.capture, d.decision.preview), (None, None), "text purged");
    assert_eq!(d.decision.code.as_deref(), Some("W1"), "the decision stays");
}

#[tokio::test]
async fn a_stalled_store_sheds_captured_decisions_and_never_holds_traffic() {
    let m = mock::start().await;
    let gw = TestConfig::new(&m.base_url())
        .audit("capture = \"flagged\"\nstore_path = \"review.db\"\nstore_queue = 2")
        .start(&[("weapons.md", WEAPONS)])
        .await;
    // Another writer holds the database: the store's writer waits on it (busy_timeout).
    let db = rusqlite::Connection::open(gw.dir.path().join("review.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let c = client();
    let started = Instant::now();
    for _ in 0..40 {
        let r = gw.post_chat(&c, "a pipe bomb").await.unwrap();
        assert_eq!(r.status(), 400);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "40 requests took {took:?} while the store stalled"
    );
    let metrics = gw
        .metrics_eventually("guardgate_errors_total{kind=\"review_drop\"}")
        .await;
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("guardgate_errors_total{kind=\"review_drop\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 30.0, "shed {dropped}");
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    // Once the database is free again, new decisions are stored (the writer wakes from its busy
    // wait within ~100 ms and drains its backlog first, so a decision sent at once may be shed).
    let s = sqlite(&gw);
    let stored = |text: &str| {
        s.page(&Filter::default(), None, 500)
            .unwrap()
            .rows
            .iter()
            .any(|d| d.preview.as_deref() == Some(text))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ok = false;
    for i in 0.. {
        let text = format!("pipe bomb after the stall {i}");
        post_texts(&gw, &[&text]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ok = stored(&text);
        if ok || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        ok,
        "decisions made after the stall are not stored:\n{}",
        gw.log()
    );
}

fn decision(i: i64, policy: &str, verdict: &str, key: &str) -> NewDecision {
    NewDecision {
        ts_ms: 1_000 + i,
        request_id: format!("r{i}"),
        route: "chat".into(),
        api: "openai-chat".into(),
        direction: "input".into(),
        policy_id: policy.into(),
        policy_version: "1".into(),
        policy_hash: "h1".into(),
        verdict: verdict.into(),
        effect: if verdict == "violation" {
            "blocked"
        } else {
            "allowed"
        }
        .into(),
        action: "block".into(),
        code: (verdict == "violation").then(|| "C1".to_string()),
        confidence: Some(0.5),
        prompt_tokens: Some(7),
        latency_us: 10,
        capture_key: Some(key.into()),
        preview: Some(format!("text of {key}")),
        ..Default::default()
    }
}

/// The store's contract, run on each database.
fn conformance(s: &Store) {
    let mut w = WriteBatch::default();
    for i in 0..120 {
        let key = format!("k{i}");
        w.captures.push(NewCapture {
            key: key.clone(),
            ts_ms: 1_000 + i,
            segments: vec![Segment {
                source: "user".into(),
                location: "messages[0].content".into(),
                text: format!("text ünïcode {i}"),
            }],
            chars: 10,
            truncated: i % 2 == 0,
            masked: 1,
        });
        let policy = if i % 3 == 0 { "a/x" } else { "b/y" };
        w.decisions.push(decision(
            i,
            policy,
            if i % 2 == 0 { "violation" } else { "allow" },
            &key,
        ));
    }
    w.facets = vec![
        ("policy".into(), "a/x".into()),
        ("policy".into(), "b/y".into()),
    ];
    w.policies = vec![PolicyText {
        hash: "h1".into(),
        policy_id: "a/x".into(),
        version: "1".into(),
        path: "p.md".into(),
        text: "+++\n+++\n# X".into(),
        exact: true,
        ts_ms: 1,
    }];
    s.write(&w).unwrap();
    s.write(&WriteBatch {
        policies: w.policies.clone(),
        facets: w.facets.clone(),
        ..Default::default()
    })
    .unwrap();

    let p1 = s.page(&Filter::default(), None, 50).unwrap();
    assert_eq!((p1.rows.len(), p1.total), (50, Some(120)));
    let p3 = s
        .page(
            &Filter::default(),
            s.page(&Filter::default(), p1.next, 50).unwrap().next,
            50,
        )
        .unwrap();
    assert_eq!((p3.rows.len(), p3.next), (20, None));
    let f = Filter {
        policy: Some("a/x".into()),
        verdict: Some("violation".into()),
        since_ms: Some(1_060),
        ..Default::default()
    };
    let p = s.page(&f, None, 100).unwrap();
    // i in 60..120 with i % 6 == 0.
    assert_eq!(p.total, Some(10));
    let top = &p.rows[0];
    assert_eq!(
        (top.confidence, top.prompt_tokens, top.code.as_deref()),
        (Some(0.5), Some(7), Some("C1"))
    );
    assert!(s
        .label(top.id, Some(Label::Correct), Some("right call"), 9)
        .unwrap());
    let d = s.detail(top.id).unwrap().unwrap();
    assert_eq!(
        (d.decision.label, d.decision.labelled_at),
        (Some(Label::Correct), Some(9))
    );
    assert_eq!(d.capture.unwrap().segments[0].text, "text ünïcode 114");
    assert!(s.label(top.id, None, None, 10).unwrap());
    assert_eq!(s.detail(top.id).unwrap().unwrap().decision.label, None);
    assert_eq!(s.facets().unwrap().of("policy"), ["a/x", "b/y"]);
    assert_eq!(s.policy_text("h1").unwrap().unwrap().text, "+++\n+++\n# X");
    assert_eq!(s.captured("a/x", 0, 1000).unwrap().len(), 40);
    assert_eq!(s.purge(1_060).unwrap(), 60);
    assert_eq!(s.captured("a/x", 0, 1000).unwrap().len(), 20);
    assert_eq!(
        s.page(&Filter::default(), None, 1).unwrap().total,
        Some(120)
    );
}

#[test]
fn the_store_contract_holds_on_sqlite() {
    let d = tempfile::tempdir().unwrap();
    conformance(&Store::open(Location::Sqlite(d.path().join("r.db"))).unwrap());
}

#[test]
fn the_store_contract_holds_on_postgresql() {
    let Some(pg) = PgCluster::start() else { return };
    let url = pg.database("conformance");
    let s = Store::open(Location::Postgres(url.clone())).unwrap();
    conformance(&s);
    // A second opener (another replica starting) finds the schema in place.
    let again = Store::open(Location::Postgres(url)).unwrap();
    assert_eq!(
        again.page(&Filter::default(), None, 1).unwrap().total,
        Some(120)
    );
}

#[tokio::test]
async fn two_replicas_on_postgresql_share_one_review_queue() {
    let Some(pg) = blocking(PgCluster::start).await else {
        return;
    };
    let pg = std::sync::Arc::new(pg);
    let p2 = pg.clone();
    let url = blocking(move || p2.database("replicas")).await;
    let m = mock::start().await;
    let cfg = |n: &str| {
        TestConfig::new(&m.base_url())
            .audit("capture = \"flagged\"\nstore_url_env = \"GG_REVIEW_PG\"")
            .env("GG_REVIEW_PG", &url)
            .env("REPLICA", n)
    };
    let a = cfg("a").start(&[("weapons.md", WEAPONS)]).await;
    let b = cfg("b").start(&[("weapons.md", WEAPONS)]).await;
    post_texts(&a, &["replica a: a pipe bomb"]).await;
    post_texts(&b, &["replica b: a nail bomb"]).await;
    let u = url.clone();
    let s =
        std::sync::Arc::new(blocking(move || Store::open(Location::Postgres(u)).unwrap()).await);
    let got = rows(&s, &Filter::default(), 2).await;
    let mut texts: Vec<_> = got.iter().map(|d| d.preview.clone().unwrap()).collect();
    texts.sort();
    assert_eq!(texts, ["replica a: a pipe bomb", "replica b: a nail bomb"]);
    // Labelled on one replica's page, seen on the other's.
    let id = got[0].id;
    let r = no_redirects()
        .post(a.admin(&format!("/review/d/{id}/label")))
        .form(&[("label", "correct"), ("note", "from replica a")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = reqwest::get(b.admin(&format!("/review/d/{id}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("from replica a") && html.contains("l-correct"),
        "{html}"
    );
    let queue = reqwest::get(b.admin("/review"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(queue.contains("replica a: a pipe bomb") && queue.contains("replica b: a nail bomb"));
    assert!(
        queue.contains("store <span class=\"mono\">postgresql</span>"),
        "the URL is never shown"
    );
    // The client closes its connection on a runtime of its own: not on this test's.
    blocking(move || drop(s)).await;
}
