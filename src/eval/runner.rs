//! Runs labelled cases through a classifier cascade, concurrently, with per-case latency.

use futures_util::stream::{self, StreamExt};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cases::Case;
use crate::classify::backends::{self, BuildContext, ModelLoad};
use crate::classify::{Cascade, ClassifyError, Verdict};
use crate::config::Config;
use crate::metrics::Metrics as PromMetrics;
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Tp,
    Fp,
    Tn,
    Fn,
    /// The classifier failed; counted against it (as FN for violating cases, FP for allowed).
    Error,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Tp => "TP",
            Outcome::Fp => "FP",
            Outcome::Tn => "TN",
            Outcome::Fn => "FN",
            Outcome::Error => "ERROR",
        }
    }

    /// Whether the case passed (the classifier agreed with the label).
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Tp | Outcome::Tn)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    pub id: String,
    pub label: u8,
    /// What the classifier said; `None` when it failed.
    pub predicted: Option<bool>,
    pub outcome: Outcome,
    #[serde(default)]
    pub expected_code: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub rule_id: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub rationale: Option<String>,
    /// P(violation) as the verdict gave it (a rule hit: 1; a model: its answer's probability);
    /// `None` when the verdict carried none.
    #[serde(default)]
    pub score: Option<f32>,
    #[serde(default)]
    pub error: Option<String>,
    pub latency_us: u64,
    #[serde(default)]
    pub preview: String,
    #[serde(default)]
    pub note: Option<String>,
    /// Model calls made for this case (a joint call once, however many policies it judged; a
    /// cache hit or a rule: none).
    #[serde(default)]
    pub model_calls: u32,
    /// Their prompt tokens, where the backend counts them.
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    /// Their answer tokens, where the backend counts them.
    #[serde(default)]
    pub completion_tokens: Option<u32>,
    /// Their time reading the prompt and writing the answer, where the host says.
    #[serde(default)]
    pub prefill_ms: Option<f64>,
    #[serde(default)]
    pub decode_ms: Option<f64>,
    /// `policy test --joint`: the same call's answers for the other policies, recorded but not
    /// scored (the case is labelled for its own policy only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<OtherAnswer>,
}

/// A joint call's answer for a policy the case is not labelled for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OtherAnswer {
    pub policy: String,
    /// `None` when that policy's answer failed.
    pub predicted: Option<bool>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl CaseResult {
    /// A true positive whose code differs from the case's expected code.
    /// The case's score for ranking metrics: P(violation) where the verdict gave one, else its
    /// answer as 0 or 1; a failed case gets the worst score for its label, as the confusion
    /// matrix counts it against the classifier.
    pub fn ranking_score(&self) -> f64 {
        match (self.outcome, self.score, self.predicted) {
            (Outcome::Error, _, _) => (self.label == 0) as u8 as f64,
            (_, Some(s), _) => s as f64,
            (_, None, p) => p.unwrap_or(false) as u8 as f64,
        }
    }

    /// Whether a model (not a rule, not a bare answer) gave this case a probability.
    pub fn model_scored(&self) -> bool {
        self.score.is_some() && self.backend.as_deref().is_some_and(|b| b != "rules")
    }

    pub fn code_mismatch(&self) -> bool {
        self.outcome == Outcome::Tp
            && self.expected_code.is_some()
            && self.code.is_some()
            && self.expected_code != self.code
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub concurrency: usize,
    /// Per-case deadline.
    pub timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 8,
            timeout: Duration::from_secs(120),
        }
    }
}

