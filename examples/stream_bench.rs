//! Streaming benchmark (docs/BENCHMARKS.md, issue #4): a mock upstream streams 1,000 tokens at a
//! fixed rate; time to first token and total time are measured side by side for
//! (a) the client straight to the mock, (b) guardgate without output policies, (c) guardgate with
//! a deterministic output policy and a 200-character hold-back window.
//!
//!   cargo build --release --bin guardgate --example stream_bench
//!   target/release/examples/stream_bench [--guardgate PATH] [--runs N] [--tokens N] [--token-ms MS]

#[path = "../tests/it/support/mock.rs"]
mod mock;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const POLICY: &str = "+++\nid = \"bench/weapons\"\ntitle = \"Weapons\"\nversion = \"1\"\ndirections = [\"output\"]\n[[codes]]\ncode = \"W1\"\ntitle = \"Build\"\n[[rules]]\nid = \"r1\"\ncode = \"W1\"\nkeywords = [\"pipe bomb\", \"nail bomb\", \"ghost gun\", \"zip gun\"]\n[[rules]]\nid = \"r2\"\ncode = \"W1\"\nregex = 'how to (build|make) an? (bomb|explosive)'\n+++\nWeapons.\n";

struct Gw {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(bin: &str, upstream: &str, output_policy: bool) -> Gw {
    let dir = std::env::temp_dir().join(format!("gg-stream-bench-{}", free_port()));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/weapons.md"), POLICY).unwrap();
    let (port, admin) = (free_port(), free_port());
    let sel = if output_policy {
        "[[routes.policies]]\nselect = \"bench/weapons\"\ndirections = [\"output\"]\n[routes.output]\nwindow_chars = 200\noverlap_chars = 50\n"
    } else {
        ""
    };
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\ngrace_period_seconds = 0\ngraceful_shutdown_timeout_seconds = 1\nupgrade_sock = \"{d}/u.sock\"\npid_file = \"{d}/g.pid\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[policies]\ndirs = [\"policies\"]\n[audit]\nsink = \"off\"\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream}\"\n[[routes]]\nname = \"chat\"\npath = \"/v1/chat/completions\"\napi = \"openai-chat\"\nupstream = \"mock\"\n{sel}",
        d = dir.display()
    );
    std::fs::write(dir.join("g.toml"), cfg).unwrap();
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("g.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start guardgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "guardgate did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Gw {
        child,
        port,
        _dir: dir,
    }
}

/// (time to first token, total time) for one streamed completion.
async fn one(c: &reqwest::Client, url: &str, reply: &str, token_ms: &str) -> (Duration, Duration) {
    let t0 = Instant::now();
    let mut r = c
        .post(url)
        .header("x-mock-reply", reply)
        .header("x-mock-token-ms", token_ms)
        .json(&serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ttft = None;
    let mut seen = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        seen.extend_from_slice(&chunk);
        if ttft.is_none()
            && seen.windows(11).any(|w| w == b"\"content\":\"")
            && seen.windows(5).any(|w| w == b"tok0 ")
        {
            ttft = Some(t0.elapsed());
        }
    }
    assert!(
        seen.ends_with(b"data: [DONE]\n\n"),
        "stream did not end cleanly"
    );
    (ttft.unwrap_or_default(), t0.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bin = arg("--guardgate", &format!("{target}/release/guardgate"));
    let runs: usize = arg("--runs", "5").parse().unwrap();
    let tokens: usize = arg("--tokens", "1000").parse().unwrap();
    let token_ms = arg("--token-ms", "2");
    // Header-safe text: 1,000 "tokens" of ~5 characters.
    let reply: String = (0..tokens).map(|i| format!("tok{} ", i % 10)).collect();

    let m = mock::start().await;
    let b = start(&bin, &m.base_url(), false).await;
    let c = start(&bin, &m.base_url(), true).await;
    let client = reqwest::Client::new();
    let paths = [
        ("(a) direct to mock", m.base_url()),
        (
            "(b) guardgate, no output policy",
            format!("http://127.0.0.1:{}", b.port),
        ),
        (
            "(c) guardgate, rules, 200-char window",
            format!("http://127.0.0.1:{}", c.port),
        ),
    ];
    println!("stream benchmark: {tokens} tokens at one per {token_ms} ms, {runs} runs each (medians; runs interleaved)");
    let mut results: Vec<(Vec<Duration>, Vec<Duration>)> = vec![(vec![], vec![]); paths.len()];
    // Warm-up, then interleave the scenarios so drift on a noisy machine hits all alike.
    for (_, base) in &paths {
        one(
            &client,
            &format!("{base}/v1/chat/completions"),
            &reply,
            &token_ms,
        )
        .await;
    }
    for _ in 0..runs {
        for (i, (_, base)) in paths.iter().enumerate() {
            let (ttft, total) = one(
                &client,
                &format!("{base}/v1/chat/completions"),
                &reply,
                &token_ms,
            )
            .await;
            results[i].0.push(ttft);
            results[i].1.push(total);
        }
    }
    let base_ttft = median(results[0].0.clone());
    let base_total = median(results[0].1.clone());
    println!(
        "{:<40} {:>10} {:>12} {:>10} {:>12}",
        "scenario", "TTFT ms", "+TTFT ms", "total ms", "x direct"
    );
    for (i, (name, _)) in paths.iter().enumerate() {
        let ttft = median(results[i].0.clone());
        let total = median(results[i].1.clone());
        println!(
            "{:<40} {:>10.2} {:>12.2} {:>10.1} {:>12.3}",
            name,
            ttft.as_secs_f64() * 1e3,
            (ttft.as_secs_f64() - base_ttft.as_secs_f64()) * 1e3,
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() / base_total.as_secs_f64()
        );
    }
    println!(
        "TTFT = time until the first content token reaches the client. (c)'s TTFT includes the"
    );
    println!(
        "window itself: the first 200 characters (~40 tokens here) must arrive before release."
    );
}
