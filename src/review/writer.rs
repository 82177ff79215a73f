//! The store's writer: one thread that takes captured decisions off a bounded channel, masks and
//! cuts their text, and writes them in batches. The request path only `try_send`s; when the
//! writer falls behind (a slow disk, a database away), decisions are shed and counted, never
//! waited for.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::capture::{prepare, Capture};
use super::store::{Db, Location, NewCapture, NewDecision, PolicyText, WriteBatch, FACET_KINDS};
use crate::metrics::{Fault, Metrics};
use crate::policy::Policy;

/// One judgement's captured text and the decisions that keep it.
pub struct Entry {
    pub key: String,
    pub ts_ms: i64,
    pub capture: Arc<Capture>,
    /// Each decision with the policy it was judged against (for the policy's text).
    pub decisions: Vec<(NewDecision, Arc<Policy>)>,
}

pub enum Msg {
    Entry(Entry),
    /// Answered once everything sent before it is written (tests, benchmarks, shutdown).
    Sync(std::sync::mpsc::Sender<()>),
}

/// Entries written per transaction at most.
const BATCH_MAX: usize = 1024;

/// After the first entry of a burst, how long the writer waits for the rest to join it: one
/// transaction (one fsync for SQLite) per burst rather than per request.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

pub struct Writer {
    pub location: Location,
    pub db: Box<dyn Db>,
    pub max_chars: usize,
    pub metrics: Arc<Metrics>,
    /// Facets and policy texts this writer has stored (or found stored).
    facets: HashSet<(&'static str, String)>,
    policies: HashSet<String>,
}

impl Writer {
    pub fn new(
        location: Location,
        db: Box<dyn Db>,
        max_chars: usize,
        metrics: Arc<Metrics>,
    ) -> Writer {
        Writer {
            location,
            db,
            max_chars,
            metrics,
            facets: HashSet::new(),
            policies: HashSet::new(),
        }
    }

    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut entries: Vec<Entry> = Vec::new();
        let mut syncs = Vec::new();
        loop {
            let first = match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            };
            let push = |m: Msg, entries: &mut Vec<Entry>, syncs: &mut Vec<_>| match m {
                Msg::Entry(e) => entries.push(e),
                Msg::Sync(tx) => syncs.push(tx),
            };
            push(first, &mut entries, &mut syncs);
            if syncs.is_empty() {
                std::thread::sleep(BATCH_WINDOW);
            }
            while entries.len() < BATCH_MAX {
                match rx.recv_timeout(Duration::ZERO) {
                    Ok(m) => push(m, &mut entries, &mut syncs),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if !entries.is_empty() {
                self.write(std::mem::take(&mut entries));
            }
            for tx in syncs.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Masks, cuts and writes one batch; a failure drops it (counted) and leaves the writer
    /// ready for the next.
    pub fn write(&mut self, entries: Vec<Entry>) {
        let n: usize = entries.iter().map(|e| e.decisions.len()).sum();
        let (batch, new_facets, new_policies) = self.batch(entries);
        if self.db.is_broken() {
            match self.location.open() {
                Ok(db) => self.db = db,
                Err(e) => {
                    self.fail(n, &e.to_string());
                    return;
                }
            }
        }
        match super::store::write(self.db.as_mut(), &batch) {
            Ok(()) => {
                self.facets.extend(new_facets);
                self.policies.extend(new_policies);
            }
            Err(e) => self.fail(n, &e.to_string()),
        }
    }

    fn fail(&self, n: usize, why: &str) {
        self.metrics.faults(Fault::ReviewWrite, n as u64);
        tracing::error!(decisions = n, error = %why, "review store: batch not written");
    }

    #[allow(clippy::type_complexity)]
    fn batch(&self, entries: Vec<Entry>) -> (WriteBatch, Vec<(&'static str, String)>, Vec<String>) {
        let mut b = WriteBatch::default();
        let mut facets = Vec::new();
        let mut policies = Vec::new();
        for e in entries {
            let p = prepare(&e.capture, self.max_chars);
            b.captures.push(NewCapture {
                key: e.key.clone(),
                ts_ms: e.ts_ms,
                segments: p.segments,
                chars: p.chars,
                truncated: p.truncated,
                masked: p.masked,
            });
            for (mut d, policy) in e.decisions {
                d.capture_key = Some(e.key.clone());
                d.preview = Some(p.preview.clone());
                for (kind, value) in FACET_KINDS.iter().zip([
                    Some(&d.policy_id),
                    Some(&d.policy_version),
                    Some(&d.effect),
                    d.code.as_ref(),
                    d.backend.as_ref(),
                    Some(&d.route),
                ]) {
                    let Some(v) = value else { continue };
                    let key = (*kind, v.clone());
                    if !self.facets.contains(&key) && !facets.contains(&key) {
                        facets.push(key);
                    }
                }
                if !self.policies.contains(&policy.content_hash)
                    && !policies.contains(&policy.content_hash)
                {
                    policies.push(policy.content_hash.clone());
                    b.policies.push(policy_text(&policy, e.ts_ms));
                }
                b.decisions.push(d);
            }
        }
        b.facets = facets
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        (b, facets, policies)
    }
}

/// The policy file's text at the version that judged: read from disk and checked against the
/// content hash, since a reload may have replaced the file since; if it has, the policy body as
/// the classifier read it.
fn policy_text(p: &Policy, ts_ms: i64) -> PolicyText {
    let on_disk = std::fs::read(&p.path)
        .ok()
        .filter(|b| crate::policy::file::content_hash(b) == p.content_hash)
        .and_then(|b| String::from_utf8(b).ok());
    let exact = on_disk.is_some();
    PolicyText {
        hash: p.content_hash.clone(),
        policy_id: p.id.clone(),
        version: p.version.clone(),
        path: p.path.display().to_string(),
        text: on_disk.unwrap_or_else(|| p.body.clone()),
        exact,
        ts_ms,
    }
}
