//! Checks that the codes in `[[codes]]` and the codes the body, examples and cases use are the
//! same set, each defined once. A code the model answers with but the gateway does not know gets
//! the default severity; a declared code the body never describes is one the model cannot pick.

use regex::Regex;
use std::sync::OnceLock;

use super::{cached, Findings, LintRule, PolicyDoc};

/// A code-shaped token: `WS2`, `WS2.a`.
fn code_token() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    cached(&R, r"\b([A-Z]{1,6}[0-9]+(?:\.[a-z])?)\b")
}

/// The category in an example verdict: `"policy_category": "WS2.a"` (or `null`).
fn category() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    cached(&R, r#""?policy_category"?\s*:\s*(?:"([^"]*)"|(null))"#)
}

/// A code defined in the body: `**WS2.a**`.
fn bold_code() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    cached(&R, r"\*\*([A-Z]{1,6}[0-9]+(?:\.[a-z])?)\*\*")
}

/// A code declared twice in `[[codes]]` (error; the message shows both definitions when they
/// differ, since the loader keeps neither), two codes sharing a title (warning: the model cannot
/// tell them apart), or a code defined twice in `## Violations` (warning: two definitions of one
/// code, and the model follows whichever it read last).
pub struct DuplicateCode;

impl DuplicateCode {
    fn declared_twice(doc: &PolicyDoc, out: &mut Findings) {
        for (i, c) in doc.codes.iter().enumerate() {
            let earlier = &doc.codes[..i];
            let line = doc.code_line(&c.code);
            if let Some(first) = earlier.iter().find(|e| e.code == c.code) {
                if first.title != c.title || first.severity != c.severity {
                    out.error(line, format!(
                        "code {} is declared twice with conflicting definitions ({:?}/{} vs {:?}/{})",
                        c.code, first.title, first.severity, c.title, c.severity
                    ));
                } else {
                    out.error(line, format!("code {} is declared twice", c.code));
                }
            } else if let Some(same) = earlier
                .iter()
                .find(|e| !c.title.is_empty() && e.title.eq_ignore_ascii_case(&c.title))
            {
                out.warning(
                    line,
                    format!(
                        "codes {} and {} have the same title {:?}: merge them or tell them apart",
                        same.code, c.code, c.title
                    ),
                );
            }
        }
    }

    fn defined_twice(doc: &PolicyDoc, out: &mut Findings) {
        let Some(ix) = doc.section("Violations") else {
            return;
        };
        let mut defined: Vec<(&str, usize)> = Vec::new();
        for i in doc.section_lines(ix) {
            for cap in bold_code().captures_iter(doc.lines[i]) {
                let c = cap.get(1).map_or("", |m| m.as_str());
                match defined.iter().find(|(k, _)| *k == c) {
                    Some((_, first)) => out.warning(
                        doc.at(i),
                        format!(
                            "code {c} is defined twice in the body (first on line {})",
                            doc.at(*first)
                        ),
                    ),
                    None => defined.push((c, i)),
                }
            }
        }
    }
}

impl LintRule for DuplicateCode {
    fn name(&self) -> &'static str {
        "duplicate-code"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        Self::declared_twice(doc, out);
        Self::defined_twice(doc, out);
    }
}

/// A code used in the body (an example's `policy_category`, or a code-shaped token of a declared
/// family in prose) or expected by a case that `[[codes]]` does not declare: the model would
/// answer with a code the gateway does not know, and a case could never be scored as a match.
pub struct UnknownCode;

impl UnknownCode {
    fn in_body(doc: &PolicyDoc, out: &mut Findings) {
        let families: Vec<&str> = doc.codes.iter().map(|c| family(&c.code)).collect();
        for (i, ln) in doc.lines.iter().enumerate() {
            for cap in category().captures_iter(ln) {
                let Some(c) = cap.get(1).map(|m| m.as_str()) else {
                    continue;
                };
                // `<code or null>` and `A|B` are templates in the format line, not answers.
                if !c.is_empty() && !c.contains('<') && !c.contains('|') && !doc.is_declared(c) {
                    out.error(
                        doc.at(i),
                        format!("policy_category {c:?} is not declared in [[codes]]"),
                    );
                }
            }
            for cap in code_token().captures_iter(ln) {
                let tok = cap.get(1).map_or("", |m| m.as_str());
                // Only a declared family's tokens: other code-shaped words (`GPT4`, `H100`) are
                // not codes.
                if families.contains(&family(tok)) && !doc.is_declared(tok) {
                    out.error(
                        doc.at(i),
                        format!("code {tok} is not declared in [[codes]]"),
                    );
                }
            }
        }
    }

    fn in_cases(doc: &PolicyDoc, out: &mut Findings) {
        let Some(file) = &doc.cases else {
            return;
        };
        let Ok(cases) = &file.cases else {
            return;
        };
        for c in cases {
            let Some(code) = &c.code else {
                continue;
            };
            if !doc.is_declared(code) {
                out.error(
                    1,
                    format!(
                        "case {} in {} expects code {code:?}, which is not declared in [[codes]]",
                        c.id,
                        file.path.display()
                    ),
                );
            }
        }
    }
}

/// A code's family: its leading capitals (`WS` of `WS2.a`).
fn family(code: &str) -> &str {
    let end = code
        .find(|c: char| !c.is_ascii_uppercase())
        .unwrap_or(code.len());
    &code[..end]
}

impl LintRule for UnknownCode {
    fn name(&self) -> &'static str {
        "unknown-code"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        Self::in_body(doc, out);
        Self::in_cases(doc, out);
    }
}

/// A declared code the body never mentions: the model only answers with codes the text it
/// reads describes, so the code can never be returned.
pub struct UndescribedCode;

impl LintRule for UndescribedCode {
    fn name(&self) -> &'static str {
        "undescribed-code"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        for c in &doc.codes {
            if c.code.is_empty() {
                continue;
            }
            // The code as a word of its own: `X1` is not described by `X12`, `X1.a` or `AX1`,
            // but a sentence may end right after it (`... answer X1.`).
            let mention = Regex::new(&format!(
                r"(?:^|[^\w.]){}(?:$|[^\w]|\.(?:$|\s))",
                regex::escape(&c.code)
            ))
            .expect("escaped");
            if !mention.is_match(doc.body) {
                out.error(doc.code_line(&c.code), format!(
                    "code {} is declared but the body never describes it (the model cannot answer with it)",
                    c.code
                ));
            }
        }
    }
}
