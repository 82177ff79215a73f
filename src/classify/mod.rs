//! Classifiers: the seam between the proxy and whatever judges content against a policy.
//!
//! The proxy only sees [`Classifier`] and [`Cascade`]; a new backend (the in-process model, a
//! remote serving engine) is one new implementation, with no change to the proxy.

pub mod backends;
pub mod cache;
pub mod cascade;
pub mod gguf;
pub mod joined;
pub mod joint;
#[cfg(feature = "local-model")]
pub mod local;
pub mod model;
pub mod normalize;
pub mod prompt;
pub mod remote;
pub mod rules;
pub mod verdict;

use async_trait::async_trait;
use std::sync::OnceLock;
use std::time::Instant;

use crate::policy::Policy;
use crate::wire::{Segment, Source};

pub use cascade::Cascade;
use joined::Joined;
use normalize::{Reading, Readings};

/// One piece of text to classify, with its normalised readings computed once and shared by every
/// policy that looks at it.
#[derive(Debug)]
pub struct Item {
    pub source: Source,
    pub location: String,
    pub raw: String,
    readings: Readings,
    /// The leet folding of each reading, made when a leet rule first asks.
    leet: [OnceLock<String>; 3],
}

impl Item {
    /// The written reading: what the verdict cache keys on.
    pub fn norm(&self) -> &str {
        self.readings.written()
    }

    pub fn reading(&self, r: Reading) -> &str {
        self.readings.get(r)
    }

    /// The readings of this item that differ from one another.
    pub fn readings(&self) -> impl Iterator<Item = Reading> + '_ {
        Reading::ALL.into_iter().filter(|&r| self.readings.has(r))
    }

    pub fn leet(&self, r: Reading) -> &str {
        self.leet[r as usize].get_or_init(|| normalize::fold_leet(self.reading(r)))
    }
}

/// Everything one direction of one exchange asks the classifiers to judge (for input: the whole
/// conversation, instructions and tools included).
#[derive(Debug, Default)]
pub struct Content {
    pub items: Vec<Item>,
    /// The items joined as the model reads them (see `joined`). Every item is whole in them, so
    /// one scan per policy answers "does any unanchored rule match anywhere?", and only a hit pays
    /// for the per-item scan that finds where.
    joined: Vec<Joined>,
}

impl Content {
    pub fn from_segments(segments: Vec<Segment>) -> Content {
        let items: Vec<Item> = segments
            .into_iter()
            .map(|s| Item {
                source: s.source,
                readings: normalize::readings(&s.text),
                raw: s.text,
                location: s.location,
                leet: Default::default(),
            })
            .collect();
        let joined = joined::joins(&items);
        Content { items, joined }
    }

    pub fn joined(&self) -> &[Joined] {
        &self.joined
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Where a model call's time went, for the audit record.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Waiting for a free slot in the backend's queue.
    pub queue_ms: f64,
    /// Reading the prompt, up to the first answer token (`None` when the host does not say).
    pub prefill_ms: Option<f64>,
    /// Generating the rest of the answer.
    pub decode_ms: Option<f64>,
}

/// A backend's judgement of content against one policy.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub violation: bool,
    /// The policy code (category) that applies, e.g. `SH1.a`.
    pub code: Option<String>,
    /// The deterministic rule that fired, when a rule decided.
    pub rule_id: Option<String>,
    pub confidence: Option<f32>,
    /// The backend's explanation, for the audit log only: never sent to clients.
    pub rationale: Option<String>,
    /// Where in the content the violation was found (e.g. `messages[3].content`).
    pub location: Option<String>,
    pub backend: &'static str,
    /// For model backends: which model, and the token counts of the call.
    pub model: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Answered from the verdict cache (no model call).
    pub cache_hit: bool,
    /// Prompt tokens the host did not have to prefill (prefix reuse), when it says.
    pub cached_prompt_tokens: Option<u32>,
    pub timing: Option<Timing>,
    /// False when a sampled policy skipped the model for this request (only cheap rules ran).
    pub sampled_out: bool,
    /// Judged in one model call with this many policies in all (`model_call = "joint"`): the
    /// token counts and timing are that shared call's, on each of its policies' verdicts.
    pub joint_with: Option<u32>,
}

