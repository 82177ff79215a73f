//! Decision records: one JSON line per policy decision.
//!
//! Records go through a bounded channel to a writer thread so a slow disk never stalls a request;
//! if the channel is full the record is dropped, logged and counted (`errors_total{kind="audit_drop"}`)
//! rather than blocking traffic. Records never contain request headers, so credentials cannot leak
//! here; the rationale is kept for reviewers and is never sent to clients.

use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{AuditSection, AuditSink, Direction, FailMode};
use crate::decide::Outcome;
use crate::metrics::{Fault, Metrics};

/// One decision as written. It borrows from the decision and the request instead of copying:
/// an allowed request writes one record per bound policy, so the copies added up. For the same
/// reason a field without a value is left out rather than written as `null`: the nulls were about
/// a third of an allowed record's bytes, and writing those bytes is most of the audit's cost.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct AuditRecord<'a> {
    pub ts: &'a str,
    pub request_id: &'a str,
    pub route: &'a str,
    pub api: &'a str,
    pub direction: Direction,
    pub policy_id: &'a str,
    pub policy_version: &'a str,
    pub policy_hash: &'a str,
    /// violation | allow | error; for a redact binding redacted | clean
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    pub latency_us: u64,
    /// The action the route binds to this policy: block | annotate | shadow.
    pub action: &'static str,
    /// What actually happened: blocked | annotated | recorded | allowed | below_threshold |
    /// fail_open | fail_closed | shadow_error | skipped (another policy had blocked first) |
    /// shed (the background queue was full) | not_judged (a reply already sent could not be read
    /// within its bounds).
    pub effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rationale: Option<Cow<'a, str>>,
    pub policy_generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    /// Model verdicts: answered from the verdict cache rather than the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    /// Where a model call's time went (queue, prefill, decode), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_timing: Option<crate::classify::Timing>,
    /// Judged in one model call with this many policies in all (`model_call = "joint"`): the
    /// token counts and timing are that call's, repeated on each of its policies' records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joint_with: Option<u32>,
    /// True when the policy's sample rate skipped the model for this request (rules only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sampled_out: bool,
    /// For policies with a shadow candidate: whether the candidate agreed with the live version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_agrees: Option<bool>,
    /// For streamed replies: how many hold-back windows were judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<u32>,
    /// Images, audio and files in the request that no classifier read (forwarded unjudged).
    #[serde(skip_serializing_if = "is_zero")]
    pub unclassified_parts: usize,
    /// Judged off the request path (an annotate or shadow binding): no request waited for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub off_path: bool,
    /// `parallel` when the upstream call ran beside the input verdict (`input_mode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_mode: Option<&'static str>,
    /// With `input_mode = "parallel"`: how much of the verdict's time the upstream call hid
    /// (the two overlapped), in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_us: Option<u64>,
    /// A redact binding: spans replaced, by kind (`{"email": 2}`); never the values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redactions: Option<&'a std::collections::BTreeMap<String, usize>>,
    /// The policy profile the request was judged under, with `[profiles]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<&'a str>,
    /// The request's trace (`[telemetry]` on): the trace id of its exported span, 32 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub struct RecordContext<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub api: &'a str,
    pub direction: Direction,
    pub fail_mode: FailMode,
    pub generation: u64,
    /// Non-text parts of the judged content that no classifier read.
    pub unclassified_parts: usize,
    /// The policy profile the request was judged under, with `[profiles]`.
    pub profile: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The record of a redact binding: verdict `redacted` (something was replaced) or `clean`, with
/// the counts by kind. `latency` is the whole rewrite's (all redact bindings of the request).
pub fn redaction_record<'a>(
    ctx: &RecordContext<'a>,
    ts: &'a str,
    policy: &'a crate::policy::Policy,
    counts: &'a std::collections::BTreeMap<String, usize>,
    latency: std::time::Duration,
) -> AuditRecord<'a> {
    let verdict = if counts.is_empty() {
        "clean"
    } else {
        "redacted"
    };
    AuditRecord {
        ts,
        request_id: ctx.request_id,
        route: ctx.route,
        api: ctx.api,
        direction: ctx.direction,
        policy_id: &policy.id,
        policy_version: &policy.version,
        policy_hash: &policy.content_hash,
        verdict,
        code: None,
        rule_id: None,
        severity: None,
        backend: None,
        latency_us: latency.as_micros() as u64,
        action: "redact",
        effect: if counts.is_empty() {
            "allowed"
        } else {
            "redacted"
        },
        error: None,
        location: None,
        confidence: None,
        rationale: None,
        policy_generation: ctx.generation,
        model: None,
        prompt_tokens: None,
        completion_tokens: None,
        cache_hit: None,
        model_timing: None,
        joint_with: None,
        sampled_out: false,
        candidate_agrees: None,
        windows: None,
        unclassified_parts: ctx.unclassified_parts,
        off_path: false,
        input_mode: None,
        hidden_us: None,
        redactions: (!counts.is_empty()).then_some(counts),
        profile: ctx.profile,
        trace_id: ctx.trace_id,
    }
}

/// The time stamp records carry (RFC 3339, milliseconds, UTC); made once per decision.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub struct Auditor {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Batches handed to the writer, and batches it has written and flushed: a shutdown waits
    /// for the two to meet, so no record made before the exit is lost in the channel or buffer.
    sent: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    max_rationale: usize,
    metrics: Arc<Metrics>,
    /// The review store's capture, when `capture` is not `none`: a second sink for decisions,
    /// with the judged text.
    review: Option<Arc<crate::review::Review>>,
}

