//! The decisions one exchange made, kept until its logging phase writes them: one audit record
//! per policy outcome, the decision metrics, and the shadow candidates' agreement.

use crate::audit::RecordContext;
use crate::classify::ClassifyError;
use crate::config::{Action, Direction, FailMode};
use crate::decide::{Decision, Outcome};
use crate::metrics::Fault;
use crate::proxy::Gateway;

/// One decision and where it was made.
#[derive(Debug)]
pub struct Entry {
    pub direction: Direction,
    pub decision: Decision,
    /// For streamed replies: the windows judged up to this decision.
    pub windows: Option<u32>,
    /// Non-text parts of the judged content that no classifier read.
    pub unclassified_parts: usize,
    /// The judged text, when `[audit] capture` keeps some outcome of this decision.
    pub capture: Option<std::sync::Arc<crate::review::capture::Capture>>,
    /// How the decision was reached relative to the request path.
    pub timing: Timing,
    /// When judging started, for the judgement spans (kept only while tracing is on).
    pub started: Option<std::time::SystemTime>,
}

/// How a decision was reached relative to the request path.
#[derive(Debug, Clone, Copy, Default)]
pub enum Timing {
    /// Before the request went on (or the reply was released): the usual way.
    #[default]
    Inline,
    /// Beside the upstream call (`input_mode = "parallel"`), which hid this much of it.
    Parallel { hidden: std::time::Duration },
    /// Off the request path, by the background queue.
    OffPath,
    /// Off the request path, for the shadow candidates only: the live outcomes were written
    /// with the request's own decision.
    OffPathCandidates,
}

/// Decisions kept for the logging phase. A stream's window decisions with nothing to say (every
/// policy judged and allowing) are superseded by the next one, so a long stream leaves one
/// record per policy rather than one per window; a window with something to say is kept.
#[derive(Debug, Default)]
pub struct Ledger {
    kept: Vec<Entry>,
    latest_window: Option<Entry>,
}

/// Kept decisions beyond which the ledger is written out early, so a long stream full of
/// annotations cannot grow a request's memory without bound.
const MAX_KEPT: usize = 64;

impl Ledger {
    /// Adds a decision; returns it as kept.
    pub fn keep(&mut self, entry: Entry) -> &Decision {
        self.kept.push(entry);
        &self.kept[self.kept.len() - 1].decision
    }

    /// Adds a stream window's decision, which a later window supersedes unless it is notable.
    pub fn window(&mut self, entry: Entry) -> &Decision {
        if entry.decision.outcomes.iter().any(worth_recording) {
            return self.keep(entry);
        }
        &self.latest_window.insert(entry).decision
    }

    pub fn is_full(&self) -> bool {
        self.kept.len() >= MAX_KEPT
    }

    /// Everything kept so far, oldest first, leaving the ledger empty.
    pub fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.kept.drain(..).chain(self.latest_window.take())
    }
}

/// An outcome other than "judged and allowed", for the live version or a shadow candidate.
fn worth_recording(o: &Outcome) -> bool {
    let notable = |r: &Result<crate::classify::Verdict, crate::classify::ClassifyError>| {
        r.as_ref().map_or(true, |v| v.violation)
    };
    notable(&o.result) || o.candidate.as_ref().is_some_and(|(_, r)| notable(r))
}

/// Where an exchange's records are filed.
pub struct Filing<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub api: &'a str,
    pub fail_mode: FailMode,
    pub generation: u64,
    pub profile: Option<&'a str>,
    /// The request's span, when it is traced.
    pub trace: Option<&'a crate::telemetry::Parent>,
}

