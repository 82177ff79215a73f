//! One request through the gateway: the typed per-request state that every phase shares, in the
//! spirit of pingora's `ProxyHttp` with its `CTX`. Its methods are what the phases do to a
//! request (judge it, refuse it, note that a reply could not be judged), and [`Exchange::finish`]
//! is the single logging phase where its audit records and metrics are written, once.
//!
//! The phases themselves: `proxy::input` (read and judge the request), `proxy::forward` (send it
//! upstream), `proxy::reply` (relay, judge and cut the reply).

mod background;
mod ledger;
mod outcome;
mod redacted;

use bytes::Bytes;
use pingora::protocols::http::ServerSession as Session;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::gateway::{Gateway, Route};
use super::respond;
use crate::classify::Content;
use crate::config::{Direction, FailMode};
use crate::decide::{decide, decide_blocking, Annotations, Decision, Deferred, Split};
use crate::metrics::{BadRequest, Fault};
use crate::policy::refusal::Refusal;
use crate::policy::{Bound, Snapshot};
use crate::wire::{Api, ErrorKind, Segment};
use background::{Job, OwnedFiling};
use ledger::{Entry, Filing, Ledger};

pub use ledger::Timing;
pub use outcome::Outcome;
pub use redacted::Redacted;

/// What a phase left to do: go on with a value, or nothing (the client has its answer).
pub enum Flow<T> {
    Continue(T),
    Answered,
}

/// What is being judged, which says how the decision is recorded.
#[derive(Debug, Clone, Copy)]
pub enum Judging {
    /// The request, with the count of its non-text parts that no classifier reads.
    Request { unclassified_parts: usize },
    /// A whole reply.
    Reply,
    /// A window of a streamed reply; `judged` windows so far, this one included.
    Window { judged: u32 },
}

/// Who answers the request.
enum Scope {
    /// Nothing matched (yet).
    None,
    Route(Arc<Route>),
    /// A moderation endpoint: `name` files its records, `label` counts its requests.
    Endpoint {
        name: &'static str,
        label: String,
        deadline: Duration,
    },
}

/// The policy profile a request is judged under: its name, and the fail mode and refusal it sets.
struct Chosen {
    name: Arc<str>,
    fail_mode: Option<FailMode>,
    refusal: Option<Arc<Refusal>>,
}

pub struct Exchange {
    pub gw: Arc<Gateway>,
    pub request_id: String,
    scope: Scope,
    /// The API whose shapes answer when no route gives one (see [`Exchange::answer_as`]).
    shape: Api,
    pub outcome: Outcome,
    /// The request body as read (content coding and all): a streamed reply's guard reads from it
    /// the text the reply continues (an assistant prefill).
    pub request_body: Bytes,
    /// The policy snapshot the request is judged against (see [`Exchange::snapshot`]).
    generation: u64,
    /// The policy profile the request is judged under, and the fail mode it sets (see
    /// [`Exchange::use_profile`]).
    profile: Option<Chosen>,
    ledger: Ledger,
    /// What the request's annotate bindings judged off the request path will find.
    late: Option<tokio::sync::oneshot::Receiver<Annotations>>,
    /// What the route's redact bindings did to the request (see `proxy::redact`).
    pub redaction: Option<Redacted>,
    /// The request's span while `[telemetry]` is on (see [`Exchange::trace`]).
    span: Option<Box<crate::telemetry::RequestSpan>>,
    /// When the judgement under way started, for its span.
    judging_since: Option<SystemTime>,
    finished: bool,
    /// Dropped with the exchange, however the request ends.
    _in_flight: InFlight,
}

impl Exchange {
    pub fn new(gw: &Arc<Gateway>) -> Exchange {
        Exchange {
            gw: gw.clone(),
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            scope: Scope::None,
            shape: Api::openai_chat(),
            outcome: Outcome::Unknown,
            request_body: Bytes::new(),
            generation: 0,
            profile: None,
            ledger: Ledger::default(),
            late: None,
            redaction: None,
            span: None,
            judging_since: None,
            finished: false,
            _in_flight: InFlight::new(&gw.in_flight),
        }
    }

