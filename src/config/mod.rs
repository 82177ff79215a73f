//! The TOML configuration: types, defaults and validation.
//!
//! Every key is spelled out with `deny_unknown_fields` so a typo is an error at start, not a silently
//! ignored setting. Validation errors name the file, the key and the reason.

mod route;
pub mod secret;
mod telemetry;
mod upstream;

use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::classify::backends::BackendConfig;
pub use route::{
    Action, BlockStyle, Direction, FailMode, InputMode, ModelCall, NonTextParts, OutputConfig,
    RouteConfig, RoutePolicy,
};
pub use secret::secret_from_env;
pub use telemetry::TelemetrySection;
pub use upstream::{UpstreamConfig, UpstreamUrl};

use crate::urlpath::{Endpoint, Pattern};

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
    /// Judgement off the request path (annotate and shadow bindings that need a model).
    #[serde(default)]
    pub background: BackgroundSection,
    /// Policy profiles chosen per request (`src/policy/profile.rs`); without it each route
    /// binds its own `policies`.
    #[serde(default)]
    pub profiles: Option<ProfilesSection>,
    /// Traces over OTLP; off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub telemetry: TelemetrySection,
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
    /// Which decisions keep the text that was judged, for review (`src/review/`).
    #[serde(default)]
    pub capture: CaptureMode,
    /// Most characters of judged text kept per decision (after secrets are masked).
    #[serde(default = "default_capture_chars")]
    pub capture_max_chars: usize,
    /// How long captured text is kept before the purge deletes it (`7d`, `12h`).
    #[serde(default = "default_capture_retention", with = "humantime_serde_str")]
    pub capture_retention: std::time::Duration,
    /// The review store when it is SQLite (the default): a file, relative to the config file.
    #[serde(default = "default_store_path")]
    pub store_path: PathBuf,
    /// An environment variable holding a PostgreSQL URL: set, the review store is that database
    /// (one queue for every replica) instead of the SQLite file.
    #[serde(default)]
    pub store_url_env: Option<String>,
    /// Captured decisions waiting for the store's writer; beyond this they are shed and counted.
    #[serde(default = "default_store_queue")]
    pub store_queue: usize,
}

/// `[audit] capture`: which decisions keep the text the classifier judged.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No text is kept and no review store is opened.
    #[default]
    None,
    /// Violations (below-threshold hits included), classifier errors and shadow disagreements.
    Flagged,
    /// Every decision.
    All,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::None => "none",
            CaptureMode::Flagged => "flagged",
            CaptureMode::All => "all",
        }
    }
}

fn default_capture_chars() -> usize {
    16_384
}
fn default_capture_retention() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 86_400)
}
fn default_store_path() -> PathBuf {
    PathBuf::from("review.db")
}
fn default_store_queue() -> usize {
    8_192
}

/// A duration written as humantime text (`7d`, `36h`, `90min`).
mod humantime_serde_str {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
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
    #[serde(default = "route::default_deadline")]
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

/// `[profiles]`: where the profiles file is. It is read and hot-reloaded with the policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesSection {
    /// Relative to the config file.
    pub file: PathBuf,
}

/// What happens to a request that no route guards and `unmatched.allow` does not list.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedAction {
    /// Proxied untouched, unjudged, to `upstream`: every endpoint the upstream has, model-facing
    /// ones included.
    Passthrough,
    /// Answered 404, naming the setting that would open it.
    Refuse,
}

