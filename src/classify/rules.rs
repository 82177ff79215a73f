//! The deterministic backend: regex and keyword rules from a policy's front matter, over
//! normalised text. Microseconds per policy, so it always runs first.

use async_trait::async_trait;
use std::time::Instant;

use super::{Classifier, ClassifyError, Content, Verdict};
use crate::policy::Policy;

#[derive(Debug, Default)]
pub struct RulesClassifier;

impl RulesClassifier {
    /// The synchronous core, also used by tools that classify without a runtime.
    pub fn check(policy: &Policy, content: &Content) -> Verdict {
        let rules = &policy.rules;
        if rules.is_empty() {
            return Verdict::allow("rules");
        }
        let leet = rules.has_leet();
        if !rules.is_match(content.joined(), leet.then(|| content.joined_leet())) {
            return Verdict::allow("rules");
        }
        for item in &content.items {
            let hits = rules.matches(&item.norm, leet.then(|| item.leet()));
            // Most severe matching rule wins; ties go to declaration order (hits are sorted).
            if let Some(rule) = hits
                .iter()
                .map(|&i| &rules.rules[i])
                .min_by_key(|r| std::cmp::Reverse(policy.severity_of(Some(&r.code))))
            {
                return Verdict {
                    violation: true,
                    code: Some(rule.code.clone()),
                    rule_id: Some(rule.id.clone()),
                    confidence: Some(1.0),
                    rationale: Some(format!(
                        "deterministic rule {} matched in {}",
                        rule.id, item.location
                    )),
                    location: Some(item.location.clone()),
                    ..Verdict::allow("rules")
                };
            }
        }
        Verdict::allow("rules")
    }
}

#[async_trait]
impl Classifier for RulesClassifier {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn supports(&self, policy: &Policy) -> bool {
        !policy.rules.is_empty()
    }

    fn allow_is_final(&self) -> bool {
        false
    }

    fn is_cheap(&self) -> bool {
        true
    }

    async fn classify(
        &self,
        policy: &Policy,
        content: &Content,
        _deadline: Instant,
    ) -> Result<Verdict, ClassifyError> {
        Ok(Self::check(policy, content))
    }

    fn answers_now(&self) -> bool {
        true
    }

    fn classify_now(&self, policy: &Policy, content: &Content) -> Option<Verdict> {
        Some(Self::check(policy, content))
    }
}