/// Counts one decision's outcomes and writes their audit records (with a record for each shadow
/// candidate's judgement next to its live policy's).
pub fn write(gw: &Gateway, filing: &Filing<'_>, entry: &Entry) {
    let rctx = RecordContext {
        request_id: filing.request_id,
        route: filing.route,
        api: filing.api,
        direction: entry.direction,
        fail_mode: filing.fail_mode,
        generation: filing.generation,
        unclassified_parts: entry.unclassified_parts,
        profile: filing.profile,
        trace_id: filing.trace.map(|t| t.trace_id.as_str()),
    };
    if let Some(parent) = filing.trace {
        spans(gw, parent, &rctx, entry);
    }
    let dir = match entry.direction {
        Direction::Input => "input",
        Direction::Output => "output",
    };
    let decision = &entry.decision;
    let audit = gw.auditor.enabled();
    let ts = if audit {
        crate::audit::timestamp()
    } else {
        String::new()
    };
    // Shadow candidates' outcomes as records see them, kept alive here for the records that
    // borrow them; nothing is built unless there are records to write and a candidate.
    let with_candidate = decision.outcomes.iter().any(|o| o.candidate.is_some());
    let shadows: Vec<Option<Outcome>> = if audit && with_candidate {
        decision.outcomes.iter().map(candidate_outcome).collect()
    } else {
        Vec::new()
    };
    let live = !matches!(entry.timing, Timing::OffPathCandidates);
    let mut recs = Vec::with_capacity(if audit { decision.outcomes.len() } else { 0 });
    for (i, o) in decision.outcomes.iter().enumerate() {
        if live {
            gw.metrics
                .decisions
                .with_label_values(&[&o.policy.id, dir, o.verdict(), o.effect(rctx.fail_mode)])
                .inc();
            if let Some(e) = o.result.as_ref().err().filter(|e| e.is_failure()) {
                gw.metrics.fault(Fault::Classifier);
                tracing::warn!(request_id = %rctx.request_id, policy = %o.policy.id, direction = dir, error = %e, "classifier failed");
            }
        }
        // The shadow comparison counts whether or not records are written; a candidate that was
        // never judged (shed, skipped) compares nothing.
        let judged = |(_, r): &&(_, Result<_, ClassifyError>)| {
            r.as_ref().err().is_none_or(|e| e.is_failure())
        };
        let agrees = o
            .candidate
            .as_ref()
            .filter(judged)
            .and_then(|(cand, cres)| {
                gw.shadow.compare(&crate::shadow::Comparison {
                    policy_id: &o.policy.id,
                    live_version: &o.policy.version,
                    candidate_version: &cand.version,
                    candidate_hash: &cand.content_hash,
                    request_id: rctx.request_id,
                    route: rctx.route,
                    direction: rctx.direction,
                    live: &o.result,
                    candidate: cres,
                })
            });
        if !audit {
            continue;
        }
        let stamp = |rec: &mut crate::audit::AuditRecord<'_>| {
            rec.windows = entry.windows;
            rec.candidate_agrees = agrees;
            match entry.timing {
                Timing::Inline => {}
                Timing::Parallel { hidden } => {
                    rec.input_mode = Some("parallel");
                    rec.hidden_us = Some(hidden.as_micros() as u64);
                }
                Timing::OffPath | Timing::OffPathCandidates => rec.off_path = true,
            }
        };
        if live {
            let mut rec = gw.auditor.build(&rctx, &ts, o);
            stamp(&mut rec);
            recs.push(rec);
        }
        if let Some(shadow) = shadows.get(i).and_then(Option::as_ref) {
            let mut crec = gw.auditor.build(&rctx, &ts, shadow);
            stamp(&mut crec);
            if shadow.result.as_ref().err().is_none_or(|e| e.is_failure()) {
                crec.effect = "candidate";
            }
            recs.push(crec);
        }
    }
    gw.auditor.record_all(&recs);
    if let (true, Some(review), Some(capture)) = (live, gw.auditor.review(), &entry.capture) {
        let at = crate::review::Origin {
            request_id: filing.request_id,
            route: filing.route,
            api: filing.api,
            direction: entry.direction,
            fail_mode: filing.fail_mode,
        };
        review.record(&at, capture, &decision.outcomes);
    }
}

/// One span per judgement of `entry`, the shadow candidates' included, as children of the
/// request's span.
fn spans(gw: &Gateway, parent: &crate::telemetry::Parent, rctx: &RecordContext<'_>, entry: &Entry) {
    let direction = match entry.direction {
        Direction::Input => "input",
        Direction::Output => "output",
    };
    let timing = match entry.timing {
        Timing::Inline => "inline",
        Timing::Parallel { .. } => "parallel",
        Timing::OffPath | Timing::OffPathCandidates => "off_path",
    };
    let live = !matches!(entry.timing, Timing::OffPathCandidates);
    // Without a start (work that was shed), the span ends now.
    let started = |o: &Outcome| {
        entry.started.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .checked_sub(o.latency)
                .unwrap_or(std::time::UNIX_EPOCH)
        })
    };
    for o in &entry.decision.outcomes {
        if live {
            gw.telemetry.judgement(
                parent,
                &crate::telemetry::Judgement {
                    outcome: o,
                    direction,
                    effect: o.effect(rctx.fail_mode),
                    timing,
                    started: started(o),
                    windows: entry.windows,
                    candidate: false,
                },
            );
        }
        if let Some(c) = candidate_outcome(o) {
            gw.telemetry.judgement(
                parent,
                &crate::telemetry::Judgement {
                    outcome: &c,
                    direction,
                    effect: "candidate",
                    timing,
                    started: started(o),
                    windows: entry.windows,
                    candidate: true,
                },
            );
        }
    }
}

/// A shadow candidate's judgement as an outcome of its own.
fn candidate_outcome(o: &Outcome) -> Option<Outcome> {
    o.candidate.as_ref().map(|(cand, cres)| Outcome {
        policy: cand.clone(),
        action: Action::Shadow,
        result: cres.clone(),
        latency: o.latency,
        candidate: None,
    })
}
