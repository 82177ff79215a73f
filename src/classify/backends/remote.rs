//! `kind = "remote"`: a model on any OpenAI-compatible chat completions server (vLLM, SGLang,
//! llama.cpp's server, a hosted API).

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, BuildContext, Shared};
use crate::classify::prompt::Family;
use crate::classify::remote::{RemoteModel, RemoteSettings};
use crate::classify::Classifier;
use crate::config::secret::secret_from_env;
use crate::policy::file::Effort;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub name: String,
    /// OpenAI API root of the server, e.g. `http://vllm:8000/v1`.
    #[serde(default)]
    pub base_url: String,
    /// The model name the server knows.
    #[serde(default)]
    pub model: String,
    /// Environment variable holding the server's API key (sent as a bearer token).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `gpt-oss-safeguard` (harmony, reasoning effort) or `chat` (any other chat model).
    #[serde(default = "super::default_family")]
    pub family: Family,
    /// Default reasoning effort for harmony models; a policy's own setting wins.
    #[serde(default = "super::default_effort")]
    pub reasoning_effort: Effort,
    /// Time allowed for one attempt.
    #[serde(default = "default_attempt_timeout")]
    pub timeout_ms: u64,
    /// Attempts after the first, for errors worth retrying, within the route's deadline.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Calls in flight to the server at once.
    #[serde(default = "super::default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "super::default_max_tokens")]
    pub max_tokens: u32,
    /// Consecutive failures that open the circuit breaker (calls then fail at once).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
    /// Verdicts cached per (policy version, normalised content); 0 turns the cache off.
    #[serde(default = "super::default_cache_entries")]
    pub cache_entries: u64,
    #[serde(default = "super::default_cache_ttl")]
    pub cache_ttl_s: u64,
    /// Confidence band `[low, high]`: a verdict whose confidence falls inside it is "unsure" and
    /// the next backend is asked.
    #[serde(default)]
    pub escalate_band: Option<[f32; 2]>,
    /// Ask the server for the answer tokens' log probabilities (OpenAI's `logprobs`; vLLM and
    /// llama.cpp's server give them): a chat model's 0/1 verdict then carries P(violation), which
    /// `escalate_band` and the thresholds below read. Off by default: not every server takes it.
    #[serde(default)]
    pub logprobs: bool,
    /// JSON policies: send the answer's JSON schema as `response_format: {"type": "json_object",
    /// "schema": ...}`, the form llama.cpp's server constrains decoding with (a small model's
    /// answer then always parses).
    #[serde(default)]
    pub json_schema: bool,
    /// A violation only when P(violation) reaches this (needs `logprobs`; default: the answer).
    #[serde(default)]
    pub violation_threshold: Option<f32>,
    /// Per policy id, ahead of `violation_threshold` (`guardgate policy calibrate --write`).
    #[serde(default)]
    pub violation_thresholds: HashMap<String, f32>,
}

fn default_attempt_timeout() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u64 {
    10_000
}

impl Backend for RemoteConfig {
    fn kind(&self) -> &'static str {
        "remote"
    }

    fn shared(&self) -> Shared<'_> {
        Shared {
            name: &self.name,
            family: self.family,
            reasoning_effort: self.reasoning_effort,
            max_concurrency: self.max_concurrency,
            max_tokens: self.max_tokens,
            cache_entries: self.cache_entries,
            cache_ttl_s: self.cache_ttl_s,
            violation_threshold: self.violation_threshold,
            violation_thresholds: &self.violation_thresholds,
            escalate_band: self.escalate_band,
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let u: Result<http::Uri, _> = self.base_url.parse();
        if !matches!(
            u.as_ref().map(|u| u.scheme_str()),
            Ok(Some("http")) | Ok(Some("https"))
        ) {
            return Err((
                "base_url".into(),
                format!("{:?}: expected http(s)://host[:port]/v1", self.base_url),
            ));
        }
        if self.model.is_empty() {
            return Err(("model".into(), "required for kind = \"remote\"".into()));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms".into(), "must be positive".into()));
        }
        // Without log probabilities there is no P(violation) to hold a threshold against: the
        // setting would be silently ignored.
        if !self.logprobs
            && (self.violation_threshold.is_some() || !self.violation_thresholds.is_empty())
        {
            return Err((
                "logprobs".into(),
                "violation_threshold(s) need logprobs = true (the verdict's P(violation))".into(),
            ));
        }
        if let Some(var) = &self.api_key_env {
            if secret_from_env(var).is_none() {
                return Err((
                    "api_key_env".into(),
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
        Ok(())
    }

    fn build(
        &self,
        label: &'static str,
        shared: &Shared<'_>,
        cx: &BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Classifier>> {
        let model = RemoteModel::new(self.settings()).map_err(anyhow::Error::msg)?;
        Ok(shared.classifier(label, model, cx.metrics))
    }
}

impl RemoteConfig {
    fn settings(&self) -> RemoteSettings {
        RemoteSettings {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            // Trimmed like every secret: a Kubernetes Secret made with --from-file ends in a
            // newline, which no HTTP header can carry.
            api_key: self.api_key_env.as_deref().and_then(secret_from_env),
            attempt_timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            max_concurrency: self.max_concurrency,
            max_tokens: self.max_tokens,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: Duration::from_millis(self.breaker_cooldown_ms),
            logprobs: self.logprobs,
            json_schema: self.json_schema,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_with_a_trailing_newline_is_trimmed() {
        // The way a Kubernetes Secret made with `--from-file` arrives.
        std::env::set_var("GUARDGATE_TEST_REMOTE_KEY", "sk-test\n");
        let c: RemoteConfig = toml::from_str(
            "name = \"r\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_env = \"GUARDGATE_TEST_REMOTE_KEY\"\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.settings().api_key.as_deref(), Some("sk-test"));
    }
}
