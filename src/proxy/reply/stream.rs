//! A streamed (SSE) reply judged as it flows. With a blocking policy bound, text waits in the
//! hold-back window (`guard::window`) until judged, and a violation ends the stream the way the API
//! ends a filtered reply, closing the upstream so generation stops. With only annotate or shadow
//! bindings, the stream flows untouched and is judged whole at the end.

use bytes::Bytes;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::ServerSession as Session;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::untouched::upstream_body_failed;
use super::{annotation_json, release, unclassifiable_message, withheld_message};
use crate::config::{Action, BlockStyle, FailMode};
use crate::decide::Final;
use crate::guard::window::HoldBack;
use crate::policy::Bound;
use crate::proxy::body::{content_codings, decode};
use crate::proxy::exchange::{Exchange, Flow, Judging, Outcome};
use crate::proxy::forward::UpstreamReply;
use crate::proxy::gateway::Route;
use crate::proxy::refusal::{self, Words};
use crate::wire::sse::{SseEvent, SseParser};
use crate::wire::{segments_of_keys, Api, Ending, StreamTracker};

pub async fn relay(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    bound: &[Bound],
) -> pingora::Result<()> {
    let Some(route) = ex.route().cloned() else {
        return super::relay_untouched(ex, session, up, Bytes::new()).await;
    };
    let UpstreamReply {
        http,
        peer,
        mut header,
    } = up;
    header.remove_header(&http::header::CONTENT_LENGTH);
    session.write_response_header(Box::new(header)).await?;
    let http = {
        let mut relay = StreamRelay::start(ex, session, bound, route, http);
        if let Flow::Answered = relay.run().await? {
            return Ok(());
        }
        relay.finish().await?;
        relay.upstream_done().await
    };
    if let Some(http) = http {
        release(ex, http, &peer).await;
    }
    Ok(())
}

/// What the upstream reader sends.
enum Read {
    Chunk(Bytes),
    Failed(pingora::Error),
}

/// What the relay waits for next.
enum Next {
    Chunk(Bytes),
    Failed(pingora::Error),
    /// The upstream's body ended.
    End,
    /// Unjudged text has waited `max_hold_ms`: it is judged however little there is.
    HoldExpired,
}

/// One streamed reply on its way from the upstream to the client.
struct StreamRelay<'a> {
    ex: &'a mut Exchange,
    session: &'a mut Session,
    bound: &'a [Bound],
    route: Arc<Route>,
    /// A blocking policy is bound: text is held until judged. Otherwise bytes flow untouched.
    enforce: bool,
    /// Events are still parsed: an annotate-only stream stops after an event too large to
    /// judge, and just flows.
    inspecting: bool,
    rx: mpsc::Receiver<Read>,
    /// Reads the upstream, so that waiting for bytes can be raced against the hold deadline
    /// without cancelling a read half-way; aborting it closes the upstream connection at once.
    reader: Option<JoinHandle<Option<HttpSession>>>,
    parser: SseParser,
    streams: Streams,
    hold: HoldBack,
    /// Annotate-only: the text gathered per key, judged at the end.
    whole: BTreeMap<String, String>,
    whole_len: usize,
    /// The request's redaction restores: what is written is the client's text, with the
    /// originals put back (the policies judged the text as the model wrote it).
    restore: Option<crate::redact::StreamRestore>,
}

impl Drop for StreamRelay<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

