//! From per-policy verdicts to one action for the exchange: block, annotate, record only, or the
//! route's fail mode when a classifier could not answer.

mod split;

use futures_util::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classify::{Cascade, ClassifyError, Content, Verdict};
use crate::config::{Action, FailMode};
use crate::policy::{Bound, Policy, Severity};

pub use split::{decide_blocking, decide_deferred, Deferred, Later, Split};

#[derive(Debug)]
pub struct Outcome {
    pub policy: Arc<Policy>,
    pub action: Action,
    pub result: Result<Verdict, ClassifyError>,
    pub latency: Duration,
    /// The shadow candidate's judgement of the same content, if the policy has one.
    pub candidate: Option<(Arc<Policy>, Result<Verdict, ClassifyError>)>,
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

    /// violation | allow | error: the verdict's name in audit records and metrics.
    pub fn verdict(&self) -> &'static str {
        match &self.result {
            Ok(v) if v.violation => "violation",
            Ok(_) => "allow",
            Err(ClassifyError::Skipped) => "skipped",
            Err(ClassifyError::Shed) => "shed",
            Err(ClassifyError::NotJudged(_)) => "not_judged",
            Err(_) => "error",
        }
    }

    /// What happened because of this policy, for the audit record.
    pub fn effect(&self, fail_mode: FailMode) -> &'static str {
        match (&self.result, self.action) {
            (Err(ClassifyError::Skipped), _) => "skipped",
            (Err(ClassifyError::Shed), _) => "shed",
            (Err(ClassifyError::NotJudged(_)), _) => "not_judged",
            (Err(_), Action::Shadow) => "shadow_error",
            // An annotate binding never fails a route closed (`combine`): the exchange went on.
            (Err(_), Action::Annotate) => "fail_open",
            (Err(_), _) if fail_mode == FailMode::Open => "fail_open",
            (Err(_), _) => "fail_closed",
            (Ok(v), _) if !v.violation => "allowed",
            (Ok(_), _) if !self.fires() => "below_threshold",
            (Ok(_), Action::Block) => "blocked",
            (Ok(_), Action::Annotate) => "annotated",
            (Ok(_), Action::Shadow) => "recorded",
            (Ok(_), Action::Redact) => "redacted",
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

/// (policy id, code) of annotate bindings that fired: they become `x-guardgate-*` headers.
pub type Annotations = Vec<(String, Option<String>)>;

#[derive(Debug)]
pub struct Decision {
    pub outcomes: Vec<Outcome>,
    pub verdict: Final,
    /// (policy id, code) of annotate-policies that fired: become `x-guardgate-*` headers.
    pub annotations: Annotations,
}

/// Judges `content` against every bound policy concurrently, then combines. Policies that rules
/// alone settle are judged in place first; only the rest become futures.
pub async fn decide(
    cascade: &Cascade,
    bound: &[Bound],
    content: &Content,
    deadline: Instant,
    fail_mode: FailMode,
) -> Decision {
    // One draw per policy and request, shared by both paths.
    let sampled: Vec<bool> = bound
        .iter()
        .map(|b| b.sample_rate >= 1.0 || sample(b.sample_rate))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = bound
        .iter()
        .zip(&sampled)
        .map(|(b, &s)| judge_now(cascade, b, content, s))
        .collect();
    if outcomes.iter().any(Option::is_none) {
        let waiting = bound
            .iter()
            .zip(&sampled)
            .zip(&outcomes)
            .filter(|(_, o)| o.is_none())
            .map(|((b, &s), _)| judge(cascade, b, content, deadline, s));
        let mut judged = join_all(waiting).await.into_iter();
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            *slot = judged.next();
        }
    }
    combine(outcomes.into_iter().flatten().collect(), fail_mode)
}

/// One policy's outcome, when every stage that judges it (and its shadow candidate) answers in
/// place; `None` when one must be awaited.
pub(crate) fn judge_now(
    cascade: &Cascade,
    b: &Bound,
    content: &Content,
    sampled: bool,
) -> Option<Outcome> {
    // The candidate is asked first, so that the live policy is not judged (and counted) twice
    // when the async path takes over; `classify_now` asks for the live policy itself.
    if let Some(c) = &b.candidate {
        if !cascade.answers_now(c, true) {
            return None;
        }
    }
    let started = Instant::now();
    let result = cascade.classify_now(&b.policy, content, sampled)?;
    let latency = started.elapsed();
    let candidate = match &b.candidate {
        Some(c) => Some((c.clone(), cascade.classify_now(c, content, true)?)),
        None => None,
    };
    Some(Outcome {
        policy: b.policy.clone(),
        action: b.action,
        result,
        latency,
        candidate,
    })
}

