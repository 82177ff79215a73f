//! Policy hot reload: under load, with invalid versions in between, through every trigger
//! (file events, ConfigMap-style symlink swaps, SIGHUP, the admin endpoint).

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version `n` of one policy: even versions block "alpha" (code A1), odd ones block "bravo" (B1).
fn version(n: usize) -> String {
    let (code, word) = if n % 2 == 0 {
        ("A1", "alpha")
    } else {
        ("B1", "bravo")
    };
    format!(
        "+++\nid = \"test/switch\"\ntitle = \"Switch\"\nversion = \"v{n}\"\n[[codes]]\ncode = \"{code}\"\ntitle = \"t\"\n[[rules]]\nid = \"r{n}\"\ncode = \"{code}\"\nkeywords = [\"{word}\"]\n+++\nVersion {n}.\n"
    )
}

const INVALID: &str = "+++\nid = \"test/switch\"\ntitle = \"broken\"\nversion = \"bad\"\n[[rules]]\nid = \"x\"\ncode = \"NOPE\"\nregex = \"(\"\n+++\n";

/// Sends `text` and returns whether it was blocked (and by which code).
async fn probe(
    c: &reqwest::Client,
    gw: &GatewayProc,
    text: &str,
) -> Result<Option<String>, String> {
    let r = gw.post_chat(c, text).await.map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        200 => Ok(None),
        400 => {
            let code = r
                .headers()
                .get("x-guardgate-code")
                .map(|v| v.to_str().unwrap().to_string());
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if v["error"]["code"] != "content_policy_violation" {
                return Err(format!("400 that is not a policy block: {v}"));
            }
            Ok(code)
        }
        s => Err(format!(
            "unexpected status {s}: {}",
            r.text().await.unwrap_or_default()
        )),
    }
}

/// Waits until the gateway enforces version `n`; returns how long that took.
async fn wait_for_version(
    c: &reqwest::Client,
    gw: &GatewayProc,
    n: usize,
    since: Instant,
) -> Duration {
    let (word, code) = if n % 2 == 0 {
        ("alpha", "A1")
    } else {
        ("bravo", "B1")
    };
    let give_up = since + Duration::from_secs(10);
    loop {
        if probe(c, gw, word).await == Ok(Some(code.to_string())) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < give_up,
            "version {n} never became live:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("md.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_loses_no_request() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url());
    let gw = Arc::new(cfg.start(&[("switch.md", &version(0))]).await);
    let file = gw.policies_dir().join("switch.md");
    let c = reqwest::Client::new();

    // Background load: bounded in count and time; every answer must be a 200 or a policy block
    // whose code belongs to the word sent.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (gw, stop, sent, c) = (gw.clone(), stop.clone(), sent.clone(), c.clone());
        workers.push(tokio::spawn(async move {
            let words = ["alpha", "bravo", "charlie"];
            let mut failures = Vec::new();
            let started = Instant::now();
            let mut i = w;
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && sent.load(Ordering::Relaxed) < 20_000
            {
                let word = words[i % 3];
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                match probe(&c, &gw, word).await {
                    Ok(None) => {}
                    Ok(Some(code)) => {
                        let ok =
                            (word == "alpha" && code == "A1") || (word == "bravo" && code == "B1");
                        if !ok {
                            failures.push(format!("{word} blocked with {code}"));
                        }
                    }
                    Err(e) => failures.push(format!("{word}: {e}")),
                }
            }
            failures
        }));
    }

    let mut switch_times = Vec::new();
    let mut live = 0;
    for round in 1..=24 {
        if round % 4 == 0 {
            // An invalid version must never replace the live one.
            write_atomic(&file, INVALID);
            tokio::time::sleep(Duration::from_millis(400)).await;
            let (word, code) = if live % 2 == 0 {
                ("alpha", "A1")
            } else {
                ("bravo", "B1")
            };
            assert_eq!(
                probe(&c, &gw, word).await,
                Ok(Some(code.into())),
                "invalid policy replaced v{live}"
            );
            let p: Value = gw.admin_json("/admin/policies").await;
            assert!(
                p["last_reload_error"]["errors"]
                    .to_string()
                    .contains("NOPE"),
                "{p}"
            );
            assert_eq!(p["policies"][0]["version"], format!("v{live}"));
            continue;
        }
        live = round;
        let t0 = Instant::now();
        if round % 3 == 0 {
            std::fs::write(&file, version(live)).unwrap(); // in place: readers may see it half-written
        } else {
            write_atomic(&file, &version(live));
        }
        switch_times.push(wait_for_version(&c, &gw, live, t0).await);
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let total = sent.load(Ordering::Relaxed);
    assert!(total > 100, "the load loop barely ran ({total})");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let worst = switch_times.iter().max().unwrap();
    eprintln!(
        "{total} requests during 24 rewrites; switch times: worst {worst:?}, all {switch_times:?}"
    );
    assert!(*worst < Duration::from_secs(1), "a reload took {worst:?}");
    let metrics = gw.metrics().await;
    let failures_metric = metrics
        .lines()
        .find(|l| l.starts_with("guardgate_policy_reloads_total{result=\"failure\"}"))
        .unwrap();
    assert_ne!(
        failures_metric.rsplit(' ').next().unwrap(),
        "0",
        "invalid versions were not counted"
    );
    // Audit records carry the version that decided.
    let audit = gw.audit();
    assert!(audit
        .iter()
        .any(|r| r["policy_version"] == format!("v{live}")));
}

