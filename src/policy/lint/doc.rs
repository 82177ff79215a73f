//! The policy file as the lint rules read it: cut by the loader's own split, parsed both strictly
//! (the loader's verdict) and loosely (any TOML table, so a file the loader rejects still has its
//! codes and rules checked by name), and its body indexed into sections and examples once.

use regex::Regex;
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::cached;
use crate::classify::verdict::OutputFormat;
use crate::classify::Content;
use crate::eval::Case;
use crate::policy::file::{parse_policy, split_front_matter, Split};
use crate::policy::{Policy, PolicyError};

/// The case file next to a policy, as read.
pub struct CaseFile {
    pub path: PathBuf,
    pub cases: Result<Vec<Case>, String>,
}

/// A `## ` heading of the body.
pub struct Section {
    /// Index into `PolicyDoc::lines` of the heading itself.
    pub index: usize,
    pub heading: String,
}

/// A `[[codes]]` entry as written, missing fields left empty (the loader's defaults where the
/// comparison needs one).
pub struct DeclaredCode {
    pub code: String,
    pub title: String,
    pub severity: String,
}

/// One bullet of `## Examples`: its quoted text and its label, when they can be read.
pub struct Example {
    /// File line.
    pub line: usize,
    pub text: Option<String>,
    pub violation: Option<bool>,
}

/// A text the policy itself labels (an example or a case), normalised as the classifier sees it.
pub struct Labelled {
    /// As the rules classifier sees it: a case's messages are items of their own.
    pub content: Content,
    pub violation: bool,
    /// Where it comes from, for messages: "example on line 40", "a case".
    pub source: String,
}

pub struct PolicyDoc<'a> {
    pub path: &'a Path,
    pub front_matter: &'a str,
    /// The front matter as any TOML table; `None` when it is not TOML at all.
    pub table: Option<toml::Table>,
    /// What the loader makes of the file.
    pub policy: Result<Policy, PolicyError>,
    pub codes: Vec<DeclaredCode>,
    pub output_format: OutputFormat,
    pub body: &'a str,
    /// File line of the body's first line.
    pub body_line: usize,
    pub lines: Vec<&'a str>,
    pub sections: Vec<Section>,
    pub has_title: bool,
    /// Bullets of the `## Examples` section (empty without one).
    pub examples: Vec<Example>,
    pub cases: Option<CaseFile>,
    labelled: OnceCell<Vec<Labelled>>,
}

