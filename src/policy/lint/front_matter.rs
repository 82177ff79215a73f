//! Checks of the TOML front matter as a whole: what the loader rejects, and what it accepts but
//! would mislead.

use super::{Findings, LintRule, PolicyDoc};
use crate::policy::file::REFUSAL_ERROR;

/// The loader rejects the file (TOML syntax, unknown keys, ids, rules, regexes): `serve` would
/// refuse to start, or a reload would keep the old snapshot. Files that cannot be read, are not
/// UTF-8 or have no front matter are reported under this name too, before any rule runs.
pub struct FrontMatter;

/// The loader's message for a code declared twice: `duplicate-code` reports that one, with both
/// definitions.
const DUPLICATE_CODE: &str = "codes: duplicate code";

impl LintRule for FrontMatter {
    fn name(&self) -> &'static str {
        "front-matter"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Err(e) = &doc.policy else {
            return;
        };
        if e.reason.starts_with(DUPLICATE_CODE) || e.reason.starts_with(REFUSAL_ERROR) {
            return;
        }
        let line = e
            .reason
            .strip_prefix("front matter line ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        out.error(line, e.reason.clone());
    }
}

/// A `[thresholds]` value outside 0..=1: the fields are fractions, and `min_recall = 90` can
/// never be met while `max_fpr = 5` never fails, so the quality bar silently means nothing.
pub struct Thresholds;

impl LintRule for Thresholds {
    fn name(&self) -> &'static str {
        "thresholds"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Some(t) = doc
            .table
            .as_ref()
            .and_then(|t| t.get("thresholds")?.as_table())
        else {
            return;
        };
        for (k, v) in t {
            let Some(x) = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) else {
                continue;
            };
            if !(0.0..=1.0).contains(&x) {
                out.error(
                    doc.line_of(k),
                    format!("thresholds.{k} = {x}: use a fraction between 0 and 1"),
                );
            }
        }
    }
}

/// The id's last part differs from the file name: whoever reads an audit line or a route's
/// selection looks for the file by id. A candidate file `name.<suffix>.md` may carry the live
/// policy's id.
pub struct IdPath;

impl LintRule for IdPath {
    fn name(&self) -> &'static str {
        "id-path"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Ok(p) = &doc.policy else {
            return;
        };
        let Some(stem) = doc.path.file_stem().map(|s| s.to_string_lossy()) else {
            return;
        };
        let last = p.id.rsplit('/').next().unwrap_or(&p.id);
        if last != stem && !stem.starts_with(&format!("{last}.")) {
            out.warning(
                doc.line_of("id"),
                format!("id {:?} does not end in the file name {stem:?}", p.id),
            );
        }
    }
}

/// `[refusal]`: what the loader refuses in it (an empty or overlong text, a malformed language
/// tag), reported at its key, and a text that names the policy's id or one of its codes. A
/// refusal is read by the blocked client's user; the id and code are in the `x-guardgate-*`
/// headers for the developer, and in the text they tell a user how the guard is built.
pub struct Refusal;

impl Refusal {
    /// File line of `key` (`message`, `messages.de`) under the `[refusal]` table.
    fn key_line(doc: &PolicyDoc, key: &str) -> usize {
        let name = key.rsplit('.').next().unwrap_or(key);
        let lines: Vec<&str> = doc.front_matter.lines().collect();
        let Some(start) = lines
            .iter()
            .position(|l| l.trim_start().starts_with("[refusal"))
        else {
            return 1;
        };
        let names_it = |l: &str| {
            let l = l.trim_start();
            [name.to_string(), format!("\"{name}\""), format!("'{name}'")]
                .iter()
                .any(|n| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|r| r.trim_start().starts_with('='))
                })
        };
        let at = lines[start..]
            .iter()
            .position(|l| names_it(l))
            .map_or(start, |i| start + i);
        at + 2
    }
}

impl LintRule for Refusal {
    fn name(&self) -> &'static str {
        "refusal"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        if let Err(e) = &doc.policy {
            if let Some(rest) = e.reason.strip_prefix(REFUSAL_ERROR) {
                let key = rest.split(':').next().unwrap_or("");
                out.error(Self::key_line(doc, key), e.reason.clone());
            }
        }
        let Some(table) = doc.table.as_ref() else {
            return;
        };
        let Some(refusal) = table.get("refusal").and_then(|r| r.as_table()) else {
            return;
        };
        let mut texts: Vec<(String, &str)> = Vec::new();
        if let Some(m) = refusal.get("message").and_then(|m| m.as_str()) {
            texts.push(("message".into(), m));
        }
        for (tag, m) in refusal
            .get("messages")
            .and_then(|m| m.as_table())
            .into_iter()
            .flatten()
        {
            if let Some(m) = m.as_str() {
                texts.push((format!("messages.{tag}"), m));
            }
        }
        let id = table
            .get("id")
            .and_then(|i| i.as_str())
            .filter(|i| !i.is_empty());
        for (key, text) in texts {
            let named = id
                .filter(|id| text.contains(id))
                .map(|id| format!("the policy id {id:?}"))
                .or_else(|| {
                    doc.codes
                        .iter()
                        .find(|c| !c.code.is_empty() && text.contains(&c.code))
                        .map(|c| format!("the code {:?}", c.code))
                });
            if let Some(what) = named {
                out.warning(
                    Self::key_line(doc, &key),
                    format!(
                        "refusal.{key} names {what}: the blocked client's user reads it; the id and code are in the x-guardgate-* headers"
                    ),
                );
            }
        }
    }
}

/// Whether the file is a redact policy, as written (also when the loader rejects it).
pub(super) fn is_redact(doc: &PolicyDoc) -> bool {
    doc.table
        .as_ref()
        .and_then(|t| t.get("action")?.as_str())
        .is_some_and(|a| a == "redact")
}

/// A redact policy that replaces nothing (`detect = []` and no rules), or whose rules carry codes,
/// which redaction does not use (the rule's id names its placeholder).
pub struct Redact;

impl LintRule for Redact {
    fn name(&self) -> &'static str {
        "redact"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        let Some(t) = doc.table.as_ref() else {
            return;
        };
        let rules = t.get("rules").and_then(|r| r.as_array());
        let detect = t
            .get("redact")
            .and_then(|r| r.get("detect"))
            .and_then(|d| d.as_array());
        if detect.is_some_and(|d| d.is_empty()) && rules.is_none_or(|r| r.is_empty()) {
            out.error(
                doc.line_of("detect"),
                "detect = [] and no [[rules]]: the policy redacts nothing",
            );
        }
        for r in rules.into_iter().flatten() {
            if r.get("code").is_some() {
                let id = r.get("id").and_then(|i| i.as_str()).unwrap_or("?");
                out.warning(
                    doc.line_of("code"),
                    format!(
                        "rules.{id}: code is not used by a redact policy (the placeholder is named after the rule id)"
                    ),
                );
            }
        }
    }
}
