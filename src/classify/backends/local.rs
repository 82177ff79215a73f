//! `kind = "local"`: a model run in process by mistral.rs (cargo feature `local-model`, on by
//! default). The host itself is `classify::local`; this is its config and how it is built.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Backend, BuildContext, ModelLoad, Shared};
use crate::classify::prompt::Family;
use crate::classify::Classifier;
use crate::policy::file::Effort;

/// Weight precision for an in-process model. F32 is the CPU default: candle's fast quantised
/// kernels compute in F32, and `auto` would pick F16 on CPU, which has no fast path there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    Auto,
    F32,
    F16,
    Bf16,
}

/// How an in-process model uses quantised (GGUF) weights on CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// `f32-prefill` on CPU for a GGUF file of at most 1 GiB, `quantized` otherwise.
    Auto,
    /// Only the file's quantised weights (least memory; candle's quantised kernels).
    Quantized,
    /// Also an F32 copy of each quantised weight, used for prefill (many tokens at once), where
    /// the F32 GEMM kernels are ~3x faster than candle's quantised matmul on AVX2; decoding (one
    /// token) stays on the quantised weights, which it reads 4x faster. Costs up to 4x the file
    /// size in memory on top of it (a weight's copy is made on its first prefill; the output
    /// projection never gets one). CPU only.
    #[serde(rename = "f32-prefill")]
    F32Prefill,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub name: String,
    /// A GGUF file, or a directory with config.json, tokenizer.json and safetensors weights.
    /// Relative paths resolve against the config file's directory.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// A Hugging Face model id that mistral.rs downloads (hosts with hub access only).
    #[serde(default)]
    pub hf_model_id: Option<String>,
    #[serde(default = "default_dtype")]
    pub dtype: ModelDtype,
    /// GGUF: keep the quantised weights or expand them to F32 at load.
    #[serde(default = "default_weights")]
    pub weights: WeightsMode,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads for the model's kernels (default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Calls allowed to wait for a model slot; more are refused at once and the route's fail
    /// mode applies.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Finished prompts whose KV cache is kept for prefix reuse (the policy prefix).
    #[serde(default = "default_prefix_cache_entries")]
    pub prefix_cache_entries: usize,
    /// Sequences the engine runs at once.
    #[serde(default = "super::default_concurrency")]
    pub max_concurrency: usize,
    /// Token budget of an answer (a harmony answer's analysis included).
    #[serde(default = "super::default_max_tokens")]
    pub max_tokens: u32,
    /// `gpt-oss-safeguard` (harmony, reasoning effort) or `chat` (any other chat model).
    #[serde(default = "super::default_family")]
    pub family: Family,
    /// Default reasoning effort for harmony models; a policy's own setting wins.
    #[serde(default = "super::default_effort")]
    pub reasoning_effort: Effort,
    /// A violation only when the model's P(violation) (the odds of its 0/1 verdict token, binary
    /// or JSON answers of a chat model) reaches this (default: the likelier answer wins).
    #[serde(default)]
    pub violation_threshold: Option<f32>,
    /// Per policy id, ahead of `violation_threshold`; `guardgate policy calibrate --write`
    /// keeps this line.
    #[serde(default)]
    pub violation_thresholds: HashMap<String, f32>,
    /// Verdicts cached per (policy version, normalised content); 0 turns the cache off.
    #[serde(default = "super::default_cache_entries")]
    pub cache_entries: u64,
    #[serde(default = "super::default_cache_ttl")]
    pub cache_ttl_s: u64,
    /// Confidence band `[low, high]`: a verdict whose confidence falls inside it is "unsure" and
    /// the next backend is asked (e.g. a small in-process model escalating to a large remote one).
    #[serde(default)]
    pub escalate_band: Option<[f32; 2]>,
}

fn default_dtype() -> ModelDtype {
    ModelDtype::F32
}
fn default_weights() -> WeightsMode {
    WeightsMode::Auto
}
fn default_device() -> String {
    "cpu".into()
}
fn default_max_queue() -> usize {
    32
}
fn default_prefix_cache_entries() -> usize {
    16
}

impl Backend for LocalConfig {
    fn kind(&self) -> &'static str {
        "local"
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
        if self.model_path.is_some() == self.hf_model_id.is_some() {
            return Err((
                String::new(),
                "kind = \"local\" needs exactly one of model_path and hf_model_id".into(),
            ));
        }
        if self.threads == Some(0) {
            return Err(("threads".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    #[cfg(feature = "local-model")]
    fn build(
        &self,
        label: &'static str,
        shared: &Shared<'_>,
        cx: &BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Classifier>> {
        use crate::classify::local::{LocalModel, LocalSettings, ModelSource};
        let source = match (&self.model_path, &self.hf_model_id) {
            (Some(p), _) => {
                let p = cx.base_dir.join(p);
                if p.is_dir() {
                    ModelSource::Safetensors(p)
                } else {
                    ModelSource::Gguf(p)
                }
            }
            (None, Some(id)) => ModelSource::HuggingFace(id.clone()),
            (None, None) => anyhow::bail!("backend {}: no model source", self.name),
        };
        let settings = LocalSettings {
            source,
            dtype: self.dtype,
            weights: self.weights,
            device: self.device.clone(),
            threads: self.threads,
            max_concurrency: self.max_concurrency,
            max_queue: self.max_queue,
            prefix_cache_entries: self.prefix_cache_entries,
            max_tokens: self.max_tokens,
            family: self.family,
        };
        if cx.load == ModelLoad::CheckOnly {
            settings
                .check()
                .map_err(|e| anyhow::anyhow!("backend {}: {e}", self.name))?;
            return Ok(Arc::new(Unloaded(label)));
        }
        let started = std::time::Instant::now();
        let model = LocalModel::load(&settings, label, Some(cx.metrics.clone()))
            .map_err(|e| anyhow::anyhow!("backend {}: {e}", self.name))?;
        tracing::info!(
            backend = label,
            model = settings.model_id(),
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(shared.classifier(label, model, cx.metrics))
    }

    #[cfg(not(feature = "local-model"))]
    fn build(
        &self,
        _label: &'static str,
        _shared: &Shared<'_>,
        _cx: &BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Classifier>> {
        anyhow::bail!(
            "backend {}: kind = \"local\" needs a build with the `local-model` feature (it is on by \
             default; this binary was built with --no-default-features)",
            self.name
        )
    }
}

/// Stands in for a model backend that `check-config` verified but did not load.
#[cfg(feature = "local-model")]
struct Unloaded(&'static str);

#[cfg(feature = "local-model")]
#[async_trait::async_trait]
impl Classifier for Unloaded {
    fn name(&self) -> &'static str {
        self.0
    }
    fn supports(&self, _policy: &crate::policy::Policy) -> bool {
        true
    }
    fn allow_is_final(&self) -> bool {
        true
    }
    async fn classify(
        &self,
        _policy: &crate::policy::Policy,
        _content: &crate::classify::Content,
        _deadline: std::time::Instant,
    ) -> Result<crate::classify::Verdict, crate::classify::ClassifyError> {
        Err(crate::classify::ClassifyError::Backend(
            "model not loaded (check-config)".into(),
        ))
    }
}