impl<'a> PolicyDoc<'a> {
    /// `Err` says why no rule can read the file: not UTF-8, or no front matter to split off.
    pub fn read(
        path: &'a Path,
        bytes: &'a [u8],
        cases: Option<CaseFile>,
    ) -> Result<PolicyDoc<'a>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let Split {
            front_matter,
            body,
            body_line,
        } = split_front_matter(text).ok_or(
            "missing TOML front matter: start the file with a '+++' line and close it with another",
        )?;
        let table = front_matter.parse::<toml::Table>().ok();
        let lines: Vec<&str> = body.lines().collect();
        let sections: Vec<Section> = lines
            .iter()
            .enumerate()
            .filter_map(|(index, l)| {
                let heading = l.strip_prefix("## ")?.trim().to_string();
                Some(Section { index, heading })
            })
            .collect();
        let mut doc = PolicyDoc {
            path,
            front_matter,
            codes: table.as_ref().map(declared_codes).unwrap_or_default(),
            output_format: table
                .as_ref()
                .and_then(|t| t.get("output_format")?.as_str())
                .filter(|f| *f == "binary")
                .map_or(OutputFormat::Json, |_| OutputFormat::Binary),
            table,
            policy: parse_policy(path, bytes),
            body,
            body_line,
            has_title: lines.iter().any(|l| l.starts_with("# ")),
            lines,
            sections,
            examples: Vec::new(),
            cases,
            labelled: OnceCell::new(),
        };
        doc.examples = doc.read_examples();
        Ok(doc)
    }

    /// File line of body line `i`.
    pub fn at(&self, i: usize) -> usize {
        self.body_line + i
    }

    /// File line of the first front-matter line containing `needle`; 1 (the file's start) when
    /// none does.
    pub fn line_of(&self, needle: &str) -> usize {
        self.front_matter
            .lines()
            .position(|l| l.contains(needle))
            .map_or(1, |i| i + 2)
    }

    /// File line of the `[[codes]]` entry declaring `code`.
    pub fn code_line(&self, code: &str) -> usize {
        self.line_of(&format!("\"{code}\""))
    }

    /// The first section whose heading starts with `name`, ignoring case (`Allowed (tier 0)`).
    pub fn section(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        self.sections
            .iter()
            .position(|s| s.heading.to_ascii_lowercase().starts_with(&name))
    }

    /// Body line indices of section `idx`'s content, heading excluded.
    pub fn section_lines(&self, idx: usize) -> std::ops::Range<usize> {
        let start = self.sections[idx].index + 1;
        let end = self
            .sections
            .get(idx + 1)
            .map_or(self.lines.len(), |s| s.index);
        start..end
    }

    /// Whether `token` names a declared code: exactly, or as the family of one (`X1` for `X1.a`).
    pub fn is_declared(&self, token: &str) -> bool {
        self.codes.iter().any(|c| c.code == token)
            || (!token.contains('.')
                && self
                    .codes
                    .iter()
                    .any(|c| c.code.starts_with(&format!("{token}."))))
    }

    /// The policy's own labelled texts: readable examples first, then the case file's cases.
    pub fn labelled(&self) -> &[Labelled] {
        self.labelled.get_or_init(|| {
            let examples = self.examples.iter().filter_map(|x| {
                let case = Case::text("example", x.text.clone()?, x.violation?);
                Some((case, format!("example on line {}", x.line)))
            });
            let cases = self
                .cases
                .iter()
                .filter_map(|c| c.cases.as_ref().ok())
                .flatten()
                .filter(|c| c.text.is_some() || c.messages.is_some())
                .map(|c| (c.clone(), "a case".to_string()));
            examples
                .chain(cases)
                .map(|(case, source)| Labelled {
                    content: case.content(),
                    violation: case.is_violation(),
                    source,
                })
                .collect()
        })
    }

    fn read_examples(&self) -> Vec<Example> {
        let Some(ix) = self.section("Examples") else {
            return Vec::new();
        };
        self.section_lines(ix)
            .filter_map(|i| {
                let t = self.lines[i].trim_start();
                if !(t.starts_with("- ") || t.starts_with("* ")) {
                    return None;
                }
                Some(Example {
                    line: self.at(i),
                    text: quoted_text(t),
                    violation: label(t),
                })
            })
            .collect()
    }
}

fn declared_codes(table: &toml::Table) -> Vec<DeclaredCode> {
    let field = |c: &toml::Value, k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
    table
        .get("codes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .map(|c| DeclaredCode {
            code: field(c, "code").unwrap_or_default(),
            title: field(c, "title").unwrap_or_default(),
            severity: field(c, "severity").unwrap_or_else(|| "high".into()),
        })
        .collect()
}

/// The JSON verdict in an example line (`"violation": 1`), or for the binary format a trailing
/// `-> 1`.
fn label(line: &str) -> Option<bool> {
    static JSON: OnceLock<Regex> = OnceLock::new();
    static BINARY: OnceLock<Regex> = OnceLock::new();
    cached(&JSON, r#""?violation"?\s*:\s*([01])"#)
        .captures(line)
        .or_else(|| cached(&BINARY, r"(?:->|→|=>|:)\s*`?([01])`?\s*$").captures(line))
        .map(|c| &c[1] == "1")
}

/// The first quoted text of an example line: the content being judged.
fn quoted_text(line: &str) -> Option<String> {
    static Q: OnceLock<Regex> = OnceLock::new();
    cached(&Q, r#"^[-*]\s+(?:[^"“]*?)["“]([^"”]+)["”]"#)
        .captures(line)
        .map(|c| c[1].to_string())
}
