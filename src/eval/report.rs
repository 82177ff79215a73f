//! Reports: per-policy numbers from case results, the text table, `report.json`, and the
//! comparison with an earlier report (`--compare`).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::metrics::{fmt3, latency, pr_auc, roc_auc, Confusion, Latency, Metrics};
use super::runner::{CaseResult, Outcome};
use crate::policy::file::Thresholds;
use crate::policy::Policy;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyReport {
    /// The policy id, or a derived row name (e.g. `any category`).
    pub id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub content_hash: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub cases_path: String,
    pub n: u64,
    pub confusion: Confusion,
    /// Cases whose classification failed (also counted in `confusion`, against the classifier).
    pub errors: u64,
    /// True positives whose code differs from the case's expected code.
    pub code_mismatches: u64,
    pub metrics: Metrics,
    /// Ranking quality of the cases' P(violation) (see `CaseResult::ranking_score`): what a
    /// `violation_threshold` can make of the scores, whatever the threshold.
    #[serde(default)]
    pub roc_auc: Option<f64>,
    #[serde(default)]
    pub pr_auc: Option<f64>,
    /// Cases a model gave a probability to; 0 means the ranking metrics rank hard answers only.
    #[serde(default)]
    pub model_scored: u64,
    pub latency: Latency,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Why the thresholds are not met (empty: met, or none set).
    #[serde(default)]
    pub threshold_failures: Vec<String>,
    #[serde(default)]
    pub cases: Vec<CaseResult>,
}

impl PolicyReport {
    pub fn from_results(
        id: &str,
        policy: Option<&Policy>,
        cases_path: &str,
        results: Vec<CaseResult>,
    ) -> PolicyReport {
        let mut c = Confusion::default();
        let mut errors = 0;
        for r in &results {
            let label = r.label == 1;
            match r.outcome {
                Outcome::Error => {
                    errors += 1;
                    c.add(label, !label);
                }
                _ => c.add(label, r.predicted.unwrap_or(false)),
            }
        }
        let metrics = c.metrics();
        let thresholds = policy.map(|p| p.thresholds).unwrap_or_default();
        let lat: Vec<u64> = results.iter().map(|r| r.latency_us).collect();
        let labels: Vec<bool> = results.iter().map(|r| r.label == 1).collect();
        let scores: Vec<f64> = results.iter().map(CaseResult::ranking_score).collect();
        PolicyReport {
            id: id.to_string(),
            version: policy.map(|p| p.version.clone()).unwrap_or_default(),
            content_hash: policy.map(|p| p.content_hash.clone()).unwrap_or_default(),
            path: policy
                .map(|p| p.path.display().to_string())
                .unwrap_or_default(),
            cases_path: cases_path.to_string(),
            n: results.len() as u64,
            confusion: c,
            errors,
            code_mismatches: results.iter().filter(|r| r.code_mismatch()).count() as u64,
            metrics,
            roc_auc: roc_auc(&labels, &scores),
            pr_auc: pr_auc(&labels, &scores),
            model_scored: results.iter().filter(|r| r.model_scored()).count() as u64,
            latency: latency(&lat),
            thresholds,
            threshold_failures: metrics.check(&thresholds),
            cases: results,
        }
    }

    pub fn failing(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|r| !r.outcome.passed())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `policy-test` or `eval:<dataset>`.
    pub kind: String,
    /// The cascade's stages, e.g. `rules` or `rules+safeguard`.
    pub backend: String,
    /// Seconds since the Unix epoch.
    pub generated_at: u64,
    pub guardgate_version: String,
    pub policies: Vec<PolicyReport>,
    /// Derived rows (e.g. `any category` for data sets); not checked against thresholds.
    #[serde(default)]
    pub summary: Vec<PolicyReport>,
}

impl Report {
    pub fn new(kind: &str, backend: &str) -> Report {
        Report {
            kind: kind.to_string(),
            backend: backend.to_string(),
            generated_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            guardgate_version: env!("CARGO_PKG_VERSION").to_string(),
            policies: Vec::new(),
            summary: Vec::new(),
        }
    }

    pub fn threshold_failures(&self) -> usize {
        self.policies
            .iter()
            .filter(|p| !p.threshold_failures.is_empty())
            .count()
    }

    pub fn load(path: &Path) -> Result<Report, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a report: {e}", path.display()))
    }
}

