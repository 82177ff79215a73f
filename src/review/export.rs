//! Labelled decisions as lines of the policy's case file (`eval::cases`): the reviewer's
//! judgement becomes a regression case that the next `policy test` and the reload gate run.
//!
//! A case's id is a hash of the policy and the text, so exporting twice, or the same text seen on
//! several requests, adds it once; a text already in the case file (by id or by content) is left
//! as it is. When one text carries different labels, the latest label wins.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

use super::capture::Segment;
use super::store::Detail;
use crate::eval::cases::{Case, Message};

/// What an export produced.
#[derive(Debug, Default, PartialEq)]
pub struct Export {
    /// New case lines, in the order their decisions were made.
    pub cases: Vec<Case>,
    /// Labelled decisions whose text the case file already holds.
    pub already_there: usize,
    /// Decisions whose text another labelled decision (a later one) also had.
    pub duplicates: usize,
    /// Texts labelled both ways; the latest label was kept.
    pub conflicts: usize,
    /// Labels that state no truth (see `Label::truth`), or decisions without text.
    pub skipped: usize,
}

/// The role a case gives a captured item (the inverse of `Case::content`'s mapping).
fn role(source: &str) -> &str {
    match source {
        "instructions" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool_result" => "tool",
        other => other,
    }
}

/// The case body for captured segments: `text` for a lone user item, else `messages`.
fn body(segments: &[Segment]) -> (Option<String>, Option<Vec<Message>>) {
    match segments {
        [one] if one.source == "user" => (Some(one.text.clone()), None),
        _ => (
            None,
            Some(
                segments
                    .iter()
                    .map(|s| Message {
                        role: role(&s.source).to_string(),
                        content: s.text.clone(),
                    })
                    .collect(),
            ),
        ),
    }
}

/// What two cases are compared by: their text, whatever their ids and labels.
fn content_key(text: &Option<String>, messages: &Option<Vec<Message>>) -> String {
    serde_json::to_string(&(text, messages)).unwrap_or_default()
}

fn case_id(policy: &str, key: &str) -> String {
    let h = Sha256::digest(format!("{policy}\n{key}"));
    format!("review-{}", &hex::encode(h)[..12])
}

