//! `[[routes]]`: which path speaks which API, goes to which upstream, and is judged against which
//! policies, with its fail mode, deadlines and output guard.

use serde::Deserialize;

use crate::policy::refusal::Refusal;
use crate::wire::batch::Batch;

pub use crate::policy::binding::{Action, Direction, FailMode};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// The request path this route handles (query string ignored), matched ignoring ASCII case; a
    /// `{name}` segment matches any one segment (`/openai/deployments/{deployment}/chat/completions`).
    pub path: String,
    /// Wire format: openai-chat, openai-completions, openai-responses, anthropic-messages, or a
    /// batch upload: openai-files, anthropic-message-batches.
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
    /// When the upstream call starts relative to the input verdict.
    #[serde(default)]
    pub input_mode: InputMode,
    /// What a blocked client reads when the policy that fired sets no `[refusal]` of its own.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// How a model backend is asked about this route's policies.
    #[serde(default)]
    pub model_call: ModelCall,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ModelCall {
    /// One model call per policy.
    #[default]
    PerPolicy,
    /// The policies of one direction that reach the model in one call (`classify::joint`): the
    /// blocking ones on the request path, the annotate and shadow ones off it. One prefill of the
    /// content instead of one per policy; the answers carry no P(violation), so
    /// `violation_threshold` and `escalate_band` do not apply to them.
    Joint,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// The request goes upstream once every blocking input binding allows it.
    #[default]
    Before,
    /// The upstream call starts at once, beside the model's verdict; the reply is held until
    /// every blocking binding has decided, and a violation closes the upstream connection (a
    /// blocked request may still cost upstream tokens).
    Parallel,
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
pub(super) fn default_deadline() -> u64 {
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

impl RouteConfig {
    /// Checks one route on its own (names and paths across routes are checked by the config);
    /// errors name the key under `routes[i]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        crate::urlpath::Pattern::parse(&self.path)
            .map_err(|reason| ("path".to_string(), reason))?;
        let batch = Batch::from_name(&self.api);
        if crate::wire::Api::from_name(&self.api).is_none() && batch.is_none() {
            let mut names = crate::wire::Api::names();
            names.extend(Batch::ALL.map(Batch::name));
            return Err((
                "api".into(),
                format!(
                    "unknown api {:?}: expected one of {}",
                    self.api,
                    names.join(", ")
                ),
            ));
        }
        if self.classifier_deadline_ms == 0 {
            return err("classifier_deadline_ms", "must be positive");
        }
        if self.output.window_chars == 0 {
            return err("output.window_chars", "must be positive");
        }
        if self.output.overlap_chars >= self.output.window_chars {
            return err("output.overlap_chars", "must be smaller than window_chars");
        }
        if let Some(r) = &self.refusal {
            r.validate()
                .map_err(|(key, reason)| (format!("refusal.{key}"), reason))?;
        }
        for (j, p) in self.policies.iter().enumerate() {
            p.validate()
                .map_err(|(key, reason)| (format!("policies[{j}].{key}"), reason.to_string()))?;
            if batch.is_some() && p.directions.contains(&Direction::Output) {
                // The reply to an upload is a file or batch object; the model's answers come
                // later, from other endpoints.
                return Err((
                    format!("policies[{j}].directions"),
                    "a batch upload's reply carries no model output: bind input policies only"
                        .to_string(),
                ));
            }
        }
        Ok(())
    }
}

impl RoutePolicy {
    /// Checks one selection on its own; errors name the key within it.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.select.trim().is_empty() {
            return Err(("select", "empty"));
        }
        if self.directions.is_empty() {
            return Err(("directions", "name at least one of \"input\", \"output\""));
        }
        if let Some(r) = self.sample_rate {
            if !(r > 0.0 && r <= 1.0) {
                return Err(("sample_rate", "expected a share in (0, 1]"));
            }
            if self.action == Some(Action::Block) {
                return Err((
                    "sample_rate",
                    "only for annotate and shadow bindings: a blocking policy judges every request",
                ));
            }
        }
        Ok(())
    }
}
