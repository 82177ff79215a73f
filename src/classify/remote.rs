//! A model on any OpenAI-compatible chat completions server (vLLM, SGLang, TGI, Ollama,
//! mistral.rs's server) — how a fleet of stateless gateways shares one large safeguard model.
//!
//! Bounded on every side: a concurrency limit (waiting past the deadline is "overloaded"), a
//! per-attempt timeout within the request's deadline, retries with jittered backoff for
//! retryable failures only, and a circuit breaker that fails fast while the server is down so
//! the route's fail mode applies at once instead of after a timeout per request.

use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::model::{ChatModel, Completion};
use super::prompt::Prompt;
use super::verdict::OutputFormat;
use super::ClassifyError;

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// The server's OpenAI API root, e.g. `http://vllm:8000/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub attempt_timeout: Duration,
    pub max_retries: u32,
    pub max_concurrency: usize,
    pub max_tokens: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Ask for the answer tokens' log probabilities (`logprobs`, `top_logprobs`), from which a
    /// chat model's 0/1 verdict gets its P(violation).
    pub logprobs: bool,
    /// Send JSON policies' answer schema as `response_format: {"type": "json_object", "schema":
    /// ...}` (llama.cpp's server turns it into a grammar), so a small model's answer parses.
    pub json_schema: bool,
}

/// Consecutive-failure circuit breaker: closed → open (fail fast) → half-open (one probe).
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// Unix millis until which the breaker is open; 0 = closed.
    open_until: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: threshold.max(1),
            cooldown_ms: cooldown.as_millis() as u64,
        }
    }

    /// Whether a call may go out. After the cooldown one caller gets through as the probe; the
    /// others keep failing fast until it reports back.
    pub fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        if now < until {
            return false;
        }
        // Half-open: the first caller to move the deadline forward is the probe.
        self.open_until
            .compare_exchange(
                until,
                now + self.cooldown_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
    }

    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold {
            self.open_until
                .store(now_ms() + self.cooldown_ms, Ordering::Release);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) > now_ms()
    }
}

pub struct RemoteModel {
    s: RemoteSettings,
    client: reqwest::Client,
    url: String,
    permits: tokio::sync::Semaphore,
    pub breaker: Breaker,
}

