//! `guardgate policy calibrate`: a policy's `violation_threshold` for one backend, chosen on part
//! of its case file and measured on the rest.
//!
//! Each case file is split in two, per label (so both halves keep its share of violations), by
//! the order of `sha256(seed, case id)`: the split is the same on every run with the same seed
//! and does not depend on the file's line order. Every case is judged once through the cascade
//! (rules, then the backend) and keeps its P(violation) (`CaseResult::ranking_score`; a rule hit
//! is 1). The threshold is the one that maximises F1 on the calibration half; everything
//! reported is measured on the held-out half only, next to the rules alone on the same cases,
//! since a threshold chosen on a set always looks better on that set.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::metrics::{fmt3, pr_auc, roc_auc, Confusion, Metrics};
use super::runner::CaseResult;

/// Which half a case falls in: `true` = held out.
pub fn held_out(ids: &[(String, bool)], seed: u64, fraction: f64) -> HashMap<String, bool> {
    let key = |id: &str| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(id.as_bytes());
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    };
    let mut out = HashMap::new();
    for label in [true, false] {
        let mut class: Vec<&str> = ids
            .iter()
            .filter(|(_, l)| *l == label)
            .map(|(id, _)| id.as_str())
            .collect();
        class.sort_by_key(|id| (key(id), id.to_string()));
        let n_held = (class.len() as f64 * fraction).round() as usize;
        for (i, id) in class.iter().enumerate() {
            out.insert(id.to_string(), i < n_held);
        }
    }
    out
}

/// The threshold that maximises F1 of `score >= t` over `(label, score)`; among equals, the
/// highest (fewest allowed cases flagged). Candidates are the scores themselves, rounded down
/// to 4 decimals (the value written to the config is the value used). `None` without a
/// violating case.
pub fn best_threshold(cases: &[(bool, f64)]) -> Option<f32> {
    if !cases.iter().any(|(l, _)| *l) {
        return None;
    }
    let mut cands: Vec<f32> = cases
        .iter()
        .map(|(_, s)| round_down(*s))
        .filter(|t| *t > 0.0)
        .collect();
    cands.push(1.0);
    cands.sort_by(|a, b| b.total_cmp(a));
    cands.dedup();
    let mut best: Option<(f64, f32)> = None;
    for t in cands {
        let f1 = confusion_at(cases, t).metrics().f1.unwrap_or(0.0);
        if best.is_none_or(|(b, _)| f1 > b + 1e-12) {
            best = Some((f1, t));
        }
    }
    best.map(|(_, t)| t)
}

fn round_down(s: f64) -> f32 {
    ((s.clamp(0.0, 1.0) * 1e4).floor() / 1e4) as f32
}

pub fn confusion_at(cases: &[(bool, f64)], t: f32) -> Confusion {
    let mut c = Confusion::default();
    for (l, s) in cases {
        // In f32, as the classifier compares: a threshold read back as f32 may lie above the f64
        // it was written from.
        c.add(*l, *s as f32 >= t);
    }
    c
}

/// One policy's numbers on a set of cases.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    pub confusion: Confusion,
    pub metrics: Metrics,
}