impl<'a> StreamRelay<'a> {
    fn start(
        ex: &'a mut Exchange,
        session: &'a mut Session,
        bound: &'a [Bound],
        route: Arc<Route>,
        http: HttpSession,
    ) -> StreamRelay<'a> {
        let (tx, rx) = mpsc::channel::<Read>(16);
        let reader = tokio::spawn(read_upstream(http, tx));
        let out = &route.output;
        let hold = HoldBack::new(
            out.window_chars,
            out.overlap_chars,
            Duration::from_millis(out.max_hold_ms),
        );
        let mut streams = Streams::new(route.api);
        if let Some(text) = continued_text(ex, session, route.api) {
            streams.continues(hold.overlap_of(&text));
        }
        let restore = crate::proxy::redact::restorer(ex)
            .map(|p| crate::redact::StreamRestore::new(route.api, p));
        StreamRelay {
            restore,
            enforce: bound.iter().any(|b| b.action == Action::Block),
            inspecting: true,
            ex,
            session,
            bound,
            streams,
            route,
            rx,
            reader: Some(reader),
            parser: SseParser::new(),
            hold,
            whole: BTreeMap::new(),
            whole_len: 0,
        }
    }

    /// Relays until the upstream's body ends (`Continue`: `finish` comes next) or the stream is
    /// over early (`Answered`: cut, or passed on unparsed to its end).
    async fn run(&mut self) -> pingora::Result<Flow<()>> {
        loop {
            let (events, ended) = match self.next().await {
                Next::HoldExpired => match self.judge_window().await? {
                    Flow::Answered => return Ok(Flow::Answered),
                    Flow::Continue(()) => continue,
                },
                Next::Chunk(b) => (self.take(b).await?, false),
                Next::Failed(e) => {
                    upstream_body_failed(self.ex, &e);
                    return Err(Box::new(e));
                }
                Next::End => (self.parser.finish().into_iter().collect(), true),
            };
            let (terminal, ambiguous) = self.follow(events);
            let terminal = terminal || ended;
            if let (Some(why), true) = (ambiguous, self.enforce) {
                self.ambiguous(why).await?;
                return Ok(Flow::Answered);
            }
            let max = self.route.output.max_reply_bytes;
            // An event that never ends (no blank line) cannot be judged, and buffering it without
            // a bound would let one reply grow the gateway's memory: past max_reply_bytes the
            // stream is unclassifiable, and the route's fail mode decides.
            if self.inspecting && self.parser.buffered() > max {
                let why =
                    format!("a stream event exceeds {max} bytes (routes.output.max_reply_bytes)");
                if self.enforce {
                    self.oversized(&why).await?;
                    return Ok(Flow::Answered);
                }
                // Its bytes are already on their way to the client; only the parsing stops.
                self.ex.unclassifiable(&why);
                self.inspecting = false;
                self.parser.take_buffered();
            } else if self.enforce {
                if let Some(b) = self.release_now() {
                    self.write(b).await?;
                }
                let due = self.hold.window_full() || (terminal && self.hold.has_pending_text());
                if due {
                    if let Flow::Answered = self.judge_window().await? {
                        return Ok(Flow::Answered);
                    }
                }
            }
            if ended {
                return Ok(Flow::Continue(()));
            }
        }
    }

    async fn next(&mut self) -> Next {
        let deadline = self
            .hold
            .hold_deadline()
            .filter(|_| self.enforce && self.hold.has_pending_text());
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.rx.recv() => match r {
                Some(Read::Chunk(b)) => Next::Chunk(b),
                Some(Read::Failed(e)) => Next::Failed(e),
                None => Next::End,
            },
            _ = expired => Next::HoldExpired,
        }
    }

    /// The events of one chunk; an annotate-only stream sends the chunk on at once.
    async fn take(&mut self, b: Bytes) -> pingora::Result<Vec<SseEvent>> {
        if !self.enforce {
            self.write(b.clone()).await?;
        }
        Ok(if self.inspecting {
            self.parser.push(&b)
        } else {
            Vec::new()
        })
    }

    /// Follows `events`: their text goes to the hold-back window (or, annotate-only, to the
    /// whole reply's text). Returns whether one ended the stream, and why one could be read
    /// differently by clients (following stops there).
    fn follow(&mut self, events: Vec<SseEvent>) -> (bool, Option<&'static str>) {
        let mut terminal = false;
        let max = self.route.output.max_reply_bytes;
        for ev in events {
            let t = self.streams.upstream.on_event(&ev);
            terminal |= t.terminal;
            if t.ambiguous.is_some() && self.enforce {
                return (terminal, t.ambiguous);
            }
            if self.enforce {
                self.hold.push(ev.raw, t.deltas);
                continue;
            }
            for (k, d) in t.deltas {
                if self.whole_len < max {
                    self.whole_len += d.len();
                    self.whole.entry(k).or_default().push_str(&d);
                }
            }
        }
        (terminal, None)
    }

    /// An event clients may read differently from the gateway: what it says cannot be judged as
    /// they will render it, so the stream is cut before it, whatever the fail mode (an upstream
    /// that speaks the API sends no such event).
    async fn ambiguous(&mut self, why: &str) -> pingora::Result<()> {
        self.ex.unclassifiable(why);
        self.ex.outcome = Outcome::FailClosed;
        self.hold.reject();
        self.cut(Words::plain(format!(
            "guardgate withheld the rest of the upstream reply: {why}"
        )))
        .await
    }

    /// Judges the hold-back window: its events go out when it is allowed, the stream is cut
    /// (`Answered`) when it is not.
    async fn judge_window(&mut self) -> pingora::Result<Flow<()>> {
        let at = Judging::Window {
            judged: self.hold.windows_judged + 1,
        };
        let d = self.ex.judge(self.bound, self.hold.window(), at).await;
        let (verdict, annotated) = (d.verdict.clone(), !d.annotations.is_empty());
        if verdict != Final::Allow {
            self.hold.reject();
            self.ex.outcome = Outcome::OutputBlocked;
            let words = match &verdict {
                Final::Block { policy_id, .. } => refusal::for_block(
                    Some(&self.route),
                    self.ex.profile_refusal(),
                    self.session,
                    self.bound,
                    policy_id,
                    || withheld_message(&verdict),
                ),
                _ => Words::plain(withheld_message(&verdict)),
            };
            self.cut(words).await?;
            return Ok(Flow::Answered);
        }
        if annotated {
            self.ex.outcome = Outcome::Annotated;
        }
        let approved = self.hold.approve();
        self.streams.released();
        if let Some(b) = approved {
            self.write(b).await?;
        }
        Ok(Flow::Continue(()))
    }

    /// `HoldBack::releasable_now`, keeping the streams in step.
    fn release_now(&mut self) -> Option<Bytes> {
        let b = self.hold.releasable_now();
        if b.is_some() {
            self.streams.released();
        }
        b
    }

    /// Sends bytes to the client; a failure means the client left.
    async fn write(&mut self, b: Bytes) -> pingora::Result<()> {
        let b = match &mut self.restore {
            Some(r) => r.push(&b),
            None => b,
        };
        if b.is_empty() {
            return Ok(());
        }
        let sent = self.session.write_response_body(b, false).await;
        if sent.is_err() {
            self.ex.outcome = Outcome::ClientGone;
        }
        sent
    }

    /// Sends bytes already the client's (past any restore).
    async fn write_raw(&mut self, b: Bytes) -> pingora::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        self.session.write_response_body(b, false).await
    }

    /// Ends the stream the way the API ends a filtered reply (with a configured refusal as its
    /// last text), or with its error event carrying `words` (`on_block = "error"`). The header
    /// went out before the verdict, so a refusal's language is in no `Content-Language`.
    async fn cut(&mut self, words: Words) -> pingora::Result<()> {
        let how = match self.route.output.on_block {
            BlockStyle::Replace => Ending::Filtered(words.configured().then_some(&*words.text)),
            BlockStyle::Error => Ending::Error(&words.text),
        };
        let ending = self.streams.cut(how);
        self.session
            .write_response_body(Bytes::from(ending), false)
            .await?;
        self.session.write_response_body(Bytes::new(), true).await
    }

    /// A blocking stream that turned unclassifiable mid-way (see `run`). Fail-closed: the stream
    /// ends the way a block ends it, with the reason. Fail-open: the text held so far is still
    /// judged (and may be cut), then the event that could not be judged and the rest of the
    /// stream pass through unparsed.
    async fn oversized(&mut self, why: &str) -> pingora::Result<()> {
        if self.ex.unclassifiable(why) == FailMode::Closed {
            self.hold.reject();
            return self.cut(Words::plain(unclassifiable_message(why))).await;
        }
        if self.hold.has_pending_text() {
            if let Flow::Answered = self.judge_window().await? {
                return Ok(());
            }
        } else if let Some(b) = self.release_now() {
            self.write(b).await?;
        }
        self.ex.outcome = Outcome::FailOpen;
        let unparsed = self.parser.take_buffered();
        self.write(unparsed).await?;
        while let Some(item) = self.rx.recv().await {
            match item {
                Read::Chunk(b) => self.write(b).await?,
                Read::Failed(e) => {
                    upstream_body_failed(self.ex, &e);
                    return Err(Box::new(e));
                }
            }
        }
        if let Some(rest) = self.restore.as_mut().map(|r| r.finish()) {
            self.write_raw(rest).await?;
        }
        self.session.write_response_body(Bytes::new(), true).await
    }

    /// The stream ended whole: an annotate-only stream is judged now (and may get an
    /// `event: guardgate` with what annotate bindings found), and the client's body is ended.
    async fn finish(&mut self) -> pingora::Result<()> {
        if let Some(rest) = self.restore.as_mut().map(|r| r.finish()) {
            self.write_raw(rest).await?;
        }
        if self.enforce {
            if self.ex.outcome != Outcome::Annotated {
                self.ex.outcome = Outcome::Forwarded;
            }
        } else {
            let segments = segments_of_keys(std::mem::take(&mut self.whole));
            let at = Judging::Window { judged: 0 };
            let annotations = self
                .ex
                .judge(self.bound, segments, at)
                .await
                .annotations
                .clone();
            self.ex.outcome = if annotations.is_empty() {
                Outcome::Forwarded
            } else {
                Outcome::Annotated
            };
            if self.route.output.annotate_event && !annotations.is_empty() {
                let ev = format!(
                    "event: guardgate\ndata: {}\n\n",
                    annotation_json(&annotations)
                );
                self.session
                    .write_response_body(Bytes::from(ev), false)
                    .await?;
            }
        }
        self.session.write_response_body(Bytes::new(), true).await
    }

    /// The upstream connection once its reader has seen the body's end.
    async fn upstream_done(&mut self) -> Option<HttpSession> {
        self.reader.take()?.await.ok().flatten()
    }
}

