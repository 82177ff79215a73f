//! Confusion matrix and the numbers derived from it.
//!
//! Conventions: a classifier error counts against the classifier (a violating case that errored
//! is a false negative, an allowed case that errored a false positive) and is also counted in
//! `errors`; a metric whose denominator is zero is `None` (printed `-`, JSON `null`) and never
//! meets a threshold.

use serde::{Deserialize, Serialize};

use crate::policy::file::Thresholds;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    pub fn n(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    pub fn add(&mut self, label: bool, predicted: bool) {
        match (label, predicted) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
    }

    pub fn metrics(&self) -> Metrics {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        Metrics {
            precision,
            recall,
            f1,
            fpr: ratio(self.fp, self.fp + self.tn),
            accuracy: ratio(self.tp + self.tn, self.n()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// False-positive rate: FP / (FP + TN).
    pub fpr: Option<f64>,
    pub accuracy: Option<f64>,
}

impl Metrics {
    /// Human-readable reasons the thresholds are not met (empty when they are).
    pub fn check(&self, t: &Thresholds) -> Vec<String> {
        let mut out = Vec::new();
        let mut min = |name: &str, want: Option<f64>, got: Option<f64>| {
            if let Some(w) = want {
                match got {
                    Some(g) if g + 1e-9 >= w => {}
                    Some(g) => out.push(format!("{name} {g:.3} < min {w:.3}")),
                    None => out.push(format!("{name} is undefined (min {w:.3})")),
                }
            }
        };
        min("recall", t.min_recall, self.recall);
        min("precision", t.min_precision, self.precision);
        min("f1", t.min_f1, self.f1);
        if let Some(w) = t.max_fpr {
            match self.fpr {
                Some(g) if g <= w + 1e-9 => {}
                Some(g) => out.push(format!("fpr {g:.3} > max {w:.3}")),
                None => out.push(format!("fpr is undefined (max {w:.3})")),
            }
        }
        out
    }
}

/// ROC AUC of `scores` (higher: more likely a violation) against `labels`: the probability that
/// a random violating case scores above a random allowed one, ties counting half (the
/// Mann-Whitney statistic, from mid-ranks). `None` without both classes.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks are 1-based; a run of ties shares the mean of its ranks.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += idx[i..=j].iter().filter(|k| labels[**k]).count() as f64 * mid;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// PR AUC as average precision: the precision at each distinct score threshold, weighted by the
/// recall it adds (tied scores enter together, so a constant score gives the base rate). `None`
/// without a violating case.
pub fn pr_auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l).count();
    if pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let new_tp = idx[i..=j].iter().filter(|k| labels[**k]).count();
        tp += new_tp;
        seen += j - i + 1;
        ap += (new_tp as f64 / pos as f64) * (tp as f64 / seen as f64);
        i = j + 1;
    }
    Some(ap)
}

/// Formats an optional fraction with three decimals, `-` when undefined.
pub fn fmt3(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Latency percentiles (milliseconds), nearest-rank method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

pub fn latency(us: &[u64]) -> Latency {
    let mut v = us.to_vec();
    v.sort_unstable();
    Latency {
        p50_ms: percentile(&v, 50.0),
        p90_ms: percentile(&v, 90.0),
        p99_ms: percentile(&v, 99.0),
        max_ms: v.last().map(|x| *x as f64 / 1000.0).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let c = Confusion {
            tp: 4,
            fp: 1,
            tn: 3,
            fn_: 2,
        };
        let m = c.metrics();
        assert!((m.precision.unwrap() - 0.8).abs() < 1e-12);
        assert!((m.recall.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert!((m.f1.unwrap() - 8.0 / 11.0).abs() < 1e-12);
        assert!((m.fpr.unwrap() - 0.25).abs() < 1e-12);
        let t = Thresholds {
            min_recall: Some(0.9),
            max_fpr: Some(0.3),
            ..Default::default()
        };
        assert_eq!(m.check(&t).len(), 1);
        assert_eq!(Confusion::default().metrics().precision, None);
        assert_eq!(percentile(&[1000, 2000, 3000, 4000], 50.0), 2.0);
        assert_eq!(percentile(&[1000, 2000, 3000, 4000], 99.0), 4.0);
    }

    #[test]
    fn ranking_metrics_by_hand() {
        let labels = [true, false, true, false];
        // Perfect, reversed, and constant rankings.
        assert_eq!(roc_auc(&labels, &[0.9, 0.1, 0.8, 0.2]), Some(1.0));
        assert_eq!(roc_auc(&labels, &[0.1, 0.9, 0.2, 0.8]), Some(0.0));
        assert_eq!(roc_auc(&labels, &[0.5; 4]), Some(0.5));
        assert_eq!(pr_auc(&labels, &[0.9, 0.1, 0.8, 0.2]), Some(1.0));
        assert_eq!(pr_auc(&labels, &[0.5; 4]), Some(0.5));
        // One swap of four pairs: 3/4; AP = (1/2)(1/1) + (1/2)(2/3).
        let s = [0.9, 0.85, 0.8, 0.1];
        assert!((roc_auc(&labels, &s).unwrap() - 0.75).abs() < 1e-12);
        assert!((pr_auc(&labels, &s).unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(pr_auc(&[false], &[0.1]), None);
    }
}