impl Verdict {
    pub fn allow(backend: &'static str) -> Verdict {
        Verdict {
            violation: false,
            code: None,
            rule_id: None,
            confidence: None,
            rationale: None,
            location: None,
            backend,
            model: None,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ClassifyError {
    #[error("classifier missed its deadline")]
    Deadline,
    #[error("classifier is overloaded")]
    Overloaded,
    #[error("no configured backend can classify this policy")]
    NoBackend,
    #[error("classifier failed: {0}")]
    Backend(String),
    /// Not judged: a blocking policy had already blocked the exchange, so its model call was
    /// never started or was cancelled.
    #[error("not judged: another policy blocked first")]
    Skipped,
    /// Not judged: the background queue for judgement off the request path was full.
    #[error("not judged: the background queue was full")]
    Shed,
    /// Not judged: the content could not be read within its bounds (a reply that had already
    /// gone to the client over `routes.output.max_reply_bytes`, or unreadable); says why.
    #[error("not judged: {0}")]
    NotJudged(String),
}

impl ClassifyError {
    pub fn kind(&self) -> &'static str {
        match self {
            ClassifyError::Deadline => "deadline",
            ClassifyError::Overloaded => "overloaded",
            ClassifyError::NoBackend => "no_backend",
            ClassifyError::Backend(_) => "backend",
            ClassifyError::Skipped => "skipped",
            ClassifyError::Shed => "shed",
            ClassifyError::NotJudged(_) => "not_judged",
        }
    }

    /// Whether a classifier failed (counted and logged as a fault), rather than being spared on
    /// purpose.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            ClassifyError::Skipped | ClassifyError::Shed | ClassifyError::NotJudged(_)
        )
    }

    /// What a client may be told. A backend's message can carry the model's own words (an
    /// unparseable answer is quoted, and a cut-off JSON answer is mostly its rationale) or a model
    /// server's error body: those go to the audit record and the log, never to the client.
    pub fn public_reason(&self) -> &'static str {
        match self {
            ClassifyError::Backend(_) => "classifier failed",
            ClassifyError::Deadline => "classifier missed its deadline",
            ClassifyError::Overloaded => "classifier is overloaded",
            ClassifyError::NoBackend => "no configured backend can classify this policy",
            ClassifyError::Skipped => "not judged",
            ClassifyError::Shed => "classifier is overloaded",
            ClassifyError::NotJudged(_) => "not judged",
        }
    }
}

/// A backend that judges content against a policy.
///
/// Implementations must be cancellation-safe: the caller drops the future when `deadline` passes,
/// and a dropped call must leave the backend usable. `deadline` is given so a backend can also
/// budget its own work (e.g. cap generated tokens).
#[async_trait]
pub trait Classifier: Send + Sync {
    /// Stable name recorded in audit records and metrics.
    fn name(&self) -> &'static str;

    /// Whether this backend has anything to say about `policy` (the rules backend needs rules; a
    /// model backend can read any policy text).
    fn supports(&self, policy: &Policy) -> bool;

    /// Whether a "no violation" from this backend settles the question, or later stages must
    /// still look (a keyword miss proves little; a model's judgement is final).
    fn allow_is_final(&self) -> bool;

    /// Cheap backends (deterministic rules) always run; expensive ones (models) can be skipped by
    /// sampling for policies that only annotate or record.
    fn is_cheap(&self) -> bool {
        false
    }

    async fn classify(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError>;

    /// Whether [`Classifier::classify_now`] always answers: a backend that never waits
    /// (deterministic rules). Lets the cascade judge a policy without a runtime.
    fn answers_now(&self) -> bool {
        false
    }

    /// The verdict computed in place, with no future, timer or allocation around it, for
    /// backends that never wait; `None` (the default) means "await `classify`".
    fn classify_now(&self, _policy: &Policy, _content: &Content) -> Option<Verdict> {
        None
    }

    /// Prepares for traffic on `policy` (e.g. fills an in-process model's prefix cache with the
    /// policy text). Called when a policy version goes live; the default does nothing.
    async fn warm(&self, _policy: &Policy) {}

    /// Judges `content` against all of `policies` in one call (see `joint`): one result per
    /// policy, in `policies`' order. `None` (the default): not supported, and the caller asks
    /// [`Classifier::classify`] per policy.
    async fn classify_joint(
        &self,
        _policies: &[&Policy],
        _content: &Content,
        _deadline: Instant,
    ) -> Option<Vec<Result<Verdict, ClassifyError>>> {
        None
    }

    /// [`Classifier::warm`] for the joint prompt of `policies`.
    async fn warm_joint(&self, _policies: &[&Policy]) {}
}
