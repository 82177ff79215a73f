//! The TOML configuration: types, defaults and validation.
//!
//! Every key is spelled out with `deny_unknown_fields` so a typo is an error at start, not a silently
//! ignored setting. Validation errors name the file, the key and the reason.

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::wire::Api;

/// A secret (token, API key) from the environment, without surrounding whitespace: a Kubernetes
/// Secret made with `--from-file` ends in a newline, which no client can send in a header, so the
/// token could never match (and an API key with it makes an invalid header). `None` when unset or
/// blank.
pub fn secret_from_env(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub policies: PoliciesSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default, rename = "upstreams")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, rename = "routes")]
    pub routes: Vec<RouteConfig>,
    /// Model backends, tried in this order after the deterministic rules.
    #[serde(default, rename = "backends")]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub unmatched: UnmatchedSection,
    /// Verdict-only endpoints on the traffic listener: `POST /v1/moderations` (OpenAI shape) and
    /// `POST /guardgate/v1/classify`.
    #[serde(default)]
    pub moderation: ModerationSection,
    /// Directory the config file lives in; relative paths inside the file resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Let idle worker threads take tasks queued on busy ones (tokio's multi-thread scheduler).
    /// Off, each thread runs its own single-threaded runtime and keeps the connections it
    /// accepted, as nginx workers do: fewer cross-thread wake-ups per request.
    #[serde(default)]
    pub work_stealing: bool,
    /// Seconds to keep serving after SIGTERM before shutting the listeners (pingora default is 300).
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
    #[serde(default = "default_grace_timeout")]
    pub graceful_shutdown_timeout_seconds: u64,
    /// Socket used to hand listeners to a new process during a graceful upgrade (`serve -u`).
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
fn default_grace() -> u64 {
    5
}
fn default_grace_timeout() -> u64 {
    30
}
fn default_upgrade_sock() -> String {
    "/tmp/guardgate_upgrade.sock".into()
}
fn default_pid_file() -> String {
    "/tmp/guardgate.pid".into()
}

impl Default for ServerSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Environment variable holding the bearer token for the admin API. Required when the admin
    /// listener is not on loopback.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
            token_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted, as sent (before decompression).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest request body after Content-Encoding is decoded: guards against decompression bombs.
    #[serde(default = "default_max_decoded")]
    pub max_decoded_body_bytes: usize,
    /// Time allowed to receive the whole request body.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_ms: u64,
}

fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_max_decoded() -> usize {
    16 * 1024 * 1024
}
fn default_body_timeout() -> u64 {
    30_000
}

impl Default for Limits {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSection {
    /// Directories searched (recursively) for `*.md` policy files.
    #[serde(default = "default_policy_dirs")]
    pub dirs: Vec<PathBuf>,
    /// Watch the directories and reload on change.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Debounce window for file events: editors and ConfigMap swaps write in several steps.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Safety net for file systems without inotify: re-hash the files this often (0 = never).
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
}

fn default_policy_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("policies")]
}
fn default_true() -> bool {
    true
}
fn default_debounce() -> u64 {
    100
}
fn default_poll() -> u64 {
    2_000
}

impl Default for PoliciesSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    Stdout,
    File,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default = "default_sink")]
    pub sink: AuditSink,
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Longest rationale kept in a record, in characters.
    #[serde(default = "default_rationale_len")]
    pub max_rationale_chars: usize,
}

fn default_sink() -> AuditSink {
    AuditSink::Stdout
}
fn default_rationale_len() -> usize {
    4000
}

impl Default for AuditSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    #[serde(default)]
    pub json: bool,
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            json: false,
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `http://host:port[/base/path]` or `https://...`
    pub base_url: String,
    /// Environment variable with an API key that the gateway adds when the client sent no
    /// credential of its own. Client credentials always pass through unchanged.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Header that carries the key: `authorization` (sent as `Bearer KEY`) or `x-api-key`.
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the next bytes of the upstream's reply (LLM replies can be slow).
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_true")]
    pub verify_tls: bool,
    /// Offer HTTP/2 over TLS.
    #[serde(default)]
    pub http2: bool,
}

