//! Checks of the texts the policy labels itself: the `## Examples` bullets and the case file.

use super::{Findings, LintRule, PolicyDoc};

/// An example without a readable label, or examples that do not show both outcomes: a model
/// learns the boundary from examples on both sides of it, and `rule-never-fires` and
/// `rule-fires-on-allowed` can only test rules against labelled texts.
pub struct Examples;

impl LintRule for Examples {
    fn name(&self) -> &'static str {
        "examples"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Some(ix) = doc.section("Examples") else {
            return;
        };
        for x in doc.examples.iter().filter(|x| x.violation.is_none()) {
            out.warning(
                x.line,
                "example has no readable label (e.g. `{\"violation\": 1, ...}`)",
            );
        }
        let count = |v: bool| {
            doc.examples
                .iter()
                .filter(|x| x.violation == Some(v))
                .count()
        };
        let (violating, allowed) = (count(true), count(false));
        if violating == 0 || allowed == 0 {
            out.warning(
                doc.at(doc.sections[ix].index),
                format!(
                    "examples should show both outcomes ({violating} violating, {allowed} allowed)"
                ),
            );
        }
    }
}

/// The case file next to the policy does not parse: `policy test` and the reload gate would
/// refuse it, and lint would check the rules against nothing.
pub struct Cases;

impl LintRule for Cases {
    fn name(&self) -> &'static str {
        "cases"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        if let Some(Err(e)) = doc.cases.as_ref().map(|c| &c.cases) {
            out.error(1, e.clone());
        }
    }
}