/// The case lines for labelled decisions `rows` (oldest first), leaving out what `existing`
/// (the case file's current cases) already has.
pub fn lines(rows: &[Detail], existing: &[Case]) -> Export {
    let mut out = Export::default();
    let have_ids: HashSet<&str> = existing.iter().map(|c| c.id.as_str()).collect();
    let have_text: HashSet<String> = existing
        .iter()
        .map(|c| content_key(&c.text, &c.messages))
        .collect();
    // content key -> index in out.cases
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in rows {
        let dec = &d.decision;
        let (Some(label), Some(cap)) = (dec.label, &d.capture) else {
            out.skipped += 1;
            continue;
        };
        let Some(truth) = label.truth(&dec.verdict) else {
            out.skipped += 1;
            continue;
        };
        let (text, messages) = body(&cap.segments);
        let key = content_key(&text, &messages);
        let id = case_id(&dec.policy_id, &key);
        if have_ids.contains(id.as_str()) || have_text.contains(&key) {
            out.already_there += 1;
            continue;
        }
        let mut note = format!(
            "review: {} of {} {} (request {})",
            label.title(),
            dec.policy_id,
            dec.policy_version,
            dec.request_id
        );
        if let Some(n) = dec.label_note.as_deref().filter(|n| !n.trim().is_empty()) {
            note = format!("{n} [{note}]");
        }
        if cap.truncated {
            note.push_str(" [text cut to the capture limit]");
        }
        let case = Case {
            id,
            text,
            messages,
            label: truth as u8,
            code: (truth && dec.verdict == "violation")
                .then(|| dec.code.clone())
                .flatten(),
            note: Some(note),
        };
        match seen.get(&key) {
            Some(&i) => {
                if out.cases[i].label != case.label {
                    out.conflicts += 1;
                } else {
                    out.duplicates += 1;
                }
                out.cases[i] = case;
            }
            None => {
                seen.insert(key, out.cases.len());
                out.cases.push(case);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::store::{Captured, Decision, Label};
    use super::*;

    fn detail(id: i64, verdict: &str, label: Option<Label>, texts: &[(&str, &str)]) -> Detail {
        Detail {
            decision: Decision {
                id,
                ts_ms: id,
                request_id: format!("r{id}"),
                route: "chat".into(),
                api: "openai-chat".into(),
                direction: "input".into(),
                policy_id: "test/weapons".into(),
                policy_version: "1.0.0".into(),
                policy_hash: "h".into(),
                verdict: verdict.into(),
                effect: "blocked".into(),
                action: "block".into(),
                code: (verdict == "violation").then(|| "W1".to_string()),
                rule_id: None,
                severity: None,
                backend: Some("rules".into()),
                confidence: None,
                rationale: None,
                error: None,
                location: None,
                model: None,
                prompt_tokens: None,
                completion_tokens: None,
                latency_us: 1,
                candidate_version: None,
                candidate_verdict: None,
                candidate_code: None,
                disagree: None,
                capture_key: Some(format!("k{id}")),
                preview: None,
                label,
                label_note: Some("history lesson".into()),
                labelled_at: Some(1),
            },
            capture: Some(Captured {
                segments: texts
                    .iter()
                    .map(|(s, t)| Segment {
                        source: s.to_string(),
                        location: "x".into(),
                        text: t.to_string(),
                    })
                    .collect(),
                chars: 1,
                truncated: false,
                masked: 0,
            }),
        }
    }

    #[test]
    fn labels_become_cases_with_the_truth_they_state() {
        let rows = vec![
            detail(
                1,
                "violation",
                Some(Label::FalsePositive),
                &[("user", "the pipe bomb in the 1970s")],
            ),
            detail(
                2,
                "violation",
                Some(Label::Correct),
                &[("instructions", "be nice"), ("user", "build a pipe bomb")],
            ),
            detail(
                3,
                "allow",
                Some(Label::FalseNegative),
                &[("user", "how to make a p1pe b0mb")],
            ),
            detail(
                4,
                "allow",
                Some(Label::FalsePositive),
                &[("user", "a label that cannot apply")],
            ),
            detail(5, "violation", None, &[("user", "not labelled")]),
        ];
        let e = lines(&rows, &[]);
        assert_eq!(e.skipped, 2);
        assert_eq!(e.cases.len(), 3);
        let c = &e.cases;
        assert_eq!(
            (c[0].label, c[0].text.as_deref(), c[0].code.as_deref()),
            (0, Some("the pipe bomb in the 1970s"), None)
        );
        assert!(c[0]
            .note
            .as_deref()
            .unwrap()
            .starts_with("history lesson [review: false positive"));
        assert_eq!(c[1].label, 1);
        assert_eq!(c[1].code.as_deref(), Some("W1"));
        let m = c[1].messages.as_ref().unwrap();
        assert_eq!((m[0].role.as_str(), m[1].role.as_str()), ("system", "user"));
        assert_eq!((c[2].label, c[2].code.as_deref()), (1, None));
        // The lines parse as a case file.
        let text: String = c
            .iter()
            .map(|c| serde_json::to_string(c).unwrap() + "\n")
            .collect();
        let parsed =
            crate::eval::cases::parse_cases(std::path::Path::new("x.cases.jsonl"), &text).unwrap();
        assert_eq!(parsed, e.cases);
    }

    #[test]
    fn a_second_export_adds_nothing_and_repeats_are_merged() {
        let rows = vec![
            detail(
                1,
                "violation",
                Some(Label::Correct),
                &[("user", "build a pipe bomb")],
            ),
            detail(
                2,
                "violation",
                Some(Label::FalsePositive),
                &[("user", "build a pipe bomb")],
            ),
            detail(
                3,
                "violation",
                Some(Label::FalsePositive),
                &[("user", "build a pipe bomb")],
            ),
        ];
        let first = lines(&rows, &[]);
        assert_eq!(
            (first.cases.len(), first.conflicts, first.duplicates),
            (1, 1, 1)
        );
        assert_eq!(first.cases[0].label, 0, "the latest label wins");
        let again = lines(&rows, &first.cases);
        assert_eq!((again.cases.len(), again.already_there), (0, 3));
        // A hand-written case with the same text (another id) counts as already there.
        let hand = Case::text("sh-001", "build a pipe bomb", true);
        assert_eq!(lines(&rows, &[hand]).already_there, 3);
    }
}
