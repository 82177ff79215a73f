//! External labelled data sets, turned into per-policy cases for the runner.
//!
//! `openai-moderation-2022`: the evaluation set of Markov et al., "A Holistic Approach to
//! Undesired Content Detection" (2022; MIT licence), 1,680 samples, gzip JSONL with a `prompt`
//! and binary flags per category (a missing flag means "unknown"). Categories map onto the
//! `general/*` pack as [`OPENAI_MODERATION_2022`] says:
//!
//! | dataset category | policy |
//! |---|---|
//! | `SH` self-harm | `general/self-harm` |
//! | `H` hate, `HR` harassment, `H2` hate/threatening | `general/hate-harassment` |
//! | `S3` sexual/minors | `general/minor-sexualization` |
//! | `V` violence | `general/violent-extremism` (approximate: `V` is any promotion or glorification of violence, the policy only violent extremism, so expect lower recall) |
//! | `S` sexual (adults), `V2` graphic violence | not mapped (no general policy covers them) |
//!
//! A sample is a positive case for a policy when any of its mapped flags is 1, a negative when all
//! of them are known and 0, and skipped for that policy otherwise. Two derived rows combine the
//! policies: `any mapped category` (label: any mapped flag; prediction: any policy flagged it) and
//! `any category` (label: any of the 8 flags, as the dataset's "undesired" class; comparable to
//! published binary F1 numbers, though `S`/`V2` positives can only be caught by a policy written
//! for them).

use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::cases::Case;
use super::report::PolicyReport;
use super::runner::{CaseResult, Outcome};

pub const OPENAI_MODERATION_2022_NAME: &str = "openai-moderation-2022";
pub const OPENAI_MODERATION_2022_DEFAULT_PATH: &str =
    "../shared/data/openai-moderation-2022/samples-1680.jsonl.gz";

/// Dataset category flags -> the general-pack policy that judges them.
pub const OPENAI_MODERATION_2022: &[(&str, &[&str])] = &[
    ("general/self-harm", &["SH"]),
    ("general/hate-harassment", &["H", "HR", "H2"]),
    ("general/minor-sexualization", &["S3"]),
    ("general/violent-extremism", &["V"]),
];

pub const OPENAI_MODERATION_2022_ALL: &[&str] = &["S", "H", "V", "HR", "SH", "S3", "H2", "V2"];

#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub text: String,
    pub flags: HashMap<String, u8>,
}

impl Sample {
    /// `Some(true)` if any of `cats` is 1, `Some(false)` if all are known and 0, else `None`.
    pub fn label(&self, cats: &[&str]) -> Option<bool> {
        let mut all_known = true;
        for c in cats {
            match self.flags.get(*c) {
                Some(1) => return Some(true),
                Some(_) => {}
                None => all_known = false,
            }
        }
        all_known.then_some(false)
    }
}

/// Reads the data set (gzip or plain JSONL), at most `limit` samples.
pub fn load_openai_moderation(path: &Path, limit: Option<usize>) -> Result<Vec<Sample>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        GzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .map_err(|e| format!("{}: bad gzip: {e}", path.display()))?;
        s
    } else {
        String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let text = v
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}:{}: no prompt", path.display(), i + 1))?;
        let flags = OPENAI_MODERATION_2022_ALL
            .iter()
            .filter_map(|c| {
                v.get(*c)
                    .and_then(Value::as_u64)
                    .map(|x| (c.to_string(), x as u8))
            })
            .collect();
        out.push(Sample {
            id: format!("om-{:04}", i + 1),
            text: text.to_string(),
            flags,
        });
    }
    Ok(out)
}

/// The cases for one policy: samples whose label for `cats` is known.
pub fn cases_for(samples: &[Sample], cats: &[&str]) -> Vec<Case> {
    samples
        .iter()
        .filter_map(|s| {
            s.label(cats).map(|l| Case {
                note: Some(format!("categories {}", cats.join("+"))),
                ..Case::text(s.id.clone(), s.text.clone(), l)
            })
        })
        .collect()
}

/// The derived rows: a sample is flagged when any policy flagged it.
pub fn combined_rows(samples: &[Sample], per_policy: &[PolicyReport]) -> Vec<PolicyReport> {
    let mut by_id: HashMap<&str, Vec<&CaseResult>> = HashMap::new();
    for p in per_policy {
        for c in &p.cases {
            by_id.entry(c.id.as_str()).or_default().push(c);
        }
    }
    let mapped: Vec<&str> = OPENAI_MODERATION_2022
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    let mut rows = Vec::new();
    for (name, cats) in [
        ("any mapped category", mapped.as_slice()),
        ("any category", OPENAI_MODERATION_2022_ALL),
    ] {
        let mut results = Vec::new();
        for s in samples {
            let Some(label) = s.label(cats) else { continue };
            let Some(rs) = by_id.get(s.id.as_str()) else {
                continue;
            };
            let flagged = rs.iter().find(|r| r.predicted == Some(true));
            let errored = rs.iter().find(|r| r.outcome == Outcome::Error);
            let outcome = match (label, flagged.is_some(), errored.is_some()) {
                (true, true, _) => Outcome::Tp,
                (false, true, _) => Outcome::Fp,
                (_, false, true) => Outcome::Error,
                (true, false, false) => Outcome::Fn,
                (false, false, false) => Outcome::Tn,
            };
            results.push(CaseResult {
                id: s.id.clone(),
                label: label as u8,
                predicted: (outcome != Outcome::Error).then_some(flagged.is_some()),
                outcome,
                expected_code: None,
                code: flagged.and_then(|r| r.code.clone()),
                rule_id: flagged.and_then(|r| r.rule_id.clone()),
                backend: flagged.and_then(|r| r.backend.clone()),
                rationale: flagged.and_then(|r| r.rationale.clone()),
                // Any policy flagging the sample flags it: the highest P(violation) of them.
                score: rs
                    .iter()
                    .filter(|r| r.outcome != Outcome::Error)
                    .map(|r| r.ranking_score() as f32)
                    .reduce(f32::max),
                error: errored.and_then(|r| r.error.clone()),
                latency_us: rs.iter().map(|r| r.latency_us).sum(),
                preview: rs.first().map(|r| r.preview.clone()).unwrap_or_default(),
                note: None,
                model_calls: rs.iter().map(|r| r.model_calls).sum(),
                prompt_tokens: rs
                    .iter()
                    .filter_map(|r| r.prompt_tokens)
                    .reduce(|a, b| a + b),
                completion_tokens: rs
                    .iter()
                    .filter_map(|r| r.completion_tokens)
                    .reduce(|a, b| a + b),
                prefill_ms: rs.iter().filter_map(|r| r.prefill_ms).reduce(|a, b| a + b),
                decode_ms: rs.iter().filter_map(|r| r.decode_ms).reduce(|a, b| a + b),
                others: Vec::new(),
            });
        }
        rows.push(PolicyReport::from_results(name, None, "", results));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_known_flags() {
        let s = Sample {
            id: "x".into(),
            text: "t".into(),
            flags: [("H".to_string(), 0u8), ("HR".to_string(), 1u8)]
                .into_iter()
                .collect(),
        };
        assert_eq!(s.label(&["H", "HR", "H2"]), Some(true));
        assert_eq!(s.label(&["H", "H2"]), None);
        assert_eq!(s.label(&["H"]), Some(false));
    }
}