impl RemoteModel {
    pub fn new(s: RemoteSettings) -> Result<RemoteModel, String> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(s.max_concurrency.max(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(s.attempt_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let url = format!("{}/chat/completions", s.base_url.trim_end_matches('/'));
        Ok(RemoteModel {
            permits: tokio::sync::Semaphore::new(s.max_concurrency.max(1)),
            breaker: Breaker::new(s.breaker_failures, s.breaker_cooldown),
            client,
            url,
            s,
        })
    }

    fn body(&self, p: &Prompt) -> Value {
        let mut b = json!({
            "model": self.s.model,
            "messages": [
                {"role": "system", "content": p.system},
                {"role": "user", "content": p.user},
            ],
            "temperature": 0,
            "max_tokens": self.s.max_tokens,
            "stream": false,
        });
        if let Some(e) = p.reasoning_effort {
            b["reasoning_effort"] = json!(e.as_str());
        }
        if self.s.json_schema && p.reasoning_effort.is_none() && p.format == OutputFormat::Json {
            let schema = if p.joint.is_empty() {
                answer_schema(&p.codes)
            } else {
                super::joint::answer_schema(&p.joint)
            };
            b["response_format"] = json!({"type": "json_object", "schema": schema});
        }
        // A harmony answer's digits are mostly in its reasoning; only a plain chat answer's
        // verdict token is read.
        if self.s.logprobs && p.reasoning_effort.is_none() {
            b["logprobs"] = json!(true);
            b["top_logprobs"] = json!(TOP_LOGPROBS);
        }
        b
    }

    async fn attempt(&self, body: &Value, timeout: Duration) -> Result<Completion, (bool, String)> {
        let mut req = self.client.post(&self.url).timeout(timeout).json(body);
        if let Some(k) = &self.s.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (true, format!("request failed: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| (true, format!("reading the reply failed: {e}")))?;
        if !status.is_success() {
            // 429 and 5xx are the server's trouble and worth retrying; other 4xx are ours.
            let retry = status.as_u16() == 429 || status.is_server_error();
            let snippet: String = text.chars().take(200).collect();
            return Err((retry, format!("server answered {status}: {snippet}")));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| (true, format!("reply is not JSON: {e}")))?;
        let msg = &v["choices"][0]["message"];
        if msg.is_null() {
            return Err((true, "reply has no choices[0].message".into()));
        }
        let text = msg["content"].as_str().unwrap_or("").to_string();
        // vLLM/SGLang: reasoning_content; Ollama and others: reasoning.
        let reasoning = msg["reasoning_content"]
            .as_str()
            .or_else(|| msg["reasoning"].as_str())
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let tok = |k: &str| v["usage"][k].as_u64().map(|n| n as u32);
        Ok(Completion {
            text,
            reasoning,
            prompt_tokens: tok("prompt_tokens"),
            completion_tokens: tok("completion_tokens"),
            // vLLM and OpenAI report prefix-cache reuse here.
            cached_prompt_tokens: v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .map(|n| n as u32),
            timing: None,
            p_violation: p_violation(&v["choices"][0]["logprobs"]["content"]),
        })
    }
}

/// The JSON answer the prompt asks for, `violation` first (so its digit is the answer's first),
/// `policy_category` one of the policy's codes or null.
pub fn answer_schema(codes: &[String]) -> Value {
    let mut cats: Vec<Value> = codes.iter().map(|c| json!(c)).collect();
    cats.push(Value::Null);
    json!({
        "type": "object",
        "properties": {
            "violation": {"type": "integer", "enum": [0, 1]},
            "policy_category": {"enum": cats},
            "rationale": {"type": "string", "maxLength": 120},
        },
        "required": ["violation", "policy_category", "rationale"],
    })
}

/// Alternatives asked for per answer token: enough that the other verdict digit is nearly always
/// among them.
const TOP_LOGPROBS: u32 = 5;

/// P(1) over {0, 1} at the answer's verdict token, from OpenAI-style `logprobs.content`: the first
/// token that is `0` or `1` (a binary answer's only token; in a JSON answer `"violation": ` has no
/// digit before it) and the two digits' log probabilities among its alternatives. When the other
/// digit is not among them, the chosen digit's own probability stands for its share (a lower
/// bound). `None` without logprobs or without a digit token.
pub fn p_violation(content: &Value) -> Option<f32> {
    let digit = |t: &Value| match t["token"].as_str().map(str::trim) {
        Some("0") => Some(false),
        Some("1") => Some(true),
        _ => None,
    };
    let tok = content.as_array()?.iter().find(|t| digit(t).is_some())?;
    let chosen = digit(tok)?;
    let lp = |want: bool| -> Option<f64> {
        tok["top_logprobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| digit(a) == Some(want))
            .filter_map(|a| a["logprob"].as_f64())
            .reduce(f64::max)
            .or_else(|| (want == chosen).then(|| tok["logprob"].as_f64()).flatten())
    };
    let p = match (lp(false), lp(true)) {
        (Some(l0), Some(l1)) => 1.0 / (1.0 + (l0 - l1).exp()),
        (_, Some(l1)) if chosen => l1.exp(),
        (Some(l0), _) if !chosen => 1.0 - l0.exp(),
        _ => return None,
    };
    p.is_finite().then_some(p.clamp(0.0, 1.0) as f32)
}

/// Full jitter: a random wait in [0, base * 2^attempt], capped.
fn backoff(attempt: u32) -> Duration {
    let cap = 50u64.saturating_mul(1 << attempt.min(6)).min(2_000);
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    Duration::from_millis(r % (cap + 1))
}

#[async_trait]
impl ChatModel for RemoteModel {
    fn model_id(&self) -> &str {
        &self.s.model
    }

    async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<Completion, ClassifyError> {
        if !self.breaker.allow() {
            return Err(ClassifyError::Backend(
                "circuit open: the model server is failing".into(),
            ));
        }
        let queued = Instant::now();
        let _permit = tokio::time::timeout_at(deadline.into(), self.permits.acquire())
            .await
            .map_err(|_| ClassifyError::Overloaded)?
            .map_err(|_| ClassifyError::Overloaded)?;
        let queue_ms = queued.elapsed().as_secs_f64() * 1e3;
        let body = self.body(prompt);
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClassifyError::Deadline);
            }
            let cut_by_deadline = left < self.s.attempt_timeout;
            match self.attempt(&body, left.min(self.s.attempt_timeout)).await {
                Ok(mut c) => {
                    self.breaker.success();
                    // The server does not split prefill from decode; only the queue is ours to time.
                    c.timing = Some(crate::classify::Timing {
                        queue_ms,
                        ..Default::default()
                    });
                    return Ok(c);
                }
                Err((retryable, why)) => {
                    // An attempt that the caller's deadline cut short says nothing about the
                    // server: counted as a failure, short escalation budgets against a healthy
                    // server opened the breaker for every route using it.
                    if cut_by_deadline && Instant::now() >= deadline {
                        return Err(ClassifyError::Deadline);
                    }
                    if retryable {
                        self.breaker.failure();
                    }
                    let wait = backoff(attempt);
                    let time_left = deadline.saturating_duration_since(Instant::now()) > wait;
                    if !retryable
                        || attempt >= self.s.max_retries
                        || !time_left
                        || self.breaker.is_open()
                    {
                        return Err(ClassifyError::Backend(why));
                    }
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_then_probes() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert!(b.allow());
        b.failure();
        assert!(b.allow());
        b.failure();
        assert!(!b.allow(), "open after 2 failures");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "one probe after the cooldown");
        assert!(!b.allow(), "only one probe");
        b.success();
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn the_verdict_digit_gives_p_violation() {
        // A JSON answer: the first digit token, with both digits among its alternatives.
        let content = json!([
            {"token": "{\"", "logprob": -0.1, "top_logprobs": []},
            {"token": "violation", "logprob": -0.1, "top_logprobs": []},
            {"token": "\": ", "logprob": -0.1, "top_logprobs": []},
            {"token": "1", "logprob": -0.4, "top_logprobs": [
                {"token": "1", "logprob": -0.4}, {"token": "0", "logprob": -1.4}, {"token": "2", "logprob": -5.0}
            ]},
            {"token": "0", "logprob": -0.1, "top_logprobs": []},
        ]);
        let p = p_violation(&content).unwrap();
        assert!((p - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6, "{p}");
        // Binary, the other digit not among the alternatives: the chosen one's probability.
        let content = json!([{"token": " 0", "logprob": -0.2, "top_logprobs": [{"token": " 0", "logprob": -0.2}]}]);
        let p = p_violation(&content).unwrap();
        assert!((p - (1.0 - (-0.2f32).exp())).abs() < 1e-6, "{p}");
        assert_eq!(
            p_violation(&json!([{"token": "yes", "logprob": -0.1}])),
            None
        );
        assert_eq!(p_violation(&Value::Null), None);
    }

    #[test]
    fn backoff_is_bounded() {
        for a in 0..10 {
            assert!(backoff(a) <= Duration::from_millis(2_000));
        }
    }
}
