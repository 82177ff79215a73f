//! The review page's request state: its parameters, the queue's filters as the URL carries them,
//! and the replay job started from the page. Plain data, shared by `web` (which reads requests)
//! and `page` (which renders them).

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use super::replay::ReplayReport;
use super::store::{Filter, Label, LabelFilter};

/// Query string or form parameters.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(s: &[u8]) -> Params {
        Params(form_urlencoded::parse(s).into_owned().collect())
    }

    /// A parameter's value, if given and not blank.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, v)| n == k && !v.trim().is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// The queue's state as the URL carries it: filters and the page cursor.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Filter,
    pub before: Option<i64>,
    /// The time window as written (`1h`, `24h`, `7d`, ...), empty for all time.
    pub since: String,
    /// The label menu's value (`unreviewed`, `reviewed`, a label, or empty).
    pub label: String,
    pairs: Vec<(&'static str, String)>,
}

/// The filter parameters, in the order the filter bar shows them.
pub const FILTER_KEYS: [&str; 11] = [
    "policy",
    "version",
    "effect",
    "verdict",
    "code",
    "backend",
    "route",
    "direction",
    "since",
    "label",
    "disagree",
];

impl Query {
    pub fn from_params(p: &Params, now_ms: i64) -> Query {
        let s = |k: &str| p.get(k).map(str::to_string);
        let since = p.get("since").unwrap_or("").to_string();
        let label = p.get("label").unwrap_or("").to_string();
        let filter = Filter {
            policy: s("policy"),
            version: s("version"),
            effect: s("effect"),
            verdict: s("verdict"),
            code: s("code"),
            backend: s("backend"),
            route: s("route"),
            direction: s("direction"),
            since_ms: humantime::parse_duration(&since)
                .ok()
                .map(|d| now_ms - d.as_millis() as i64),
            until_ms: None,
            disagree: p.get("disagree").is_some(),
            label: match label.as_str() {
                "unreviewed" => LabelFilter::Unreviewed,
                "reviewed" => LabelFilter::Reviewed,
                l => Label::parse(l).map_or(LabelFilter::Any, LabelFilter::Is),
            },
        };
        let pairs = FILTER_KEYS
            .iter()
            .filter_map(|k| p.get(k).map(|v| (*k, v.to_string())))
            .collect();
        Query {
            filter,
            before: p.get("before").and_then(|b| b.parse().ok()),
            since,
            label,
            pairs,
        }
    }

    /// The filter as a query string (no cursor), `""` when nothing is filtered.
    pub fn qs(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }

    pub fn value(&self, k: &str) -> &str {
        self.pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The replay started from the page (one at a time: a replay can spend a lot of model time).
#[derive(Default)]
pub struct Jobs {
    pub(super) current: Mutex<Option<Arc<Job>>>,
}

pub struct Job {
    pub candidate: String,
    pub since: String,
    pub started_ms: i64,
    pub done: AtomicUsize,
    pub total: AtomicUsize,
    pub result: Mutex<Option<Result<ReplayReport, String>>>,
}

impl Jobs {
    pub fn current(&self) -> Option<Arc<Job>> {
        self.current.lock().ok().and_then(|j| j.clone())
    }
}