impl Measured {
    fn of(c: Confusion) -> Measured {
        Measured {
            confusion: c,
            metrics: c.metrics(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyCalibration {
    pub id: String,
    pub cases_path: String,
    /// Calibration and held-out sizes, and the violations in each.
    pub calibration_n: u64,
    pub calibration_violations: u64,
    pub held_out_n: u64,
    pub held_out_violations: u64,
    pub held_out_ids: Vec<String>,
    /// Cases the model gave a probability to (the rest were settled by a rule, or failed).
    pub model_scored: u64,
    /// The chosen `violation_threshold` (`None`: no violating calibration case to choose on).
    pub threshold: Option<f32>,
    /// Held-out: the cascade with the threshold.
    pub held_out: Option<Measured>,
    /// Held-out: the cascade as the model answered (no threshold).
    pub held_out_as_answered: Measured,
    /// Held-out: the rules alone.
    pub held_out_rules: Measured,
    pub held_out_roc_auc: Option<f64>,
    pub held_out_pr_auc: Option<f64>,
    pub held_out_rules_roc_auc: Option<f64>,
    /// Held-out F1 of flagging every case: with half the cases violations it is 0.667, which a
    /// threshold can reach by flagging (nearly) everything, so beating the rules alone is not
    /// enough.
    pub held_out_flag_all_f1: Option<f64>,
    /// Whether the backend with the threshold has a higher held-out F1 than both the rules alone
    /// and flagging every case.
    pub beats_rules: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub backend: String,
    pub seed: u64,
    pub held_out_fraction: f64,
    pub policies: Vec<PolicyCalibration>,
}

/// Calibrates one policy from its judged cases.
pub fn calibrate_policy(
    id: &str,
    cases_path: &str,
    results: &[CaseResult],
    seed: u64,
    fraction: f64,
) -> PolicyCalibration {
    let ids: Vec<(String, bool)> = results
        .iter()
        .map(|r| (r.id.clone(), r.label == 1))
        .collect();
    let split = held_out(&ids, seed, fraction);
    let (held, cal): (Vec<&CaseResult>, Vec<&CaseResult>) =
        results.iter().partition(|r| split[&r.id]);
    let scored = |rs: &[&CaseResult]| -> Vec<(bool, f64)> {
        rs.iter()
            .map(|r| (r.label == 1, r.ranking_score()))
            .collect()
    };
    let (cal_s, held_s) = (scored(&cal), scored(&held));
    let threshold = best_threshold(&cal_s);
    let mut as_answered = Confusion::default();
    let mut rules = Confusion::default();
    let mut rules_scores = Vec::new();
    for r in &held {
        let label = r.label == 1;
        // A failed case counts against the classifier, as in `policy test`.
        as_answered.add(label, r.predicted.unwrap_or(!label));
        let rule_hit = r.predicted == Some(true) && r.backend.as_deref() == Some("rules");
        rules.add(label, rule_hit);
        rules_scores.push(rule_hit as u8 as f64);
    }
    let held_out = threshold.map(|t| Measured::of(confusion_at(&held_s, t)));
    let labels: Vec<bool> = held_s.iter().map(|(l, _)| *l).collect();
    let scores: Vec<f64> = held_s.iter().map(|(_, s)| *s).collect();
    let rules_m = Measured::of(rules);
    let flag_all = confusion_at(&held_s, 0.0).metrics().f1;
    let bar = rules_m
        .metrics
        .f1
        .unwrap_or(0.0)
        .max(flag_all.unwrap_or(0.0));
    let beats_rules = held_out
        .as_ref()
        .is_some_and(|m| m.metrics.f1.unwrap_or(0.0) > bar + 1e-12);
    let count = |rs: &[&CaseResult]| rs.iter().filter(|r| r.label == 1).count() as u64;
    let mut held_out_ids: Vec<String> = held.iter().map(|r| r.id.clone()).collect();
    held_out_ids.sort();
    PolicyCalibration {
        id: id.to_string(),
        cases_path: cases_path.to_string(),
        calibration_n: cal.len() as u64,
        calibration_violations: count(&cal),
        held_out_n: held.len() as u64,
        held_out_violations: count(&held),
        held_out_ids,
        model_scored: results.iter().filter(|r| r.model_scored()).count() as u64,
        threshold,
        held_out,
        held_out_as_answered: Measured::of(as_answered),
        held_out_rules: rules_m,
        held_out_roc_auc: roc_auc(&labels, &scores),
        held_out_pr_auc: pr_auc(&labels, &scores),
        held_out_rules_roc_auc: roc_auc(&labels, &rules_scores),
        held_out_flag_all_f1: flag_all,
        beats_rules,
    }
}

/// The report's table: held-out numbers only.
pub fn table(c: &Calibration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "calibration of backend {} — seed {}, {:.0}% of each label held out; every number below is on the held-out cases",
        c.backend,
        c.seed,
        c.held_out_fraction * 100.0
    );
    let _ = writeln!(
        s,
        "{:<36} {:>9} {:>9} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>6} | beats rules and flag-all",
        "policy",
        "cal n/+",
        "held n/+",
        "thresh",
        "prec",
        "recall",
        "F1",
        "FPR",
        "ROC",
        "PR-AUC",
        "ansF1",
        "ansFPR",
        "rulesF1",
        "rulFPR",
        "rulROC",
        "allF1",
    );
    for p in &c.policies {
        let m = p.held_out.as_ref().map(|m| m.metrics).unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<36} {:>9} {:>9} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>6} | {}",
            p.id,
            format!("{}/{}", p.calibration_n, p.calibration_violations),
            format!("{}/{}", p.held_out_n, p.held_out_violations),
            p.threshold
                .map(|t| format!("{t:.4}"))
                .unwrap_or_else(|| "-".into()),
            fmt3(m.precision),
            fmt3(m.recall),
            fmt3(m.f1),
            fmt3(m.fpr),
            fmt3(p.held_out_roc_auc),
            fmt3(p.held_out_pr_auc),
            fmt3(p.held_out_as_answered.metrics.f1),
            fmt3(p.held_out_as_answered.metrics.fpr),
            fmt3(p.held_out_rules.metrics.f1),
            fmt3(p.held_out_rules.metrics.fpr),
            fmt3(p.held_out_rules_roc_auc),
            fmt3(p.held_out_flag_all_f1),
            if p.beats_rules { "yes" } else { "NO" }
        );
    }
    s
}