/// The text the reply continues (an assistant prefill), from the request body.
fn continued_text(ex: &Exchange, session: &Session, api: Api) -> Option<String> {
    let coding = content_codings(&session.req_header().headers);
    let limit = ex.gw.config.limits.max_decoded_body_bytes;
    let body = decode(&ex.request_body, coding.as_deref(), limit).ok()?;
    api.continued_text(&body)
}

/// Reads the upstream's body into `tx` until it ends (returning the connection for reuse) or
/// fails or the relay is gone (closing it).
async fn read_upstream(mut http: HttpSession, tx: mpsc::Sender<Read>) -> Option<HttpSession> {
    loop {
        let item = match http.read_response_body().await {
            Ok(Some(b)) => Read::Chunk(b),
            Ok(None) => return Some(http),
            Err(e) => Read::Failed(*e),
        };
        let failed = matches!(item, Read::Failed(_));
        if tx.send(item).await.is_err() || failed {
            http.shutdown().await;
            return None;
        }
    }
}

/// A stream as the upstream sent it and as the client has been sent it: a cut must end what the
/// client saw (held events that were discarded never reached it), with the upstream's ids.
struct Streams {
    upstream: StreamTracker,
    /// The upstream's state when the hold-back queue last went out.
    released: StreamTracker,
}

impl Streams {
    fn new(api: Api) -> Streams {
        Streams {
            upstream: api.stream(),
            released: api.stream(),
        }
    }

    /// The hold-back queue went out. Every event the upstream tracker has followed was queued
    /// before any release point, so the client now has exactly what it followed: a copy of its
    /// state, not a second parse of every event.
    fn released(&mut self) {
        self.released.clone_from(&self.upstream);
    }

    /// See `StreamTracker::continues`.
    fn continues(&mut self, text: String) {
        self.upstream.continues(text.clone());
        self.released.continues(text);
    }

    fn cut(&self, how: Ending) -> Vec<u8> {
        self.released.cut_after(&self.upstream, how)
    }
}