/// The endpoints `unmatched.allow` lists when the config names none: model listings, which
/// carry no model input and return no model output.
pub const DEFAULT_ALLOW: [&str; 2] = ["GET /v1/models", "GET /v1/models/{model}"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmatchedSection {
    #[serde(default = "default_unmatched")]
    pub action: UnmatchedAction,
    /// Where allowed (and, with `passthrough`, all other unrouted) requests go.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Endpoints (`"GET /v1/models/{model}"`) that pass to `upstream` unjudged; `None`:
    /// [`DEFAULT_ALLOW`].
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

fn default_unmatched() -> UnmatchedAction {
    UnmatchedAction::Refuse
}

impl Default for UnmatchedSection {
    fn default() -> Self {
        UnmatchedSection {
            action: default_unmatched(),
            upstream: None,
            allow: None,
        }
    }
}

impl UnmatchedSection {
    /// The allow list as written, or the default one.
    pub fn allow_list(&self) -> Vec<&str> {
        match &self.allow {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => DEFAULT_ALLOW.to_vec(),
        }
    }
}

/// Bounds of the background queue that judges annotate and shadow bindings off the request path.
/// When `max_pending` jobs are queued or running, new ones are shed (counted and audited as
/// `shed`): traffic never waits for them, and memory stays bounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundSection {
    /// Jobs judged at once.
    #[serde(default = "default_background_concurrency")]
    pub max_concurrent: usize,
    /// Jobs queued or running, beyond which new ones are shed.
    #[serde(default = "default_background_pending")]
    pub max_pending: usize,
}

fn default_background_concurrency() -> usize {
    4
}

fn default_background_pending() -> usize {
    1024
}

impl Default for BackgroundSection {
    fn default() -> Self {
        BackgroundSection {
            max_concurrent: default_background_concurrency(),
            max_pending: default_background_pending(),
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
        self.validate_listeners()?;
        self.validate_limits()?;
        let upstreams = self.validate_upstreams()?;
        self.validate_backends()?;
        self.validate_routes(&upstreams)?;
        self.validate_endpoints(&upstreams)?;
        self.telemetry
            .validate()
            .map_err(|(key, reason)| self.err(key, reason))
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
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
            if secret_from_env(var).is_none() {
                return Err(self.err(
                    "admin.token_env",
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
        if self.server.threads == 0 {
            return Err(self.err("server.threads", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.background.max_concurrent == 0 {
            return Err(self.err("background.max_concurrent", "must be positive"));
        }
        if self.background.max_pending < self.background.max_concurrent {
            return Err(self.err(
                "background.max_pending",
                "must be at least background.max_concurrent",
            ));
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
        if self.audit.capture != CaptureMode::None {
            if self.audit.capture_max_chars == 0 {
                return Err(self.err("audit.capture_max_chars", "must be positive"));
            }
            if self.audit.capture_retention.is_zero() {
                return Err(self.err("audit.capture_retention", "must be positive"));
            }
            if self.audit.store_queue == 0 {
                return Err(self.err("audit.store_queue", "must be positive"));
            }
            if let Some(var) = &self.audit.store_url_env {
                if secret_from_env(var).is_none() {
                    return Err(self.err(
                        "audit.store_url_env",
                        format!("environment variable {var} is not set or empty"),
                    ));
                }
            }
        }
        if self.policies.dirs.is_empty() {
            return Err(self.err("policies.dirs", "name at least one directory"));
        }
        if self
            .profiles
            .as_ref()
            .is_some_and(|p| p.file.as_os_str().is_empty())
        {
            return Err(self.err("profiles.file", "empty"));
        }
        Ok(())
    }

    /// The upstreams' names, once each is valid.
    fn validate_upstreams(&self) -> Result<HashSet<&str>, ConfigError> {
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let key = format!("upstreams[{i}]");
            if !names.insert(u.name.as_str()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate upstream {:?}", u.name),
                ));
            }
            u.validate()
                .map_err(|(k, reason)| self.err(format!("{key}.{k}"), reason))?;
        }
        Ok(names)
    }

    fn validate_backends(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if b.name() == "rules" || !names.insert(b.name()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate or reserved backend name {:?}", b.name()),
                ));
            }
            b.validate()
                .map_err(|(k, reason)| self.err(sub_key(&key, &k), reason))?;
        }
        Ok(())
    }

    fn validate_routes(&self, upstreams: &HashSet<&str>) -> Result<(), ConfigError> {
        let mut paths: Vec<(Pattern, &str)> = Vec::new();
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !names.insert(r.name.as_str()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate route {:?}", r.name),
                ));
            }
            r.validate()
                .map_err(|(k, reason)| self.err(sub_key(&key, &k), reason))?;
            let pattern = Pattern::parse(&r.path).expect("validated with the route");
            // Two routes for one path would leave the wire format it is judged in to the order
            // of the routes; a literal path beside a pattern is fine (the literal wins).
            let both_or_neither =
                |p: &Pattern| p.literal().is_some() == pattern.literal().is_some();
            if let Some((_, other)) = paths
                .iter()
                .find(|(p, _)| both_or_neither(p) && p.overlaps(&pattern))
            {
                return Err(self.err(
                    format!("{key}.path"),
                    format!(
                        "{:?} matches paths that route {other:?} matches too",
                        r.path
                    ),
                ));
            }
            paths.push((pattern, r.name.as_str()));
            if !upstreams.contains(r.upstream.as_str()) {
                return Err(self.err(
                    format!("{key}.upstream"),
                    format!("no upstream named {:?}", r.upstream),
                ));
            }
        }
        Ok(())
    }

    /// The moderation endpoints and unmatched paths.
    fn validate_endpoints(&self, upstreams: &HashSet<&str>) -> Result<(), ConfigError> {
        if let Some(var) = &self.moderation.token_env {
            if secret_from_env(var).is_none() {
                return Err(self.err(
                    "moderation.token_env",
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
        let listed = self.unmatched.allow.as_ref().is_some_and(|a| !a.is_empty());
        match &self.unmatched.upstream {
            None if self.unmatched.action == UnmatchedAction::Passthrough => {
                return Err(self.err(
                    "unmatched.upstream",
                    "required when unmatched.action = \"passthrough\"",
                ))
            }
            None if listed => {
                return Err(self.err(
                    "unmatched.upstream",
                    "required when unmatched.allow lists endpoints",
                ))
            }
            Some(u) if !upstreams.contains(u.as_str()) => {
                return Err(self.err("unmatched.upstream", format!("no upstream named {u:?}")))
            }
            _ => {}
        }
        for (i, entry) in self.unmatched.allow_list().into_iter().enumerate() {
            let key = format!("unmatched.allow[{i}]");
            let e = Endpoint::parse(entry).map_err(|reason| self.err(&key, reason))?;
            // A POST on a route's path is that route's: the entry would never apply, and reads
            // as though it opened the route.
            if e.method == http::Method::POST {
                if let Some(r) = self
                    .routes
                    .iter()
                    .find(|r| Pattern::parse(&r.path).is_ok_and(|p| p.overlaps(&e.pattern)))
                {
                    return Err(self.err(
                        key,
                        format!("{entry:?}: route {:?} guards this path", r.name),
                    ));
                }
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

    /// The profiles file, resolved, when `[profiles]` is set.
    pub fn profiles_file(&self) -> Option<PathBuf> {
        self.profiles.as_ref().map(|p| self.resolve(&p.file))
    }
}

/// `key` of an entry (`routes[2]`) and a key within it (`output.window_chars`, or "" for the entry).
fn sub_key(entry: &str, key: &str) -> String {
    if key.is_empty() {
        entry.to_string()
    } else {
        format!("{entry}.{key}")
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
        let BackendConfig::Local(b) = &c.backends[0] else {
            panic!("a local backend: {:?}", c.backends[0]);
        };
        use crate::classify::backends::local::{ModelDtype, WeightsMode};
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
                format!("{MIN}[routes.refusal]\nmessage = \" \"\nlanguage = \"en\"\n"),
                "routes[0].refusal.message",
            ),
            (
                format!("{MIN}[routes.refusal]\nmessage = \"No.\"\nlanguage = \"en\"\n[routes.refusal.messages]\nde_CH = \"Nein.\"\n"),
                "routes[0].refusal.messages.de_CH",
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
                format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"remote\"\nbase_url = \"http://x/v1\"\n"),
                "backends[0].model",
            ),
        ];
        let second = |path: &str| {
            format!("{MIN}\n[[routes]]\nname = \"b\"\npath = \"{path}\"\napi = \"openai-chat\"\nupstream = \"mock\"\n")
        };
        let paths_and_endpoints = [
            (
                MIN.replace("/v1/chat/completions", "/v1/chat//completions"),
                "routes[0].path",
            ),
            (
                MIN.replace("/v1/chat/completions", "/v1/{a b}/completions"),
                "routes[0].path",
            ),
            (second("/V1/Chat/Completions"), "routes[1].path"),
            (
                format!(
                    "{}\n[[routes]]\nname = \"c\"\npath = \"/a/x/{{y}}\"\napi = \"openai-chat\"\nupstream = \"mock\"\n",
                    second("/a/{x}/c")
                ),
                "routes[2].path",
            ),
            (
                MIN.replace("openai-chat", "openai-files") + "directions = [\"input\", \"output\"]\n",
                "routes[0].policies[0].directions",
            ),
            (
                format!("{MIN}\n[unmatched]\nallow = [\"GET /v1/models\"]\n"),
                "unmatched.upstream",
            ),
            (
                format!("{MIN}\n[unmatched]\nupstream = \"mock\"\nallow = [\"GET /v1/models/../x\"]\n"),
                "unmatched.allow[0]",
            ),
            (
                format!("{MIN}\n[unmatched]\nupstream = \"mock\"\nallow = [\"get /v1/models\"]\n"),
                "unmatched.allow[0]",
            ),
            (
                format!("{MIN}\n[unmatched]\nupstream = \"mock\"\nallow = [\"GET /v1/models\", \"POST /v1/chat/completions\"]\n"),
                "unmatched.allow[1]",
            ),
        ];
        for (text, key) in cases.into_iter().chain(paths_and_endpoints) {
            let e = Config::parse(&text, "t.toml", Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        // A literal path beside a pattern that also matches it is not ambiguous: the literal wins.
        let ok = second("/v1/{x}/completions");
        Config::parse(&ok, "t.toml", Path::new(".")).unwrap();
        // A key of the other kind of backend is unknown to this kind: an error naming the key, at
        // the entry's line (serde reads a tagged entry whole before it knows the kind).
        let text = format!("{MIN}\n[[backends]]\nname = \"m\"\nkind = \"local\"\nmodel_path = \"a.gguf\"\nbase_url = \"http://x/v1\"\n");
        let e = Config::parse(&text, "t.toml", Path::new(".")).unwrap_err();
        let line = text.lines().position(|l| l == "[[backends]]").unwrap() + 1;
        assert_eq!(e.key, format!("line {line}"), "{e}");
        assert!(e.reason.contains("unknown field `base_url`"), "{e}");
    }
}
