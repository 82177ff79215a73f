//! The in-process model host: mistral.rs runs the safeguard model inside the gateway.
//!
//! Only [`ChatModel`] is implemented here; prompting, parsing, retries and the verdict cache live in
//! [`super::model::ModelClassifier`] and are shared with the remote host.
//!
//! What this module adds, and why:
//! - a bounded queue in front of the engine: a burst waits at most `max_queue` deep, past that (or
//!   past the deadline while waiting) the call fails fast and the route's fail mode applies;
//! - streamed requests, so a deadline really stops the work: mistral.rs finishes a non-streaming
//!   request whose caller went away, but cancels a streaming one whose receiver is dropped;
//! - constrained decoding for non-harmony models, so the answer always parses (`[01]`, or a JSON
//!   schema whose `policy_category` can only be one of the policy's codes);
//! - explicit dtype, device and thread settings (the high-level builder picks F16 on CPU, which
//!   has no fast kernels there), and checks that turn mistral.rs's panics and silent downloads on a
//!   bad path into start-up errors.

use async_trait::async_trait;
use mistralrs::{RequestBuilder, RequestLike, TextMessageRole};
use mistralrs_core::{
    AutoDeviceMapParams, Constraint, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder,
    GGUFSpecificConfig, IsqOrganization, MistralRsBuilder, ModelDType, NormalLoaderBuilder,
    NormalRequest, NormalSpecificConfig, ReasoningEffort, Request, RequestMessage, Response,
    SamplingParams, SchedulerConfig, StopTokens, TokenSource, TokenizationRequest,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::gguf;
use super::model::{ChatModel, Completion};
use super::prompt::{Family, Prompt};
use super::verdict::OutputFormat;
use super::{ClassifyError, Timing};
use crate::metrics::Metrics;
use crate::policy::Effort;

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// One GGUF file (llama-family architectures; the small default model).
    Gguf(PathBuf),
    /// A directory in Hugging Face layout: config.json, tokenizer.json, *.safetensors
    /// (gpt-oss-safeguard-20b/120b ship this way).
    Safetensors(PathBuf),
    /// A Hugging Face model id, downloaded by mistral.rs (needs network access to the hub).
    HuggingFace(String),
}

pub use super::backends::local::{ModelDtype as Dtype, WeightsMode};

/// openai-harmony's variable for a local directory of tiktoken vocabularies.
const TIKTOKEN_ENCODINGS_BASE: &str = "TIKTOKEN_ENCODINGS_BASE";

/// `weights = "auto"` keeps F32 prefill copies of a GGUF file on CPU up to this size (4 GiB of F32
/// at most).
const AUTO_F32_MAX_FILE: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub source: ModelSource,
    pub dtype: Dtype,
    /// Whether a GGUF model also keeps F32 copies of its weights for prefill.
    pub weights: WeightsMode,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Threads for the CPU kernels (rayon); `None` = one per core.
    pub threads: Option<usize>,
    /// Sequences the engine runs at once (continuous batching).
    pub max_concurrency: usize,
    /// Calls allowed to wait for an engine slot; more are refused at once.
    pub max_queue: usize,
    /// Finished sequences whose KV cache is kept for prefix reuse.
    pub prefix_cache_entries: usize,
    /// Token budget of a harmony answer (analysis + final); constrained answers need far fewer.
    pub max_tokens: u32,
    pub family: Family,
}

