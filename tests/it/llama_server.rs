//! The remote backend against a real OpenAI-compatible model server: llama.cpp's, from
//! llama-cpp-python[server] (`scripts/llama-server.sh install`), serving the small default GGUF.
//! What the imitation server in `remote.rs` cannot show: a real server's replies parse, its
//! logprobs give the verdict a P(violation) that thresholds act on, and the deadline, the
//! concurrency limit and the circuit breaker hold against a real process.
//!
//! Without the server installed the test says so and passes, unless
//! `GUARDGATE_REQUIRE_LLAMA_SERVER=1` (scripts/test.sh sets it), which makes a missing server a
//! failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;
use guardgate::classify::model::ModelClassifier;
use guardgate::classify::prompt::Family;
use guardgate::classify::remote::{RemoteModel, RemoteSettings};
use guardgate::classify::{Classifier, ClassifyError, Content};
use guardgate::policy::{parse_policy, Effort, Policy};
use guardgate::wire::{Segment, Source};

const POLICY: &str = r#"+++
id = "test/fruit-json"
title = "Fruit (JSON)"
version = "1"
output_format = "json"
[[codes]]
code = "F1"
title = "Mentions fruit"
+++
# Fruit policy
F1: the content mentions a fruit (apple, banana, orange, pear, grape, mango).
Set violation to 1 when F1 applies, with F1 as policy_category; otherwise 0 and null.
"#;

