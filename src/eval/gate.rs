//! The reload gate: a changed policy with `gate = true` goes live only if its case file meets the
//! policy's `[thresholds]` with the gateway's own classifier stack.

use async_trait::async_trait;
use std::sync::Arc;

use super::cases::{cases_path_for, load_cases};
use super::report::PolicyReport;
use super::runner::{run_case, RunOptions};
use crate::classify::Cascade;
use crate::policy::registry::Gate;
use crate::policy::Policy;

pub struct CaseGate {
    cascade: Arc<Cascade>,
    opts: RunOptions,
}

impl CaseGate {
    pub fn new(cascade: Arc<Cascade>) -> CaseGate {
        CaseGate {
            cascade,
            opts: RunOptions::default(),
        }
    }
}

#[async_trait]
impl Gate for CaseGate {
    async fn check(&self, policy: &Policy) -> Result<String, String> {
        let path = cases_path_for(&policy.path);
        let cases =
            load_cases(&path).map_err(|e| format!("the gate needs the policy's case file: {e}"))?;
        if cases.is_empty() {
            return Err(format!("{}: no cases", path.display()));
        }
        // Batches of `concurrency` (not run_policy's stream): this future must be Send for the
        // registry, and the stream combinator's closure lifetimes do not allow that.
        let mut results = Vec::with_capacity(cases.len());
        for batch in cases.chunks(self.opts.concurrency.max(1)) {
            let futs = batch
                .iter()
                .map(|c| run_case(&self.cascade, policy, c, self.opts.timeout));
            results.extend(futures_util::future::join_all(futs).await);
        }
        let rep = PolicyReport::from_results(
            &policy.id,
            Some(policy),
            &path.display().to_string(),
            results,
        );
        let m = &rep.metrics;
        let summary = format!(
            "{} cases: precision {}, recall {}, errors {}",
            rep.n,
            super::metrics::fmt3(m.precision),
            super::metrics::fmt3(m.recall),
            rep.errors
        );
        if rep.threshold_failures.is_empty() {
            Ok(summary)
        } else {
            Err(format!("{summary}; {}", rep.threshold_failures.join("; ")))
        }
    }
}
