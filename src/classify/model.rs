//! A classifier backed by a language model, whatever hosts it: the policy prompting, the answer
//! parsing and the "reasoning used the whole budget" retry live here once, and a host (a remote
//! OpenAI-compatible server, or mistral.rs in process) only implements [`ChatModel`].

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::cache::VerdictCache;
use super::joint;
use super::prompt::{build, Family, Prompt};
use super::verdict::{parse_answer, split_harmony, VerdictError};
use super::{Classifier, ClassifyError, Content, Timing, Verdict};
use crate::metrics::Metrics;
use crate::policy::{Effort, Policy};
use crate::wire::{Segment, Source};

/// What a host returns for one prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The answer (harmony: the final channel, or the raw text if the host did not split it).
    pub text: String,
    /// The reasoning (harmony analysis channel / `reasoning_content`), if the host exposes it.
    pub reasoning: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// Prompt tokens served from the host's prefix cache, when it says.
    pub cached_prompt_tokens: Option<u32>,
    pub timing: Option<Timing>,
    /// For a one-token 0/1 answer: the model's probability of `1`, renormalised over {0, 1}.
    pub p_violation: Option<f32>,
}

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The model id recorded in audit records.
    fn model_id(&self) -> &str;
    async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<Completion, ClassifyError>;
    /// Whether sending a policy once ahead of traffic makes later requests cheaper (an in-process
    /// model with a prefix cache); a remote server manages its own cache.
    fn wants_warmup(&self) -> bool {
        false
    }
}

/// One loaded model can back several classifiers (e.g. with and without a verdict cache).
#[async_trait]
impl<M: ChatModel + ?Sized> ChatModel for Arc<M> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    async fn complete(
        &self,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<Completion, ClassifyError> {
        (**self).complete(prompt, deadline).await
    }
    fn wants_warmup(&self) -> bool {
        (**self).wants_warmup()
    }
}

/// A completion's reasoning (analysis channel) and final answer, whether the host split the
/// channels itself or returned the raw harmony text.
fn channels(c: &Completion) -> (Option<String>, String) {
    match &c.reasoning {
        Some(r) => (Some(r.clone()), c.text.clone()),
        None => split_harmony(&c.text),
    }
}

pub struct ModelClassifier<M> {
    name: &'static str,
    model: M,
    family: Family,
    default_effort: Effort,
    cache: Option<Arc<VerdictCache>>,
    metrics: Option<Arc<Metrics>>,
    violation_threshold: Option<f32>,
    /// Per policy id, ahead of `violation_threshold` (`guardgate policy calibrate` writes them).
    violation_thresholds: HashMap<String, f32>,
}

impl<M: ChatModel> ModelClassifier<M> {
    /// `name` is the backend name in audit records and metrics (e.g. "remote:safeguard").
    pub fn new(name: &'static str, model: M, family: Family, default_effort: Effort) -> Self {
        ModelClassifier {
            name,
            model,
            family,
            default_effort,
            cache: None,
            metrics: None,
            violation_threshold: None,
            violation_thresholds: HashMap::new(),
        }
    }

    /// For answers with a P(violation) (the verdict token's odds): a violation only when it
    /// reaches `t` (instead of whichever answer was likelier), for every policy without its own
    /// entry in `per_policy`. Lets a small or uncalibrated model be held to a precision/recall
    /// trade-off chosen on held-out cases (`guardgate policy calibrate`).
    pub fn with_violation_threshold(
        mut self,
        t: Option<f32>,
        per_policy: HashMap<String, f32>,
    ) -> Self {
        self.violation_threshold = t;
        self.violation_thresholds = per_policy;
        self
    }

    fn threshold_for(&self, policy: &Policy) -> Option<f32> {
        self.violation_thresholds
            .get(&policy.id)
            .copied()
            .or(self.violation_threshold)
    }