impl LocalSettings {
    /// Checks that can run without loading anything (also used by `check-config`).
    pub fn check(&self) -> Result<(), String> {
        if self.max_concurrency != 1 {
            // mistral.rs 0.8.1 batches running sequences by copying their KV caches into one
            // tensor shaped like the first one's; once two caches have grown to different sizes
            // (past 1,024 tokens) that copy panics and the engine thread dies for good. Seen with
            // 2 and 4 sequences on CPU (docs/MODEL-NOTES.md). One sequence at a time, with the
            // bounded queue in front, is the setting that cannot take the backend down.
            return Err(format!(
                "max_concurrency = {}: the in-process backend runs one sequence at a time \
                 (mistral.rs 0.8.1's batching crashes its engine); use max_queue to let calls wait",
                self.max_concurrency
            ));
        }
        if self.weights == WeightsMode::F32Prefill && self.device != "cpu" {
            return Err(format!(
                "weights = \"f32-prefill\" is for the CPU (device is {:?}); on a GPU use dtype",
                self.device
            ));
        }
        match &self.source {
            ModelSource::Gguf(p) => {
                if !p.is_file() {
                    return Err(format!(
                        "model file {} does not exist. For the small default model run \
                         scripts/fetch-default-model.sh; otherwise point model_path at a GGUF \
                         file",
                        p.display()
                    ));
                }
                let arch = gguf::architecture(p)?;
                if !gguf::SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
                    return Err(format!(
                        "{}: architecture {arch:?} cannot be loaded from GGUF by mistral.rs 0.8.1 \
                         (supported: {}); use a safetensors directory instead",
                        p.display(),
                        gguf::SUPPORTED_ARCHITECTURES.join(", ")
                    ));
                }
            }
            ModelSource::Safetensors(dir) => {
                for f in ["config.json", "tokenizer.json"] {
                    if !dir.join(f).is_file() {
                        return Err(format!(
                            "{} is not a model directory: {f} is missing",
                            dir.display()
                        ));
                    }
                }
            }
            ModelSource::HuggingFace(id) => {
                if id.is_empty() || id.contains(char::is_whitespace) {
                    return Err(format!("{id:?} is not a Hugging Face model id"));
                }
            }
        }
        if self.family == Family::GptOssSafeguard {
            self.harmony_vocab()?;
        }
        parse_device(&self.device).map(|_| ())
    }

    /// Where mistral.rs's harmony parser finds `o200k_base.tiktoken` (it reads the directory in
    /// `TIKTOKEN_ENCODINGS_BASE`): that variable's directory, else the model directory. Without
    /// either it would download the file from openaipublic.blob.core.windows.net on the first
    /// request, and its engine thread panics where that host cannot be reached, so this is a
    /// start-up error instead (scripts/fetch-harmony-vocab.sh puts the file in models/).
    pub fn harmony_vocab(&self) -> Result<PathBuf, String> {
        harmony_vocab_dir(
            std::env::var_os(TIKTOKEN_ENCODINGS_BASE).map(PathBuf::from),
            &self.source,
        )
    }

    /// Whether a GGUF model keeps F32 copies of its quantised weights for prefill. On CPU,
    /// candle's quantised matmul quantises the activations and takes one dot product per (token,
    /// row): prefill of a ~900-token policy ran at ~60-80 tokens/s on 2 cores, against ~210-250
    /// with the F32 GEMM kernels (docs/BENCHMARKS.md). Decoding one token is bound by reading the
    /// weights, so it keeps the quantised ones (4x smaller). The price is memory: up to 4x the
    /// file size, made as each weight first sees a prefill (the start-up warm-up), so the output
    /// projection, which only ever sees the last position, gets none. `auto` does it only for
    /// small files.
    pub fn f32_prefill(&self) -> bool {
        match (self.weights, &self.source) {
            (WeightsMode::F32Prefill, ModelSource::Gguf(_)) => true,
            (WeightsMode::Auto, ModelSource::Gguf(p)) if self.device == "cpu" => {
                std::fs::metadata(p)
                    .map(|m| m.len() <= AUTO_F32_MAX_FILE)
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    pub fn model_id(&self) -> String {
        match &self.source {
            ModelSource::Gguf(p) | ModelSource::Safetensors(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            ModelSource::HuggingFace(id) => id.clone(),
        }
    }
}

/// Runs a model load with the patched mistralrs-quant told whether to keep F32 copies of the
/// quantised weights for prefill (patches/mistralrs-quant-0.8.1-cpu-matmul.patch). mistral.rs's
/// loaders take no such option, so it is an environment variable that each weight reads as it
/// loads; a lock keeps two loads with different settings from interleaving, and the caller's own
/// value of the variable is put back afterwards.
fn with_weights_mode<T>(f32_prefill: bool, load: impl FnOnce() -> T) -> T {
    const VAR: &str = "GUARDGATE_GGUF_F32_PREFILL";
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::env::var_os(VAR);
    std::env::set_var(VAR, if f32_prefill { "1" } else { "0" });
    let out = load();
    match before {
        Some(v) => std::env::set_var(VAR, v),
        None => std::env::remove_var(VAR),
    }
    out
}

/// See [`LocalSettings::harmony_vocab`]; `env` is `TIKTOKEN_ENCODINGS_BASE`.
fn harmony_vocab_dir(env: Option<PathBuf>, source: &ModelSource) -> Result<PathBuf, String> {
    const FILE: &str = "o200k_base.tiktoken";
    if let Some(dir) = env {
        return if dir.join(FILE).is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{TIKTOKEN_ENCODINGS_BASE}={} has no {FILE} (scripts/fetch-harmony-vocab.sh \
                 fetches it)",
                dir.display()
            ))
        };
    }
    match source {
        ModelSource::Safetensors(dir) if dir.join(FILE).is_file() => Ok(dir.clone()),
        _ => Err(format!(
            "family = \"gpt-oss-safeguard\" needs {FILE} for the harmony format: copy it into the \
             model directory or set {TIKTOKEN_ENCODINGS_BASE} to a directory holding it \
             (scripts/fetch-harmony-vocab.sh fetches it into models/)"
        )),
    }
}

