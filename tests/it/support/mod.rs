//! What the tests share: the gateway under test (the real `guardgate` binary, [`TestConfig`],
//! [`GatewayProc`]), the loopback peers it talks to (the [`mock`] LLM upstream, the
//! [`model_server`] imitation of a remote safeguard model, [`raw`] TCP upstreams), test
//! policies, and request helpers.

pub mod gateway;
pub mod mock;
pub mod model_server;
pub mod postgres;
pub mod raw;
#[cfg(feature = "local-model")]
pub mod tiny_gpt_oss;

pub use gateway::*;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The gateway binary under test: the one cargo built for these tests, or `GUARDGATE_TEST_BIN`
/// (a release build to check, or this worktree's own `deps/guardgate-*` when several checkouts
/// share one target directory and its `release/guardgate` is whichever was linked last).
pub const BIN: Bin = Bin;
pub struct Bin;
impl AsRef<std::ffi::OsStr> for Bin {
    fn as_ref(&self) -> &std::ffi::OsStr {
        static P: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        P.get_or_init(|| {
            std::env::var("GUARDGATE_TEST_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_guardgate").into())
        })
        .as_ref()
    }
}

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

/// A policy with no deterministic rules: only a model can judge it. The [`model_server`] finds
/// "forbidden" content a violation of it (code X1).
pub const NL_POLICY: &str = "+++\nid = \"test/nl\"\ntitle = \"Forbidden things\"\nversion = \"2.0.0\"\n[[codes]]\ncode = \"X1\"\ntitle = \"Forbidden things\"\nseverity = \"high\"\n+++\n# Forbidden things\nContent that asks for forbidden things violates X1. Answer {\"violation\":0|1,\"policy_category\":\"X1\"|null}.\n";

/// The four API routes of the standard config.
pub const APIS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/messages",
];
pub const CHAT: &str = "/v1/chat/completions";

/// A request body for `api` with `text` where each API puts the user's words.
pub fn body(api: &str, text: &str) -> Value {
    match api {
        "/v1/chat/completions" => chat(text),
        "/v1/completions" => json!({"model": "m", "prompt": text}),
        "/v1/responses" => json!({"model": "m", "input": text}),
        "/v1/messages" => {
            json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": text}]})
        }
        _ => unreachable!("not an API route of the test config: {api}"),
    }
}

/// A chat completion request with `text` as its one user message.
pub fn chat(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

/// A client that shows the bytes as the gateway sent them (no transparent gzip decoding).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

/// Runs the binary with arguments and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
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

/// `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid} failed");
}
