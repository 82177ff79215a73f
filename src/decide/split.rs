//! Judgement split by who has to wait for it. An exchange waits only for its blocking bindings:
//! annotate and shadow bindings that need a model, and the shadow candidates of blocking ones,
//! come back as [`Deferred`] work that is judged off the request path. Among the blocking
//! bindings the cheap judgements come first: once one blocks, no other model call is started and
//! the ones already running are dropped (which cancels them), so a rule hit costs no model time.

use futures_util::future::{join_all, Either};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::{Duration, Instant};

use super::{combine, judge, judge_joint, judge_now, sample, Decision, Final, Outcome};
use crate::classify::{Cascade, ClassifyError, Content, Verdict};
use crate::config::{Action, FailMode};
use crate::policy::Bound;

/// Judgement nobody waits for.
#[derive(Debug)]
pub enum Deferred {
    /// An annotate or shadow binding, judged whole (its shadow candidate too).
    Binding { bound: Bound, sampled: bool },
    /// The shadow candidate of a blocking binding, whose live verdict is already decided.
    Candidate {
        bound: Bound,
        /// Boxed: a verdict is large next to a binding.
        live: Box<Result<Verdict, ClassifyError>>,
        latency: Duration,
    },
}

impl Deferred {
    /// What the audit says of this work when the background queue had no room for it.
    pub fn shed(self) -> Outcome {
        match self {
            Deferred::Binding { bound, .. } => Outcome {
                candidate: bound.candidate.map(|c| (c, Err(ClassifyError::Shed))),
                policy: bound.policy,
                action: bound.action,
                result: Err(ClassifyError::Shed),
                latency: Duration::ZERO,
            },
            Deferred::Candidate {
                bound,
                live,
                latency,
            } => Outcome {
                candidate: bound.candidate.map(|c| (c, Err(ClassifyError::Shed))),
                policy: bound.policy,
                action: bound.action,
                result: *live,
                latency,
            },
        }
    }

    pub fn is_candidate(&self) -> bool {
        matches!(self, Deferred::Candidate { .. })
    }

    /// An annotate binding: its verdict may still become response headers.
    pub fn annotates(&self) -> bool {
        matches!(self, Deferred::Binding { bound, .. } if bound.action == Action::Annotate)
    }
}

/// The blocking bindings' decision, and the work left for later.
#[derive(Debug)]
pub struct Split {
    pub decision: Decision,
    pub deferred: Vec<Deferred>,
}

/// Judges the blocking bindings of `bound` (and every binding that rules settle in place), and
/// returns the rest as deferred work; nothing is deferred when the exchange is blocked, beyond
/// the blocking policy's own shadow candidate (so its agreement figures still see violations).
pub async fn decide_blocking(
    cascade: &Cascade,
    bound: &[Bound],
    content: &Content,
    deadline: Instant,
    fail_mode: FailMode,
) -> Split {
    let mut slots: Vec<Option<Outcome>> = Vec::with_capacity(bound.len());
    let mut deferred = Vec::new();
    // Blocking bindings whose live verdict needs a model.
    let mut waiting = Vec::new();
    // Where the deferred annotate and shadow bindings sit in `bound`.
    let mut off_path = Vec::new();
    for (i, b) in bound.iter().enumerate() {
        // One draw per policy and request.
        let sampled = b.sample_rate >= 1.0 || sample(b.sample_rate);
        if let Some(o) = judge_now(cascade, b, content, sampled) {
            slots.push(Some(o));
            continue;
        }
        slots.push(None);
        if b.action != Action::Block {
            off_path.push(i);
            deferred.push(Deferred::Binding {
                bound: b.clone(),
                sampled,
            });
        } else if let Some(result) = b
            .candidate
            .as_ref()
            .and_then(|_| live_now(cascade, b, content, sampled))
        {
            // Rules settle the live policy; only its candidate needs a model.
            let (result, latency) = result;
            deferred.push(Deferred::Candidate {
                bound: b.clone(),
                live: Box::new(result.clone()),
                latency,
            });
            slots[i] = Some(live_outcome(b, result, latency));
        } else if let Some(v) = cascade.violation_now(&b.policy, content) {
            // A rule hit decides a blocking binding: no model call for it.
            if b.candidate.is_some() {
                deferred.push(Deferred::Candidate {
                    bound: b.clone(),
                    live: Box::new(Ok(v.clone())),
                    latency: Duration::ZERO,
                });
            }
            slots[i] = Some(live_outcome(b, Ok(v), Duration::ZERO));
        } else {
            waiting.push((i, sampled));
        }
    }
    if !waiting.is_empty() {
        if slots.iter().flatten().any(blocks) {
            for &(i, _) in &waiting {
                slots[i] = Some(skipped(&bound[i]));
            }
        } else {
            // The joint bindings in one call; a lone one is asked as in per-policy mode.
            let joined: Vec<usize> = waiting
                .iter()
                .filter(|&&(i, _)| bound[i].joint)
                .map(|&(i, _)| i)
                .collect();
            let joined = if joined.len() >= 2 {
                joined
            } else {
                Vec::new()
            };
            let live = |i: usize| Bound {
                candidate: None,
                ..bound[i].clone()
            };
            let mut running: FuturesUnordered<_> = waiting
                .iter()
                .filter(|(i, _)| !joined.contains(i))
                .map(|&(i, sampled)| {
                    Either::Left(async move {
                        vec![(
                            i,
                            judge(cascade, &live(i), content, deadline, sampled).await,
                        )]
                    })
                })
                .collect();
            if !joined.is_empty() {
                let joined = &joined;
                running.push(Either::Right(async move {
                    let lives: Vec<Bound> = joined.iter().map(|&i| live(i)).collect();
                    let refs: Vec<&Bound> = lives.iter().collect();
                    let outs = judge_joint(cascade, &refs, content, deadline).await;
                    joined.iter().copied().zip(outs).collect::<Vec<_>>()
                }));
            }
            while let Some(batch) = running.next().await {
                let mut fired = false;
                for (i, o) in batch {
                    fired |= blocks(&o);
                    if bound[i].candidate.is_some() {
                        deferred.push(Deferred::Candidate {
                            bound: bound[i].clone(),
                            live: Box::new(o.result.clone()),
                            latency: o.latency,
                        });
                    }
                    slots[i] = Some(o);
                }
                if fired {
                    break;
                }
            }
            // Dropping the rest cancels their model calls.
            drop(running);
            for &(i, _) in &waiting {
                if slots[i].is_none() {
                    slots[i] = Some(skipped(&bound[i]));
                }
            }
        }
    }
    let blocked = slots.iter().flatten().any(blocks);
    if blocked {
        // The annotate and shadow bindings are not worth a model call on a blocked exchange:
        // the audit says they were skipped.
        for &i in &off_path {
            slots[i] = Some(skipped(&bound[i]));
        }
    }
    let decision = combine(slots.into_iter().flatten().collect(), fail_mode);
    if let Final::Block { policy_id, .. } = &decision.verdict {
        deferred.retain(|d| match d {
            Deferred::Candidate { bound, .. } => &bound.policy.id == policy_id,
            Deferred::Binding { .. } => false,
        });
    }
    Split { decision, deferred }
}