/// Kubernetes mounts a ConfigMap as `..<timestamp>/` holding the files, `..data` -> that dir, and
/// top-level symlinks `file -> ..data/file`; an update swaps `..data` with one atomic rename.
#[tokio::test]
async fn configmap_symlink_swap_reloads() {
    let m = mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(pol.join("..2026_11_28_v0")).unwrap();
    std::fs::write(pol.join("..2026_11_28_v0/switch.md"), version(0)).unwrap();
    std::os::unix::fs::symlink("..2026_11_28_v0", pol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/switch.md", pol.join("switch.md")).unwrap();
    let cfg = TestConfig::new(&m.base_url()).poll_interval_ms(0);
    let gw = cfg.launch(dir).await.unwrap();
    let c = reqwest::Client::new();
    assert_eq!(probe(&c, &gw, "alpha").await, Ok(Some("A1".into())));
    for n in 1..=3 {
        let new_dir = format!("..2026_11_28_v{n}");
        std::fs::create_dir_all(pol.join(&new_dir)).unwrap();
        std::fs::write(pol.join(&new_dir).join("switch.md"), version(n)).unwrap();
        let _ = std::fs::remove_file(pol.join("..data_tmp"));
        std::os::unix::fs::symlink(&new_dir, pol.join("..data_tmp")).unwrap();
        let t0 = Instant::now();
        std::fs::rename(pol.join("..data_tmp"), pol.join("..data")).unwrap();
        std::fs::remove_dir_all(pol.join(format!("..2026_11_28_v{}", n - 1))).unwrap();
        let took = wait_for_version(&c, &gw, n, t0).await;
        assert!(took < Duration::from_secs(1), "swap {n} took {took:?}");
    }
    let p: Value = gw.admin_json("/admin/policies").await;
    assert_eq!(
        p["policies"].as_array().unwrap().len(),
        1,
        "hidden ConfigMap dirs were loaded: {p}"
    );
    assert_eq!(p["policies"][0]["version"], "v3");
}

#[tokio::test]
async fn sighup_and_admin_reload_without_watching() {
    let m = mock::start().await;
    let cfg = TestConfig::new(&m.base_url())
        .policies("watch = false")
        .poll_interval_ms(0);
    let gw = cfg.start(&[("switch.md", &version(0))]).await;
    let c = reqwest::Client::new();
    let file = gw.policies_dir().join("switch.md");
    write_atomic(&file, &version(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        probe(&c, &gw, "alpha").await,
        Ok(Some("A1".into())),
        "reloaded without a trigger"
    );
    let t0 = Instant::now();
    gw.signal("HUP");
    wait_for_version(&c, &gw, 1, t0).await;
    write_atomic(&file, &version(2));
    let (_, r) = gw.admin_reload().await;
    assert_eq!(r["reloaded"], true, "{r}");
    assert_eq!(r["generation"], 3);
    assert_eq!(probe(&c, &gw, "alpha").await, Ok(Some("A1".into())));
    write_atomic(&file, INVALID);
    let (status, r) = gw.admin_reload().await;
    assert_eq!(status, 422);
    assert!(
        r["errors"].to_string().contains("bad regex") || r["errors"].to_string().contains("NOPE"),
        "{r}"
    );
    assert_eq!(probe(&c, &gw, "alpha").await, Ok(Some("A1".into())));
}
