//! Case files: `<policy-file-stem>.cases.jsonl` next to the policy, one labelled example a line:
//!
//! ```json
//! {"id": "sh-001", "text": "...", "label": 1, "code": "SH3.a", "note": "dosage tied to intent"}
//! {"id": "sh-002", "messages": [{"role": "user", "content": "..."}], "label": 0}
//! ```
//!
//! `label` is 1 for a violation, 0 for allowed; `code` (optional) is the expected policy code;
//! blank lines and lines starting with `//` or `#` are skipped.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::classify::Content;
use crate::wire::{Segment, Source};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    pub label: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Case {
    pub fn text(id: impl Into<String>, text: impl Into<String>, label: bool) -> Case {
        Case {
            id: id.into(),
            text: Some(text.into()),
            messages: None,
            label: label as u8,
            code: None,
            note: None,
        }
    }

    pub fn is_violation(&self) -> bool {
        self.label == 1
    }

    /// The case as the classifier sees it: one item per message (roles mapped as the wire
    /// parsers map them), or one user item for `text`.
    pub fn content(&self) -> Content {
        let segments = match (&self.text, &self.messages) {
            (Some(t), _) => vec![Segment {
                source: Source::User,
                text: t.clone(),
                location: "text".into(),
            }],
            (None, Some(ms)) => ms
                .iter()
                .enumerate()
                .map(|(i, m)| Segment {
                    source: match m.role.as_str() {
                        "system" | "developer" => Source::Instructions,
                        "user" => Source::User,
                        "assistant" => Source::Assistant,
                        "tool" => Source::ToolResult,
                        _ => Source::Other,
                    },
                    text: m.content.clone(),
                    location: format!("messages[{i}].content"),
                })
                .collect(),
            (None, None) => vec![],
        };
        Content::from_segments(segments)
    }

    /// A one-line preview for tables.
    pub fn preview(&self, max: usize) -> String {
        let s = match (&self.text, &self.messages) {
            (Some(t), _) => t.clone(),
            (None, Some(ms)) => ms
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join(" | "),
            _ => String::new(),
        };
        let s = s.replace(['\n', '\r'], " ");
        if s.chars().count() > max {
            format!("{}…", s.chars().take(max).collect::<String>())
        } else {
            s
        }
    }
}

/// `policies/general/self-harm.md` -> `policies/general/self-harm.cases.jsonl`.
pub fn cases_path_for(policy_path: &Path) -> PathBuf {
    let stem = policy_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    policy_path.with_file_name(format!("{stem}.cases.jsonl"))
}

/// The case file to use for a policy file: `<stem>.cases.jsonl`, or for a candidate file named
/// `<name>.<suffix>.md` (e.g. `self-harm.next.md`) without its own, the live policy's
/// `<name>.cases.jsonl`. `None` when neither exists.
pub fn find_cases_for(policy_path: &Path) -> Option<PathBuf> {
    let own = cases_path_for(policy_path);
    if own.exists() {
        return Some(own);
    }
    let stem = policy_path.file_stem()?.to_string_lossy().into_owned();
    let (base, _) = stem.split_once('.')?;
    let live = policy_path.with_file_name(format!("{base}.cases.jsonl"));
    live.exists().then_some(live)
}

/// Parses a case file. Errors name the line.
pub fn parse_cases(path: &Path, text: &str) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("//") || l.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let c: Case = serde_json::from_str(l).map_err(|e| format!("{at}: {e}"))?;
        if c.label > 1 {
            return Err(format!("{at}: label must be 0 or 1, got {}", c.label));
        }
        match (&c.text, &c.messages) {
            (Some(_), Some(_)) => {
                return Err(format!("{at}: give either text or messages, not both"))
            }
            (None, None) => return Err(format!("{at}: needs text or messages")),
            (None, Some(m)) if m.is_empty() => return Err(format!("{at}: messages is empty")),
            _ => {}
        }
        if !ids.insert(c.id.clone()) {
            return Err(format!("{at}: duplicate case id {:?}", c.id));
        }
        out.push(c);
    }
    Ok(out)
}

pub fn load_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse_cases(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_messages() {
        let t = r#"{"id":"a","text":"hi","label":0}

// comment
{"id":"b","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"label":1,"code":"X1"}
"#;
        let cs = parse_cases(Path::new("x.cases.jsonl"), t).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1].content().items.len(), 2);
        assert_eq!(cs[1].content().items[0].source, Source::Instructions);
        let e = parse_cases(Path::new("x"), r#"{"id":"a","label":2,"text":"x"}"#).unwrap_err();
        assert!(e.contains("x:1"), "{e}");
        assert_eq!(
            cases_path_for(Path::new("p/g/self-harm.md")),
            Path::new("p/g/self-harm.cases.jsonl")
        );
    }

    #[test]
    fn candidate_files_fall_back_to_the_live_cases() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("sh.cases.jsonl"), "").unwrap();
        let live = d.path().join("sh.cases.jsonl");
        assert_eq!(find_cases_for(&d.path().join("sh.md")), Some(live.clone()));
        assert_eq!(find_cases_for(&d.path().join("sh.next.md")), Some(live));
        assert_eq!(find_cases_for(&d.path().join("other.md")), None);
    }
}