impl Auditor {
    pub fn new(
        cfg: &AuditSection,
        base: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Auditor> {
        let writer: Option<Box<dyn Write + Send>> = match cfg.sink {
            AuditSink::Off => None,
            AuditSink::Stdout => Some(Box::new(std::io::stdout())),
            AuditSink::File => {
                let p = cfg.path.as_ref().map(|p| base.join(p)).unwrap_or_default();
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)?;
                Some(Box::new(f))
            }
        };
        let written = Arc::new(AtomicU64::new(0));
        let tx = writer.map(|w| {
            let (tx, rx) = sync_channel::<Vec<u8>>(65_536);
            let m = metrics.clone();
            let done = written.clone();
            std::thread::Builder::new()
                .name("guardgate-audit".into())
                .spawn(move || write_loop(rx, w, m, done))
                .map(|_| tx)
        });
        let tx = match tx {
            Some(Ok(tx)) => Some(tx),
            Some(Err(e)) => return Err(e),
            None => None,
        };
        let review = crate::review::Review::open(cfg, base, metrics.clone())
            .map_err(|e| std::io::Error::other(format!("review store: {e}")))?
            .map(Arc::new);
        Ok(Auditor {
            tx,
            sent: Arc::new(AtomicU64::new(0)),
            written,
            max_rationale: cfg.max_rationale_chars,
            metrics,
            review,
        })
    }

    /// Capture and the review store, when configured.
    pub fn review(&self) -> Option<&Arc<crate::review::Review>> {
        self.review.as_ref()
    }

    /// Whether records go anywhere; when not, callers need not build them.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn build<'a>(
        &self,
        ctx: &RecordContext<'a>,
        ts: &'a str,
        o: &'a Outcome,
    ) -> AuditRecord<'a> {
        let (v, error) = match &o.result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        AuditRecord {
            ts,
            request_id: ctx.request_id,
            route: ctx.route,
            api: ctx.api,
            direction: ctx.direction,
            policy_id: &o.policy.id,
            policy_version: &o.policy.version,
            policy_hash: &o.policy.content_hash,
            verdict: o.verdict(),
            code: v.and_then(|v| v.code.as_deref()),
            rule_id: v.and_then(|v| v.rule_id.as_deref()),
            severity: o.severity().map(|s| s.as_str()),
            backend: v.map(|v| v.backend),
            latency_us: o.latency.as_micros() as u64,
            action: o.action.as_str(),
            effect: o.effect(ctx.fail_mode),
            error,
            location: v.and_then(|v| v.location.as_deref()),
            confidence: v.and_then(|v| v.confidence),
            rationale: v
                .and_then(|v| v.rationale.as_deref())
                .map(|r| truncate(r, self.max_rationale)),
            policy_generation: ctx.generation,
            model: v.and_then(|v| v.model.as_deref()),
            prompt_tokens: v.and_then(|v| v.prompt_tokens),
            completion_tokens: v.and_then(|v| v.completion_tokens),
            cache_hit: v.filter(|v| v.model.is_some()).map(|v| v.cache_hit),
            model_timing: v.and_then(|v| v.timing),
            joint_with: v.and_then(|v| v.joint_with),
            sampled_out: v.is_some_and(|v| v.sampled_out),
            windows: None,
            unclassified_parts: ctx.unclassified_parts,
            candidate_agrees: None,
            off_path: false,
            input_mode: None,
            hidden_us: None,
            redactions: None,
            profile: ctx.profile,
            trace_id: ctx.trace_id,
        }
    }

    pub fn record(&self, rec: &AuditRecord<'_>) {
        self.record_all(std::slice::from_ref(rec));
    }

    /// Sends the records of one decision as one message: one channel operation per exchange
    /// rather than per policy.
    pub fn record_all(&self, recs: &[AuditRecord<'_>]) {
        let Some(tx) = &self.tx else { return };
        if recs.is_empty() {
            return;
        }
        let mut lines = Vec::with_capacity(512 * recs.len());
        for rec in recs {
            if let Err(e) = serde_json::to_writer(&mut lines, rec) {
                tracing::error!(error = %e, "cannot serialise audit record");
                self.metrics.fault(Fault::AuditSerialize);
                continue;
            }
            lines.push(b'\n');
        }
        match tx.try_send(lines) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                tracing::error!(request_id = %recs[0].request_id, records = recs.len(), "audit records dropped: writer is behind or gone");
                self.metrics.faults(Fault::AuditDrop, recs.len() as u64);
            }
        }
    }
}

impl Auditor {
    /// Waits (at most `limit`) until every record handed to the writer is written and flushed:
    /// the last thing a shutdown does before the process exits.
    pub fn drain(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.written.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Batches writes: after the first record of a burst arrives, wait a moment so the rest of the
/// burst joins it, then write and flush once. Caps writer wake-ups (and syscalls) at a few hundred
/// per second however busy the gateway is, at the price of records landing a few ms later.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

fn write_loop(
    rx: Receiver<Vec<u8>>,
    w: Box<dyn Write + Send>,
    metrics: Arc<Metrics>,
    written: Arc<AtomicU64>,
) {
    // The sinks are an unbuffered file and a line-buffered stdout: without this buffer every
    // record would still be its own write(2), whatever the batching below.
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, w);
    while let Ok(line) = rx.recv() {
        std::thread::sleep(BATCH_WINDOW);
        let mut ok = w.write_all(&line).is_ok();
        let mut batches = 1;
        // Drain what is queued, then flush once: one syscall per burst, not per record.
        while let Ok(more) = rx.try_recv() {
            ok &= w.write_all(&more).is_ok();
            batches += 1;
        }
        ok &= w.flush().is_ok();
        written.fetch_add(batches, Ordering::Release);
        if !ok {
            metrics.fault(Fault::AuditWrite);
            tracing::error!("audit sink write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
