//! The gateway under test: the real `guardgate` binary, started with a config and policies in a
//! fresh temp dir, and the handle tests drive it through.

use super::{chat, free_port, signal, BIN, CHAT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Waits (up to 15 s) until the audit log satisfies `done` (the writer is asynchronous, and a
    /// stream's output record lands after the client has its last byte), then returns it.
    pub async fn audit_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let a = self.audit();
            if done(&a) || Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    /// The process's exit status, if it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
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
    /// `POST /admin/reload`: its status and JSON answer.
    pub async fn admin_reload(&self) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.admin("/admin/reload"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    /// Sends `text` as the user message of a chat completion. The error is left to the caller:
    /// under load a failed request is a finding to collect, not a panic.
    pub async fn post_chat(
        &self,
        c: &reqwest::Client,
        text: &str,
    ) -> reqwest::Result<reqwest::Response> {
        c.post(self.url(CHAT)).json(&chat(text)).send().await
    }
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
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
    audit: String,
    extra: String,
    env: Vec<(String, String)>,
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
            audit: String::new(),
            extra: String::new(),
            env: Vec::new(),
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

    /// Lines added to `[audit]`.
    pub fn audit(mut self, lines: &str) -> TestConfig {
        self.audit += lines;
        self.audit.push('\n');
        self
    }

    /// TOML appended after the routes (more upstreams, routes, sections).
    pub fn extra(mut self, toml: &str) -> TestConfig {
        self.extra += toml;
        self
    }

    /// An environment variable of the gateway process (for the config's `*_env` settings). Set
    /// on the child only: the tests share one process, and `std::env::set_var` there would reach
    /// every gateway started after it and race with the other tests' spawns.
    pub fn env(mut self, name: &str, value: &str) -> TestConfig {
        self.env.push((name.into(), value.into()));
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
            audit,
            extra,
            env: _,
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
{audit}

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
        self.try_start(policies)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestConfig::start`], for tests that expect the start to fail.
    pub async fn try_start(&self, policies: &[(&str, &str)]) -> Result<GatewayProc, String> {
        start_in_temp_dir(&self.render(), policies, &self.env).await
    }

    /// Starts the gateway in `dir`, whose `policies/` the caller has laid out.
    pub async fn launch(&self, dir: tempfile::TempDir) -> Result<GatewayProc, String> {
        launch(dir, &self.render(), &self.env).await
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

/// Starts the gateway binary with `config_text` (a rendered config a test has edited) in a fresh
/// temp dir holding `policies`.
pub async fn try_start_gateway(
    config_text: &str,
    policies: &[(&str, &str)],
) -> Result<GatewayProc, String> {
    start_in_temp_dir(config_text, policies, &[]).await
}

async fn start_in_temp_dir(
    config_text: &str,
    policies: &[(&str, &str)],
    env: &[(String, String)],
) -> Result<GatewayProc, String> {
    let dir = tempfile::tempdir().unwrap();
    write_policies(&dir.path().join("policies"), policies);
    launch(dir, config_text, env).await
}

async fn launch(
    dir: tempfile::TempDir,
    config_text: &str,
    env: &[(String, String)],
) -> Result<GatewayProc, String> {
    std::fs::write(dir.path().join("guardgate.toml"), config_text).unwrap();
    let config: toml::Value = toml::from_str(config_text).unwrap();
    let listen_port = |section: &str| -> u16 {
        config[section]["listen"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (port, admin_port) = (listen_port("server"), listen_port("admin"));
    let child = serve(dir.path(), &dir.path().join("stderr.log"), &[], env);
    let mut gw = GatewayProc {
        child,
        port,
        admin_port,
        dir,
    };
    // Generous: with an in-process model, readiness waits for the policies to be warmed.
    match wait_ready(&mut gw.child, port, admin_port, Duration::from_secs(180)).await {
        Ok(()) => Ok(gw),
        Err(e) => Err(format!("{e}:\n{}", gw.log())),
    }
}

/// `guardgate serve --config guardgate.toml` (plus `args`) in `dir`, with `env` added to its
/// environment and its stderr written to `log`.
pub fn serve(dir: &Path, log: &Path, args: &[&str], env: &[(String, String)]) -> Child {
    Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("guardgate.toml"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn guardgate")
}

/// Waits until the gateway answers `/readyz` with 200 and its traffic listener accepts too.
/// Fails when the process exits first or `limit` passes; the caller adds the log. A process
/// that is still running then is killed.
pub async fn wait_ready(
    child: &mut Child,
    port: u16,
    admin_port: u16,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    // A probe must not hang on a listener that accepts and never answers (another process's,
    // when the gateway could not bind its own).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("guardgate exited with {status}"));
        }
        if let Ok(r) = client.get(&readyz).send().await {
            // The traffic listener starts with the admin one; make sure it accepts too.
            if r.status() == 200
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("guardgate did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
