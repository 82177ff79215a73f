//! Judgement that no request waits for: annotate and shadow bindings that need a model (and the
//! shadow candidates of blocking bindings) are judged here after the exchange has gone on, and
//! their audit records are written when they finish. The queue (`proxy::queue`) is bounded: when
//! it is full, a new job is shed (counted, and audited as `shed`) rather than held in memory or
//! waited for. A job keeps the policy snapshot of its request, so a reload
//! while it waits changes nothing, and a shutdown waits for the pending jobs like it waits for
//! requests (`server::wait_for_in_flight`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

use super::ledger::{self, Entry, Filing, Timing};
use crate::classify::Content;
use crate::config::{Direction, FailMode};
use crate::decide::{decide_deferred, Annotations, Decision, Deferred, Final, Later};
use crate::proxy::Gateway;

/// Work handed over by an exchange.
pub struct Job {
    pub deferred: Vec<Deferred>,
    pub content: Arc<Content>,
    pub filing: OwnedFiling,
    pub direction: Direction,
    pub windows: Option<u32>,
    pub unclassified_parts: usize,
    /// The route's time budget for one judgement, counted from when the job starts.
    pub deadline: Duration,
    /// Told what the annotate bindings found, for an exchange that may still add headers.
    pub annotations: Option<oneshot::Sender<Annotations>>,
}

/// [`Filing`] with owned strings, for records written after the exchange is gone.
pub struct OwnedFiling {
    pub request_id: String,
    pub route: String,
    pub api: &'static str,
    pub fail_mode: FailMode,
    pub generation: u64,
    pub profile: Option<Arc<str>>,
    pub trace: Option<crate::telemetry::Parent>,
}

impl OwnedFiling {
    fn filing(&self) -> Filing<'_> {
        Filing {
            request_id: &self.request_id,
            route: &self.route,
            api: self.api,
            fail_mode: self.fail_mode,
            generation: self.generation,
            profile: self.profile.as_deref(),
            trace: self.trace.as_ref(),
        }
    }
}

/// Judges `job` in the background, or sheds it when the queue is full. Never waits.
pub fn submit(gw: &Arc<Gateway>, job: Job) {
    let Some(slot) = gw.background.reserve() else {
        gw.metrics
            .background_jobs
            .with_label_values(&["shed"])
            .inc();
        tracing::debug!(request_id = %job.filing.request_id, "background queue full: judgement shed");
        shed(gw, job);
        return;
    };
    let task_gw = gw.clone();
    gw.background.spawn(slot, async move {
        let gw = task_gw;
        let deadline = Instant::now() + job.deadline;
        let started = job.filing.trace.is_some().then(SystemTime::now);
        let later = decide_deferred(
            &gw.cascade,
            job.deferred,
            &job.content,
            deadline,
            job.filing.fail_mode,
        )
        .await;
        if let Some(tx) = job.annotations {
            // The exchange may be gone: then the audit record is where the verdict lives.
            let _ = tx.send(later.bindings.annotations.clone());
        }
        let place = Place {
            filing: &job.filing,
            direction: job.direction,
            windows: job.windows,
            unclassified_parts: job.unclassified_parts,
            started,
        };
        write(&gw, &place, later, Some(&job.content));
        gw.metrics
            .background_jobs
            .with_label_values(&["done"])
            .inc();
    });
}

/// Where a job's records are filed.
struct Place<'a> {
    filing: &'a OwnedFiling,
    direction: Direction,
    windows: Option<u32>,
    unclassified_parts: usize,
    /// When the job started, for its judgement spans.
    started: Option<SystemTime>,
}

/// The records of work that was shed: every outcome says so.
fn shed(gw: &Gateway, job: Job) {
    let (bindings, candidates): (Vec<_>, Vec<_>) =
        job.deferred.into_iter().partition(|d| !d.is_candidate());
    let decision = |d: Vec<Deferred>| Decision {
        outcomes: d.into_iter().map(Deferred::shed).collect(),
        verdict: Final::Allow,
        annotations: Vec::new(),
    };
    let later = Later {
        bindings: decision(bindings),
        candidates: decision(candidates),
    };
    let place = Place {
        filing: &job.filing,
        direction: job.direction,
        windows: job.windows,
        unclassified_parts: job.unclassified_parts,
        started: None,
    };
    write(gw, &place, later, None);
}

fn write(gw: &Gateway, place: &Place<'_>, later: Later, content: Option<&Content>) {
    let filing = place.filing.filing();
    for (decision, timing) in [
        (later.bindings, Timing::OffPath),
        (later.candidates, Timing::OffPathCandidates),
    ] {
        if decision.outcomes.is_empty() {
            continue;
        }
        let capture = content.and_then(|c| gw.auditor.review()?.capture(&decision, c));
        let entry = Entry {
            direction: place.direction,
            decision,
            windows: place.windows,
            unclassified_parts: place.unclassified_parts,
            capture,
            timing,
            started: place.started,
        };
        ledger::write(gw, &filing, &entry);
    }
}