const TEXTS: &[&str] = &[
    "I ate a banana and an apple for breakfast.",
    "The train to Paris leaves at nine.",
    "Mango smoothies are the best thing in summer.",
    "Please translate 'good morning' into German.",
    "Grapes and pears are on sale today.",
    "My laptop battery died again.",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The server's Python, or `None` (with the reason printed) when it is not installed and nothing
/// requires it.
fn server_python() -> Option<String> {
    let out = Command::new(root().join("scripts/llama-server.sh"))
        .arg("python")
        .output()
        .expect("scripts/llama-server.sh runs");
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let required = std::env::var("GUARDGATE_REQUIRE_LLAMA_SERVER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "GUARDGATE_REQUIRE_LLAMA_SERVER=1 but llama-cpp-python[server] is not installed: run \
         scripts/llama-server.sh install"
    );
    eprintln!(
        "SKIPPED llama_server: llama-cpp-python[server] is not installed (scripts/llama-server.sh \
         install; GUARDGATE_REQUIRE_LLAMA_SERVER=1 makes this a failure)"
    );
    None
}

/// The server process; killed when dropped, so a failing test leaves none behind.
struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(python: &str) -> Server {
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(root().join("models/SmolLM2-135M-Instruct.Q8_0.gguf"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--n_threads",
                "2",
                "--n_ctx",
                "2048",
                "--model_alias",
                "smol",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the llama.cpp server starts");
        let mut s = Server {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
        };
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = client.get(format!("{}/models", s.base_url)).send().await {
                if r.status().is_success() {
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("the llama.cpp server exited at start: {st}");
            }
            assert!(
                Instant::now() < until,
                "the llama.cpp server did not answer in 90 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn settings(base_url: &str) -> RemoteSettings {
    RemoteSettings {
        base_url: base_url.to_string(),
        model: "smol".into(),
        api_key: None,
        attempt_timeout: Duration::from_secs(60),
        max_retries: 0,
        max_concurrency: 4,
        max_tokens: 96,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(60),
        logprobs: true,
        json_schema: true,
    }
}

fn classifier(s: RemoteSettings, thresholds: HashMap<String, f32>) -> ModelClassifier<RemoteModel> {
    ModelClassifier::new(
        "remote:llama",
        RemoteModel::new(s).expect("client"),
        Family::Chat,
        Effort::Low,
    )
    .with_violation_threshold(None, thresholds)
}

fn content(text: &str) -> Content {
    Content::from_segments(vec![Segment {
        source: Source::User,
        text: text.into(),
        location: "messages[0].content".into(),
    }])
}

fn policy() -> Policy {
    parse_policy(std::path::Path::new("p.md"), POLICY.as_bytes()).expect("test policy parses")
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[tokio::test]
async fn verdicts_confidence_limits_and_breaker_against_llama_cpp() {
    let Some(python) = server_python() else {
        return;
    };
    let server = Server::start(&python).await;
    let pol = policy();

    // Verdicts: every answer parses (the schema constrains the server's decoding) and carries
    // P(violation) from the logprobs of its `violation` digit, consistent with the answer.
    let c = classifier(settings(&server.base_url), HashMap::new());
    let mut latencies = Vec::new();
    let mut first = None;
    for t in TEXTS {
        let started = Instant::now();
        let v = c
            .classify(&pol, &content(t), far())
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        let p = v.confidence.expect("logprobs give P(violation)");
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert_eq!(p >= 0.5, v.violation, "P {p} against the answer for {t:?}");
        assert_eq!(v.model.as_deref(), Some("smol"));
        if v.violation {
            assert!(
                matches!(v.code.as_deref(), None | Some("F1")),
                "{:?}",
                v.code
            );
        }
        first.get_or_insert(p);
    }
    eprintln!(
        "llama.cpp server, JSON verdicts, 2 threads: p50 {:.0} ms, max {:.0} ms over {} texts",
        p50(latencies.clone()),
        latencies.iter().copied().fold(0.0, f64::max),
        TEXTS.len()
    );
    #[cfg(feature = "local-model")]
    in_process_latency(&pol).await;

    // A per-policy threshold acts on that probability: just above it, allowed; at it, violation.
    let p = first.expect("a verdict");
    if p > 0.0 && p < 1.0 {
        let at = |t: f32| {
            classifier(
                settings(&server.base_url),
                HashMap::from([(pol.id.clone(), t)]),
            )
        };
        let above = at((p + 1.0) / 2.0)
            .classify(&pol, &content(TEXTS[0]), far())
            .await
            .unwrap();
        assert!(!above.violation, "threshold above P {p}");
        let below = at(p / 2.0)
            .classify(&pol, &content(TEXTS[0]), far())
            .await
            .unwrap();
        assert!(below.violation, "threshold below P {p}");
    }

    // A deadline shorter than the server's answer: the call ends at the deadline.
    let started = Instant::now();
    let e = c
        .classify(
            &pol,
            &content("A long day; nothing about food at all."),
            Instant::now() + Duration::from_millis(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClassifyError::Deadline), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(500));

    // The per-attempt timeout, within a long deadline: a failure (the breaker counts it).
    let mut s = settings(&server.base_url);
    s.attempt_timeout = Duration::from_millis(20);
    let e = classifier(s, HashMap::new())
        .classify(&pol, &content("Cars, trains and buses."), far())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClassifyError::Backend(ref m) if m.contains("request failed")),
        "{e:?}"
    );

    // The concurrency limit: with one call in flight the next waits, and past its deadline it is
    // refused as overloaded, while the first still gets its answer.
    let mut s = settings(&server.base_url);
    s.max_concurrency = 1;
    let one = std::sync::Arc::new(classifier(s, HashMap::new()));
    let (a, b) = (one.clone(), one.clone());
    let p1 = pol.clone();
    let slow = tokio::spawn(async move {
        a.classify(
            &p1,
            &content("Tell me about the history of bridges in Europe."),
            far(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let e = b
        .classify(
            &pol,
            &content("A second request."),
            Instant::now() + Duration::from_millis(40),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClassifyError::Overloaded), "{e:?}");
    slow.await
        .unwrap()
        .expect("the call holding the slot is answered");

    // The breaker: the server gone, two failures open it and the next call fails at once
    // without trying.
    let base = server.base_url.clone();
    drop(server);
    let c = classifier(settings(&base), HashMap::new());
    for _ in 0..2 {
        let e = c.classify(&pol, &content("x"), far()).await.unwrap_err();
        assert!(
            matches!(e, ClassifyError::Backend(ref m) if m.contains("request failed")),
            "{e:?}"
        );
    }
    let started = Instant::now();
    let e = c.classify(&pol, &content("x"), far()).await.unwrap_err();
    assert!(
        matches!(e, ClassifyError::Backend(ref m) if m.contains("circuit open")),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(50));
}

/// The in-process backend on the same GGUF, policy and texts, for docs/BENCHMARKS.md (printed,
/// not asserted: the two share the machine's cores with the rest of the suite).
#[cfg(feature = "local-model")]
/// The in-process backend on the same GGUF file as the server, 2 threads like the server's.
fn in_process_settings() -> guardgate::classify::local::LocalSettings {
    use guardgate::classify::local::{Dtype, LocalSettings, ModelSource, WeightsMode};
    LocalSettings {
        source: ModelSource::Gguf(root().join("models/SmolLM2-135M-Instruct.Q8_0.gguf")),
        dtype: Dtype::F32,
        weights: WeightsMode::Auto,
        device: "cpu".into(),
        threads: Some(2),
        max_concurrency: 1,
        max_queue: 4,
        prefix_cache_entries: 4,
        max_tokens: 96,
        family: Family::Chat,
    }
}

async fn in_process_latency(pol: &Policy) {
    use guardgate::classify::local::LocalModel;
    let m = LocalModel::load(&in_process_settings(), "local:bench", None).expect("model loads");
    let c = ModelClassifier::new("local:bench", m, Family::Chat, Effort::Low);
    c.warm(pol).await;
    let mut latencies = Vec::new();
    for t in TEXTS {
        let started = Instant::now();
        c.classify(pol, &content(t), far()).await.expect("verdict");
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "in-process (mistral.rs), JSON verdicts, 2 threads: p50 {:.0} ms, max {:.0} ms over {} texts",
        p50(latencies.clone()),
        latencies.iter().copied().fold(0.0, f64::max),
        TEXTS.len()
    );
}

/// Texts whose tokens depend on the pre-tokenizer: blank lines before markdown, runs of spaces,
/// digits, tabs and CRLF, contractions, accents, CJK, emoji with a joiner, code and a URL.
const TOKENIZER_TEXTS: &[&str] = &[
    "\n\n# Heading\n\n## Sub\n\n- item one\n- item two\n\n",
    "  multiple   spaces and a trailing space ",
    "Hello world! 123 4567.89 and 1,000,000",
    "tab\tseparated\tvalues\r\nwindows line\r\n\r\nend",
    "don't I'M we'll they'VE it's",
    "Café déjà vu, naïve façade, Straße",
    "日本語のテキストと中文文本",
    "emoji 👩‍👩‍👧 family 🏳️‍🌈 flag",
    "fn main() {\n    println!(\"hi\");\n}\n",
    "see https://example.com/a_b?c=1&d=%20 now",
];

/// The in-process model reads the same tokens as the model's own tokenizer: guardgate's prompt
/// through mistral.rs's GGUF tokenizer equals llama.cpp's tokenization of the same chat-template
/// rendering, token for token. mistral.rs 0.8.1 split every GGUF BPE vocabulary with Llama 3's
/// pattern, so SmolLM2 (trained with GPT-2's, `tokenizer.ggml.pre = "smollm"`) read "\n\n#" as
/// one "\n\n" token where its tokenizer gives "\n", "\n", "#":
/// patches/mistralrs-core-0.8.1-gguf-pre-tokenizer.patch.
#[tokio::test]
async fn in_process_tokens_equal_llama_cpp_tokens() {
    use guardgate::classify::local::LocalModel;
    use guardgate::classify::prompt::Prompt;
    use guardgate::classify::verdict::OutputFormat;
    use std::io::Write;
    let Some(python) = server_python() else {
        return;
    };
    let gguf = root().join("models/SmolLM2-135M-Instruct.Q8_0.gguf");
    let policy_text =
        std::fs::read_to_string(root().join("policies/teen-safety/dangerous-activities.md"))
            .expect("policy file");
    let mut pairs: Vec<(String, String)> = TOKENIZER_TEXTS
        .iter()
        .map(|t| ("You judge content.".to_string(), t.to_string()))
        .collect();
    pairs.push((
        policy_text,
        "<<<\nhow do I do the blackout challenge?\n>>>".into(),
    ));

    // llama.cpp: the GGUF's own chat template, rendered as llama-cpp-python renders it for a chat
    // completion, then tokenized with control tokens parsed (no BOS: the GGUF says not to add one).
    let script = r#"
import json, sys
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
out = []
for system, user in json.load(sys.stdin):
    text = fmt(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]).prompt
    out.append(llm.tokenize(text.encode(), add_bos=False, special=True))
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .arg(&gguf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&pairs).unwrap())
        .unwrap();
    let out = child.wait_with_output().expect("python finishes");
    assert!(out.status.success(), "llama.cpp tokenization failed");
    let reference: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).expect("token lists");

    let m = LocalModel::load(&in_process_settings(), "local:tokens", None).expect("model loads");
    for ((system, user), want) in pairs.iter().zip(&reference) {
        let p = Prompt {
            system: system.clone(),
            user: user.clone(),
            reasoning_effort: None,
            format: OutputFormat::Binary,
            codes: Vec::new(),
            joint: Vec::new(),
        };
        let got = m.prompt_tokens(&p).await.expect("the engine tokenizes");
        assert_eq!(&got, want, "tokens differ for {user:?}");
    }
}