/// The summary table, one row per policy (and derived rows after a rule).
/// What the cases cost, per policy: model calls, prompt and answer tokens, prefill and decode
/// time per case (a joint call counts once for all its policies; where the host does not say, 0),
/// and the median latency of a case.
pub fn cost_table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:>5} {:>10} {:>15} {:>14} {:>11} {:>10} {:>8}",
        "policy",
        "n",
        "calls/case",
        "prompt tok/case",
        "answer tok/case",
        "prefill ms",
        "decode ms",
        "p50 ms"
    );
    for p in &report.policies {
        let n = p.cases.len().max(1) as f64;
        let mean = |f: &dyn Fn(&CaseResult) -> f64| p.cases.iter().map(f).sum::<f64>() / n;
        let _ = writeln!(
            s,
            "{:<32} {:>5} {:>10.2} {:>15.0} {:>14.1} {:>11.1} {:>10.1} {:>8.1}",
            p.id,
            p.cases.len(),
            mean(&|c| c.model_calls as f64),
            mean(&|c| c.prompt_tokens.unwrap_or(0) as f64),
            mean(&|c| c.completion_tokens.unwrap_or(0) as f64),
            mean(&|c| c.prefill_ms.unwrap_or(0.0)),
            mean(&|c| c.decode_ms.unwrap_or(0.0)),
            p.latency.p50_ms
        );
    }
    s
}

pub fn table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:>5} {:>4} {:>4} {:>5} {:>4} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
        "policy",
        "n",
        "TP",
        "FP",
        "TN",
        "FN",
        "err",
        "prec",
        "recall",
        "F1",
        "FPR",
        "ROC",
        "PR-AUC",
        "p50 ms",
        "p90 ms",
        "p99 ms"
    );
    let row = |s: &mut String, p: &PolicyReport| {
        let c = &p.confusion;
        let m = &p.metrics;
        let _ = writeln!(
            s,
            "{:<32} {:>5} {:>4} {:>4} {:>5} {:>4} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8.3} {:>8.3} {:>8.3}",
            p.id,
            p.n,
            c.tp,
            c.fp,
            c.tn,
            c.fn_,
            p.errors,
            fmt3(m.precision),
            fmt3(m.recall),
            fmt3(m.f1),
            fmt3(m.fpr),
            fmt3(p.roc_auc),
            fmt3(p.pr_auc),
            p.latency.p50_ms,
            p.latency.p90_ms,
            p.latency.p99_ms
        );
    };
    for p in &report.policies {
        row(&mut s, p);
    }
    if !report.summary.is_empty() {
        let _ = writeln!(s, "{}", "-".repeat(144));
        for p in &report.summary {
            row(&mut s, p);
        }
    }
    s
}

/// Per-policy detail: confusion matrix, thresholds, failing cases with the rationale.
pub fn details(p: &PolicyReport, max_failures: usize) -> String {
    let mut s = String::new();
    let c = &p.confusion;
    let m = &p.metrics;
    let _ = writeln!(s, "== {} (v{}) — {} cases", p.id, p.version, p.n);
    let _ = writeln!(s, "                 predicted 1   predicted 0");
    let _ = writeln!(
        s,
        "   label 1      {:>10}   {:>11}   (TP / FN)",
        c.tp, c.fn_
    );
    let _ = writeln!(s, "   label 0      {:>10}   {:>11}   (FP / TN)", c.fp, c.tn);
    let _ = writeln!(
        s,
        "   precision {}  recall {}  F1 {}  FPR {}  | latency p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        fmt3(m.precision),
        fmt3(m.recall),
        fmt3(m.f1),
        fmt3(m.fpr),
        p.latency.p50_ms,
        p.latency.p90_ms,
        p.latency.p99_ms
    );
    let _ = writeln!(
        s,
        "   ROC AUC {}  PR AUC {}  ({} of {} cases scored by a model; the rest rank as 0/1)",
        fmt3(p.roc_auc),
        fmt3(p.pr_auc),
        p.model_scored,
        p.n
    );
    if p.errors > 0 {
        let _ = writeln!(
            s,
            "   classifier errors: {} (counted as failures, never as passes)",
            p.errors
        );
    }
    if p.code_mismatches > 0 {
        let _ = writeln!(
            s,
            "   code mismatches (flagged, but not with the expected code): {}",
            p.code_mismatches
        );
    }
    if !p.thresholds.is_empty() {
        if p.threshold_failures.is_empty() {
            let _ = writeln!(s, "   thresholds: met");
        } else {
            let _ = writeln!(
                s,
                "   thresholds NOT met: {}",
                p.threshold_failures.join("; ")
            );
        }
    }
    let failing: Vec<&CaseResult> = p.failing().collect();
    if !failing.is_empty() {
        let _ = writeln!(s, "   failing cases ({}):", failing.len());
        for r in failing.iter().take(max_failures) {
            let why = r
                .error
                .as_deref()
                .map(|e| format!("error: {e}"))
                .or_else(|| r.rationale.clone())
                .unwrap_or_else(|| "no rule or model flagged it".into());
            let _ = writeln!(
                s,
                "     {:<5} {} [label {}{}] {}\n           why: {}",
                r.outcome.as_str(),
                r.id,
                r.label,
                r.expected_code
                    .as_deref()
                    .map(|c| format!(", expected {c}"))
                    .unwrap_or_default(),
                r.preview,
                why
            );
        }
        if failing.len() > max_failures {
            let _ = writeln!(s, "     … and {} more", failing.len() - max_failures);
        }
    }
    s
}

