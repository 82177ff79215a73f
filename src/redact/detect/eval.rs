//! Precision and recall of the detectors over a labelled set: one JSON object a line,
//! `{"text": …, "spans": [{"kind": "phone", "text": "+44 20 7946 0958"}], "region": "GB"}`
//! (`region` optional, default `US`; spans in the order they appear in the text, each the exact
//! substring). A line without spans is a near miss: nothing in it may be found.
//!
//! Two measures per kind: span-exact (same kind, same start and end) and overlap (same kind,
//! the spans share a byte), since a span one character too wide still hides the value while
//! one that misses the value's start does not.

use super::{Detectors, Kind, Region};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
    #[serde(default)]
    region: Option<String>,
    /// Where the line came from and what it tests; read by people, not here.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Span {
    kind: Kind,
    text: String,
}

/// Counts for one kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Spans the set expects.
    pub expected: usize,
    /// Spans the detectors found.
    pub found: usize,
    /// Found spans equal to an expected one.
    pub exact: usize,
    /// Found spans that overlap an expected one of the kind.
    pub found_overlapping: usize,
    /// Expected spans that a found one of the kind overlaps.
    pub expected_overlapped: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

impl Counts {
    pub fn precision_exact(&self) -> f64 {
        ratio(self.exact, self.found)
    }
    pub fn recall_exact(&self) -> f64 {
        ratio(self.exact, self.expected)
    }
    pub fn precision_overlap(&self) -> f64 {
        ratio(self.found_overlapping, self.found)
    }
    pub fn recall_overlap(&self) -> f64 {
        ratio(self.expected_overlapped, self.expected)
    }
}

/// The outcome over a whole set.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: usize,
    /// Lines without expected spans, and how many of them something was found in.
    pub near_misses: usize,
    pub near_misses_hit: usize,
    pub kinds: BTreeMap<Kind, Counts>,
    /// One line per wrong or missed span: line number, kind, text.
    pub mistakes: Vec<String>,
}

/// Reads and scores a labelled set (the format above).
pub fn evaluate(jsonl: &str) -> Result<Report, String> {
    let mut report = Report::default();
    for (n, raw) in jsonl.lines().enumerate() {
        let n = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| format!("line {n}: {e}"))?;
        let region: Region = match &line.region {
            Some(r) => r.parse().map_err(|e| format!("line {n}: {e}"))?,
            None => Region::default(),
        };
        let mut expected = Vec::new();
        let mut from = 0;
        for s in &line.spans {
            let at = line.text[from..]
                .find(&s.text)
                .map(|i| i + from)
                .ok_or_else(|| format!("line {n}: {:?} is not in the text", s.text))?;
            expected.push((s.kind, at, at + s.text.len()));
            from = at + s.text.len();
        }
        let found: Vec<(Kind, usize, usize)> = Detectors {
            region,
            ..Detectors::all()
        }
        .find(&line.text)
        .into_iter()
        .map(|f| (f.kind, f.start, f.end))
        .collect();
        report.lines += 1;
        if expected.is_empty() {
            report.near_misses += 1;
            report.near_misses_hit += usize::from(!found.is_empty());
        }
        let overlaps = |a: &(Kind, usize, usize), b: &(Kind, usize, usize)| {
            a.0 == b.0 && a.1 < b.2 && b.1 < a.2
        };
        for e in &expected {
            let c = report.kinds.entry(e.0).or_default();
            c.expected += 1;
            if found.iter().any(|f| overlaps(f, e)) {
                c.expected_overlapped += 1;
            }
            if !found.contains(e) {
                report.mistakes.push(format!(
                    "line {n}: missed {} {:?}",
                    e.0.as_str(),
                    &line.text[e.1..e.2]
                ));
            }
        }
        for f in &found {
            let c = report.kinds.entry(f.0).or_default();
            c.found += 1;
            if expected.contains(f) {
                c.exact += 1;
            } else {
                report.mistakes.push(format!(
                    "line {n}: found {} {:?}",
                    f.0.as_str(),
                    &line.text[f.1..f.2]
                ));
            }
            if expected.iter().any(|e| overlaps(f, e)) {
                c.found_overlapping += 1;
            }
        }
    }
    Ok(report)
}

