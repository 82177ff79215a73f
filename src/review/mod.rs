//! The review loop: the text a decision judged is captured (opt-in, `[audit] capture`), masked
//! and stored with the decision; a page on the admin listener lets a person label decisions;
//! labels become the policy's test cases; and a candidate policy can be replayed over what was
//! captured.
//!
//! - `capture`: which decisions keep their text, and how it is cut to size
//! - `mask`: credentials masked before anything is stored
//! - `store` (+ `sqlite`, `postgres`): the schema and queries, on either database
//! - `writer`: the bounded channel's other end, batching writes off the request path
//! - `page`, `web`: the review page (HTML) and its routes
//! - `export`: labelled decisions as case-file lines
//! - `replay`: a candidate policy over captured traffic
//! - `cli`: `guardgate review export` and `guardgate policy replay`

pub mod capture;
pub mod cli;
pub mod db;
pub mod export;
pub mod mask;
pub mod page;
pub mod postgres;
pub mod query;
pub mod replay;
pub mod sqlite;
pub mod store;
pub mod web;
pub mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{AuditSection, CaptureMode, Direction, FailMode};
use crate::decide::{Decision, Outcome};
use crate::metrics::{Fault, Metrics};
use capture::Capture;
use store::{Location, NewDecision, Store};

/// Capture and the review store, built from `[audit]` when `capture` is not `none`.
pub struct Review {
    pub mode: CaptureMode,
    pub retention: Duration,
    pub store: Arc<Store>,
    max_rationale: usize,
    tx: SyncSender<writer::Msg>,
    metrics: Arc<Metrics>,
}

/// Where one exchange's decisions were made.
pub struct Origin<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub api: &'a str,
    pub direction: Direction,
    pub fail_mode: FailMode,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The store `[audit]` names: PostgreSQL when `store_url_env` is set, else the SQLite file.
pub fn location(cfg: &AuditSection, base: &Path) -> Result<Location, String> {
    match &cfg.store_url_env {
        Some(var) => crate::config::secret_from_env(var)
            .map(Location::Postgres)
            .ok_or_else(|| format!("audit.store_url_env: environment variable {var} is not set")),
        None => Ok(Location::Sqlite(if cfg.store_path.is_absolute() {
            cfg.store_path.clone()
        } else {
            base.join(&cfg.store_path)
        })),
    }
}

impl Review {
    /// Opens the store (creating its tables) and starts the writer; `None` when nothing is
    /// captured.
    pub fn open(
        cfg: &AuditSection,
        base: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Review>, String> {
        if cfg.capture == CaptureMode::None {
            return Ok(None);
        }
        let loc = location(cfg, base)?;
        let store = Store::open(loc.clone()).map_err(|e| e.to_string())?;
        let db = loc.open().map_err(|e| e.to_string())?;
        let (tx, rx) = sync_channel(cfg.store_queue);
        let w = writer::Writer::new(loc.clone(), db, cfg.capture_max_chars, metrics.clone());
        std::thread::Builder::new()
            .name("guardgate-review".into())
            .spawn(move || w.run(rx))
            .map_err(|e| format!("cannot start the review writer: {e}"))?;
        tracing::info!(capture = cfg.capture.as_str(), store = %loc.describe(), "review capture on");
        Ok(Some(Review {
            mode: cfg.capture,
            retention: cfg.capture_retention,
            store: Arc::new(store),
            max_rationale: cfg.max_rationale_chars,
            tx,
            metrics,
        }))
    }

    /// The judged content, copied only when the mode keeps some outcome of `d`.
    pub fn capture(
        &self,
        d: &Decision,
        content: &crate::classify::Content,
    ) -> Option<Arc<Capture>> {
        capture::selects_any(self.mode, d).then(|| Arc::new(Capture::of(content)))
    }

    /// Hands the selected outcomes of one judgement to the writer; sheds them (counted) when the
    /// writer is behind.
    pub fn record(&self, at: &Origin<'_>, capture: &Arc<Capture>, outcomes: &[Outcome]) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let ts_ms = now_ms();
        let decisions: Vec<_> = outcomes
            .iter()
            .filter(|o| capture::selects(self.mode, o))
            .map(|o| (self.row(at, ts_ms, o), o.policy.clone()))
            .collect();
        if decisions.is_empty() {
            return;
        }
        let n = decisions.len() as u64;
        let dir = direction(at.direction);
        let entry = writer::Entry {
            key: format!(
                "{}-{dir}-{}",
                at.request_id,
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            ts_ms,
            capture: capture.clone(),
            decisions,
        };
        match self.tx.try_send(writer::Msg::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(request_id = %at.request_id, decisions = n, "review store behind: captured decisions shed");
                self.metrics.faults(Fault::ReviewDrop, n);
            }
        }
    }

    /// Waits until everything recorded so far is written (or the writer is gone).
    pub fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(writer::Msg::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn row(&self, at: &Origin<'_>, ts_ms: i64, o: &Outcome) -> NewDecision {
        let v = o.result.as_ref().ok();
        let (cand_version, cand_verdict, cand_code, disagree) = match &o.candidate {
            Some((p, r)) => (
                Some(p.version.clone()),
                Some(verdict_of(r).to_string()),
                r.as_ref().ok().and_then(|v| v.code.clone()),
                capture::disagreement(&o.result, r),
            ),
            None => (None, None, None, None),
        };
        NewDecision {
            ts_ms,
            request_id: at.request_id.to_string(),
            route: at.route.to_string(),
            api: at.api.to_string(),
            direction: direction(at.direction).to_string(),
            policy_id: o.policy.id.clone(),
            policy_version: o.policy.version.clone(),
            policy_hash: o.policy.content_hash.clone(),
            verdict: o.verdict().to_string(),
            effect: o.effect(at.fail_mode).to_string(),
            action: o.action.as_str().to_string(),
            code: v.and_then(|v| v.code.clone()),
            rule_id: v.and_then(|v| v.rule_id.clone()),
            severity: o.severity().map(|s| s.as_str().to_string()),
            backend: v.map(|v| v.backend.to_string()),
            confidence: v.and_then(|v| v.confidence),
            rationale: v
                .and_then(|v| v.rationale.as_deref())
                .map(|r| r.chars().take(self.max_rationale).collect()),
            error: o.result.as_ref().err().map(|e| e.to_string()),
            location: v.and_then(|v| v.location.clone()),
            model: v.and_then(|v| v.model.clone()),
            prompt_tokens: v.and_then(|v| v.prompt_tokens),
            completion_tokens: v.and_then(|v| v.completion_tokens),
            latency_us: o.latency.as_micros() as u64,
            candidate_version: cand_version,
            candidate_verdict: cand_verdict,
            candidate_code: cand_code,
            disagree,
            capture_key: None,
            preview: None,
        }
    }
}

fn verdict_of(
    r: &Result<crate::classify::Verdict, crate::classify::ClassifyError>,
) -> &'static str {
    match r {
        Ok(v) if v.violation => "violation",
        Ok(_) => "allow",
        Err(_) => "error",
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Input => "input",
        Direction::Output => "output",
    }
}