pub(crate) async fn judge(
    cascade: &Cascade,
    b: &Bound,
    content: &Content,
    deadline: Instant,
    sampled: bool,
) -> Outcome {
    let started = Instant::now();
    let live = async {
        let r = if sampled {
            cascade.classify(&b.policy, content, deadline).await
        } else {
            cascade.classify_cheap(&b.policy, content, deadline).await
        };
        (r, started.elapsed())
    };
    let shadow = async {
        match &b.candidate {
            Some(c) => Some((c.clone(), cascade.classify(c, content, deadline).await)),
            None => None,
        }
    };
    let ((result, latency), candidate) = futures_util::join!(live, shadow);
    Outcome {
        policy: b.policy.clone(),
        action: b.action,
        result,
        latency,
        candidate,
    }
}

/// The live verdicts of `bs` from [`Cascade::classify_joint`] (one model call for those the
/// model judges), each binding's shadow candidate judged on its own beside it. Every outcome
/// carries the joint call's latency.
pub(crate) async fn judge_joint(
    cascade: &Cascade,
    bs: &[&Bound],
    content: &Content,
    deadline: Instant,
) -> Vec<Outcome> {
    let started = Instant::now();
    let policies: Vec<&Policy> = bs.iter().map(|b| &*b.policy).collect();
    let live = async {
        let r = cascade.classify_joint(&policies, content, deadline).await;
        (r, started.elapsed())
    };
    let shadows = join_all(bs.iter().map(|b| async move {
        match &b.candidate {
            Some(c) => Some((c.clone(), cascade.classify(c, content, deadline).await)),
            None => None,
        }
    }));
    let ((results, latency), candidates) = futures_util::join!(live, shadows);
    bs.iter()
        .zip(results)
        .zip(candidates)
        .map(|((b, result), candidate)| Outcome {
            policy: b.policy.clone(),
            action: b.action,
            result,
            latency,
            candidate,
        })
        .collect()
}

/// The joint sets of `bound` as judging forms them: the blocking joint bindings (judged on the
/// request path) and the other joint ones (off it), each when it has two policies or more. What
/// the warm-up puts in the model's prefix cache.
pub fn joint_sets(bound: &[Bound]) -> Vec<Vec<Arc<Policy>>> {
    let set = |blocking: bool| -> Vec<Arc<Policy>> {
        bound
            .iter()
            .filter(|b| b.joint && (b.action == Action::Block) == blocking)
            .map(|b| b.policy.clone())
            .collect()
    };
    [set(true), set(false)]
        .into_iter()
        .filter(|s| s.len() >= 2)
        .collect()
}

