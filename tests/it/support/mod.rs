//! Test harness: runs the real `guardgate` binary against the mock upstream over loopback.
#![allow(dead_code)]

pub mod mock;
pub mod model_server;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port for a listener the gateway binds later. It comes from below the kernel's ephemeral range
/// (`ip_local_port_range`), so between this call and the gateway's bind the kernel cannot hand the
/// same port to a mock's `bind(0)` or to an outgoing connection. A port picked with `bind(0)` and
/// released could be, and a gateway whose port went to a mock of a parallel test passed its
/// readiness check and then sent the test's requests to that mock. Ports are not handed out twice
/// within a test process; the start is spread by process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000u32, ephemeral_low.saturating_sub(10_000));
    if span < 1_000 {
        // No room below the ephemeral range on this host: let the kernel choose.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}-{}", low + span - 1);
}

/// A policy that blocks weapon-building requests with two deterministic rules.
pub const WEAPONS: &str = r#"+++
id = "test/weapons"
title = "Weapons"
version = "1.0.0"
directions = ["input", "output"]
action = "block"
[[codes]]
code = "W1"
title = "Instructions to build weapons"
severity = "high"
[[codes]]
code = "W2"
title = "Weapon purchase without checks"
severity = "low"
[[rules]]
id = "bomb-recipe"
code = "W1"
keywords = ["pipe bomb", "nail bomb"]
leet = true
[[rules]]
id = "ghost-gun"
code = "W2"
regex = 'ghost\s+gun'
+++
# Weapons
Content that explains how to build weapons violates this policy.
"#;

/// Annotates (does not block) mild profanity.
pub const PROFANITY: &str = r#"+++
id = "test/profanity"
title = "Profanity"
version = "1.0.0"
action = "annotate"
[[codes]]
code = "P1"
title = "Profanity"
severity = "low"
[[rules]]
id = "darn"
code = "P1"
keywords = ["darn"]
+++
# Profanity
Mild profanity is annotated.
"#;

/// Shadow policy: decides and records only.
pub const SHADOWED: &str = r#"+++
id = "test/shadowed"
title = "Shadowed"
version = "1.0.0"
action = "shadow"
[[codes]]
code = "S1"
title = "Mentions of pineapples"
severity = "high"
[[rules]]
id = "pineapple"
code = "S1"
keywords = ["pineapple"]
+++
# Shadowed
Pineapple talk, recorded only.
"#;

pub struct GatewayProc {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
}