    /// Starts the request's span when tracing is on: a child of the caller's `traceparent`, whose
    /// header in `req` now names the gateway's span for the upstream.
    pub fn trace(&mut self, req: &mut pingora::http::RequestHeader) {
        if self.gw.telemetry.is_on() {
            self.span = self.gw.telemetry.start(req);
        }
    }

    /// The trace id of the request's span, when it is traced.
    pub fn trace_id(&self) -> Option<&str> {
        self.span.as_ref().map(|s| s.parent.trace_id.as_str())
    }

    /// Names the policy profile the request is judged under on its span (`guardgate.profile`).
    pub fn trace_profile(&mut self, name: &str) {
        if let Some(s) = self.span.as_mut() {
            s.set_profile(name);
        }
    }

    pub fn for_route(&mut self, route: Arc<Route>) {
        self.scope = Scope::Route(route);
    }

    pub fn for_endpoint(&mut self, name: &'static str, label: String, deadline: Duration) {
        self.scope = Scope::Endpoint {
            name,
            label,
            deadline,
        };
    }

    /// The route this request is on, if it is on one.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match &self.scope {
            Scope::Route(r) => Some(r),
            _ => None,
        }
    }

    /// The API whose shapes the gateway answers in: the route's, or OpenAI's for everything else.
    pub fn api(&self) -> Api {
        self.route().map_or(self.shape, |r| r.api)
    }

    /// Answers in `api`'s shapes while no route is set: a request refused before routing gets
    /// the error its client's SDK can read.
    pub fn answer_as(&mut self, api: Api) {
        self.shape = api;
    }

    fn fail_mode(&self) -> FailMode {
        if let Some(mode) = self.profile.as_ref().and_then(|p| p.fail_mode) {
            return mode;
        }
        // The moderation endpoints forward nothing: a failed policy is reported in the answer.
        self.route().map_or(FailMode::Open, |r| r.fail_mode)
    }

    /// Judges the request under the profile `name` from here on: its records name it, and its
    /// `fail_mode`, when set, replaces the route's, and its `refusal` words a block.
    pub fn use_profile(
        &mut self,
        name: Arc<str>,
        fail_mode: Option<FailMode>,
        refusal: Option<Arc<Refusal>>,
    ) {
        self.trace_profile(&name);
        self.profile = Some(Chosen {
            name,
            fail_mode,
            refusal,
        });
    }

    /// The policy profile the request is judged under, if profiles are configured.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| &*p.name)
    }

    /// The refusal of the request's profile, if it has one.
    pub fn profile_refusal(&self) -> Option<&Refusal> {
        self.profile.as_ref().and_then(|p| p.refusal.as_deref())
    }

    fn deadline(&self) -> Duration {
        match &self.scope {
            Scope::Route(r) => r.deadline,
            Scope::Endpoint { deadline, .. } => *deadline,
            Scope::None => Duration::ZERO,
        }
    }

    /// The live policy snapshot, which this request is judged against from here on: a reload
    /// mid-request never mixes versions.
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        let snap = self.gw.registry.snapshot();
        self.generation = snap.generation;
        snap
    }

    /// Judges `segments` against `bound` within the route's deadline and fail mode, and keeps the
    /// decision for the logging phase. On a route only the blocking bindings are waited for (see
    /// `decide::split`); the rest go to the background queue. A verdict endpoint answers with
    /// every policy's verdict, so there everything is judged here.
    pub async fn judge(
        &mut self,
        bound: &[Bound],
        segments: Vec<Segment>,
        at: Judging,
    ) -> &Decision {
        let content = Arc::new(Content::from_segments(segments));
        let deadline = self.deadline_from_now();
        let fail_mode = self.fail_mode();
        // Boxed: the judging future is kilobytes large, and inline it would make every request's
        // future as large (allocated and copied per request), pass-through included.
        let split = if matches!(self.scope, Scope::Endpoint { .. }) {
            let decision = Box::pin(decide(
                &self.gw.cascade,
                bound,
                &content,
                deadline,
                fail_mode,
            ))
            .await;
            Split {
                decision,
                deferred: Vec::new(),
            }
        } else {
            Box::pin(decide_blocking(
                &self.gw.cascade,
                bound,
                &content,
                deadline,
                fail_mode,
            ))
            .await
        };
        self.settle(split, &content, at, Timing::Inline)
    }

    /// [`Exchange::judge`] for a reply the client already has whole: rules settle in place and
    /// model work goes to the background queue as usual, but nothing waited for any of it, so
    /// its records say `off_path`.
    pub async fn judge_sent_reply(&mut self, bound: &[Bound], segments: Vec<Segment>) -> &Decision {
        let content = Arc::new(Content::from_segments(segments));
        let deadline = self.deadline_from_now();
        let fail_mode = self.fail_mode();
        let split = Box::pin(decide_blocking(
            &self.gw.cascade,
            bound,
            &content,
            deadline,
            fail_mode,
        ))
        .await;
        self.settle(split, &content, Judging::Reply, Timing::OffPath)
    }

    /// A reply the client already has that could not be judged against `bound` (too large to
    /// copy, or unreadable): counted as unclassifiable, and every binding's record says
    /// `not_judged` and why. The fail mode has nothing left to decide.
    pub fn not_judged(&mut self, bound: &[Bound], why: &str) {
        self.gw.metrics.fault(Fault::OutputUnclassifiable);
        let route = self.route().map_or("-", |r| r.name.as_str());
        tracing::warn!(request_id = %self.request_id, route, reason = %why, "reply sent unjudged");
        let not_judged = || Err(crate::classify::ClassifyError::NotJudged(why.to_string()));
        let outcomes = bound
            .iter()
            .map(|b| crate::decide::Outcome {
                policy: b.policy.clone(),
                action: b.action,
                result: not_judged(),
                latency: Duration::ZERO,
                candidate: b.candidate.clone().map(|c| (c, not_judged())),
            })
            .collect();
        if self.ledger.is_full() {
            self.write_ledger();
        }
        self.ledger.keep(Entry {
            direction: Direction::Output,
            decision: Decision {
                outcomes,
                verdict: crate::decide::Final::Allow,
                annotations: Vec::new(),
            },
            windows: None,
            unclassified_parts: 0,
            capture: None,
            timing: Timing::Inline,
            started: None,
        });
    }

    /// When judgement started now must be done by: the route's deadline. Called as judgement
    /// starts, it also notes the start for the judgement spans.
    pub fn deadline_from_now(&mut self) -> Instant {
        if self.span.is_some() {
            self.judging_since = Some(SystemTime::now());
        }
        Instant::now() + self.deadline()
    }

    /// Keeps a decision reached for this exchange (by [`Exchange::judge`], or beside the upstream
    /// call) for the logging phase, and hands its deferred work to the background queue.
    pub fn settle(
        &mut self,
        split: Split,
        content: &Arc<Content>,
        at: Judging,
        timing: Timing,
    ) -> &Decision {
        let Split { decision, deferred } = split;
        if self.ledger.is_full() {
            self.write_ledger();
        }
        let (direction, windows, unclassified_parts) = match at {
            Judging::Request { unclassified_parts } => (Direction::Input, None, unclassified_parts),
            Judging::Reply => (Direction::Output, None, 0),
            Judging::Window { judged } => (Direction::Output, Some(judged), 0),
        };
        if !deferred.is_empty() {
            self.defer(deferred, content, direction, windows, unclassified_parts);
        }
        // Only decisions the capture mode keeps copy their text: the allow path copies nothing.
        let capture = self
            .gw
            .auditor
            .review()
            .and_then(|r| r.capture(&decision, content));
        let started = self.span.as_ref().map(|_| {
            self.judging_since.take().unwrap_or_else(|| {
                let longest = decision.outcomes.iter().map(|o| o.latency).max();
                let now = SystemTime::now();
                now.checked_sub(longest.unwrap_or_default()).unwrap_or(now)
            })
        });
        let entry = Entry {
            direction,
            decision,
            windows,
            unclassified_parts,
            capture,
            timing,
            started,
        };
        match at {
            Judging::Window { .. } => self.ledger.window(entry),
            _ => self.ledger.keep(entry),
        }
    }

    fn defer(
        &mut self,
        deferred: Vec<Deferred>,
        content: &Arc<Content>,
        direction: Direction,
        windows: Option<u32>,
        unclassified_parts: usize,
    ) {
        // Only the request's annotate verdicts can still become headers of the reply.
        let annotations =
            if direction == Direction::Input && deferred.iter().any(Deferred::annotates) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.late = Some(rx);
                Some(tx)
            } else {
                None
            };
        let (route, api) = filed_under(&self.scope);
        let job = Job {
            deferred,
            content: content.clone(),
            filing: OwnedFiling {
                request_id: self.request_id.clone(),
                route: route.to_string(),
                api,
                fail_mode: self.fail_mode(),
                generation: self.generation,
                profile: self.profile.as_ref().map(|p| p.name.clone()),
                trace: self.span.as_ref().map(|s| s.parent.clone()),
            },
            direction,
            windows,
            unclassified_parts,
            deadline: self.deadline(),
            annotations,
        };
        background::submit(&self.gw, job);
    }

    /// What the request's annotate bindings judged off the request path found, as far as it is
    /// in by now, and whether some of it is still pending (then only the audit record will say).
    pub fn late_annotations(&mut self) -> (Annotations, bool) {
        use tokio::sync::oneshot::error::TryRecvError;
        let Some(rx) = self.late.as_mut() else {
            return (Vec::new(), false);
        };
        match rx.try_recv() {
            Ok(a) => {
                self.late = None;
                (a, false)
            }
            Err(TryRecvError::Empty) => (Vec::new(), true),
            // Shed: the audit record says so.
            Err(TryRecvError::Closed) => {
                self.late = None;
                (Vec::new(), false)
            }
        }
    }

    /// Marks the request refused as malformed, and counts why.
    pub fn reject(&mut self, reason: BadRequest) {
        self.outcome = Outcome::Rejected;
        self.gw.metrics.bad_request(reason);
    }

    /// Answers with `kind` in the API's error shape. `close` drops the connection afterwards (the
    /// request body may not have been read to its end).
    pub async fn refuse(
        &self,
        session: &mut Session,
        kind: ErrorKind,
        message: &str,
        close: bool,
    ) -> pingora::Result<()> {
        respond::error(session, self.api(), kind, message, &self.request_id, close).await
    }

    /// Answers a block with `words` in the API's error shape (and their language, when an
    /// operator configured them, as `Content-Language`).
    pub async fn refuse_with(
        &self,
        session: &mut Session,
        kind: ErrorKind,
        words: &super::refusal::Words,
    ) -> pingora::Result<()> {
        let language = words.language.as_deref();
        respond::error_in(
            session,
            self.api(),
            kind,
            &words.text,
            language,
            &self.request_id,
            false,
        )
        .await
    }

    /// A reply that cannot be judged is a classifier failure: counts and logs it, and returns the
    /// route's fail mode, which decides what the client gets (the outcome says which).
    pub fn unclassifiable(&mut self, why: &str) -> FailMode {
        self.gw.metrics.fault(Fault::OutputUnclassifiable);
        let fail_mode = self.fail_mode();
        let route = self.route().map_or("-", |r| r.name.as_str());
        tracing::warn!(request_id = %self.request_id, route, reason = %why, "reply could not be classified");
        self.outcome = match fail_mode {
            FailMode::Closed => Outcome::FailClosed,
            FailMode::Open => Outcome::FailOpen,
        };
        fail_mode
    }

    /// The logging phase: the decisions' audit records and metrics, the request's count and its
    /// log line. Runs once, here or when the exchange is dropped.
    pub fn finish(&mut self, status: Option<u16>, error: Option<&pingora::Error>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.write_ledger();
        self.write_redaction();
        let route = match &self.scope {
            Scope::Route(r) => r.name.as_str(),
            Scope::Endpoint { label, .. } => label.as_str(),
            Scope::None => "-",
        };
        let outcome = match (error, self.outcome) {
            (Some(_), Outcome::Passthrough) => Outcome::PassthroughError,
            (_, o) => o,
        };
        let metrics = &self.gw.metrics;
        metrics
            .requests
            .with_label_values(&[route, outcome.as_str()])
            .inc();
        if let Some(e) = error {
            metrics.fault(Fault::Proxy);
            tracing::warn!(request_id = %self.request_id, route, error = %e, "request ended with an error");
        }
        if let Some(span) = self.span.take() {
            let (_, api) = filed_under(&self.scope);
            let (route, path) = match &self.scope {
                Scope::Route(r) => (Some(r.name.as_str()), Some(r.path.as_str())),
                Scope::Endpoint { name, .. } => (Some(*name), None),
                Scope::None => (None, None),
            };
            span.end(&crate::telemetry::Ending {
                request_id: &self.request_id,
                route,
                path,
                api,
                outcome: outcome.as_str(),
                status,
                failed: error.is_some(),
            });
        }
        tracing::debug!(
            request_id = %self.request_id,
            route,
            outcome = outcome.as_str(),
            status = status.unwrap_or(0),
            "request done"
        );
    }

    /// One record per redact binding: what it replaced, by kind and count, never the values.
    fn write_redaction(&mut self) {
        let Some(r) = self.redaction.take() else {
            return;
        };
        let audit = &self.gw.auditor;
        if !audit.enabled() {
            return;
        }
        let (route, api) = filed_under(&self.scope);
        let ctx = crate::audit::RecordContext {
            request_id: &self.request_id,
            route,
            api,
            direction: Direction::Input,
            fail_mode: self.fail_mode(),
            generation: self.generation,
            unclassified_parts: 0,
            profile: self.profile(),
            trace_id: self.trace_id(),
        };
        let ts = crate::audit::timestamp();
        let counts: Vec<_> = (0..r.policies.len())
            .map(|i| r.placeholders.counts_of(i))
            .collect();
        let records: Vec<_> = r
            .policies
            .iter()
            .zip(&counts)
            .map(|(p, c)| crate::audit::redaction_record(&ctx, &ts, p, c, r.took))
            .collect();
        audit.record_all(&records);
    }

    fn write_ledger(&mut self) {
        let (route, api) = filed_under(&self.scope);
        let filing = Filing {
            request_id: &self.request_id,
            route,
            api,
            fail_mode: self.fail_mode(),
            generation: self.generation,
            profile: self.profile.as_ref().map(|p| &*p.name),
            trace: self.span.as_ref().map(|s| &s.parent),
        };
        for entry in self.ledger.drain() {
            ledger::write(&self.gw, &filing, &entry);
        }
    }
}

/// The route and API names an exchange's records are filed under.
fn filed_under(scope: &Scope) -> (&str, &'static str) {
    match scope {
        Scope::Route(r) => (r.name.as_str(), r.api.name()),
        Scope::Endpoint { name, .. } => (name, name),
        Scope::None => ("-", "-"),
    }
}

impl Drop for Exchange {
    /// A request whose future was dropped (shutdown, a panic in a phase) still leaves its records.
    fn drop(&mut self) {
        self.finish(None, None);
    }
}

/// Counts a request as in flight for as long as it lives, so a graceful shutdown can wait for it.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}
