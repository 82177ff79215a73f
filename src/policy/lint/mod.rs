//! `guardgate policy lint`: checks a policy file for what makes it hard for a model to follow or
//! for the gateway to use.
//!
//! The checks are the entries of [`RULES`], one small type each, grouped by what they read:
//! `front_matter`, `structure`, `codes`, `rules` (the deterministic ones), `wording` and
//! `examples`. Each reads a [`PolicyDoc`], the file as the loader sees it, cut and indexed once,
//! and reports under its own name. docs/POLICIES.md lists them for policy authors.
//!
//! Lint lists files with [`crate::policy::discover`] and cuts them with
//! [`crate::policy::file::split_front_matter`], as the registry does, so the files `lint` checks
//! are the files `serve` loads.

mod codes;
mod doc;
mod examples;
mod front_matter;
mod rules;
mod structure;
#[cfg(test)]
mod tests;
mod wording;

use regex::Regex;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::eval::cases::{find_cases_for, load_cases};

// The command line's path arguments (`policy test`, `classify` too) mean what they mean to lint.
pub use crate::policy::discover::policy_files;
pub use doc::{CaseFile, PolicyDoc};
pub use structure::{approx_tokens, HARD_MAX_TOKENS, MAX_TOKENS, MIN_TOKENS, REQUIRED_SECTIONS};
pub use wording::VAGUE_WORDS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: String,
    pub line: usize,
    pub level: Level,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {} [{}]",
            self.path,
            self.line,
            self.level.as_str(),
            self.message,
            self.rule
        )
    }
}

/// One check. A rule reads the document and reports what it finds; it never sees another
/// rule's findings, so each can be read, tested and removed on its own.
pub trait LintRule: Sync {
    /// The name its findings carry (`[name]` in text output, `rule` in JSON): what a user
    /// searches the docs for, so it never changes once released.
    fn name(&self) -> &'static str;
    fn check(&self, doc: &PolicyDoc, out: &mut Findings);
}

/// Every check, in the order findings on the same line and level are printed (the output is
/// sorted by line, errors first).
pub static RULES: &[&dyn LintRule] = &[
    &codes::DuplicateCode,
    &rules::ConflictingRules,
    &front_matter::Thresholds,
    &front_matter::FrontMatter,
    &front_matter::IdPath,
    &front_matter::Refusal,
    &structure::MissingSection,
    &structure::SectionOrder,
    &structure::OutputFormat,
    &codes::UnknownCode,
    &codes::UndescribedCode,
    &structure::Length,
    &wording::VagueWording,
    &examples::Examples,
    &examples::Cases,
    &rules::RuleNeverFires,
    &rules::RuleFiresOnAllowed,
];

/// The checks of a redact policy (`action = "redact"`): its body is documentation, not a prompt,
/// and it has no codes, so only the front matter is checked.
pub static REDACT_RULES: &[&dyn LintRule] = &[
    &front_matter::Thresholds,
    &front_matter::FrontMatter,
    &front_matter::IdPath,
    &front_matter::Redact,
];

/// Where one rule reports on one file. Findings are stamped with the file and the rule's name
/// here, so a rule cannot report under another's name.
pub struct Findings<'a> {
    path: &'a str,
    rule: &'static str,
    out: &'a mut Vec<Diagnostic>,
}

impl Findings<'_> {
    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Level::Error, message.into());
    }

    pub fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Level::Warning, message.into());
    }

    fn push(&mut self, line: usize, level: Level, message: String) {
        self.out.push(Diagnostic {
            path: self.path.to_string(),
            line,
            level,
            rule: self.rule,
            message,
        });
    }
}

/// A regex the lint rules build once, from a pattern written in the source.
fn cached(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("lint regex"))
}

/// Runs `rules` on one document, findings sorted by line, errors first.
fn run(rules: &[&dyn LintRule], doc: &PolicyDoc) -> Vec<Diagnostic> {
    let path = doc.path.display().to_string();
    let mut out = Vec::new();
    for rule in rules {
        rule.check(
            doc,
            &mut Findings {
                path: &path,
                rule: rule.name(),
                out: &mut out,
            },
        );
    }
    out.sort_by_key(|d| (d.line, std::cmp::Reverse(d.level)));
    out
}

/// A file no rule can read (unreadable, not UTF-8, no front matter): one `front-matter` error.
fn unreadable(path: &Path, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic {
        path: path.display().to_string(),
        line: 1,
        level: Level::Error,
        rule: front_matter::FrontMatter.name(),
        message,
    }]
}

/// Lints one policy file. The case file next to it (`<stem>.cases.jsonl`), when present, is
/// read too: its violating cases count as the policy's own examples.
pub fn lint_file(path: &Path) -> Vec<Diagnostic> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let cases = find_cases_for(path).map(|c| (c.clone(), load_cases(&c)));
            lint_bytes(path, &bytes, cases)
        }
        Err(e) => unreadable(path, format!("cannot read: {e}")),
    }
}

type CasesArg = Option<(PathBuf, Result<Vec<crate::eval::Case>, String>)>;

/// Lints a policy's bytes as if read from `path`, with its case file (path and parse result).
pub fn lint_bytes(path: &Path, bytes: &[u8], cases: CasesArg) -> Vec<Diagnostic> {
    let cases = cases.map(|(path, cases)| CaseFile { path, cases });
    match PolicyDoc::read(path, bytes, cases) {
        Ok(doc) if front_matter::is_redact(&doc) => run(REDACT_RULES, &doc),
        Ok(doc) => run(RULES, &doc),
        Err(why) => unreadable(path, why),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub files: usize,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Lints every policy file under `paths`.
pub fn lint_paths(paths: &[PathBuf]) -> Result<Summary, String> {
    let files = policy_files(paths)?;
    let mut s = Summary {
        files: files.len(),
        ..Default::default()
    };
    for f in &files {
        s.diagnostics.extend(lint_file(f));
    }
    s.errors = s
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .count();
    s.warnings = s.diagnostics.len() - s.errors;
    Ok(s)
}