/// A uniform draw against `rate`: whether this request is in the sample.
pub(crate) fn sample(rate: f64) -> bool {
    let r = (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64;
    r < rate
}

pub fn combine(outcomes: Vec<Outcome>, fail_mode: FailMode) -> Decision {
    let mut block: Option<(&Outcome, Severity)> = None;
    let mut failed: Option<&Outcome> = None;
    let mut annotations = Vec::new();
    for o in &outcomes {
        match (&o.result, o.action) {
            (_, Action::Shadow) => {}
            // Only a binding that could block fails closed: an annotate-only policy that cannot be
            // judged must not stop traffic it would have let through anyway.
            (Err(e), Action::Block)
                if e.is_failure() && fail_mode == FailMode::Closed && failed.is_none() =>
            {
                failed = Some(o)
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
                .map(|e| e.public_reason().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::cascade::Stage;
    use crate::classify::{Classifier, Content};
    use crate::metrics::Metrics;
    use crate::policy::parse_policy;
    use crate::wire::{Segment, Source};
    use async_trait::async_trait;
    use std::path::Path;

    /// A model stand-in whose behaviour each test picks.
    enum Stub {
        Slow,
        Fails,
        Says(bool),
    }

    #[async_trait]
    impl Classifier for Stub {
        fn name(&self) -> &'static str {
            "stub"
        }
        fn supports(&self, _p: &Policy) -> bool {
            true
        }
        fn allow_is_final(&self) -> bool {
            true
        }
        async fn classify(
            &self,
            _p: &Policy,
            _c: &Content,
            _d: Instant,
        ) -> Result<Verdict, ClassifyError> {
            match self {
                Stub::Slow => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Verdict::allow("stub"))
                }
                Stub::Fails => Err(ClassifyError::Backend("boom".into())),
                Stub::Says(v) => Ok(Verdict {
                    violation: *v,
                    code: v.then(|| "X1".to_string()),
                    ..Verdict::allow("stub")
                }),
            }
        }
    }

    fn policy(id: &str, rules: bool) -> Arc<Policy> {
        let rule = if rules {
            "[[rules]]\nid = \"r\"\ncode = \"X1\"\nkeywords = [\"forbidden\"]\n"
        } else {
            ""
        };
        let text = format!(
            "+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1\"\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n{rule}+++\nbody\n"
        );
        Arc::new(parse_policy(Path::new("p.md"), text.as_bytes()).unwrap())
    }

    fn content(text: &str) -> Content {
        Content::from_segments(vec![Segment {
            source: Source::User,
            text: text.into(),
            location: "messages[0].content".into(),
        }])
    }

    fn cascade(stub: Stub) -> Cascade {
        Cascade::new(
            vec![
                Stage::new(Arc::new(crate::classify::rules::RulesClassifier)),
                Stage::new(Arc::new(stub)),
            ],
            Arc::new(Metrics::new()),
        )
    }

    fn bound(id: &str, rules: bool, action: Action) -> Bound {
        Bound {
            policy: policy(id, rules),
            action,
            candidate: None,
            sample_rate: 1.0,
            joint: false,
        }
    }

    #[tokio::test]
    async fn deadline_applies_the_fail_mode() {
        let c = cascade(Stub::Slow);
        let b = [bound("a", false, Action::Block)];
        let started = Instant::now();
        let d = decide(
            &c,
            &b,
            &content("hi"),
            Instant::now() + Duration::from_millis(50),
            FailMode::Closed,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow backend was not cancelled"
        );
        assert_eq!(d.outcomes[0].result, Err(ClassifyError::Deadline));
        assert!(matches!(d.verdict, Final::FailClosed { .. }));
        let d = decide(
            &c,
            &b,
            &content("hi"),
            Instant::now() + Duration::from_millis(50),
            FailMode::Open,
        )
        .await;
        assert_eq!(d.verdict, Final::Allow);
        assert_eq!(d.outcomes[0].effect(FailMode::Open), "fail_open");
    }

    #[tokio::test]
    async fn backend_errors_apply_the_fail_mode_but_shadow_never_blocks() {
        let c = cascade(Stub::Fails);
        let dl = || Instant::now() + Duration::from_secs(1);
        let d = decide(
            &c,
            &[bound("a", false, Action::Block)],
            &content("hi"),
            dl(),
            FailMode::Closed,
        )
        .await;
        // The client-facing reason names the failure's kind, never the backend's words.
        assert!(
            matches!(d.verdict, Final::FailClosed { ref reason, .. } if reason == "classifier failed"),
            "{:?}",
            d.verdict
        );
        assert!(d.outcomes[0]
            .result
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("boom"));
        // An annotate binding that fails lets the exchange through, and says so.
        let d = decide(
            &c,
            &[bound("a", false, Action::Annotate)],
            &content("hi"),
            dl(),
            FailMode::Closed,
        )
        .await;
        assert_eq!(d.verdict, Final::Allow);
        assert_eq!(d.outcomes[0].effect(FailMode::Closed), "fail_open");
        let d = decide(
            &c,
            &[bound("a", false, Action::Shadow)],
            &content("hi"),
            dl(),
            FailMode::Closed,
        )
        .await;
        assert_eq!(d.verdict, Final::Allow);
        assert_eq!(d.outcomes[0].effect(FailMode::Closed), "shadow_error");
    }

    #[tokio::test]
    async fn rules_settle_hits_and_the_next_stage_settles_misses() {
        let c = cascade(Stub::Says(false));
        let dl = || Instant::now() + Duration::from_secs(1);
        let b = [bound("a", true, Action::Block)];
        let d = decide(
            &c,
            &b,
            &content("this is FORBIDDEN"),
            dl(),
            FailMode::Closed,
        )
        .await;
        assert_eq!(
            d.verdict,
            Final::Block {
                policy_id: "a".into(),
                code: Some("X1".into())
            }
        );
        assert_eq!(d.outcomes[0].result.as_ref().unwrap().backend, "rules");
        let d = decide(&c, &b, &content("harmless"), dl(), FailMode::Closed).await;
        assert_eq!(d.verdict, Final::Allow);
        assert_eq!(d.outcomes[0].result.as_ref().unwrap().backend, "stub");
        let c = cascade(Stub::Says(true));
        let d = decide(&c, &b, &content("harmless"), dl(), FailMode::Closed).await;
        assert_eq!(d.outcomes[0].result.as_ref().unwrap().backend, "stub");
        assert!(matches!(d.verdict, Final::Block { .. }));
    }

    /// Rules-only policies are judged in place: the decision is ready at the first poll, with no
    /// timer or task switch, and policies that need a model keep their place among the outcomes.
    #[tokio::test]
    async fn policies_settled_by_rules_are_judged_in_place() {
        use futures_util::FutureExt;
        let rules_only = |id: &str| {
            let text = format!(
                "+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1\"\nbackends = [\"rules\"]\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n[[rules]]\nid = \"r\"\ncode = \"X1\"\nkeywords = [\"forbidden\"]\n+++\nbody\n"
            );
            Bound {
                policy: Arc::new(parse_policy(Path::new("p.md"), text.as_bytes()).unwrap()),
                action: Action::Block,
                candidate: None,
                sample_rate: 1.0,
                joint: false,
            }
        };
        let c = cascade(Stub::Slow);
        let dl = Instant::now() + Duration::from_millis(50);
        let b = [rules_only("a"), rules_only("b")];
        let d = decide(&c, &b, &content("harmless"), dl, FailMode::Closed)
            .now_or_never()
            .expect("rules alone need no await");
        assert_eq!(d.verdict, Final::Allow);
        let d = decide(&c, &b, &content("FORBIDDEN"), dl, FailMode::Closed)
            .now_or_never()
            .unwrap();
        assert!(matches!(d.verdict, Final::Block { ref policy_id, .. } if policy_id == "a"));

        // A policy the (slow) model must judge makes the decision wait, and times out alone.
        let b = [bound("m", false, Action::Block), rules_only("a")];
        let d = decide(&c, &b, &content("FORBIDDEN"), dl, FailMode::Open).await;
        let ids: Vec<&str> = d.outcomes.iter().map(|o| o.policy.id.as_str()).collect();
        assert_eq!(ids, ["m", "a"]);
        assert_eq!(d.outcomes[0].result, Err(ClassifyError::Deadline));
        assert!(d.outcomes[1].result.as_ref().unwrap().violation);
        assert!(matches!(d.verdict, Final::Block { ref policy_id, .. } if policy_id == "a"));
    }

    #[tokio::test]
    async fn unsure_verdicts_escalate_to_the_next_stage() {
        struct Unsure;
        #[async_trait]
        impl Classifier for Unsure {
            fn name(&self) -> &'static str {
                "small"
            }
            fn supports(&self, _p: &Policy) -> bool {
                true
            }
            fn allow_is_final(&self) -> bool {
                true
            }
            async fn classify(
                &self,
                _p: &Policy,
                c: &Content,
                _d: Instant,
            ) -> Result<Verdict, ClassifyError> {
                let sure = c.items[0].raw.contains("sure");
                Ok(Verdict {
                    confidence: Some(if sure { 0.95 } else { 0.5 }),
                    ..Verdict::allow("small")
                })
            }
        }
        let c = Cascade::new(
            vec![
                Stage {
                    classifier: Arc::new(Unsure),
                    escalate_band: Some((0.3, 0.7)),
                },
                Stage::new(Arc::new(Stub::Says(true))),
            ],
            Arc::new(Metrics::new()),
        );
        let dl = Instant::now() + Duration::from_secs(1);
        let b = [bound("a", false, Action::Block)];
        let d = decide(&c, &b, &content("hmm"), dl, FailMode::Closed).await;
        assert_eq!(
            d.outcomes[0].result.as_ref().unwrap().backend,
            "stub",
            "unsure: the large model decides"
        );
        let d = decide(&c, &b, &content("I am sure"), dl, FailMode::Closed).await;
        assert_eq!(d.outcomes[0].result.as_ref().unwrap().backend, "small");
    }

    #[tokio::test]
    async fn several_policies_each_get_a_decision() {
        let c = cascade(Stub::Says(true));
        let dl = Instant::now() + Duration::from_secs(1);
        let b = [
            bound("a", false, Action::Annotate),
            bound("b", false, Action::Shadow),
            bound("c", false, Action::Block),
        ];
        let d = decide(&c, &b, &content("x"), dl, FailMode::Open).await;
        assert_eq!(d.outcomes.len(), 3);
        assert_eq!(
            d.annotations,
            vec![("a".to_string(), Some("X1".to_string()))]
        );
        assert_eq!(
            d.verdict,
            Final::Block {
                policy_id: "c".into(),
                code: Some("X1".into())
            }
        );
        // A definite block outranks another policy's classifier failure.
        let fails = cascade(Stub::Fails);
        let b2 = [
            bound("e", false, Action::Block),
            bound("f", true, Action::Block),
        ];
        let d = decide(&fails, &b2, &content("forbidden"), dl, FailMode::Closed).await;
        assert_eq!(
            d.verdict,
            Final::Block {
                policy_id: "f".into(),
                code: Some("X1".into())
            }
        );
    }
}
