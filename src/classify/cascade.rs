//! Cheapest first: run the backends in order and stop at the first that settles the question.
//! A rule hit is a violation outright; a rule miss falls through to the next backend that can read
//! the policy (the model), if one is configured. A model whose confidence falls in its
//! `escalate_band` is unsure, and the next backend (e.g. a larger remote model) decides. The
//! verdict's `backend` names the stage that decided.

use std::sync::Arc;
use std::time::Instant;

use super::{Classifier, ClassifyError, Content, Verdict};
use crate::metrics::Metrics;
use crate::policy::registry::Capability;
use crate::policy::Policy;

/// One backend in the cascade, with the confidence band in which its verdict is "unsure" and
/// the next backend is asked.
pub struct Stage {
    pub classifier: Arc<dyn Classifier>,
    pub escalate_band: Option<(f32, f32)>,
}

impl Stage {
    pub fn new(classifier: Arc<dyn Classifier>) -> Stage {
        Stage {
            classifier,
            escalate_band: None,
        }
    }

    fn unsure(&self, v: &Verdict) -> bool {
        match (self.escalate_band, v.confidence) {
            (Some((lo, hi)), Some(c)) => c >= lo && c <= hi,
            _ => false,
        }
    }
}

pub struct Cascade {
    stages: Vec<Stage>,
    metrics: Arc<Metrics>,
}

impl Cascade {
    pub fn new(stages: Vec<Stage>, metrics: Arc<Metrics>) -> Cascade {
        Cascade { stages, metrics }
    }

    /// Whether any configured backend can judge `policy`.
    pub fn supports_any(&self, policy: &Policy) -> bool {
        self.stages
            .iter()
            .any(|s| s.classifier.supports(policy) && policy.allows_stage(s.classifier.name()))
    }

    /// Lets every expensive backend that would judge `policy` prepare for it (see
    /// [`Classifier::warm`]).
    pub async fn warm(&self, policy: &Policy) {
        for s in &self.stages {
            let c = &s.classifier;
            if !c.is_cheap() && c.supports(policy) && policy.allows_stage(c.name()) {
                c.warm(policy).await;
            }
        }
    }

    pub fn backends(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.classifier.name()).collect()
    }

    /// Judges `content` against `policy` within `deadline`. Each stage's future is dropped when
    /// the deadline passes, which is how a stuck backend is cancelled.
    pub async fn classify(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        self.run(policy, content, deadline, false).await
    }

    /// Like [`Cascade::classify`] with the expensive backends left out (a request outside a
    /// policy's sample): a rule hit still counts, a miss is an allow marked `sampled_out`.
    pub async fn classify_cheap(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        let v = self.run(policy, content, deadline, true).await;
        match v {
            Ok(v) if !v.violation => {
                self.metrics
                    .sampled_out
                    .with_label_values(&[&policy.id])
                    .inc();
                Ok(Verdict {
                    sampled_out: true,
                    ..v
                })
            }
            Err(ClassifyError::NoBackend) => Ok(Verdict {
                sampled_out: true,
                ..Verdict::allow("rules")
            }),
            other => other,
        }
    }

    async fn run(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
        cheap_only: bool,
    ) -> Result<Verdict, ClassifyError> {
        let mut last: Option<Verdict> = None;
        let usable: Vec<&Stage> = self
            .stages
            .iter()
            .filter(|s| s.classifier.supports(policy) && policy.allows_stage(s.classifier.name()))
            .filter(|s| !cheap_only || s.classifier.is_cheap())
            .collect();
        for (i, st) in usable.iter().enumerate() {
            let stage = &st.classifier;
            let started = Instant::now();
            let fut = stage.classify(policy, content, deadline);
            let res = tokio::time::timeout_at(deadline.into(), fut)
                .await
                .unwrap_or(Err(ClassifyError::Deadline));
            self.metrics
                .classifier_latency
                .with_label_values(&[stage.name()])
                .observe(started.elapsed().as_secs_f64());
            let v = res?;
            let is_last = i + 1 == usable.len();
            if (v.violation || stage.allow_is_final()) && (is_last || !st.unsure(&v)) {
                return Ok(v);
            }
            last = Some(v);
        }
        last.ok_or(ClassifyError::NoBackend)
    }
}

impl Capability for Cascade {
    fn unsupported(&self, policy: &Policy) -> Option<String> {
        if let Some(names) = &policy.backends {
            let have = self.backends();
            for n in names {
                if !have
                    .iter()
                    .any(|h| h == n || h.rsplit(':').next() == Some(n.as_str()))
                {
                    return Some(format!(
                        "backends names {n:?}, which is not configured (have: {})",
                        have.join(", ")
                    ));
                }
            }
        }
        if self.supports_any(policy) {
            None
        } else {
            Some(format!(
                "it has no deterministic rules and no configured backend can read it (backends: {})",
                self.backends().join(", ")
            ))
        }
    }
}
