//! Cheapest first: run the backends in order and stop at the first that settles the question.
//! A rule hit is a violation outright; a rule miss falls through to the next backend that can read
//! the policy (the model), if one is configured. A model whose confidence falls in its
//! `escalate_band` is unsure, and the next backend (e.g. a larger remote model) decides. The
//! verdict's `backend` names the stage that decided.

use prometheus::Histogram;
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

    /// Whether this stage's verdict ends the cascade: a violation, or an allow from a backend
    /// whose allow is final, unless the verdict is unsure and a later stage can decide.
    fn settles(&self, v: &Verdict, is_last: bool) -> bool {
        (v.violation || self.classifier.allow_is_final()) && (is_last || !self.unsure(v))
    }
}

pub struct Cascade {
    stages: Vec<Stage>,
    /// Each stage's latency histogram, looked up once here rather than by label on every call.
    latency: Vec<Histogram>,
    metrics: Arc<Metrics>,
}

impl Cascade {
    pub fn new(stages: Vec<Stage>, metrics: Arc<Metrics>) -> Cascade {
        let latency = stages
            .iter()
            .map(|s| {
                metrics
                    .classifier_latency
                    .with_label_values(&[s.classifier.name()])
            })
            .collect();
        Cascade {
            stages,
            latency,
            metrics,
        }
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
        self.run(policy, content, deadline, false, 0).await
    }

    /// Like [`Cascade::classify`] with the expensive backends left out (a request outside a
    /// policy's sample): a rule hit still counts, a miss is an allow marked `sampled_out`.
    pub async fn classify_cheap(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        let v = self.run(policy, content, deadline, true, 0).await;
        self.mark_sampled_out(policy, v)
    }

    /// [`Cascade::classify`] (`sampled`) or [`Cascade::classify_cheap`] without a runtime, when
    /// every stage that would judge `policy` answers in place ([`Classifier::answers_now`]):
    /// policies judged by rules alone, which is most traffic of a rules-only deployment, skip
    /// the futures, the deadline timer and the boxing. `None` when a stage must be awaited.
    pub fn classify_now(
        &self,
        policy: &Policy,
        content: &Content,
        sampled: bool,
    ) -> Option<Result<Verdict, ClassifyError>> {
        if !self.answers_now(policy, sampled) {
            return None;
        }
        let cheap_only = !sampled;
        let count = self.usable(policy, cheap_only).count();
        let mut last = None;
        for (i, (st, latency)) in self.usable(policy, cheap_only).enumerate() {
            let started = Instant::now();
            let v = st.classifier.classify_now(policy, content)?;
            latency.observe(started.elapsed().as_secs_f64());
            let settled = st.settles(&v, i + 1 == count);
            last = Some(v);
            if settled {
                break;
            }
        }
        let v = last.ok_or(ClassifyError::NoBackend);
        Some(if sampled {
            v
        } else {
            self.mark_sampled_out(policy, v)
        })
    }

    /// A violation that the stages answering in place (the rules) find before any backend that
    /// must be awaited: then a blocking policy is decided without starting a model call.
    pub fn violation_now(&self, policy: &Policy, content: &Content) -> Option<Verdict> {
        let count = self.usable(policy, false).count();
        for (i, (st, latency)) in self.usable(policy, false).enumerate() {
            if !st.classifier.answers_now() {
                return None;
            }
            let started = Instant::now();
            let v = st.classifier.classify_now(policy, content)?;
            latency.observe(started.elapsed().as_secs_f64());
            if v.violation && st.settles(&v, i + 1 == count) {
                return Some(v);
            }
        }
        None
    }

    /// Whether [`Cascade::classify_now`] can judge `policy` (see there).
    pub fn answers_now(&self, policy: &Policy, sampled: bool) -> bool {
        self.usable(policy, !sampled)
            .all(|(s, _)| s.classifier.answers_now())
    }

    fn mark_sampled_out(
        &self,
        policy: &Policy,
        v: Result<Verdict, ClassifyError>,
    ) -> Result<Verdict, ClassifyError> {
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

    /// The stages that judge `policy`, in order, with their latency histograms.
    fn usable<'a>(
        &'a self,
        policy: &'a Policy,
        cheap_only: bool,
    ) -> impl Iterator<Item = (&'a Stage, &'a Histogram)> + 'a {
        self.stages.iter().zip(&self.latency).filter(move |(s, _)| {
            s.classifier.supports(policy)
                && policy.allows_stage(s.classifier.name())
                && (!cheap_only || s.classifier.is_cheap())
        })
    }

    /// The stages from `from` (an index into `stages`) on.
    async fn run(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
        cheap_only: bool,
        from: usize,
    ) -> Result<Verdict, ClassifyError> {
        let mut last: Option<Verdict> = None;
        let later = |(s, _): &(&Stage, &Histogram)| self.position(s) >= from;
        let count = self.usable(policy, cheap_only).filter(later).count();
        for (i, (st, latency)) in self.usable(policy, cheap_only).filter(later).enumerate() {
            let stage = &st.classifier;
            let started = Instant::now();
            let res = match stage.classify_now(policy, content) {
                Some(v) => Ok(v),
                None => {
                    let fut = stage.classify(policy, content, deadline);
                    tokio::time::timeout_at(deadline.into(), fut)
                        .await
                        .unwrap_or(Err(ClassifyError::Deadline))
                }
            };
            latency.observe(started.elapsed().as_secs_f64());
            let v = res?;
            if st.settles(&v, i + 1 == count) {
                return Ok(v);
            }
            last = Some(v);
        }
        last.ok_or(ClassifyError::NoBackend)
    }
}