    /// Answers repeats of (policy version, normalised content) from `cache`.
    pub fn with_cache(mut self, cache: Arc<VerdictCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    pub fn cache(&self) -> Option<&Arc<VerdictCache>> {
        self.cache.as_ref()
    }

    fn count_cache(&self, result: &str) {
        if let Some(m) = &self.metrics {
            m.verdict_cache
                .with_label_values(&[self.name, result])
                .inc();
        }
    }

    /// A verdict from one model call: the backend, the model, and the call's tokens and timing.
    fn called(&self, c: &Completion, violation: bool) -> Verdict {
        Verdict {
            violation,
            backend: self.name,
            model: Some(self.model.model_id().to_string()),
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            cached_prompt_tokens: c.cached_prompt_tokens,
            timing: c.timing,
            ..Verdict::default()
        }
    }

    async fn ask(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        let mut prompt = build(policy, content, self.family, self.default_effort);
        let mut retried = false;
        loop {
            let c = self.model.complete(&prompt, deadline).await?;
            let (analysis, final_text) = channels(&c);
            match parse_answer(&final_text, analysis.as_deref(), policy.output_format) {
                Ok(a) => {
                    let (violation, confidence) = match c.p_violation {
                        Some(p) => (
                            self.threshold_for(policy).map_or(a.violation, |t| p >= t),
                            Some(p),
                        ),
                        // One meaning for every backend and format: P(violation). A JSON
                        // answer's `confidence` is the model's confidence in its own answer.
                        None => (
                            a.violation,
                            a.confidence.map(|c| if a.violation { c } else { 1.0 - c }),
                        ),
                    };
                    return Ok(Verdict {
                        // A threshold may overrule the answer: an allowed verdict has no code.
                        code: a.code.filter(|_| violation),
                        rule_id: a.rule_ids.into_iter().next(),
                        confidence,
                        rationale: a.rationale,
                        ..self.called(&c, violation)
                    });
                }
                // Reasoning used the whole budget: retry once with less reasoning, then give up
                // (the route's fail mode decides) rather than guess.
                Err(VerdictError::Empty) => match prompt.reasoning_effort.and_then(|e| e.lower()) {
                    Some(lower) if !retried => {
                        prompt.reasoning_effort = Some(lower);
                        retried = true;
                    }
                    _ => return Err(ClassifyError::Backend(VerdictError::Empty.to_string())),
                },
                Err(e) => return Err(ClassifyError::Backend(e.to_string())),
            }
        }
    }

    /// One call for `policies` (in [`joint::in_order`]'s order), one result per policy. An
    /// answer gives no P(violation) per policy (the verdict token's odds are only those of the
    /// first entry's digit, and a harmony answer's digits follow its reasoning), so the answers
    /// stand as given: no `violation_threshold` applies, and without a confidence no
    /// `escalate_band` sends a policy on to the next backend.
    async fn ask_joint(
        &self,
        policies: &[&Policy],
        content: &Content,
        deadline: Instant,
    ) -> Vec<Result<Verdict, ClassifyError>> {
        let mut prompt = joint::build(policies, content, self.family, self.default_effort);
        let all = |e: ClassifyError| -> Vec<Result<Verdict, ClassifyError>> {
            policies.iter().map(|_| Err(e.clone())).collect()
        };
        let mut retried = false;
        loop {
            let c = match self.model.complete(&prompt, deadline).await {
                Ok(c) => c,
                Err(e) => return all(e),
            };
            let (analysis, final_text) = channels(&c);
            match joint::parse(&final_text, analysis.as_deref(), &prompt.joint) {
                Ok(answers) => {
                    let n = policies.len() as u32;
                    return answers
                        .into_iter()
                        .map(|a| -> Result<Verdict, ClassifyError> {
                            let a = a.map_err(|e| ClassifyError::Backend(e.to_string()))?;
                            Ok(Verdict {
                                code: a.code,
                                confidence: a
                                    .confidence
                                    .map(|c| if a.violation { c } else { 1.0 - c }),
                                rationale: a.rationale,
                                joint_with: Some(n),
                                ..self.called(&c, a.violation)
                            })
                        })
                        .collect();
                }
                Err(VerdictError::Empty) => match prompt.reasoning_effort.and_then(|e| e.lower()) {
                    Some(lower) if !retried => {
                        prompt.reasoning_effort = Some(lower);
                        retried = true;
                    }
                    _ => return all(ClassifyError::Backend(VerdictError::Empty.to_string())),
                },
                Err(e) => return all(ClassifyError::Backend(e.to_string())),
            }
        }
    }
}

#[async_trait]
impl<M: ChatModel> Classifier for ModelClassifier<M> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn supports(&self, _policy: &Policy) -> bool {
        true
    }

