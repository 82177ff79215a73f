//! Following a streamed (SSE) reply: the part every API shares (the `[DONE]` sentinel, data that
//! is not JSON) here, and the API's own events in its [`StreamState`].

use serde_json::Value;
use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;

use super::reply::texts;
use super::sse::SseEvent;
use super::Source;

/// What one streamed event contributes.
#[derive(Debug, Default, PartialEq)]
pub struct EventText {
    /// (stream key, text delta): a key is one choice, content block or tool call.
    pub deltas: Vec<(String, String)>,
    /// The API's end-of-stream event (`[DONE]`, `message_stop`, `response.completed`, ...).
    pub terminal: bool,
    /// Why clients may read this event differently from the gateway (a repeated key, JSON that
    /// only some parsers accept): its text cannot be judged as they will render it.
    pub ambiguous: Option<&'static str>,
}

impl EventText {
    /// A text delta under `key`; empty text is nothing to judge.
    pub(super) fn push(&mut self, key: String, text: &str) {
        if !text.is_empty() {
            self.deltas.push((key, text.to_string()));
        }
    }

    /// Every string of a streamed structure under one key (see `reply::texts`).
    pub(super) fn push_texts(&mut self, key: String, v: &Value) {
        let mut segs = Vec::new();
        texts(v, String::new(), Source::Assistant, &mut segs);
        for sg in segs {
            self.deltas.push((key.clone(), sg.text));
        }
    }
}

/// How the gateway ends a stream it cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// The way the API ends a filtered reply; with a text (a refusal), the client reads it as the
    /// reply's last text before the end.
    Filtered(Option<&'a str>),
    /// The API's error event, carrying this message.
    Error(&'a str),
}

/// One API's view of a streamed reply: the text deltas of its events, and what is needed to end
/// the stream cleanly in the API's own terms if the gateway cuts it.
pub trait StreamState: Send + Sync + fmt::Debug {
    /// Reads one event whose data is JSON.
    fn on_event(&mut self, event: &Value, out: &mut EventText);

    /// The events that end the stream as `how` says, for a client that has seen what this state
    /// followed.
    fn ending(&self, how: Ending) -> Vec<u8>;

    /// The ending for a client that has seen only what this state followed (the released
    /// events), where `upstream` (the same API's state) followed every event the upstream sent.
    /// It has to fit what the client saw: a part it never saw start is not ended, and a start
    /// event it never got (which the SDKs require) is sent first, with the upstream's ids.
    fn cut_after(&self, upstream: &dyn StreamState, how: Ending) -> Vec<u8>;

    fn clone_box(&self) -> Box<dyn StreamState>;

    /// Whether text under `key` continues the request's last turn (an assistant prefill, a
    /// completion's prompt): the client reads the two as one text.
    fn continues_request(&self, _key: &str) -> bool {
        false
    }

    /// For `cut_after`, which reads the upstream's state of its own concrete type.
    fn as_any(&self) -> &dyn Any;
}

/// `upstream` as the concrete state `T` (see [`StreamState::cut_after`]).
pub(super) fn same_api<T: 'static>(upstream: &dyn StreamState) -> Option<&T> {
    upstream.as_any().downcast_ref::<T>()
}

/// Follows a streamed reply of one API (made by [`super::Api::stream`]).
#[derive(Debug)]
pub struct StreamTracker {
    state: Box<dyn StreamState>,
    /// The end of the text the reply continues (see [`StreamTracker::continues`]).
    continued: Option<String>,
    /// Keys that have had their first text, and with it `continued`.
    started: BTreeSet<String>,
}

impl Clone for StreamTracker {
    fn clone(&self) -> StreamTracker {
        StreamTracker {
            state: self.state.clone_box(),
            continued: self.continued.clone(),
            started: self.started.clone(),
        }
    }
}

impl StreamTracker {
    pub(super) fn new(state: Box<dyn StreamState>) -> StreamTracker {
        StreamTracker {
            state,
            continued: None,
            started: BTreeSet::new(),
        }
    }

    /// The reply continues `text` (the end of an assistant prefill): it comes before the first
    /// text of every key that continues the request, so that the first window reads across the
    /// seam as the client does.
    pub fn continues(&mut self, text: String) {
        self.continued = (!text.is_empty()).then_some(text);
    }

    pub fn on_event(&mut self, ev: &SseEvent) -> EventText {
        let mut out = EventText::default();
        let Some(data) = ev.data.as_deref() else {
            return out;
        };
        if data.trim() == "[DONE]" {
            out.terminal = true;
            return out;
        }
        match event_json(data) {
            Ok(v) => self.state.on_event(&v, &mut out),
            Err(Some(why)) => {
                out.ambiguous = Some(why);
                return out;
            }
            // Data that is not JSON is kept as text: it is still something the client may show.
            Err(None) => out.deltas.push(("raw".into(), data.to_string())),
        }
        if let Some(prefix) = &self.continued {
            let mut deltas = Vec::with_capacity(out.deltas.len() + 1);
            for (k, t) in std::mem::take(&mut out.deltas) {
                if !self.started.contains(&k) && self.state.continues_request(&k) {
                    self.started.insert(k.clone());
                    deltas.push((k.clone(), prefix.clone()));
                }
                deltas.push((k, t));
            }
            out.deltas = deltas;
        }
        out
    }

    /// See [`StreamState::cut_after`].
    pub fn cut_after(&self, upstream: &StreamTracker, how: Ending) -> Vec<u8> {
        self.state.cut_after(upstream.state.as_ref(), how)
    }

    /// See [`StreamState::ending`].
    pub fn cut_events(&self, how: Ending) -> Vec<u8> {
        self.state.ending(how)
    }
}

/// An event's data as JSON, read strictly: `Err(Some(why))` where JSON parsers disagree on it (a
/// key given twice is its first value to first-wins parsers such as gjson, its last to serde
/// and the SDKs'; a lone surrogate or trailing data is refused by some and read by others),
/// `Err(None)` where it is not JSON at all.
fn event_json(data: &str) -> Result<Value, Option<&'static str>> {
    if let Ok(v) = super::json::parse_strict(data.as_bytes()) {
        return Ok(v);
    }
    match serde_json::from_str::<Value>(data) {
        // The strict parser takes objects only; a scalar or array carries nothing an API reads.
        Ok(v) if !v.is_object() => Ok(v),
        Ok(_) => Err(Some("a stream event repeats a key")),
        Err(_) if data.trim_start().starts_with(['{', '[', '"']) => {
            Err(Some("a stream event is JSON that parsers read differently"))
        }
        Err(_) => Err(None),
    }
}

/// `event: name\ndata: json\n\n`
pub(super) fn named_event(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

/// `data: json\n\n`
pub(super) fn data_event(v: &Value) -> String {
    format!("data: {v}\n\n")
}