fn parse_device(s: &str) -> Result<mistralrs::Device, String> {
    match s {
        "cpu" => Ok(mistralrs::Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => Err(format!("device {other:?}: expected cpu, cuda or cuda:N")),
        },
    }
}

fn cuda(ordinal: usize) -> Result<mistralrs::Device, String> {
    if cfg!(feature = "cuda") {
        mistralrs::Device::new_cuda(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))
    } else {
        Err("this build has no CUDA support: build with --features cuda".into())
    }
}

pub struct LocalModel {
    id: String,
    backend: &'static str,
    runner: Arc<mistralrs_core::MistralRs>,
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
    max_tokens: u32,
    harmony: bool,
    /// The token ids of the answers `0` and `1`, when each is a single token: a binary verdict's
    /// P(1) is read from their two logits. `None`: binary verdicts carry no confidence.
    answer_tokens: Option<(u32, u32)>,
    metrics: Option<Arc<Metrics>>,
}

/// Keeps the queue-depth count right however the waiting call ends (answer, error or drop).
struct Waiting<'a>(&'a LocalModel);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.set_depth();
    }
}

impl LocalModel {
    /// Loads the weights and starts the engine thread. Blocking (seconds for the small model,
    /// minutes for a 20B one): call it at start-up, not on a request path.
    pub fn load(
        s: &LocalSettings,
        backend: &'static str,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<LocalModel, String> {
        s.check()?;
        if let Some(n) = s.threads {
            // candle's CPU kernels run on rayon's global pool, which reads this once, when first
            // used; nothing has used it yet at start-up.
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            }
        }
        if s.family == Family::GptOssSafeguard
            && std::env::var_os(TIKTOKEN_ENCODINGS_BASE).is_none()
        {
            // Read once, by the engine thread on the first request; nothing reads it before.
            std::env::set_var(TIKTOKEN_ENCODINGS_BASE, s.harmony_vocab()?);
        }
        let device = parse_device(&s.device)?;
        let dtype = match s.dtype {
            Dtype::Auto => ModelDType::Auto,
            Dtype::F32 => ModelDType::F32,
            Dtype::F16 => ModelDType::F16,
            Dtype::Bf16 => ModelDType::BF16,
        };
        let loader = match &s.source {
            ModelSource::Gguf(p) => {
                let dir = p.parent().unwrap_or(Path::new(".")).display().to_string();
                let file = p
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .ok_or("model_path has no file name")?;
                GGUFLoaderBuilder::new(
                    None,
                    None,
                    dir,
                    vec![file],
                    GGUFSpecificConfig { topology: None },
                    false,
                    None,
                )
                .build()
            }
            ModelSource::Safetensors(dir) => normal_loader(dir.display().to_string())?,
            ModelSource::HuggingFace(id) => normal_loader(id.clone())?,
        };
        let token = match s.source {
            ModelSource::HuggingFace(_) => TokenSource::CacheToken,
            _ => TokenSource::None,
        };
        let f32_prefill = s.f32_prefill();
        let pipeline = with_weights_mode(f32_prefill, || {
            loader.load_model_from_hf(
                None,
                token,
                &dtype,
                &device,
                true,
                DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
                None,
                // Paged attention would bypass the sequence-level prefix cache the policy prefix
                // reuse depends on (and is not available on CPU).
                None,
            )
        })
        .map_err(|e| format!("loading {}: {e:#}", s.model_id()))?;
        tracing::debug!(model = %s.model_id(), f32_prefill, "weights loaded");
        let seqs = std::num::NonZeroUsize::new(s.max_concurrency.max(1)).expect("non-zero");
        let builder = MistralRsBuilder::new(
            pipeline,
            SchedulerConfig::DefaultScheduler {
                method: DefaultSchedulerMethod::Fixed(seqs),
            },
            false,
            None,
        )
        .with_no_prefix_cache(s.prefix_cache_entries == 0)
        .with_prefix_cache_n(s.prefix_cache_entries.max(1));
        // `build` is async but only spawns the engine on its own thread with its own runtime, so a
        // throwaway runtime on a helper thread works whether or not the caller is inside tokio.
        let runner = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(builder.build()))
        })
        .join()
        .map_err(|_| "the model engine panicked while starting".to_string())?
        .map_err(|e| format!("runtime: {e}"))?;
        let answer_tokens = {
            let r = runner.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()
                    .and_then(|rt| rt.block_on(answer_tokens(&r)))
            })
            .join()
            .ok()
            .flatten()
        };
        if answer_tokens.is_none() {
            tracing::warn!(model = %s.model_id(), "the answers 0 and 1 are not one token each: verdicts will carry no P(violation) and violation_threshold(s) have no effect");
        }
        let model = LocalModel {
            id: s.model_id(),
            backend,
            runner,
            slots: tokio::sync::Semaphore::new(s.max_concurrency.max(1)),
            waiting: AtomicUsize::new(0),
            max_queue: s.max_queue,
            max_tokens: s.max_tokens,
            harmony: s.family == Family::GptOssSafeguard,
            answer_tokens,
            metrics,
        };
        Ok(model)
    }

    fn set_depth(&self) {
        if let Some(m) = &self.metrics {
            m.model_queue_depth
                .with_label_values(&[self.backend])
                .set(self.waiting.load(Ordering::SeqCst) as i64);
        }
    }

    fn reject(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.model_rejections
                .with_label_values(&[self.backend, reason])
                .inc();
        }
    }

    /// The constraint and answer length for a prompt.
    fn decoding(&self, p: &Prompt) -> (Constraint, usize) {
        if self.harmony {
            // A constraint applies from the first token and would forbid the analysis channel.
            return (Constraint::None, self.max_tokens as usize);
        }
        if !p.joint.is_empty() {
            // An entry is its id, the two keys and a code: ~30 tokens of a byte-level BPE.
            let len = 48 * p.joint.len() + 16;
            return (Constraint::Regex(super::joint::answer_regex(&p.joint)), len);
        }
        match p.format {
            OutputFormat::Binary => (Constraint::Regex("[01]".into()), 1),
            // Room for the short rationale the schema asks for plus the keys: 120 characters are
            // ~130 tokens of ASCII, but up to 480 bytes of CJK or emoji, which a byte-level BPE
            // may spend a token each on; cut short, the answer would not parse.
            OutputFormat::Json => (Constraint::Regex(json_answer_regex(&p.codes)), 640),
        }
    }

    /// The policy as the system message and the content as the user message; a harmony model's
    /// chat template also gets the reasoning effort (it renders the system message as the
    /// developer message, after a system message that states the effort).
    fn messages(&self, p: &Prompt) -> RequestMessage {
        let mut rb = RequestBuilder::new()
            .add_message(TextMessageRole::System, &p.system)
            .add_message(TextMessageRole::User, &p.user);
        let mut messages = rb.take_messages();
        if let RequestMessage::Chat {
            reasoning_effort, ..
        } = &mut messages
        {
            *reasoning_effort = p.reasoning_effort.filter(|_| self.harmony).map(effort);
        }
        messages
    }

    /// The token ids the engine prefills for `p`, through the model's own chat template and
    /// tokenizer: what a policy costs in prompt tokens, and what tests compare with a reference
    /// rendering (openai-harmony's, for gpt-oss).
    pub async fn prompt_tokens(&self, p: &Prompt) -> Result<Vec<u32>, ClassifyError> {
        let RequestMessage::Chat {
            messages,
            reasoning_effort,
            ..
        } = self.messages(p)
        else {
            return Err(ClassifyError::Backend("not a chat request".into()));
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let sender = self
            .runner
            .get_sender(None)
            .map_err(|e| ClassifyError::Backend(format!("model engine: {e}")))?;
        sender
            .send(Request::Tokenize(TokenizationRequest {
                text: either::Either::Left(messages),
                tools: None,
                add_generation_prompt: true,
                add_special_tokens: false,
                enable_thinking: None,
                reasoning_effort,
                response: tx,
            }))
            .await
            .map_err(|_| ClassifyError::Backend("model engine stopped".into()))?;
        match rx.recv().await {
            Some(Ok(ids)) => Ok(ids),
            Some(Err(e)) => Err(ClassifyError::Backend(format!("tokenizing: {e}"))),
            None => Err(ClassifyError::Backend("model engine stopped".into())),
        }
    }

    async fn run(&self, p: &Prompt, queue_ms: f64) -> Result<Completion, ClassifyError> {
        let (constraint, max_len) = self.decoding(p);
        let messages = self.messages(p);
        let mut sampling = SamplingParams::deterministic();
        sampling.max_len = Some(max_len);
        let binary = !self.harmony && p.format == OutputFormat::Binary;
        // P(1) of the answer's verdict, from the two answer logits as the model gives them. Not from
        // mistral.rs's logprobs: with greedy sampling they are log10 of the raw logits, and when
        // the unconstrained choice is already 0 or 1 they come from the unmasked vocabulary, where
        // the other answer is rarely among the top few (every verdict read as confidence 1.0).
        let odds = Arc::new(std::sync::Mutex::new(AnswerOdds::default()));
        let logits_processors = match self.answer_tokens {
            Some((zero, one)) if !self.harmony => Some(vec![answer_probability(zero, one, &odds)]),
            _ => None,
        };
        // A constrained JSON answer is complete at its closing `"}` (the rationale cannot hold a
        // `"`), so that is a stop string. Without it, a ChatML model ran on unconstrained to
        // `max_len` (256 tokens instead of ~40): llguidance ends the grammar on the tokenizer's
        // EOS, which is not the chat template's stop token. A stop string (not dropping the
        // stream) lets the sequence finish normally, so it reports usage and its KV cache joins
        // the prefix cache.
        let answer_ends: Vec<String> = match () {
            _ if self.harmony => Vec::new(),
            // A joint answer's entries end in `"}` too; only the last closes two objects.
            _ if !p.joint.is_empty() => super::joint::answer_ends(),
            _ if p.format == OutputFormat::Json => vec![JSON_ANSWER_END.into()],
            _ => Vec::new(),
        };
        if !answer_ends.is_empty() {
            sampling.stop_toks = Some(StopTokens::Seqs(answer_ends.clone()));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let request = Request::Normal(Box::new(NormalRequest {
            messages,
            sampling_params: sampling,
            response: tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let sender = self
            .runner
            .get_sender(None)
            .map_err(|e| ClassifyError::Backend(format!("model engine: {e}")))?;
        let sent = Instant::now();
        sender
            .send(request)
            .await
            .map_err(|_| ClassifyError::Backend("model engine stopped".into()))?;
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut first: Option<Instant> = None;
        let mut usage = None;
        let mut finished = false;
        let mut stopped_by_stop_string = false;
        // Dropping `rx` (deadline) makes the engine cancel the sequence at its next step.
        while let Some(r) = rx.recv().await {
            match r {
                Response::Chunk(c) => {
                    first.get_or_insert_with(Instant::now);
                    let mut done = false;
                    for ch in &c.choices {
                        if let Some(t) = &ch.delta.content {
                            text.push_str(t);
                        }
                        if let Some(t) = &ch.delta.reasoning_content {
                            reasoning.push_str(t);
                        }
                        if ch.finish_reason.as_deref() == Some("error") {
                            // mistral.rs's forward-error path: the text so far is not an answer.
                            return Err(ClassifyError::Backend(
                                "model engine failed during generation (see its error log)".into(),
                            ));
                        }
                        if let Some(r) = &ch.finish_reason {
                            stopped_by_stop_string = r == "stop";
                            done = true;
                        }
                    }
                    if c.usage.is_some() {
                        usage = c.usage;
                    }
                    if done {
                        finished = true;
                        break;
                    }
                }
                Response::Done(d) => {
                    usage = Some(d.usage);
                    finished = true;
                    break;
                }
                Response::InternalError(e) | Response::ValidationError(e) => {
                    return Err(ClassifyError::Backend(format!("model: {e}")));
                }
                Response::ModelError(e, _) => {
                    return Err(ClassifyError::Backend(format!("model: {e}")));
                }
                _ => {
                    return Err(ClassifyError::Backend(
                        "model engine sent an unexpected response kind".into(),
                    ))
                }
            }
        }
        // mistral.rs may cut the stop string from the streamed text.
        if stopped_by_stop_string && !p.joint.is_empty() {
            text = super::joint::restore_end(&text, &answer_ends);
        } else if stopped_by_stop_string
            && answer_ends.len() == 1
            && !text.trim_end().ends_with(answer_ends[0].as_str())
        {
            text.push_str(&answer_ends[0]);
        }
        if !finished {
            // The engine thread died mid-request (mistral.rs restarts it on the next call). What
            // was streamed so far is not an answer.
            return Err(ClassifyError::Backend(
                "model engine stopped before the answer was complete".into(),
            ));
        }
        let end = Instant::now();
        let first = first.unwrap_or(end);
        let p_violation = odds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .p_violation(binary);
        Ok(Completion {
            text,
            reasoning: (!reasoning.is_empty()).then_some(reasoning),
            prompt_tokens: usage.as_ref().map(|u| u.prompt_tokens as u32),
            completion_tokens: usage.as_ref().map(|u| u.completion_tokens as u32),
            cached_prompt_tokens: None,
            p_violation,
            timing: Some(Timing {
                queue_ms,
                prefill_ms: Some((first - sent).as_secs_f64() * 1e3),
                decode_ms: Some((end - first).as_secs_f64() * 1e3),
            }),
        })
    }
}

/// Where the verdict's 0 or 1 sits in an answer, step by step. A binary answer is that one token.
/// A constrained JSON answer (`{"violation": 0|1, ...`) has no digit before it, so its first 0 or
/// 1 token is the verdict; which token was chosen at a step is only known at the next step (the
/// last token of its context), so the odds of each step are kept until then.
#[derive(Debug, Default)]
struct AnswerOdds {
    /// (context length, P(1)) of the latest step.
    last: Option<(usize, f32)>,
    /// The first step's P(1) (a binary answer's).
    first: Option<f32>,
    /// The P(1) of the step that chose the first 0 or 1 token.
    digit: Option<f32>,
}

impl AnswerOdds {
    /// One sampling step: the two answer logits and the context (prompt and answer so far).
    /// mistral.rs may call a step twice (again with the constraint's mask); both see the same
    /// two logits when both answers are allowed.
    fn step(&mut self, zero: u32, one: u32, l0: f32, l1: f32, ctx: &[u32]) {
        if self.digit.is_some() {
            return;
        }
        if let (Some((len, p)), Some(&t)) = (self.last, ctx.last()) {
            if ctx.len() == len + 1 && (t == zero || t == one) {
                self.digit = Some(p);
                return;
            }
        }
        let p = p_one_of(l0, l1);
        if p.is_finite() {
            self.first.get_or_insert(p);
            self.last = Some((ctx.len(), p));
        } else {
            self.last = None;
        }
    }

    /// P(1) of the verdict: a binary answer's only step, or a JSON answer's digit step.
    fn p_violation(&self, binary: bool) -> Option<f32> {
        if binary {
            self.first
        } else {
            self.digit
        }
    }
}

/// A logits processor that leaves the logits as they are and records P(1) over {0, 1}: the
/// softmax of the two answer logits, which is the model's own odds between the only two answers
/// the constraint allows at the verdict's step (the verdict is the larger of the two, so P(1) >=
/// 0.5 exactly when the answer is 1).
fn answer_probability(
    zero: u32,
    one: u32,
    odds: &Arc<std::sync::Mutex<AnswerOdds>>,
) -> Arc<dyn mistralrs_core::CustomLogitsProcessor> {
    let odds = odds.clone();
    Arc::new(
        move |logits: &mistralrs::Tensor, ctx: &[u32]| -> mistralrs::Result<mistralrs::Tensor> {
            let mut o = odds.lock().unwrap_or_else(|e| e.into_inner());
            if o.digit.is_none() {
                let l0 = logits.get(zero as usize)?.to_scalar::<f32>()?;
                let l1 = logits.get(one as usize)?.to_scalar::<f32>()?;
                o.step(zero, one, l0, l1, ctx);
            }
            Ok(logits.clone())
        },
    )
}

/// softmax([l0, l1])[1]. The form saturates to 0 or 1 for far-apart logits instead of
/// overflowing; a NaN logit gives NaN, which is not recorded (the model's answer then stands).
fn p_one_of(l0: f32, l1: f32) -> f32 {
    1.0 / (1.0 + (l0 - l1).exp())
}

/// The token ids of `0` and `1` in the model's vocabulary, asked of the engine's own tokenizer;
/// `None` unless each is exactly one token.
async fn answer_tokens(runner: &mistralrs_core::MistralRs) -> Option<(u32, u32)> {
    let one_token = |text: &'static str| async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let sender = runner.get_sender(None).ok()?;
        sender
            .send(Request::Tokenize(TokenizationRequest {
                text: either::Either::Right(text.to_string()),
                tools: None,
                add_generation_prompt: false,
                add_special_tokens: false,
                enable_thinking: None,
                reasoning_effort: None,
                response: tx,
            }))
            .await
            .ok()?;
        match rx.recv().await? {
            Ok(ids) if ids.len() == 1 => Some(ids[0]),
            _ => None,
        }
    };
    Some((one_token("0").await?, one_token("1").await?))
}

fn normal_loader(model_id: String) -> Result<Box<dyn mistralrs_core::Loader>, String> {
    NormalLoaderBuilder::new(
        NormalSpecificConfig {
            topology: None,
            organization: IsqOrganization::Default,
            write_uqff: None,
            from_uqff: None,
            imatrix: None,
            calibration_file: None,
            hf_cache_path: None,
            matformer_config_path: None,
            matformer_slice_name: None,
        },
        None,
        None,
        Some(model_id),
        false,
        None,
    )
    .build(None)
    .map_err(|e| format!("model loader: {e:#}"))
}

fn effort(e: Effort) -> ReasoningEffort {
    match e {
        Effort::Low => ReasoningEffort::Low,
        Effort::Medium => ReasoningEffort::Medium,
        Effort::High => ReasoningEffort::High,
    }
}

/// How every constrained JSON answer ends (see [`json_answer_regex`]).
const JSON_ANSWER_END: &str = "\"}";

/// `{"violation": 0|1, "policy_category": <one of the codes> | null, "rationale": "<short>"}`,
/// as a regex rather than a JSON schema: a schema allows free whitespace between tokens, and a
/// small model can fill its whole budget with newlines and never close the object. The fixed
/// layout and the bounded rationale (no quotes, backslashes or control characters) always fit the
/// token budget; the rationale goes to the audit record only.
pub fn json_answer_regex(codes: &[String]) -> String {
    let mut cats: Vec<String> = codes
        .iter()
        .map(|c| format!("\"{}\"", regex::escape(c)))
        .collect();
    cats.push("null".into());
    format!(
        r#"\{{"violation": ?[01], ?"policy_category": ?({}), ?"rationale": ?"[^"\\\x00-\x1f]{{1,120}}"\}}"#,
        cats.join("|")
    )
}

#[async_trait]
impl ChatModel for LocalModel {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn wants_warmup(&self) -> bool {
        true
    }

    async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<Completion, ClassifyError> {
        // A call out of time is refused before the engine sees it: once sent, a request is
        // prefilled in full before the engine notices nobody waits for it.
        if Instant::now() >= deadline {
            self.reject("deadline");
            return Err(ClassifyError::Deadline);
        }
        let queued = Instant::now();
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(ClassifyError::Backend("model is shutting down".into()))
            }
            // Admission: a call that would wait behind `max_queue` others fails now instead of
            // adding latency nobody asked for (`max_queue = 0`: never wait).
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    self.reject("queue_full");
                    return Err(ClassifyError::Overloaded);
                }
                let waiting = Waiting(self);
                self.set_depth();
                let acquired = tokio::time::timeout_at(deadline.into(), self.slots.acquire()).await;
                drop(waiting);
                match acquired {
                    Ok(Ok(p)) if Instant::now() < deadline => p,
                    Ok(Err(_)) => {
                        return Err(ClassifyError::Backend("model is shutting down".into()))
                    }
                    _ => {
                        self.reject("deadline");
                        return Err(ClassifyError::Deadline);
                    }
                }
            }
        };
        let queue_ms = queued.elapsed().as_secs_f64() * 1e3;
        let out = tokio::time::timeout_at(deadline.into(), self.run(prompt, queue_ms))
            .await
            .unwrap_or(Err(ClassifyError::Deadline));
        drop(permit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_harmony_model_finds_its_vocabulary_or_does_not_start() {
        let model = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let source = ModelSource::Safetensors(model.path().to_path_buf());
        let e = harmony_vocab_dir(None, &source).unwrap_err();
        assert!(e.contains("o200k_base.tiktoken"), "{e}");
        let e = harmony_vocab_dir(Some(elsewhere.path().into()), &source).unwrap_err();
        assert!(e.contains("TIKTOKEN_ENCODINGS_BASE"), "{e}");
        std::fs::write(model.path().join("o200k_base.tiktoken"), "").unwrap();
        assert_eq!(harmony_vocab_dir(None, &source).unwrap(), model.path());
        // The variable, when set, is the one place looked at.
        assert!(harmony_vocab_dir(Some(elsewhere.path().into()), &source).is_err());
        std::fs::write(elsewhere.path().join("o200k_base.tiktoken"), "").unwrap();
        assert_eq!(
            harmony_vocab_dir(Some(elsewhere.path().into()), &source).unwrap(),
            elsewhere.path()
        );
        let gguf = ModelSource::Gguf(model.path().join("m.gguf"));
        assert!(harmony_vocab_dir(None, &gguf).is_err());
    }

    #[test]
    fn the_answer_probability_is_the_softmax_of_the_two_logits() {
        assert_eq!(p_one_of(3.0, 3.0), 0.5);
        let p = p_one_of(1.0, 2.0);
        assert!((p - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!((p + p_one_of(2.0, 1.0) - 1.0).abs() < 1e-6);
        // Far apart: saturates, never NaN or infinite.
        assert_eq!(p_one_of(-200.0, 200.0), 1.0);
        assert_eq!(p_one_of(200.0, -200.0), 0.0);
        assert!(p_one_of(f32::NAN, 1.0).is_nan());
    }

    #[test]
    fn the_verdict_odds_are_those_of_the_step_that_chose_the_first_digit() {
        let (zero, one) = (15, 16);
        // Binary: one step on a 3-token prompt.
        let mut o = AnswerOdds::default();
        o.step(zero, one, 0.0, 1.0, &[1, 2, 3]);
        assert_eq!(o.p_violation(true), Some(p_one_of(0.0, 1.0)));
        // JSON: `{"` `violation` `": ` then the digit (token 16) chosen at the fourth step, which
        // mistral.rs ran twice (the second time under the mask).
        let mut o = AnswerOdds::default();
        let steps: [(&[u32], f32, f32); 6] = [
            (&[1, 2, 3], 5.0, 0.0),
            (&[1, 2, 3, 40], 0.0, 5.0),
            (&[1, 2, 3, 40, 41], 1.0, 1.0),
            (&[1, 2, 3, 40, 41, 42], 2.0, 3.0),
            (&[1, 2, 3, 40, 41, 42], 2.0, 3.0),
            (&[1, 2, 3, 40, 41, 42, one], 9.0, -9.0),
        ];
        for (ctx, l0, l1) in steps {
            o.step(zero, one, l0, l1, ctx);
        }
        assert_eq!(o.p_violation(false), Some(p_one_of(2.0, 3.0)));
        // A later digit (in the rationale) changes nothing.
        o.step(zero, one, 0.0, 0.0, &[1, 2, 3, 40, 41, 42, one, 7, zero]);
        assert_eq!(o.p_violation(false), Some(p_one_of(2.0, 3.0)));
        // A prompt ending in a digit is not an answer.
        let mut o = AnswerOdds::default();
        o.step(zero, one, 1.0, 2.0, &[1, 2, zero]);
        assert_eq!(o.p_violation(false), None);
    }

    #[test]
    fn json_answers_have_one_layout_and_only_the_policy_codes() {
        let re = regex::Regex::new(&format!(
            "^{}$",
            json_answer_regex(&["X1".into(), "X2.b".into()])
        ))
        .unwrap();
        assert!(re.is_match(
            r#"{"violation": 1, "policy_category": "X2.b", "rationale": "It asks for X."}"#
        ));
        assert!(re.is_match(r#"{"violation":0,"policy_category":null,"rationale":"Fine."}"#));
        assert!(!re.is_match(r#"{"violation": 1, "policy_category": "X2c", "rationale": "x"}"#));
        assert!(
            !re.is_match("{\n  \"violation\": 1, \"policy_category\": null, \"rationale\": \"x\"}")
        );
        assert!(!re.is_match(r#"{"violation": 1, "policy_category": null, "rationale": ""}"#));
        let parsed = crate::classify::verdict::parse_answer(
            r#"{"violation": 1, "policy_category": "X1", "rationale": "It asks for X."}"#,
            None,
            OutputFormat::Json,
        )
        .unwrap();
        assert_eq!(parsed.code.as_deref(), Some("X1"));
    }

    fn cpu_settings(source: ModelSource) -> LocalSettings {
        LocalSettings {
            source,
            dtype: Dtype::F32,
            weights: WeightsMode::Auto,
            device: "cpu".into(),
            threads: None,
            max_concurrency: 1,
            max_queue: 1,
            prefix_cache_entries: 4,
            max_tokens: 64,
            family: Family::Chat,
        }
    }

    #[test]
    fn bad_paths_are_start_up_errors_not_downloads() {
        let s = cpu_settings(ModelSource::Gguf(PathBuf::from("/nonexistent/model.gguf")));
        assert!(s.check().unwrap_err().contains("fetch-default-model"));
        let batched = LocalSettings {
            max_concurrency: 2,
            ..s.clone()
        };
        assert!(batched
            .check()
            .unwrap_err()
            .contains("one sequence at a time"));
        let dir = tempfile::tempdir().unwrap();
        let s2 = LocalSettings {
            source: ModelSource::Safetensors(dir.path().to_path_buf()),
            ..s.clone()
        };
        assert!(s2.check().unwrap_err().contains("config.json"));
        let s3 = LocalSettings {
            device: "tpu".into(),
            source: ModelSource::HuggingFace("openai/gpt-oss-safeguard-20b".into()),
            ..s
        };
        assert!(s3.check().unwrap_err().contains("expected cpu"));
    }

    #[test]
    fn f32_prefill_is_a_cpu_choice_and_auto_takes_only_small_files() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.gguf");
        std::fs::write(&small, b"GGUF").unwrap();
        let s = cpu_settings(ModelSource::Gguf(small));
        assert!(s.f32_prefill());
        let big = dir.path().join("big.gguf");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(AUTO_F32_MAX_FILE + 1)
            .unwrap();
        let s_big = LocalSettings {
            source: ModelSource::Gguf(big.clone()),
            ..s.clone()
        };
        assert!(!s_big.f32_prefill());
        let forced = LocalSettings {
            source: ModelSource::Gguf(big),
            weights: WeightsMode::F32Prefill,
            ..s.clone()
        };
        assert!(forced.f32_prefill());
        let quantized = LocalSettings {
            weights: WeightsMode::Quantized,
            ..s.clone()
        };
        assert!(!quantized.f32_prefill());
        let gpu_auto = LocalSettings {
            device: "cuda:0".into(),
            ..s.clone()
        };
        assert!(!gpu_auto.f32_prefill());
        let gpu_f32 = LocalSettings {
            device: "cuda:0".into(),
            weights: WeightsMode::F32Prefill,
            ..s
        };
        assert!(gpu_f32.check().unwrap_err().contains("for the CPU"));
    }
}