    fn allow_is_final(&self) -> bool {
        true
    }

    async fn classify(
        &self,
        policy: &Policy,
        content: &Content,
        deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        let Some(cache) = &self.cache else {
            return self.ask(policy, content, deadline).await;
        };
        let (hit, slot) = cache.get(policy, content);
        if let Some(v) = hit {
            self.count_cache("hit");
            return Ok(v);
        }
        self.count_cache("miss");
        let v = self.ask(policy, content, deadline).await?;
        // Only answers are cached; errors and deadlines are retried by the next request.
        cache.put(slot, &v);
        Ok(v)
    }

    async fn warm(&self, policy: &Policy) {
        if !self.model.wants_warmup() {
            return;
        }
        // Any short content will do: what the host keeps is the policy prefix in front of it.
        let content = Content::from_segments(vec![Segment {
            source: Source::User,
            text: "warm-up".into(),
            location: "warmup".into(),
        }]);
        let prompt = build(policy, &content, self.family, self.default_effort);
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_secs(600);
        match self.model.complete(&prompt, deadline).await {
            Ok(_) => tracing::info!(
                policy = %policy.id,
                backend = self.name,
                ms = started.elapsed().as_millis() as u64,
                "policy prefix warmed"
            ),
            Err(e) => {
                tracing::warn!(policy = %policy.id, backend = self.name, error = %e, "warm-up failed")
            }
        }
    }

    /// The verdict cache is asked per policy (policy version + content), the key the per-policy
    /// mode uses: a verdict is one policy's judgement of one content, and a set's key would
    /// miss whenever rules settle part of a set or another route binds another set. When any
    /// policy misses, the whole set is asked (not only the misses): with the set's prefix
    /// cached the call costs the content and the answers either way, while a smaller set's
    /// prompt would be a prefix the model has not seen.
    async fn classify_joint(
        &self,
        policies: &[&Policy],
        content: &Content,
        deadline: Instant,
    ) -> Option<Vec<Result<Verdict, ClassifyError>>> {
        let sorted = joint::in_order(policies)?;
        let slots = match &self.cache {
            Some(cache) => {
                let looked: Vec<_> = policies.iter().map(|p| cache.get(p, content)).collect();
                if looked.iter().all(|(hit, _)| hit.is_some()) {
                    for _ in policies {
                        self.count_cache("hit");
                    }
                    return Some(
                        looked
                            .into_iter()
                            .map(|(v, _)| Ok(v.expect("all hit")))
                            .collect(),
                    );
                }
                for _ in policies {
                    self.count_cache("miss");
                }
                Some(looked.into_iter().map(|(_, slot)| slot).collect::<Vec<_>>())
            }
            None => None,
        };
        let mut answers: Vec<Option<Result<Verdict, ClassifyError>>> = self
            .ask_joint(&sorted, content, deadline)
            .await
            .into_iter()
            .map(Some)
            .collect();
        // Back to the caller's order.
        let out: Vec<Result<Verdict, ClassifyError>> = policies
            .iter()
            .map(|p| {
                let k = sorted.iter().position(|s| s.id == p.id).expect("same set");
                answers[k].take().expect("each once")
            })
            .collect();
        if let (Some(cache), Some(slots)) = (&self.cache, slots) {
            for (slot, v) in slots.into_iter().zip(&out) {
                if let Ok(v) = v {
                    cache.put(slot, v);
                }
            }
        }
        Some(out)
    }