impl Cascade {
    fn position(&self, s: &Stage) -> usize {
        self.stages
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .expect("a stage of this cascade")
    }

    /// Judges `content` against every one of `policies` (`model_call = "joint"`), one result per
    /// policy in their order. Each policy's rules run first and settle what they settle; the
    /// policies left for the same expensive stage are judged there in one call when it can
    /// ([`Classifier::classify_joint`]) and there are two or more of them, else one call each as
    /// in [`Cascade::classify`]. A joint verdict that its stage's `escalate_band` finds unsure
    /// goes on to the later stages alone.
    pub async fn classify_joint(
        &self,
        policies: &[&Policy],
        content: &Content,
        deadline: Instant,
    ) -> Vec<Result<Verdict, ClassifyError>> {
        let mut out: Vec<Option<Result<Verdict, ClassifyError>>> = vec![None; policies.len()];
        // (policy, the first stage that must be awaited) for what in-place stages left open.
        let mut open: Vec<(usize, usize)> = Vec::new();
        for (k, p) in policies.iter().enumerate() {
            let count = self.usable(p, false).count();
            let mut last = None;
            let mut next = None;
            for (i, (st, latency)) in self.usable(p, false).enumerate() {
                let started = Instant::now();
                let Some(v) = st.classifier.classify_now(p, content) else {
                    next = Some(self.position(st));
                    break;
                };
                latency.observe(started.elapsed().as_secs_f64());
                if st.settles(&v, i + 1 == count) {
                    out[k] = Some(Ok(v));
                    break;
                }
                last = Some(v);
            }
            if out[k].is_none() {
                match next {
                    Some(s) => open.push((k, s)),
                    None => out[k] = Some(last.ok_or(ClassifyError::NoBackend)),
                }
            }
        }
        let mut stages: Vec<usize> = open.iter().map(|&(_, s)| s).collect();
        stages.sort_unstable();
        stages.dedup();
        let groups = stages.into_iter().map(|s| {
            let members: Vec<usize> = open.iter().filter(|o| o.1 == s).map(|o| o.0).collect();
            self.judge_group(s, members, policies, content, deadline)
        });
        for (k, r) in futures_util::future::join_all(groups)
            .await
            .into_iter()
            .flatten()
        {
            out[k] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(ClassifyError::NoBackend)))
            .collect()
    }

    /// The policies `members` (indices into `policies`) from stage `s` on.
    async fn judge_group(
        &self,
        s: usize,
        members: Vec<usize>,
        policies: &[&Policy],
        content: &Content,
        deadline: Instant,
    ) -> Vec<(usize, Result<Verdict, ClassifyError>)> {
        let st = &self.stages[s];
        let joint = if members.len() >= 2 {
            let set: Vec<&Policy> = members.iter().map(|&k| policies[k]).collect();
            let started = Instant::now();
            let fut = st.classifier.classify_joint(&set, content, deadline);
            let r = tokio::time::timeout_at(deadline.into(), fut)
                .await
                .unwrap_or_else(|_| {
                    Some(set.iter().map(|_| Err(ClassifyError::Deadline)).collect())
                });
            if r.is_some() {
                self.latency[s].observe(started.elapsed().as_secs_f64());
            }
            r
        } else {
            None
        };
        let Some(results) = joint else {
            let each = members.iter().map(|&k| async move {
                (k, self.run(policies[k], content, deadline, false, s).await)
            });
            return futures_util::future::join_all(each).await;
        };
        let rest = members.iter().zip(results).map(|(&k, r)| async move {
            let p = policies[k];
            let is_last = !self.usable(p, false).any(|(x, _)| self.position(x) > s);
            match r {
                Ok(v) if !st.settles(&v, is_last) => {
                    (k, self.run(p, content, deadline, false, s + 1).await)
                }
                other => (k, other),
            }
        });
        futures_util::future::join_all(rest).await
    }

    /// Lets every expensive backend that would judge all of `policies` prepare for their joint
    /// prompt (see [`Classifier::warm_joint`]).
    pub async fn warm_joint(&self, policies: &[&Policy]) {
        for s in &self.stages {
            let c = &s.classifier;
            let judged: Vec<&Policy> = policies
                .iter()
                .copied()
                .filter(|p| c.supports(p) && p.allows_stage(c.name()))
                .collect();
            if !c.is_cheap() && judged.len() >= 2 {
                c.warm_joint(&judged).await;
            }
        }
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