/// `text` (a config file) with backend `backend`'s `violation_thresholds` set to its old entries
/// updated with `new`, as one inline-table line (TOML inline tables are one line). The rest of the
/// file, comments included, is left as it was.
pub fn set_violation_thresholds(
    text: &str,
    backend: &str,
    new: &BTreeMap<String, f32>,
) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| l.trim_start().starts_with('[');
    let key_of = |l: &str| {
        l.split_once('=')
            .map(|(k, _)| k.trim().to_string())
            .filter(|k| !k.starts_with('#'))
    };
    let mut start = None;
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "[[backends]]" {
            let mut j = i + 1;
            while j < lines.len() && !header(lines[j]) {
                j += 1;
            }
            let named = lines[i + 1..j].iter().any(|l| {
                key_of(l).as_deref() == Some("name")
                    && toml::from_str::<toml::Table>(l)
                        .ok()
                        .and_then(|t| t.get("name").and_then(|v| v.as_str()).map(str::to_string))
                        .as_deref()
                        == Some(backend)
            });
            if named {
                start = Some((i, j));
                break;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    let (b, e) = start.ok_or_else(|| format!("no [[backends]] entry named {backend:?}"))?;
    let block = lines[b + 1..e].join("\n");
    let old: toml::Table =
        toml::from_str(&block).map_err(|e| format!("[[backends]] {backend}: {e}"))?;
    let mut merged: BTreeMap<String, f32> = BTreeMap::new();
    if let Some(t) = old.get("violation_thresholds").and_then(|v| v.as_table()) {
        for (k, v) in t {
            if let Some(x) = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                merged.insert(k.clone(), x as f32);
            }
        }
    }
    merged.extend(new.iter().map(|(k, v)| (k.clone(), *v)));
    let entries: Vec<String> = merged
        .iter()
        .map(|(k, v)| format!("{} = {v:.4}", toml::Value::String(k.clone())))
        .collect();
    let line = format!("violation_thresholds = {{ {} }}", entries.join(", "));
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 1);
    let mut last_key = b;
    for (k, l) in lines.iter().enumerate().take(e).skip(b + 1) {
        if key_of(l).is_some() && !l.trim_start().starts_with('#') {
            last_key = k;
        }
    }
    for (k, l) in lines.iter().enumerate() {
        let is_old = k > b && k < e && key_of(l).as_deref() == Some("violation_thresholds");
        if !is_old {
            out.push(l.to_string());
        }
        if k == last_key {
            out.push(line.clone());
        }
    }
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::runner::Outcome;

    #[test]
    fn the_split_is_seeded_stratified_and_order_free() {
        let ids: Vec<(String, bool)> = (0..40).map(|i| (format!("c{i}"), i % 4 == 0)).collect();
        let a = held_out(&ids, 7, 0.5);
        let mut rev = ids.clone();
        rev.reverse();
        assert_eq!(a, held_out(&rev, 7, 0.5), "line order does not matter");
        assert_ne!(a, held_out(&ids, 8, 0.5), "another seed, another split");
        let held_pos = ids.iter().filter(|(id, l)| *l && a[id]).count();
        let held_all = a.values().filter(|h| **h).count();
        assert_eq!((held_pos, held_all), (5, 20), "half of each label");
    }

    #[test]
    fn the_threshold_maximises_f1_and_prefers_the_higher_of_equals() {
        // Violations at 0.8 and 0.6, allowed at 0.7 and 0.2: flagging >= 0.6 gives F1 0.8, >= 0.8
        // gives 0.667.
        let cases = [(true, 0.8), (false, 0.7), (true, 0.6), (false, 0.2)];
        assert_eq!(best_threshold(&cases), Some(0.6));
        // Separable: every threshold in (0.3, 0.9] is perfect; the highest is kept.
        let cases = [(true, 0.9), (true, 0.95), (false, 0.3)];
        assert_eq!(best_threshold(&cases), Some(0.9));
        assert_eq!(best_threshold(&[(false, 0.4)]), None);
        // Written values are rounded down, so the case that set them still reaches them.
        assert_eq!(
            best_threshold(&[(true, 0.123_456), (false, 0.1)]),
            Some(0.1234)
        );
    }

    fn result(id: &str, label: u8, p: f32, backend: &str) -> CaseResult {
        let predicted = p >= 0.5;
        CaseResult {
            id: id.into(),
            label,
            predicted: Some(predicted),
            outcome: match (label == 1, predicted) {
                (true, true) => Outcome::Tp,
                (false, true) => Outcome::Fp,
                (false, false) => Outcome::Tn,
                (true, false) => Outcome::Fn,
            },
            expected_code: None,
            code: None,
            rule_id: None,
            backend: Some(backend.into()),
            rationale: None,
            score: Some(p),
            error: None,
            latency_us: 1,
            preview: String::new(),
            note: None,
            model_calls: 1,
            prompt_tokens: None,
            completion_tokens: None,
            prefill_ms: None,
            decode_ms: None,
            others: Vec::new(),
        }
    }

    #[test]
    fn held_out_numbers_come_from_held_out_cases_only() {
        // A model whose P(violation) separates the labels (0.35 against at most 0.139) though it
        // always answers 0;
        // rules catch one violation in four.
        let mut rs = Vec::new();
        for i in 0..40 {
            let v = i % 2 == 0;
            let p = if v { 0.35 } else { 0.1 + i as f32 / 1000.0 };
            let backend = if v && i % 8 == 0 {
                "rules"
            } else {
                "local:small"
            };
            let p = if backend == "rules" { 1.0 } else { p };
            rs.push(result(&format!("c{i}"), v as u8, p, backend));
        }
        let c = calibrate_policy("t/p", "t.cases.jsonl", &rs, 1, 0.5);
        assert_eq!((c.calibration_n, c.held_out_n), (20, 20));
        assert_eq!(c.held_out_ids.len(), 20);
        let t = c.threshold.unwrap();
        assert!(t > 0.139 && t <= 0.35, "{t}");
        let m = c.held_out.unwrap();
        assert_eq!(m.metrics.f1, Some(1.0));
        assert_eq!(
            c.held_out_as_answered.metrics.recall.map(|r| r < 0.5),
            Some(true)
        );
        assert!(c.held_out_rules.metrics.f1.unwrap() < 1.0);
        assert_eq!(c.held_out_flag_all_f1, Some(2.0 / 3.0));
        assert!(c.beats_rules);
        assert_eq!(c.held_out_roc_auc, Some(1.0));
        // A model that ranks at random reaches F1 2/3 only by flagging everything: not a win.
        let mut flat = rs.clone();
        for r in flat
            .iter_mut()
            .filter(|r| r.backend.as_deref() != Some("rules"))
        {
            r.score = Some(0.9);
        }
        let c = calibrate_policy("t/p", "t.cases.jsonl", &flat, 1, 0.5);
        assert!(!c.beats_rules, "{:?}", c.held_out);
    }

    #[test]
    fn thresholds_are_written_into_the_named_backend_only() {
        let cfg = "[server]\nlisten = \"x\"\n\n[[backends]]\nname = \"other\"\nkind = \"local\"\n\n[[backends]]\n# the small one\nname = \"small\"\nkind = \"local\"\nviolation_thresholds = { \"a/b\" = 0.5, \"c/d\" = 0.25 }\nweights = \"auto\"\n# trailing comment\n\n[[routes]]\nname = \"r\"\n";
        let new = BTreeMap::from([("a/b".to_string(), 0.125_f32), ("e/f".into(), 0.75)]);
        let out = set_violation_thresholds(cfg, "small", &new).unwrap();
        let v: toml::Table = toml::from_str(&out).unwrap();
        let backends = v["backends"].as_array().unwrap();
        assert!(backends[0].get("violation_thresholds").is_none());
        let t = backends[1]["violation_thresholds"].as_table().unwrap();
        assert_eq!(t["a/b"].as_float(), Some(0.125));
        assert_eq!(
            t["c/d"].as_float(),
            Some(0.25),
            "other policies' entries kept"
        );
        assert_eq!(t["e/f"].as_float(), Some(0.75));
        assert_eq!(backends[1]["weights"].as_str(), Some("auto"));
        assert!(out.contains("# the small one") && out.contains("# trailing comment"));
        assert_eq!(out.matches("violation_thresholds").count(), 1);
        assert!(set_violation_thresholds(cfg, "nope", &new).is_err());
        // An entry without the key gets it after its last key.
        let out = set_violation_thresholds(cfg, "other", &new).unwrap();
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert!(v["backends"][0]["violation_thresholds"].is_table());
        assert_eq!(v["routes"][0]["name"].as_str(), Some("r"));
    }
}
