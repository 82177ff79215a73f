//! Shadow versions: a candidate policy is judged on live traffic next to the live version, never
//! enforced, and its agreement is reported.

use crate::support::*;
use serde_json::Value;

const LIVE: &str = "+++\nid = \"test/weapons\"\ntitle = \"Weapons\"\nversion = \"1.0.0\"\n[[codes]]\ncode = \"W1\"\ntitle = \"Build\"\n[[rules]]\nid = \"bombs\"\ncode = \"W1\"\nkeywords = [\"pipe bomb\", \"nail bomb\"]\n+++\nLive.\n";
const CANDIDATE: &str = "+++\nid = \"test/weapons\"\ntitle = \"Weapons\"\nversion = \"1.1.0\"\ncandidate = true\n[[codes]]\ncode = \"W1\"\ntitle = \"Build\"\n[[rules]]\nid = \"bombs-v2\"\ncode = \"W1\"\nkeywords = [\"pipe bomb\", \"zip gun\"]\n+++\nCandidate.\n";

#[tokio::test]
async fn candidate_is_compared_but_never_enforced() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let gw = cfg
        .start(&[("weapons.md", LIVE), ("weapons.candidate.md", CANDIDATE)])
        .await;
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    for text in ["a pipe bomb", "a nail bomb", "a zip gun", "hello"] {
        let r = gw.post_chat(&c, text).await.unwrap();
        statuses.push(r.status().as_u16());
    }
    // Only the live version decides: the candidate's "zip gun" hit is not enforced.
    assert_eq!(statuses, vec![400, 400, 200, 200]);
    // Comparisons are counted in each exchange's logging phase, just after its reply.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let s = loop {
        let s: Value = gw.admin_json("/admin/shadow").await;
        if s["comparisons"]["test/weapons"]["compared"] == 4 || std::time::Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let w = &s["comparisons"]["test/weapons"];
    assert_eq!(w["compared"], 4, "{s}");
    assert_eq!(w["agreed"], 2);
    assert_eq!(w["agreement_rate"], 0.5);
    assert_eq!(w["candidate_version"], "1.1.0");
    let d = w["disagreements"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[0]["live"].as_bool(), d[0]["candidate"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (d[1]["live"].as_bool(), d[1]["candidate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(s["candidates"][0]["candidate_version"], "1.1.0");
    let audit = gw.audit_wait(8).await;
    let cand: Vec<&Value> = audit
        .iter()
        .filter(|r| r["effect"] == "candidate")
        .collect();
    assert_eq!(cand.len(), 4);
    assert!(cand
        .iter()
        .all(|r| r["policy_version"] == "1.1.0" && r["action"] == "shadow"));
    assert_eq!(
        cand.iter()
            .filter(|r| r["candidate_agrees"] == false)
            .count(),
        2
    );
}

#[tokio::test]
async fn invalid_candidates_are_refused() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let orphan = CANDIDATE.replace("test/weapons", "test/other");
    let e = cfg
        .try_start(&[("weapons.md", LIVE), ("other.md", &orphan)])
        .await
        .err()
        .unwrap();
    assert!(e.contains("no live policy has that id"), "{e}");
    let same = CANDIDATE.replace("1.1.0", "1.0.0");
    let e = cfg
        .try_start(&[("weapons.md", LIVE), ("c.md", &same)])
        .await
        .err()
        .unwrap();
    assert!(e.contains("give it a new version"), "{e}");
}
