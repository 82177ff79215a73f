//! Shadow evaluation of candidate policy versions: how often a candidate agrees with the live
//! version on real traffic, and the requests where they disagree, so a policy author can promote
//! (or fix) a candidate on evidence.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::classify::{ClassifyError, Verdict};
use crate::config::Direction;

/// Disagreements kept per candidate (the most recent ones).
const KEEP: usize = 100;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Disagreement {
    pub ts: String,
    pub request_id: String,
    pub route: String,
    pub direction: Direction,
    pub live: Option<bool>,
    pub live_code: Option<String>,
    pub candidate: Option<bool>,
    pub candidate_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CandidateStats {
    pub live_version: String,
    pub candidate_version: String,
    pub candidate_hash: String,
    pub compared: u64,
    pub agreed: u64,
    /// Either side failed to classify: not counted as agreement or disagreement.
    pub errors: u64,
    pub agreement_rate: Option<f64>,
    pub disagreements: VecDeque<Disagreement>,
}

#[derive(Debug, Default)]
pub struct ShadowStats {
    by_policy: Mutex<BTreeMap<String, CandidateStats>>,
}

pub struct Comparison<'a> {
    pub policy_id: &'a str,
    pub live_version: &'a str,
    pub candidate_version: &'a str,
    pub candidate_hash: &'a str,
    pub request_id: &'a str,
    pub route: &'a str,
    pub direction: Direction,
    pub live: &'a Result<Verdict, ClassifyError>,
    pub candidate: &'a Result<Verdict, ClassifyError>,
}

impl ShadowStats {
    /// Records one comparison; returns whether the two versions agreed (None if either failed).
    pub fn compare(&self, c: &Comparison<'_>) -> Option<bool> {
        let Ok(mut map) = self.by_policy.lock() else {
            return None;
        };
        let e = map.entry(c.policy_id.to_string()).or_default();
        if e.candidate_hash != c.candidate_hash || e.live_version != c.live_version {
            // A new candidate (or a new live version) starts a fresh comparison.
            *e = CandidateStats {
                live_version: c.live_version.to_string(),
                candidate_version: c.candidate_version.to_string(),
                candidate_hash: c.candidate_hash.to_string(),
                ..Default::default()
            };
        }
        let (Ok(l), Ok(k)) = (c.live, c.candidate) else {
            e.errors += 1;
            return None;
        };
        e.compared += 1;
        let agree = l.violation == k.violation;
        if agree {
            e.agreed += 1;
        } else {
            if e.disagreements.len() == KEEP {
                e.disagreements.pop_front();
            }
            e.disagreements.push_back(Disagreement {
                ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                request_id: c.request_id.to_string(),
                route: c.route.to_string(),
                direction: c.direction,
                live: Some(l.violation),
                live_code: l.code.clone(),
                candidate: Some(k.violation),
                candidate_code: k.code.clone(),
            });
        }
        e.agreement_rate = Some(e.agreed as f64 / e.compared as f64);
        Some(agree)
    }

    pub fn report(&self) -> BTreeMap<String, CandidateStats> {
        self.by_policy.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(violation: bool) -> Result<Verdict, ClassifyError> {
        Ok(Verdict {
            violation,
            ..Verdict::allow("rules")
        })
    }

    #[test]
    fn agreement_rate_and_disagreements() {
        let s = ShadowStats::default();
        let cmp = |live, cand, hash: &str| {
            s.compare(&Comparison {
                policy_id: "p",
                live_version: "1",
                candidate_version: "2",
                candidate_hash: hash,
                request_id: "r",
                route: "chat",
                direction: Direction::Input,
                live: &live,
                candidate: &cand,
            })
        };
        assert_eq!(cmp(v(true), v(true), "h"), Some(true));
        assert_eq!(cmp(v(false), v(true), "h"), Some(false));
        assert_eq!(cmp(v(false), Err(ClassifyError::Deadline), "h"), None);
        let r = s.report();
        assert_eq!(r["p"].compared, 2);
        assert_eq!(r["p"].errors, 1);
        assert_eq!(r["p"].agreement_rate, Some(0.5));
        assert_eq!(r["p"].disagreements.len(), 1);
        // A changed candidate restarts the tally.
        cmp(v(true), v(true), "h2");
        assert_eq!(s.report()["p"].compared, 1);
    }
}
