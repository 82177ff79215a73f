//! Cheapest first: run the backends in order and stop at the first that settles the question.
//! A rule hit is a violation outright; a rule miss falls through to the next backend that can read
//! the policy (the model), if one is configured.

use std::sync::Arc;
use std::time::Instant;

use super::{Classifier, ClassifyError, Content, Verdict};
use crate::metrics::Metrics;
use crate::policy::registry::Capability;
use crate::policy::Policy;

pub struct Cascade {
    stages: Vec<Arc<dyn Classifier>>,
    metrics: Arc<Metrics>,
}

impl Cascade {
    pub fn new(stages: Vec<Arc<dyn Classifier>>, metrics: Arc<Metrics>) -> Cascade {
        Cascade { stages, metrics }
    }

    pub fn backends(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Judges `content` against `policy` within `deadline`. Each stage's future is dropped when
    /// the deadline passes, which is how a stuck backend is cancelled.
    pub async fn classify(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        let mut last: Option<Verdict> = None;
        for stage in self.stages.iter().filter(|s| s.supports(policy)) {
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
            if v.violation || stage.allow_is_final() {
                return Ok(v);
            }
            last = Some(v);
        }
        last.ok_or(ClassifyError::NoBackend)
    }
}

impl Capability for Cascade {
    fn unsupported(&self, policy: &Policy) -> Option<String> {
        if self.stages.iter().any(|s| s.supports(policy)) {
            None
        } else {
            Some(format!(
                "it has no deterministic rules and no configured backend can read it (backends: {})",
                self.backends().join(", ")
            ))
        }
    }
}
