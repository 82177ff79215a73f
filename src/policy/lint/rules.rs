//! Checks of the deterministic `[[rules]]`: against each other, and against the texts the policy
//! itself labels (its examples and its case file). A rule blocks without asking the model, so a
//! wrong one is a false positive on every matching request.

use super::doc::Labelled;
use super::{Findings, LintRule, PolicyDoc};
use crate::classify::normalize::normalize;
use crate::policy::file::Rule;

/// Two rules with the same pattern (the same regex, or the same keywords in any order) mapping
/// to different codes (error: which code a match reports depends on declaration order), or to the
/// same one (warning: the copy is dead weight).
pub struct ConflictingRules;

/// A rule as written, reduced to what makes two rules the same.
struct Written {
    id: String,
    code: String,
    pattern: String,
}

impl ConflictingRules {
    /// The rules in the front matter as written; rules with neither a regex nor keywords are
    /// left to `front-matter`.
    fn written(doc: &PolicyDoc) -> Vec<Written> {
        let Some(rules) = doc.table.as_ref().and_then(|t| t.get("rules")?.as_array()) else {
            return Vec::new();
        };
        let field =
            |r: &toml::Value, k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        rules
            .iter()
            .filter_map(|r| {
                let pattern = match (r.get("regex").and_then(|v| v.as_str()), r.get("keywords")) {
                    (Some(re), _) => format!("re:{re}"),
                    (None, Some(k)) => {
                        // Keywords match normalised text in any order: compare them that way.
                        let mut ks: Vec<String> = k
                            .as_array()
                            .map(|a| a.iter().filter_map(|x| x.as_str()).map(normalize).collect())
                            .unwrap_or_default();
                        ks.sort();
                        format!("kw:{}", ks.join("|"))
                    }
                    _ => return None,
                };
                Some(Written {
                    id: field(r, "id"),
                    code: field(r, "code"),
                    pattern,
                })
            })
            .collect()
    }
}

impl LintRule for ConflictingRules {
    fn name(&self) -> &'static str {
        "conflicting-rules"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let rules = Self::written(doc);
        for (i, r) in rules.iter().enumerate() {
            let Some(first) = rules[..i].iter().find(|o| o.pattern == r.pattern) else {
                continue;
            };
            let line = doc.line_of(&format!("\"{}\"", r.id));
            if first.code != r.code {
                out.error(
                    line,
                    format!(
                        "rules {} ({}) and {} ({}) have the same pattern but different codes",
                        first.id, first.code, r.id, r.code
                    ),
                );
            } else {
                out.warning(line, format!("rule {} duplicates rule {}", r.id, first.id));
            }
        }
    }
}

fn hits(rule: &Rule, text: &Labelled) -> bool {
    crate::classify::rules::matches(rule, &text.content)
}

/// File line of a rule's `id = "..."`.
fn rule_line(doc: &PolicyDoc, rule: &Rule) -> usize {
    doc.line_of(&format!("\"{}\"", rule.id))
}

/// A rule that matches none of the policy's own violating examples and cases: nothing shows it
/// catches what it is meant to (a typo in a regex fails silently). Only said when there is a
/// violating text to match.
pub struct RuleNeverFires;

impl LintRule for RuleNeverFires {
    fn name(&self) -> &'static str {
        "rule-never-fires"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Ok(p) = &doc.policy else {
            return;
        };
        let texts = doc.labelled();
        if !texts.iter().any(|t| t.violation) {
            return;
        }
        for r in &p.rules.rules {
            if !texts.iter().any(|t| t.violation && hits(r, t)) {
                out.warning(rule_line(doc, r), format!(
                    "rule {} matches none of the policy's violating examples or cases: add one it catches, or drop the rule",
                    r.id
                ));
            }
        }
    }
}

/// A rule that matches an example or case labelled allowed: the policy itself says that text
/// must pass, and the rule would block it before any model is asked.
pub struct RuleFiresOnAllowed;

impl LintRule for RuleFiresOnAllowed {
    fn name(&self) -> &'static str {
        "rule-fires-on-allowed"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Ok(p) = &doc.policy else {
            return;
        };
        for r in &p.rules.rules {
            if let Some(t) = doc.labelled().iter().find(|t| !t.violation && hits(r, t)) {
                out.warning(
                    rule_line(doc, r),
                    format!(
                        "rule {} matches {}, which is labelled allowed: a certain false positive",
                        r.id, t.source
                    ),
                );
            }
        }
    }
}