impl Report {
    /// The per-kind table, Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| kind | expected | found | precision (exact) | recall (exact) | precision (overlap) | recall (overlap) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        let mut total = Counts::default();
        for (kind, c) in &self.kinds {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                kind.as_str(),
                c.expected,
                c.found,
                c.precision_exact(),
                c.recall_exact(),
                c.precision_overlap(),
                c.recall_overlap()
            );
            total.expected += c.expected;
            total.found += c.found;
            total.exact += c.exact;
            total.found_overlapping += c.found_overlapping;
            total.expected_overlapped += c.expected_overlapped;
        }
        let _ = writeln!(
            out,
            "| all | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            total.expected,
            total.found,
            total.precision_exact(),
            total.recall_exact(),
            total.precision_overlap(),
            total.recall_overlap()
        );
        let _ = writeln!(
            out,
            "\n{} lines, {} near misses (no expected span), {} of them with a span found.",
            self.lines, self.near_misses, self.near_misses_hit
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pii/labelled.jsonl");
        std::fs::read_to_string(path).expect("labelled set")
    }

    #[test]
    fn scoring_counts_exact_and_overlapping_spans() {
        let r = evaluate(
            r#"{"text": "mail a@example.com or 4111 1111 1111 1111", "spans": [{"kind": "email", "text": "a@example.com"}, {"kind": "card", "text": "4111 1111 1111 1111 "}]}
{"text": "order 1234 5678 9012 3452"}"#,
        )
        .unwrap_err();
        assert!(r.contains("line 1"), "{r}");
        let r = evaluate(
            r#"{"text": "mail a@example.com, 4111 1111 1111 1111", "spans": [{"kind": "email", "text": "mail a@example.com"}, {"kind": "card", "text": "4111 1111 1111 1111"}]}
{"text": "order 1234 5678 9012 3452 or 4111111111111111"}"#,
        )
        .unwrap();
        let email = r.kinds[&Kind::Email];
        assert_eq!(
            (
                email.exact,
                email.expected_overlapped,
                email.found_overlapping
            ),
            (0, 1, 1)
        );
        let card = r.kinds[&Kind::Card];
        assert_eq!((card.expected, card.found, card.exact), (1, 2, 1));
        assert_eq!((r.near_misses, r.near_misses_hit), (1, 1));
        assert_eq!(r.mistakes.len(), 3, "{:?}", r.mistakes);
    }

    /// Floors just under what the set measured when they were set (docs/BENCHMARKS.md, "PII
    /// detectors"): a change that loses precision or recall on any kind fails here.
    #[test]
    fn the_labelled_set_meets_the_floors() {
        let text = set();
        let r = evaluate(&text).unwrap();
        assert!(r.lines >= 300, "{} lines", r.lines);
        assert!(
            r.near_misses * 3 >= r.lines,
            "{} near misses",
            r.near_misses
        );
        let floors: &[(Kind, f64, f64)] = &[
            (Kind::Email, 0.97, 0.97),
            (Kind::Phone, 0.98, 0.94),
            (Kind::Card, 0.99, 0.99),
            (Kind::Iban, 0.99, 0.99),
            (Kind::Ssn, 0.99, 0.99),
            (Kind::Ip, 0.99, 0.99),
            (Kind::Credential, 0.99, 0.94),
        ];
        // Near misses are the point of the set: none may produce a span.
        assert_eq!(r.near_misses_hit, 0, "{}", r.mistakes.join("\n"));
        let mut failed = Vec::new();
        for &(kind, p, rec) in floors {
            let c = r.kinds.get(&kind).copied().unwrap_or_default();
            assert!(
                c.expected >= 15,
                "{}: only {} expected spans",
                kind.as_str(),
                c.expected
            );
            if c.precision_exact() < p || c.recall_exact() < rec {
                failed.push(format!(
                    "{}: precision {:.3} (floor {p}), recall {:.3} (floor {rec})",
                    kind.as_str(),
                    c.precision_exact(),
                    c.recall_exact()
                ));
            }
        }
        assert!(
            failed.is_empty(),
            "{failed:?}\n{}\n{}",
            r.table(),
            r.mistakes.join("\n")
        );
    }
}