fn delta(new: Option<f64>, old: Option<f64>) -> String {
    match (new, old) {
        (Some(n), Some(o)) => format!("{:.3} ({:+.3})", n, n - o),
        (n, _) => format!("{} (new)", fmt3(n)),
    }
}

/// What changed since `old`: per-policy metric deltas and cases whose outcome flipped.
pub fn compare(new: &Report, old: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "compare: {} (now) vs {} (before)",
        new.backend, old.backend
    );
    let olds: HashMap<&str, &PolicyReport> = old
        .policies
        .iter()
        .chain(old.summary.iter())
        .map(|p| (p.id.as_str(), p))
        .collect();
    for p in new.policies.iter().chain(new.summary.iter()) {
        let Some(o) = olds.get(p.id.as_str()) else {
            let _ = writeln!(s, "  {}: new (not in the old report)", p.id);
            continue;
        };
        let (m, om) = (&p.metrics, &o.metrics);
        let _ = writeln!(
            s,
            "  {}: precision {}  recall {}  F1 {}  FPR {}  ROC AUC {}  n {} ({:+})",
            p.id,
            delta(m.precision, om.precision),
            delta(m.recall, om.recall),
            delta(m.f1, om.f1),
            delta(m.fpr, om.fpr),
            delta(p.roc_auc, o.roc_auc),
            p.n,
            p.n as i64 - o.n as i64
        );
        if p.version != o.version || p.content_hash != o.content_hash {
            let _ = writeln!(
                s,
                "    policy changed: v{} ({}) -> v{} ({})",
                o.version, o.content_hash, p.version, p.content_hash
            );
        }
        let old_cases: HashMap<&str, &CaseResult> =
            o.cases.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut flipped = 0;
        for c in &p.cases {
            match old_cases.get(c.id.as_str()) {
                Some(oc) if oc.outcome != c.outcome => {
                    flipped += 1;
                    let mark = match (oc.outcome.passed(), c.outcome.passed()) {
                        (true, false) => "REGRESSED",
                        (false, true) => "fixed",
                        _ => "changed",
                    };
                    let _ = writeln!(
                        s,
                        "    flipped {}: {} -> {} ({mark}) {}",
                        c.id,
                        oc.outcome.as_str(),
                        c.outcome.as_str(),
                        c.preview
                    );
                }
                None => {
                    let _ = writeln!(s, "    new case {}: {}", c.id, c.outcome.as_str());
                }
                _ => {}
            }
        }
        let gone = o
            .cases
            .iter()
            .filter(|oc| !p.cases.iter().any(|c| c.id == oc.id))
            .count();
        if gone > 0 {
            let _ = writeln!(s, "    {gone} case(s) no longer present");
        }
        if flipped == 0 {
            let _ = writeln!(s, "    no case flipped");
        }
    }
    for o in &old.policies {
        if !new.policies.iter().any(|p| p.id == o.id) {
            let _ = writeln!(s, "  {}: missing from this run", o.id);
        }
    }
    s
}