/// The decisions of deferred work: the annotate and shadow bindings' (with their annotations),
/// and the shadow candidates' of blocking bindings (whose live outcomes are already recorded).
#[derive(Debug)]
pub struct Later {
    pub bindings: Decision,
    pub candidates: Decision,
}

/// Judges deferred work, all of it concurrently.
pub async fn decide_deferred(
    cascade: &Cascade,
    deferred: Vec<Deferred>,
    content: &Content,
    deadline: Instant,
    fail_mode: FailMode,
) -> Later {
    let (bindings, candidates): (Vec<_>, Vec<_>) =
        deferred.into_iter().partition(|d| !d.is_candidate());
    // The joint bindings in the sample, in one call when there are two or more.
    let (joined, bindings): (Vec<_>, Vec<_>) = bindings
        .into_iter()
        .partition(|d| matches!(d, Deferred::Binding { bound, sampled: true } if bound.joint));
    let (joined, bindings) = if joined.len() >= 2 {
        (joined, bindings)
    } else {
        (Vec::new(), joined.into_iter().chain(bindings).collect())
    };
    let joined: Vec<Bound> = joined
        .into_iter()
        .filter_map(|d| match d {
            Deferred::Binding { bound, .. } => Some(bound),
            Deferred::Candidate { .. } => None,
        })
        .collect();
    let joined = async {
        let refs: Vec<&Bound> = joined.iter().collect();
        if refs.is_empty() {
            Vec::new()
        } else {
            judge_joint(cascade, &refs, content, deadline).await
        }
    };
    let bindings = join_all(bindings.into_iter().map(|d| async move {
        match d {
            Deferred::Binding { bound, sampled } => {
                judge(cascade, &bound, content, deadline, sampled).await
            }
            other => other.shed(),
        }
    }));
    let candidates = join_all(candidates.into_iter().map(|d| async move {
        match d {
            Deferred::Candidate {
                bound,
                live,
                latency,
            } => {
                let candidate = match &bound.candidate {
                    Some(c) => Some((c.clone(), cascade.classify(c, content, deadline).await)),
                    None => None,
                };
                Outcome {
                    policy: bound.policy,
                    action: bound.action,
                    result: *live,
                    latency,
                    candidate,
                }
            }
            other => other.shed(),
        }
    }));
    let (mut bindings, joined, candidates) = futures_util::join!(bindings, joined, candidates);
    bindings.extend(joined);
    Later {
        bindings: combine(bindings, fail_mode),
        candidates: Decision {
            outcomes: candidates,
            verdict: Final::Allow,
            annotations: Vec::new(),
        },
    }
}

/// The live policy's verdict when rules settle it in place.
fn live_now(
    cascade: &Cascade,
    b: &Bound,
    content: &Content,
    sampled: bool,
) -> Option<(Result<Verdict, ClassifyError>, Duration)> {
    let started = Instant::now();
    let r = cascade.classify_now(&b.policy, content, sampled)?;
    Some((r, started.elapsed()))
}

fn live_outcome(b: &Bound, result: Result<Verdict, ClassifyError>, latency: Duration) -> Outcome {
    Outcome {
        policy: b.policy.clone(),
        action: b.action,
        result,
        latency,
        candidate: None,
    }
}

fn skipped(b: &Bound) -> Outcome {
    live_outcome(b, Err(ClassifyError::Skipped), Duration::ZERO)
}

/// A blocking binding whose violation blocks the exchange.
fn blocks(o: &Outcome) -> bool {
    o.action == Action::Block && o.fires()
}