/// The cascade `policy test`, `eval` and `classify` use: the deterministic rules, then (with
/// `backend` other than `rules`) that backend from `config`'s `[[backends]]`. Returns the cascade
/// and a label naming its stages.
pub fn build_cascade(
    config: Option<&Path>,
    backend: &str,
) -> anyhow::Result<(Arc<Cascade>, String)> {
    let metrics = Arc::new(PromMetrics::new());
    if backend == "rules" {
        let cx = BuildContext {
            base_dir: Path::new("."),
            metrics: &metrics,
            load: ModelLoad::Load,
        };
        return Ok((
            backends::build_cascade(&[], &cx, Vec::new())?,
            "rules".into(),
        ));
    }
    let Some(path) = config else {
        anyhow::bail!("--backend {backend} needs --config FILE naming it in [[backends]]");
    };
    let cfg = Config::load(path).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
    let b = cfg
        .backends
        .iter()
        .find(|b| b.name() == backend)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.backends.iter().map(|b| b.name()).collect();
            anyhow::anyhow!(
                "{}: no [[backends]] entry named {backend:?} (have: {})",
                path.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let cx = BuildContext {
        base_dir: &cfg.base_dir,
        metrics: &metrics,
        load: ModelLoad::Load,
    };
    let cascade = backends::build_cascade(&[b], &cx, Vec::new())?;
    Ok((cascade, format!("rules+{backend}")))
}

/// Classifies one case against one policy.
pub async fn run_case(
    cascade: &Cascade,
    policy: &Policy,
    case: &Case,
    timeout: Duration,
) -> CaseResult {
    let content = case.content();
    let started = Instant::now();
    let res = cascade
        .classify(policy, &content, Instant::now() + timeout)
        .await;
    let mut r = scored(case, res.as_ref(), started.elapsed());
    cost(&mut r, res.as_ref().ok().into_iter());
    r
}

/// Classifies one case against all of `policies` in one joint call
/// ([`Cascade::classify_joint`]); the case is scored for `policies[own]`, the others' answers
/// are kept in `others`.
pub async fn run_case_joint(
    cascade: &Cascade,
    policies: &[&Policy],
    own: usize,
    case: &Case,
    timeout: Duration,
) -> CaseResult {
    let content = case.content();
    let started = Instant::now();
    let res = cascade
        .classify_joint(policies, &content, Instant::now() + timeout)
        .await;
    let mut r = scored(case, res[own].as_ref(), started.elapsed());
    cost(&mut r, res.iter().filter_map(|v| v.as_ref().ok()));
    r.others = policies
        .iter()
        .zip(&res)
        .enumerate()
        .filter(|(k, _)| *k != own)
        .map(|(_, (p, v))| OtherAnswer {
            policy: p.id.clone(),
            predicted: v.as_ref().ok().map(|v| v.violation),
            code: v.as_ref().ok().and_then(|v| v.code.clone()),
            error: v.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
    r
}

/// Notes on `r` the model calls behind `verdicts` and what they cost: each verdict a model gave
/// (not from the cache) is a call, except that the verdicts of one joint call are one.
fn cost<'a>(r: &mut CaseResult, verdicts: impl Iterator<Item = &'a Verdict>) {
    fn add<T: std::ops::Add<Output = T> + Copy>(sum: &mut Option<T>, x: Option<T>) {
        if let Some(x) = x {
            *sum = Some(match *sum {
                Some(s) => s + x,
                None => x,
            });
        }
    }
    let mut joint = false;
    for v in verdicts.filter(|v| v.model.is_some() && !v.cache_hit) {
        if v.joint_with.is_some() {
            if joint {
                continue;
            }
            joint = true;
        }
        r.model_calls += 1;
        add(&mut r.prompt_tokens, v.prompt_tokens);
        add(&mut r.completion_tokens, v.completion_tokens);
        add(&mut r.prefill_ms, v.timing.and_then(|t| t.prefill_ms));
        add(&mut r.decode_ms, v.timing.and_then(|t| t.decode_ms));
    }
}

/// A case's result from its policy's verdict.
fn scored(case: &Case, res: Result<&Verdict, &ClassifyError>, latency: Duration) -> CaseResult {
    let latency_us = latency.as_micros() as u64;
    let label = case.is_violation();
    let mut r = CaseResult {
        id: case.id.clone(),
        label: case.label,
        predicted: None,
        outcome: Outcome::Error,
        expected_code: case.code.clone(),
        code: None,
        rule_id: None,
        backend: None,
        rationale: None,
        score: None,
        error: None,
        latency_us,
        preview: case.preview(160),
        note: case.note.clone(),
        model_calls: 0,
        prompt_tokens: None,
        completion_tokens: None,
        prefill_ms: None,
        decode_ms: None,
        others: Vec::new(),
    };
    match res {
        Ok(v) => {
            r.predicted = Some(v.violation);
            r.outcome = match (label, v.violation) {
                (true, true) => Outcome::Tp,
                (false, true) => Outcome::Fp,
                (false, false) => Outcome::Tn,
                (true, false) => Outcome::Fn,
            };
            r.code = v.code.clone();
            r.rule_id = v.rule_id.clone();
            r.backend = Some(v.backend.to_string());
            r.rationale = v.rationale.clone();
            r.score = v.confidence;
        }
        Err(e) => r.error = Some(e.to_string()),
    }
    r
}

/// Runs `cases` against `policy` with up to `opts.concurrency` in flight; results come back in
/// case order. `progress` is advanced once per case.
pub async fn run_policy(
    cascade: &Cascade,
    policy: &Policy,
    cases: &[Case],
    opts: &RunOptions,
    progress: Option<&ProgressBar>,
) -> Vec<CaseResult> {
    let futs: Vec<_> = cases
        .iter()
        .map(|c| run_case(cascade, policy, c, opts.timeout))
        .collect();
    in_case_order(futs, opts, progress).await
}

/// [`run_policy`] with every case judged against all of `policies` in one call, scored for
/// `policies[own]` (whose case file `cases` is).
pub async fn run_policy_joint(
    cascade: &Cascade,
    policies: &[&Policy],
    own: usize,
    cases: &[Case],
    opts: &RunOptions,
    progress: Option<&ProgressBar>,
) -> Vec<CaseResult> {
    let futs: Vec<_> = cases
        .iter()
        .map(|c| run_case_joint(cascade, policies, own, c, opts.timeout))
        .collect();
    in_case_order(futs, opts, progress).await
}

/// Runs one future per case with up to `opts.concurrency` in flight and returns the results in
/// case order, advancing `progress` once per case. The futures are built eagerly by the callers
/// (not in a stream combinator's closure) so that the returned future is `Send` for callers
/// inside `async_trait` impls (higher-ranked lifetime inference).
async fn in_case_order<F>(
    futs: Vec<F>,
    opts: &RunOptions,
    progress: Option<&ProgressBar>,
) -> Vec<CaseResult>
where
    F: std::future::Future<Output = CaseResult>,
{
    let futs: Vec<_> = futs
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move {
            let r = f.await;
            if let Some(pb) = progress {
                pb.inc(1);
            }
            (i, r)
        })
        .collect();
    let mut out: Vec<(usize, CaseResult)> = stream::iter(futs)
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// At most `n` of `cases`: half of them violating and half allowed (more of one label where the
/// other runs short), each in file order, so a shortened run still has both labels.
pub fn limit_cases(cases: Vec<Case>, n: usize) -> Vec<Case> {
    if cases.len() <= n {
        return cases;
    }
    let (bad, good): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(Case::is_violation);
    let take_bad = n
        .div_ceil(2)
        .min(bad.len())
        .max(n.saturating_sub(good.len()));
    let take_good = n - take_bad.min(n);
    bad.into_iter()
        .take(take_bad)
        .chain(good.into_iter().take(take_good))
        .collect()
}