fn default_auth_header() -> String {
    "authorization".into()
}
fn default_connect_timeout() -> u64 {
    5_000
}
fn default_read_timeout() -> u64 {
    600_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Any OpenAI-compatible chat completions server.
    Remote,
    /// A model run in process by mistral.rs (cargo feature `local-model`, on by default).
    Local,
}

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
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// remote: OpenAI API root of the server, e.g. `http://vllm:8000/v1`.
    #[serde(default)]
    pub base_url: String,
    /// remote: the model name the server knows.
    #[serde(default)]
    pub model: String,
    /// local: a GGUF file, or a directory with config.json, tokenizer.json and safetensors
    /// weights. Relative paths resolve against the config file's directory.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// local: a Hugging Face model id that mistral.rs downloads (hosts with hub access only).
    #[serde(default)]
    pub hf_model_id: Option<String>,
    /// local: weight dtype.
    #[serde(default = "default_dtype")]
    pub dtype: ModelDtype,
    /// local, GGUF: keep the quantised weights or expand them to F32 at load.
    #[serde(default = "default_weights")]
    pub weights: WeightsMode,
    /// local: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[serde(default = "default_device")]
    pub device: String,
    /// local: CPU threads for the model's kernels (default: one per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// local: calls allowed to wait for a model slot; more are refused at once and the route's
    /// fail mode applies.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// local: finished prompts whose KV cache is kept for prefix reuse (the policy prefix).
    #[serde(default = "default_prefix_cache_entries")]
    pub prefix_cache_entries: usize,
    /// Verdicts cached per (policy version, normalised content); 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u64,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_s: u64,
    /// local, binary policies: a violation only when the model's P(1) reaches this (default:
    /// the likelier answer wins).
    #[serde(default)]
    pub violation_threshold: Option<f32>,
    /// `gpt-oss-safeguard` (harmony, reasoning effort) or `chat` (any other chat model).
    #[serde(default = "default_family")]
    pub family: crate::classify::prompt::Family,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Default reasoning effort for harmony models; a policy's own setting wins.
    #[serde(default = "default_effort")]
    pub reasoning_effort: crate::policy::Effort,
    #[serde(default = "default_attempt_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
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
fn default_cache_entries() -> u64 {
    10_000
}
fn default_cache_ttl() -> u64 {
    3_600
}
fn default_family() -> crate::classify::prompt::Family {
    crate::classify::prompt::Family::GptOssSafeguard
}
fn default_effort() -> crate::policy::Effort {
    crate::policy::Effort::Low
}
fn default_attempt_timeout() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_concurrency() -> usize {
    16
}
fn default_max_tokens() -> u32 {
    1024
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Block,
    Annotate,
    Shadow,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Annotate => "annotate",
            Action::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Input,
    Output,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Exact request path this route handles (query string ignored).
    pub path: String,
    /// Wire format: openai-chat, openai-completions, openai-responses, anthropic-messages.
    pub api: String,
    pub upstream: String,
    #[serde(default = "default_fail_mode")]
    pub fail_mode: FailMode,
    /// Time budget for all classifiers of one direction of one request.
    #[serde(default = "default_deadline")]
    pub classifier_deadline_ms: u64,
    #[serde(default)]
    pub policies: Vec<RoutePolicy>,
    /// How replies are guarded when output policies are bound to this route.
    #[serde(default)]
    pub output: OutputConfig,
    /// What happens to images, audio and files in a guarded request: the text classifiers
    /// cannot read them, so a route decides whether they go upstream unjudged.
    #[serde(default)]
    pub non_text_parts: NonTextParts,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NonTextParts {
    /// Sent upstream; each request's count is in its input audit records and in
    /// `guardgate_unclassified_parts_total`.
    #[default]
    Forward,
    /// The request is refused with a 400 naming the parts: for text-only routes, where an
    /// image could carry instructions the guard never sees.
    Refuse,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlockStyle {
    /// A well-formed reply (or stream end) with the API's "content filtered" stop reason.
    Replace,
    /// The API's error shape (a 400 for plain replies, an `error` event for streams).
    Error,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Streamed text is held back until a window of this many characters has been judged safe.
    #[serde(default = "default_window")]
    pub window_chars: usize,
    /// Characters of already-judged text repeated at the start of the next window, so that a
    /// violation spanning two windows is still seen whole.
    #[serde(default = "default_overlap")]
    pub overlap_chars: usize,
    /// Longest time text waits for its window to fill before it is judged anyway (slow streams).
    #[serde(default = "default_max_hold")]
    pub max_hold_ms: u64,
    /// Largest non-streamed reply that is buffered for classification.
    #[serde(default = "default_max_reply")]
    pub max_reply_bytes: usize,
    #[serde(default = "default_block_style")]
    pub on_block: BlockStyle,
    /// In annotate-only streams, append a final `event: guardgate` with the verdicts.
    #[serde(default)]
    pub annotate_event: bool,
}

fn default_window() -> usize {
    200
}
fn default_overlap() -> usize {
    50
}
fn default_max_hold() -> u64 {
    1_000
}
fn default_max_reply() -> usize {
    8 * 1024 * 1024
}
fn default_block_style() -> BlockStyle {
    BlockStyle::Replace
}

impl Default for OutputConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn default_fail_mode() -> FailMode {
    FailMode::Closed
}
fn default_deadline() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// A policy id, or a pack glob such as `general/*`.
    pub select: String,
    #[serde(default = "default_directions")]
    pub directions: Vec<Direction>,
    /// Overrides the action named in the policy file.
    #[serde(default)]
    pub action: Option<Action>,
    /// For annotate and shadow bindings: the share of requests (0 < r <= 1) the model backends
    /// judge; the rest get the cheap rules only. Blocking bindings always judge every request.
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// Narrows the backends that judge these policies on this route (names from `[[backends]]`,
    /// or "rules"); overrides the policy file's own `backends`.
    #[serde(default)]
    pub backends: Option<Vec<String>>,
}

fn default_directions() -> Vec<Direction> {
    vec![Direction::Input]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationSection {
    #[serde(default)]
    pub enabled: bool,
    /// Policies `/v1/moderations` judges against (ids or pack globs); `/guardgate/v1/classify`
    /// names its policies per request, from this same set.
    #[serde(default = "default_moderation_policies")]
    pub policies: Vec<String>,
    /// Environment variable with a bearer token callers must present (the endpoints spend
    /// classifier compute and have no upstream to authenticate them).
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Largest request accepted.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_moderation_policies() -> Vec<String> {
    vec!["*".into()]
}

impl Default for ModerationSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedAction {
    /// Proxy untouched to `upstream` (e.g. `GET /v1/models`).
    Passthrough,
    /// Answer 404.
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmatchedSection {
    #[serde(default = "default_unmatched")]
    pub action: UnmatchedAction,
    #[serde(default)]
    pub upstream: Option<String>,
}

fn default_unmatched() -> UnmatchedAction {
    UnmatchedAction::Refuse
}

impl Default for UnmatchedSection {
    fn default() -> Self {
        UnmatchedSection {
            action: default_unmatched(),
            upstream: None,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "-".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &file, &base)
    }

    /// Parses and validates `text`; `base_dir` anchors relative paths.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    // Counted by newlines before the offset: `lines()` missed the line of an
                    // error that starts a line (an unknown key), naming the one above.
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "-".into());
            ConfigError {
                file: file.to_string(),
                key,
                reason: e.message().to_string(),
            }
        })?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.source = file.to_string();
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|e| self.err("server.listen", format!("not an address:port: {e}")))?;
        let admin: SocketAddr = self
            .admin
            .listen
            .parse()
            .map_err(|e| self.err("admin.listen", format!("not an address:port: {e}")))?;
        if listen == admin {
            return Err(self.err("admin.listen", "must differ from server.listen"));
        }
        if !admin.ip().is_loopback() && self.admin.token_env.is_none() {
            return Err(self.err(
                "admin.token_env",
                "the admin listener is not on loopback: set token_env to protect it",
            ));
        }
        if let Some(var) = &self.admin.token_env {
            match secret_from_env(var) {
                Some(_) => {}
                None => {
                    return Err(self.err(
                        "admin.token_env",
                        format!("environment variable {var} is not set or empty"),
                    ))
                }
            }
        }
        if self.server.threads == 0 {
            return Err(self.err("server.threads", "must be at least 1"));
        }
        if self.limits.max_body_bytes == 0 {
            return Err(self.err("limits.max_body_bytes", "must be positive"));
        }
        if self.limits.max_decoded_body_bytes < self.limits.max_body_bytes {
            return Err(self.err(
                "limits.max_decoded_body_bytes",
                "must be at least limits.max_body_bytes",
            ));
        }
        if self.audit.sink == AuditSink::File && self.audit.path.is_none() {
            return Err(self.err("audit.path", "required when audit.sink = \"file\""));
        }
        if self.policies.dirs.is_empty() {
            return Err(self.err("policies.dirs", "name at least one directory"));
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let key = format!("upstreams[{i}]");
            if !names.insert(u.name.as_str()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate upstream {:?}", u.name),
                ));
            }
            crate::proxy::upstream::UpstreamUrl::parse(&u.base_url)
                .map_err(|r| self.err(format!("{key}.base_url"), r))?;
            match u.auth_header.as_str() {
                "authorization" | "x-api-key" => {}
                other => {
                    return Err(self.err(
                        format!("{key}.auth_header"),
                        format!("{other:?}: expected \"authorization\" or \"x-api-key\""),
                    ))
                }
            }
            if let Some(var) = &u.api_key_env {
                if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err(self.err(
                        format!("{key}.api_key_env"),
                        format!("environment variable {var} is not set or empty"),
                    ));
                }
            }
        }
        let mut backend_names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if b.name == "rules" || !backend_names.insert(b.name.as_str()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate or reserved backend name {:?}", b.name),
                ));
            }
            match b.kind {
                BackendKind::Remote => {
                    let u: Result<http::Uri, _> = b.base_url.parse();
                    if !matches!(
                        u.as_ref().map(|u| u.scheme_str()),
                        Ok(Some("http")) | Ok(Some("https"))
                    ) {
                        return Err(self.err(
                            format!("{key}.base_url"),
                            format!("{:?}: expected http(s)://host[:port]/v1", b.base_url),
                        ));
                    }
                    if b.model.is_empty() {
                        return Err(
                            self.err(format!("{key}.model"), "required for kind = \"remote\"")
                        );
                    }
                    if b.model_path.is_some() || b.hf_model_id.is_some() {
                        return Err(
                            self.err(key, "model_path and hf_model_id are for kind = \"local\"")
                        );
                    }
                }
                BackendKind::Local => {
                    if b.model_path.is_some() == b.hf_model_id.is_some() {
                        return Err(self.err(
                            key,
                            "kind = \"local\" needs exactly one of model_path and hf_model_id",
                        ));
                    }
                    if !b.base_url.is_empty() || b.api_key_env.is_some() {
                        return Err(
                            self.err(key, "base_url and api_key_env are for kind = \"remote\"")
                        );
                    }
                    if b.threads == Some(0) {
                        return Err(self.err(format!("{key}.threads"), "must be at least 1"));
                    }
                }
            }
            if b.max_concurrency == 0 || b.timeout_ms == 0 || b.max_tokens == 0 {
                return Err(self.err(
                    key,
                    "max_concurrency, timeout_ms and max_tokens must be positive",
                ));
            }
            if b.violation_threshold
                .is_some_and(|t| !(0.0..=1.0).contains(&t))
            {
                return Err(self.err(
                    format!("{key}.violation_threshold"),
                    "expected a probability within 0..1",
                ));
            }
            if let Some([lo, hi]) = b.escalate_band {
                if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                    return Err(self.err(
                        format!("{key}.escalate_band"),
                        "expected [low, high] within 0..1",
                    ));
                }
            }
            if let Some(var) = &b.api_key_env {
                if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err(self.err(
                        format!("{key}.api_key_env"),
                        format!("environment variable {var} is not set or empty"),
                    ));
                }
            }
        }
        let mut paths = HashSet::new();
        let mut route_names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !route_names.insert(r.name.as_str()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate route {:?}", r.name),
                ));
            }
            if !r.path.starts_with('/') {
                return Err(self.err(format!("{key}.path"), "must start with '/'"));
            }
            if !paths.insert(r.path.as_str()) {
                return Err(self.err(
                    format!("{key}.path"),
                    format!("{:?} is already routed", r.path),
                ));
            }
            if Api::from_name(&r.api).is_none() {
                return Err(self.err(
                    format!("{key}.api"),
                    format!(
                        "unknown api {:?}: expected openai-chat, openai-completions, openai-responses or anthropic-messages",
                        r.api
                    ),
                ));
            }
            if !names.contains(r.upstream.as_str()) {
                return Err(self.err(
                    format!("{key}.upstream"),
                    format!("no upstream named {:?}", r.upstream),
                ));
            }
            if r.classifier_deadline_ms == 0 {
                return Err(self.err(format!("{key}.classifier_deadline_ms"), "must be positive"));
            }
            if r.output.window_chars == 0 {
                return Err(self.err(format!("{key}.output.window_chars"), "must be positive"));
            }
            if r.output.overlap_chars >= r.output.window_chars {
                return Err(self.err(
                    format!("{key}.output.overlap_chars"),
                    "must be smaller than window_chars",
                ));
            }
            for (j, p) in r.policies.iter().enumerate() {
                if p.select.trim().is_empty() {
                    return Err(self.err(format!("{key}.policies[{j}].select"), "empty"));
                }
                if p.directions.is_empty() {
                    return Err(self.err(
                        format!("{key}.policies[{j}].directions"),
                        "name at least one of \"input\", \"output\"",
                    ));
                }
                if let Some(r) = p.sample_rate {
                    if !(r > 0.0 && r <= 1.0) {
                        return Err(self.err(
                            format!("{key}.policies[{j}].sample_rate"),
                            "expected a share in (0, 1]",
                        ));
                    }
                    if p.action == Some(Action::Block) {
                        return Err(self.err(
                            format!("{key}.policies[{j}].sample_rate"),
                            "only for annotate and shadow bindings: a blocking policy judges every request",
                        ));
                    }
                }
            }
        }
        if let Some(var) = &self.moderation.token_env {
            if secret_from_env(var).is_none() {
                return Err(self.err(
                    "moderation.token_env",
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
        if self.unmatched.action == UnmatchedAction::Passthrough {
            match &self.unmatched.upstream {
                None => {
                    return Err(self.err(
                        "unmatched.upstream",
                        "required when unmatched.action = \"passthrough\"",
                    ))
                }
                Some(u) if !names.contains(u.as_str()) => {
                    return Err(self.err("unmatched.upstream", format!("no upstream named {u:?}")))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn policy_dirs(&self) -> Vec<PathBuf> {
        self.policies.dirs.iter().map(|d| self.resolve(d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:9999"

[[routes]]
name = "chat"
path = "/v1/chat/completions"
api = "openai-chat"
upstream = "mock"
[[routes.policies]]
select = "general/*"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(MIN, "t.toml", Path::new("/etc/gg")).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.routes[0].fail_mode, FailMode::Closed);
        assert_eq!(c.routes[0].policies[0].directions, vec![Direction::Input]);
        assert_eq!(c.policy_dirs(), vec![PathBuf::from("/etc/gg/policies")]);
    }

    #[test]
    fn local_backend_parses_with_model_defaults() {
        let text = format!(
            "{MIN}\n[[backends]]\nname = \"small\"\nkind = \"local\"\nmodel_path = \"m.gguf\"\nfamily = \"chat\"\n"
        );
        let c = Config::parse(&text, "t.toml", Path::new(".")).unwrap();
        let b = &c.backends[0];
        assert_eq!(b.kind, BackendKind::Local);
        assert_eq!(b.dtype, ModelDtype::F32);
        assert_eq!(b.weights, WeightsMode::Auto);
        assert_eq!(b.device, "cpu");
        assert_eq!((b.max_queue, b.prefix_cache_entries), (32, 16));
        assert_eq!(b.cache_entries, 10_000);
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_line() {
        let text = format!("{MIN}\n[limits]\nmax_body = 3\n");
        let e = Config::parse(&text, "t.toml", Path::new(".")).unwrap_err();
        let s = e.to_string();
        // The line the unknown key is on (the error's span starts at the key, column 0).
        let line = text
            .lines()
            .position(|l| l.starts_with("max_body"))
            .unwrap()
            + 1;
        assert!(s.starts_with(&format!("t.toml: line {line}:")), "{s}");
        assert!(s.contains("max_body"), "{s}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (MIN.replace("openai-chat", "openai-chatt"), "routes[0].api"),
            (
                MIN.replace("upstream = \"mock\"", "upstream = \"nope\""),
                "routes[0].upstream",
            ),
            (
                MIN.replace("http://127.0.0.1:9999", "ftp://x"),
                "upstreams[0].base_url",
            ),
            (
                format!("[admin]\nlisten = \"0.0.0.0:9090\"\n{MIN}"),
                "admin.token_env",
            ),
            (
                format!("[server]\nlisten = \"nope\"\n{MIN}"),
                "server.listen",
            ),
            (format!("[audit]\nsink = \"file\"\n{MIN}"), "audit.path"),
            (
                format!("{MIN}sample_rate = 1.5\n"),
                "routes[0].policies[0].sample_rate",
            ),
            (
                format!("{MIN}action = \"block\"\nsample_rate = 0.5\n"),
                "routes[0].policies[0].sample_rate",
            ),
            (
                format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"local\"\n"),
                "backends[0]",
            ),
            (
                format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"local\"\nmodel_path = \"a.gguf\"\nhf_model_id = \"x/y\"\n"),
                "backends[0]",
            ),
            (
                format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"local\"\nmodel_path = \"a.gguf\"\nbase_url = \"http://x/v1\"\n"),
                "backends[0]",
            ),
            (
                format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"remote\"\nbase_url = \"http://x/v1\"\n"),
                "backends[0].model",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text, "t.toml", Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }
}
