//! Checks of the body's shape: the sections a model needs, where the output format is stated, and
//! how long the body is.

use regex::Regex;
use std::sync::OnceLock;

use super::{cached, Findings, LintRule, PolicyDoc};
use crate::classify::verdict::OutputFormat as Format;

/// Required `##` sections, matched case-insensitively on the heading's start.
pub const REQUIRED_SECTIONS: &[&str] = &[
    "Instructions",
    "Definitions",
    "Allowed",
    "Violations",
    "Ambiguity",
    "Examples",
];

pub const MIN_TOKENS: usize = 400;
pub const MAX_TOKENS: usize = 700;
pub const HARD_MAX_TOKENS: usize = 10_000;

/// Approximate token count used by the `length` rule: characters / 4, rounded up.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// A required section is missing (error), or the `# Title` heading (warning). Policy models are
/// trained on this layout: without a section saying what is allowed, or how to settle ambiguity,
/// the model guesses, and the guesses differ between models and between runs.
pub struct MissingSection;

impl LintRule for MissingSection {
    fn name(&self) -> &'static str {
        "missing-section"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        if !doc.has_title {
            out.warning(doc.body_line, "no '# Title' heading");
        }
        for name in REQUIRED_SECTIONS {
            if doc.section(name).is_none() {
                out.error(doc.body_line, format!("no '## {name}' section"));
            }
        }
    }
}

/// `## Instructions` is not the first section: it states the output format, and a model reading
/// a long policy follows a format given at the top more reliably than one given halfway down.
pub struct SectionOrder;

impl LintRule for SectionOrder {
    fn name(&self) -> &'static str {
        "section-order"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Some(ix) = doc.section("Instructions").filter(|&ix| ix != 0) else {
            return;
        };
        out.warning(
            doc.at(doc.sections[ix].index),
            format!(
                "'## Instructions' should be the first section (it comes after '## {}'): the output format belongs near the top",
                doc.sections[0].heading
            ),
        );
    }
}

/// The body never states the answer format the backend parses (`violation` and
/// `policy_category` for `json`, `0`/`1` for `binary`): the model answers in prose and every
/// verdict is a parse error. Stated only outside `## Instructions` is a warning.
pub struct OutputFormat;

impl OutputFormat {
    fn mentioned(format: Format, text: &str) -> bool {
        match format {
            Format::Json => text.contains("violation") && text.contains("policy_category"),
            Format::Binary => {
                static ZERO: OnceLock<Regex> = OnceLock::new();
                static ONE: OnceLock<Regex> = OnceLock::new();
                cached(&ZERO, r"\b0\b").is_match(text) && cached(&ONE, r"\b1\b").is_match(text)
            }
        }
    }

    fn what(format: Format) -> &'static str {
        match format {
            Format::Json => {
                "the JSON keys `violation` and `policy_category` (output_format = json)"
            }
            Format::Binary => "the answers 0 and 1 (output_format = binary)",
        }
    }
}

impl LintRule for OutputFormat {
    fn name(&self) -> &'static str {
        "output-format"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let format = doc.output_format;
        let instructions = doc.section("Instructions");
        let text = instructions
            .map(|ix| doc.lines[doc.section_lines(ix)].join("\n"))
            .unwrap_or_default();
        if Self::mentioned(format, &text) {
            return;
        }
        let line = instructions.map_or(doc.body_line, |ix| doc.at(doc.sections[ix].index));
        let what = Self::what(format);
        if Self::mentioned(format, doc.body) {
            out.warning(
                line,
                format!(
                    "state the output format in '## Instructions' (near the top): mention {what}"
                ),
            );
        } else {
            out.error(
                line,
                format!(
                    "the body never states an output format the backend can parse: mention {what}"
                ),
            );
        }
    }
}

/// Body length in approximate tokens (characters / 4): short policies leave the boundary
/// undefined, long ones dilute it and cost prefill on every request; above 10,000 the model's
/// context is mostly policy.
pub struct Length;

impl LintRule for Length {
    fn name(&self) -> &'static str {
        "length"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let tokens = approx_tokens(doc.body);
        if tokens > HARD_MAX_TOKENS {
            out.error(
                doc.body_line,
                format!(
                    "body is about {tokens} tokens (characters/4); the limit is {HARD_MAX_TOKENS}"
                ),
            );
        } else if !(MIN_TOKENS..=MAX_TOKENS).contains(&tokens) {
            out.warning(
                doc.body_line,
                format!(
                    "body is about {tokens} tokens (characters/4); aim for {MIN_TOKENS}-{MAX_TOKENS}"
                ),
            );
        }
    }
}