    async fn warm_joint(&self, policies: &[&Policy]) {
        if !self.model.wants_warmup() {
            return;
        }
        let Some(sorted) = joint::in_order(policies) else {
            return;
        };
        let content = Content::from_segments(vec![Segment {
            source: Source::User,
            text: "warm-up".into(),
            location: "warmup".into(),
        }]);
        let prompt = joint::build(&sorted, &content, self.family, self.default_effort);
        let ids: Vec<&str> = sorted.iter().map(|p| p.id.as_str()).collect();
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_secs(600);
        match self.model.complete(&prompt, deadline).await {
            Ok(_) => tracing::info!(
                policies = %ids.join(","),
                backend = self.name,
                ms = started.elapsed().as_millis() as u64,
                "joint policy prefix warmed"
            ),
            Err(e) => {
                tracing::warn!(policies = %ids.join(","), backend = self.name, error = %e, "joint warm-up failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;
    use crate::wire::{Segment, Source};
    use std::sync::Mutex;

    /// A host that replays canned completions and records the prompts it got.
    struct Canned {
        replies: Mutex<Vec<Completion>>,
        seen: Mutex<Vec<Prompt>>,
    }

    #[async_trait]
    impl ChatModel for Canned {
        fn model_id(&self) -> &str {
            "canned"
        }
        async fn complete(&self, p: &Prompt, _d: Instant) -> Result<Completion, ClassifyError> {
            self.seen.lock().unwrap().push(p.clone());
            Ok(self.replies.lock().unwrap().remove(0))
        }
    }

    fn setup(replies: Vec<Completion>) -> (ModelClassifier<Canned>, Policy, Content) {
        let policy = parse_policy(
            std::path::Path::new("p.md"),
            b"+++\nid = \"t/p\"\ntitle = \"t\"\nversion = \"1\"\nreasoning_effort = \"medium\"\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n+++\nPolicy text.\n",
        )
        .unwrap();
        let content = Content::from_segments(vec![Segment {
            source: Source::User,
            text: "hello".into(),
            location: "m".into(),
        }]);
        let m = Canned {
            replies: Mutex::new(replies),
            seen: Mutex::new(vec![]),
        };
        (
            ModelClassifier::new("test", m, Family::GptOssSafeguard, Effort::Low),
            policy,
            content,
        )
    }

    fn deadline() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[tokio::test]
    async fn prompt_and_verdict() {
        let (c, p, content) = setup(vec![Completion {
            text: "{\"violation\":1,\"policy_category\":\"X1\"}".into(),
            reasoning: Some("because".into()),
            prompt_tokens: Some(100),
            completion_tokens: Some(9),
            ..Default::default()
        }]);
        let v = c.classify(&p, &content, deadline()).await.unwrap();
        assert!(v.violation);
        assert_eq!(v.code.as_deref(), Some("X1"));
        assert_eq!(v.rationale.as_deref(), Some("because"));
        assert_eq!(v.prompt_tokens, Some(100));
        let seen = c.model.seen.lock().unwrap();
        assert_eq!(seen[0].system, "Policy text.");
        assert_eq!(seen[0].user, "hello");
        assert_eq!(seen[0].reasoning_effort, Some(Effort::Medium));
    }

    #[tokio::test]
    async fn empty_answer_retries_with_lower_effort_then_fails() {
        let empty = Completion {
            text: String::new(),
            reasoning: Some("thinking...".into()),
            ..Default::default()
        };
        let ok = Completion {
            text: "{\"violation\":0}".into(),
            ..Default::default()
        };
        let (c, p, content) = setup(vec![empty.clone(), ok]);
        let v = c.classify(&p, &content, deadline()).await.unwrap();
        assert!(!v.violation);
        let efforts: Vec<_> = c
            .model
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.reasoning_effort)
            .collect();
        assert_eq!(efforts, vec![Some(Effort::Medium), Some(Effort::Low)]);
        let (c, p, content) = setup(vec![empty.clone(), empty]);
        let e = c.classify(&p, &content, deadline()).await.unwrap_err();
        assert!(
            matches!(e, ClassifyError::Backend(ref m) if m.contains("no final answer")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_policys_own_threshold_wins_over_the_backends() {
        let answer = |p: f32| Completion {
            text: format!(
                "{{\"violation\":{},\"policy_category\":\"X1\"}}",
                (p >= 0.5) as u8
            ),
            p_violation: Some(p),
            ..Default::default()
        };
        let (c, p, content) = setup(vec![answer(0.7), answer(0.3), answer(0.3)]);
        let c = c.with_violation_threshold(Some(0.9), HashMap::from([("t/p".to_string(), 0.2)]));
        let v = c.classify(&p, &content, deadline()).await.unwrap();
        assert!(v.violation && v.confidence == Some(0.7));
        let v = c.classify(&p, &content, deadline()).await.unwrap();
        assert!(v.violation, "0.3 >= the policy's 0.2");
        assert_eq!(v.code, None, "the answer said 0: no code to give");
        let mut other = p.clone();
        other.id = "t/other".into();
        let v = c.classify(&other, &content, deadline()).await.unwrap();
        assert!(!v.violation, "0.3 < the backend's 0.9");
    }

    fn named(id: &str, code: &str) -> Policy {
        parse_policy(
            std::path::Path::new("p.md"),
            format!("+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1\"\n[[codes]]\ncode = \"{code}\"\ntitle = \"x\"\n+++\nPolicy {id}.\n").as_bytes(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn one_joint_call_fans_out_to_a_verdict_per_policy_in_the_callers_order() {
        let answer = Completion {
            text: r#"{"t/a": {"violation": 0, "policy_category": null}, "t/b": {"violation": 1, "policy_category": "B1", "confidence": 0.8}}"#.into(),
            reasoning: Some("shared".into()),
            prompt_tokens: Some(500),
            completion_tokens: Some(30),
            p_violation: Some(0.99),
            ..Default::default()
        };
        let (c, _, content) = setup(vec![answer.clone(), answer]);
        let cache = Arc::new(VerdictCache::new(100, std::time::Duration::from_secs(60)));
        let c = c
            .with_cache(cache.clone())
            .with_violation_threshold(Some(0.1), HashMap::new());
        let (a, b, z) = (named("t/a", "A1"), named("t/b", "B1"), named("t/z", "Z1"));
        let vs = c
            .classify_joint(&[&b, &a], &content, deadline())
            .await
            .expect("a model backend joins");
        assert_eq!(c.model.seen.lock().unwrap().len(), 1, "one call");
        let (vb, va) = (vs[0].as_ref().unwrap(), vs[1].as_ref().unwrap());
        assert!(vb.violation && vb.code.as_deref() == Some("B1"));
        // The first digit's odds are not t/a's, and no threshold turns its 0 into a 1.
        assert!(!va.violation && va.confidence.is_none());
        assert_eq!(vb.confidence, Some(0.8));
        for v in [va, vb] {
            assert_eq!(v.joint_with, Some(2));
            assert_eq!(v.prompt_tokens, Some(500));
            assert_eq!(v.rationale.as_deref(), Some("shared"));
        }
        let seen = c.model.seen.lock().unwrap()[0].clone();
        assert!(seen.system.find("POLICY t/a").unwrap() < seen.system.find("POLICY t/b").unwrap());
        // Per-policy cache entries: the same set again is no call.
        let again = c
            .classify_joint(&[&a, &b], &content, deadline())
            .await
            .unwrap();
        assert!(again.iter().all(|v| v.as_ref().unwrap().cache_hit));
        assert_eq!(c.model.seen.lock().unwrap().len(), 1);
        // One policy the answer misses: that one fails, the others stand, and the set is asked
        // whole although two of its policies are cached.
        let vs = c
            .classify_joint(&[&a, &z, &b], &content, deadline())
            .await
            .unwrap();
        assert_eq!(c.model.seen.lock().unwrap().len(), 2);
        assert!(c.model.seen.lock().unwrap()[1]
            .system
            .contains("POLICY t/z"));
        assert!(vs[0].is_ok() && vs[2].is_ok());
        assert!(matches!(&vs[1], Err(ClassifyError::Backend(m)) if m.contains("no entry for t/z")));
        assert!(c
            .classify_joint(&[&a, &a], &content, deadline())
            .await
            .is_none());
    }

    #[tokio::test]
    async fn unparseable_answer_is_an_error_not_a_guess() {
        let (c, p, content) = setup(vec![Completion {
            text: "The content seems fine".into(),
            ..Default::default()
        }]);
        assert!(c.classify(&p, &content, deadline()).await.is_err());
    }
}
