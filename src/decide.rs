//! From per-policy verdicts to one action for the exchange: block, annotate, record only, or the
//! route's fail mode when a classifier could not answer.

use futures_util::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classify::{Cascade, ClassifyError, Content, Verdict};
use crate::config::{Action, FailMode};
use crate::policy::{Bound, Policy, Severity};

#[derive(Debug)]
pub struct Outcome {
    pub policy: Arc<Policy>,
    pub action: Action,
    pub result: Result<Verdict, ClassifyError>,
    pub latency: Duration,
}

impl Outcome {
    pub fn severity(&self) -> Option<Severity> {
        match &self.result {
            Ok(v) if v.violation => Some(self.policy.severity_of(v.code.as_deref())),
            _ => None,
        }
    }

    /// A violation at or above the policy's severity threshold: one that the action applies to.
    pub fn fires(&self) -> bool {
        self.severity()
            .is_some_and(|s| s >= self.policy.severity_threshold)
    }

    /// What happened because of this policy, for the audit record.
    pub fn effect(&self, fail_mode: FailMode) -> &'static str {
        match (&self.result, self.action) {
            (Err(_), Action::Shadow) => "shadow_error",
            (Err(_), _) if fail_mode == FailMode::Open => "fail_open",
            (Err(_), _) => "fail_closed",
            (Ok(v), _) if !v.violation => "allowed",
            (Ok(_), _) if !self.fires() => "below_threshold",
            (Ok(_), Action::Block) => "blocked",
            (Ok(_), Action::Annotate) => "annotated",
            (Ok(_), Action::Shadow) => "recorded",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    Allow,
    Block {
        policy_id: String,
        code: Option<String>,
    },
    /// A classifier failed and the route is fail-closed.
    FailClosed {
        policy_id: String,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Decision {
    pub outcomes: Vec<Outcome>,
    pub verdict: Final,
    /// (policy id, code) of annotate-policies that fired: become `x-guardgate-*` headers.
    pub annotations: Vec<(String, Option<String>)>,
}

/// Judges `content` against every bound policy concurrently, then combines.
pub async fn decide(
    cascade: &Cascade,
    bound: &[Bound],
    content: &Content,
    deadline: Instant,
    fail_mode: FailMode,
) -> Decision {
    let outcomes = join_all(bound.iter().map(|b| async move {
        let started = Instant::now();
        let result = cascade.classify(&b.policy, content, deadline).await;
        Outcome {
            policy: b.policy.clone(),
            action: b.action,
            result,
            latency: started.elapsed(),
        }
    }))
    .await;
    combine(outcomes, fail_mode)
}

pub fn combine(outcomes: Vec<Outcome>, fail_mode: FailMode) -> Decision {
    let mut block: Option<(&Outcome, Severity)> = None;
    let mut failed: Option<&Outcome> = None;
    let mut annotations = Vec::new();
    for o in &outcomes {
        match (&o.result, o.action) {
            (_, Action::Shadow) => {}
            (Err(_), _) => {
                if fail_mode == FailMode::Closed && failed.is_none() {
                    failed = Some(o);
                }
            }
            (Ok(v), Action::Block) if o.fires() => {
                let sev = o.policy.severity_of(v.code.as_deref());
                if block.is_none_or(|(_, s)| sev > s) {
                    block = Some((o, sev));
                }
            }
            (Ok(v), Action::Annotate) if o.fires() => {
                annotations.push((o.policy.id.clone(), v.code.clone()));
            }
            _ => {}
        }
    }
    // A definite violation is the more useful answer than "could not classify".
    let verdict = if let Some((o, _)) = block {
        Final::Block {
            policy_id: o.policy.id.clone(),
            code: o.result.as_ref().ok().and_then(|v| v.code.clone()),
        }
    } else if let Some(o) = failed {
        Final::FailClosed {
            policy_id: o.policy.id.clone(),
            reason: o
                .result
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        }
    } else {
        Final::Allow
    };
    Decision {
        outcomes,
        verdict,
        annotations,
    }
}