impl GatewayProc {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }
    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
    pub fn audit_raw(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
    /// Waits until the audit log holds at least `n` records (the writer is asynchronous).
    pub async fn audit_wait(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = self.audit();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    /// Metrics once they contain `needle` (counters bumped in pingora's logging phase land just
    /// after the reply the test saw), or the last scrape after ~2 s.
    pub async fn metrics_eventually(&self, needle: &str) -> String {
        let mut m = String::new();
        for _ in 0..100 {
            m = self.metrics().await;
            if m.contains(needle) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        m
    }
    /// GET an admin endpoint as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        reqwest::get(self.admin(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standard test config: the four API routes to `upstream`, each with `route_policies`
/// (TOML for `[[routes.policies]]`) appended, plus the lines a test adds to a section. Built
/// field by field so that a test says what it changes instead of editing the rendered text.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub upstream: String,
    pub port: u16,
    pub admin_port: u16,
    route_policies: String,
    server: String,
    admin: String,
    upstream_options: String,
    max_body_bytes: usize,
    max_decoded_body_bytes: usize,
    policies: String,
    poll_interval_ms: u64,
    fail_mode: String,
    extra: String,
}

impl TestConfig {
    /// The standard config on fresh loopback ports, every route bound to `test/*`.
    pub fn new(upstream: &str) -> TestConfig {
        TestConfig {
            upstream: upstream.to_string(),
            port: free_port(),
            admin_port: free_port(),
            route_policies: ALL_TEST_POLICIES.to_string(),
            server: String::new(),
            admin: String::new(),
            upstream_options: String::new(),
            max_body_bytes: 65536,
            max_decoded_body_bytes: 262144,
            policies: String::new(),
            poll_interval_ms: 500,
            fail_mode: "closed".into(),
            extra: String::new(),
        }
    }

    /// Replaces the policy selection of every route.
    pub fn route_policies(mut self, toml: &str) -> TestConfig {
        self.route_policies = toml.to_string();
        self
    }

    /// Lines added to `[server]`.
    pub fn server(mut self, lines: &str) -> TestConfig {
        self.server += lines;
        self.server.push('\n');
        self
    }

    /// Lines added to `[admin]`.
    pub fn admin(mut self, lines: &str) -> TestConfig {
        self.admin += lines;
        self.admin.push('\n');
        self
    }

    /// Lines added to the `mock` upstream's `[[upstreams]]` table.
    pub fn upstream_options(mut self, lines: &str) -> TestConfig {
        self.upstream_options += lines;
        self.upstream_options.push('\n');
        self
    }

    pub fn body_limits(
        mut self,
        max_body_bytes: usize,
        max_decoded_body_bytes: usize,
    ) -> TestConfig {
        self.max_body_bytes = max_body_bytes;
        self.max_decoded_body_bytes = max_decoded_body_bytes;
        self
    }

    /// Lines added to `[policies]`.
    pub fn policies(mut self, lines: &str) -> TestConfig {
        self.policies += lines;
        self.policies.push('\n');
        self
    }

    /// The policy directories' poll interval (0: no polling, only the watcher and explicit
    /// reloads).
    pub fn poll_interval_ms(mut self, ms: u64) -> TestConfig {
        self.poll_interval_ms = ms;
        self
    }

    /// Every route's fail mode (`open` or `closed`, the default).
    pub fn fail_mode(mut self, mode: &str) -> TestConfig {
        self.fail_mode = mode.into();
        self
    }

    /// TOML appended after the routes (more upstreams, routes, sections).
    pub fn extra(mut self, toml: &str) -> TestConfig {
        self.extra += toml;
        self
    }

    pub fn render(&self) -> String {
        let TestConfig {
            upstream,
            port,
            admin_port,
            route_policies,
            server,
            admin,
            upstream_options,
            max_body_bytes,
            max_decoded_body_bytes,
            policies,
            poll_interval_ms,
            fail_mode,
            extra,
        } = self;
        let mut s = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
threads = 2
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
upgrade_sock = "upgrade.sock"
pid_file = "guardgate.pid"
{server}
[admin]
listen = "127.0.0.1:{admin_port}"
{admin}
[limits]
max_body_bytes = {max_body_bytes}
max_decoded_body_bytes = {max_decoded_body_bytes}
body_read_timeout_ms = 2000

[policies]
dirs = ["policies"]
debounce_ms = 50
poll_interval_ms = {poll_interval_ms}
{policies}
[audit]
sink = "file"
path = "audit.jsonl"

[[upstreams]]
name = "mock"
base_url = "{upstream}"
connect_timeout_ms = 1000
read_timeout_ms = 5000
{upstream_options}"#
        );
        for (name, path, api) in [
            ("chat", "/v1/chat/completions", "openai-chat"),
            ("completions", "/v1/completions", "openai-completions"),
            ("responses", "/v1/responses", "openai-responses"),
            ("messages", "/v1/messages", "anthropic-messages"),
        ] {
            s += &format!(
                "\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\napi = \"{api}\"\nupstream = \"mock\"\nfail_mode = \"{fail_mode}\"\n{route_policies}\n"
            );
        }
        s += extra;
        s
    }

    /// Starts the gateway with this config in a fresh temp dir holding `policies`.
    pub async fn start(&self, policies: &[(&str, &str)]) -> GatewayProc {
        start_gateway(&self.render(), policies).await
    }

    /// Like [`TestConfig::start`], for tests that expect the start to fail.
    pub async fn try_start(&self, policies: &[(&str, &str)]) -> Result<GatewayProc, String> {
        try_start_gateway(&self.render(), policies).await
    }
}

/// [`TestConfig`] on given ports, for tests that must know them before the config exists.
pub fn config(
    upstream: &str,
    port: u16,
    admin_port: u16,
    route_policies: &str,
    extra: &str,
) -> String {
    TestConfig {
        port,
        admin_port,
        ..TestConfig::new(upstream)
    }
    .route_policies(route_policies)
    .extra(extra)
    .render()
}

pub const ALL_TEST_POLICIES: &str = "[[routes.policies]]\nselect = \"test/*\"\n";

pub fn write_policies(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Starts the gateway binary with `config_text` in a fresh temp dir holding `policies`.
pub async fn start_gateway(config_text: &str, policies: &[(&str, &str)]) -> GatewayProc {
    try_start_gateway(config_text, policies)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn try_start_gateway(
    config_text: &str,
    policies: &[(&str, &str)],
) -> Result<GatewayProc, String> {
    let dir = tempfile::tempdir().unwrap();
    write_policies(&dir.path().join("policies"), policies);
    launch(dir, config_text).await
}

/// Starts the gateway in `dir`, whose `policies/` the caller has laid out.
pub async fn launch(dir: tempfile::TempDir, config_text: &str) -> Result<GatewayProc, String> {
    let cfg = dir.path().join("guardgate.toml");
    std::fs::write(&cfg, config_text).unwrap();
    let port = toml::from_str::<toml::Value>(config_text).unwrap()["server"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let admin_port = toml::from_str::<toml::Value>(config_text).unwrap()["admin"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_guardgate"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn guardgate");
    let mut gw = GatewayProc {
        child,
        port,
        admin_port,
        dir,
    };
    // Generous: with an in-process model, readiness waits for the policies to be warmed.
    let deadline = Instant::now() + Duration::from_secs(180);
    // A probe must not hang on a listener that accepts and never answers (another process's,
    // when the gateway could not bind its own).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    loop {
        if let Ok(Some(status)) = gw.child.try_wait() {
            return Err(format!("guardgate exited with {status}:\n{}", gw.log()));
        }
        if let Ok(r) = client.get(gw.admin("/readyz")).send().await {
            if r.status() == 200 {
                // The traffic listener starts with the admin one; make sure it accepts too.
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(gw);
                }
            }
        }
        if Instant::now() > deadline {
            let log = gw.log();
            let _ = gw.child.kill();
            return Err(format!("guardgate did not become ready:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary with arguments and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guardgate"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run guardgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads one HTTP/1 request (its header and a Content-Length body) from `s` into the front of
/// `buf`, for test upstreams written on raw TCP. Returns the request's length, or `None` when the
/// connection ends first; bytes past it (a pipelined request) stay in `buf`.
pub async fn read_request(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(end + 4 + len);
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}
