//! Wire formats of the LLM APIs the gateway fronts.
//!
//! Each API is one module implementing [`WireFormat`]: how its requests are read (strictly), what
//! text its replies carry, how a blocked reply and an error look in its own terms, and how its
//! streamed replies are followed and ended. The rest of the gateway knows an API only as an
//! [`Api`], a handle on one entry of [`Api::all`]; adding an API is one module and one line in
//! `REGISTRY`.
//!
//! The gateway must classify *everything the upstream model will read*, so extraction is
//! deliberately strict: a field with an unexpected type is a refusal rather than something
//! silently skipped, because anything skipped is text the classifier never saw.

mod anthropic;
mod arguments;
pub mod batch;
mod choices;
mod completions;
mod errors;
mod extract;
mod fields;
mod filled;
mod inline_file;
pub mod json;
mod openai_chat;
mod reply;
mod responses;
mod schema;
pub mod sse;
mod stream;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use std::fmt;

pub use errors::ErrorKind;
pub use json::parse_strict;
pub use reply::{segments_of_keys, source_of_key, splice_annotation};
pub use stream::{Ending, EventText, StreamState, StreamTracker};

/// One API's wire format: the request and reply sides of one API in one place.
pub trait WireFormat: Sync {
    /// How the config names the API (`routes.api`), e.g. `openai-chat`.
    fn name(&self) -> &'static str;

    /// The path the API is served at by its provider.
    fn default_path(&self) -> &'static str;

    /// Everything the model will read from a request body (already a JSON object), in document
    /// order. A field of an unexpected type is an error naming its JSON path.
    fn parse_request(&self, body: &Map<String, Value>) -> Result<ParsedRequest, WireError>;

    /// The member of a complete reply that holds the model's output (`choices`, `output`,
    /// `content`). A reply without it is not of the API's shape and is read whole.
    fn reply_member(&self) -> &'static str;

    /// The text of a complete reply that has `reply_member`, as its client will read it.
    fn reply_text(&self, reply: &Value, out: &mut Vec<Segment>);

    /// Rewrites `reply` (a JSON object) as a well-formed answer that carries `message` instead of
    /// the model's output, with the API's own "filtered" stop reason.
    fn block_reply(&self, reply: &mut Value, message: &str);

    /// The API's error body, so that unmodified SDKs surface a refusal like any other error.
    fn error_body(&self, kind: &ErrorKind, message: &str) -> Value;

    /// The state that follows one streamed reply of this API.
    fn stream_state(&self) -> Box<dyn StreamState>;

    /// The text deltas of one streamed event (its data as JSON), each under its stream key (a
    /// choice, a content block), for rewriting the text the client reads: the redact action's
    /// restore. Empty when the event carries no text delta.
    /// A key that ends in [`JSON_TEXT`] names a delta of JSON text (tool-call arguments).
    fn delta_texts<'a>(&self, _event: &'a mut Value) -> Vec<(String, &'a mut String)> {
        Vec::new()
    }

    /// The text the reply goes on from, as the client reads the two together: a trailing
    /// assistant turn (a prefill), a completion's prompt. `None` where the reply starts afresh.
    fn continued_text(&self, _request: &Map<String, Value>) -> Option<String> {
        None
    }
}

/// The end of a [`WireFormat::delta_texts`] key whose delta is a piece of JSON text (streamed
/// tool-call arguments) rather than prose: what is put into it must be JSON-escaped.
pub const JSON_TEXT: &str = "#json";

/// Every API the gateway speaks. The registration line of a new API goes here.
static REGISTRY: [Api; 4] = [
    openai_chat::API,
    completions::API,
    responses::API,
    anthropic::API,
];

/// A handle on one registered [`WireFormat`]: cheap to copy, compared by name.
#[derive(Clone, Copy)]
pub struct Api(&'static dyn WireFormat);

impl Api {
    /// Every registered API.
    pub fn all() -> &'static [Api] {
        &REGISTRY
    }

    /// The registered API of that config name.
    pub fn from_name(name: &str) -> Option<Api> {
        REGISTRY.iter().copied().find(|api| api.name() == name)
    }

    /// The config names of every registered API, for error messages.
    pub fn names() -> Vec<&'static str> {
        REGISTRY.iter().map(Api::name).collect()
    }

    /// OpenAI's chat format: the error shape of requests that have no API of their own (an
    /// unrouted path, the moderation endpoints), and the shape of the classify endpoint's messages.
    pub fn openai_chat() -> Api {
        openai_chat::API
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn default_path(&self) -> &'static str {
        self.0.default_path()
    }

    /// A request body read strictly (see [`parse_strict`]) in this API's format.
    pub fn parse_request(&self, body: &[u8]) -> Result<ParsedRequest, WireError> {
        match parse_strict(body)? {
            Value::Object(obj) => self.0.parse_request(&obj),
            // parse_strict already guarantees an object; kept so this never panics.
            _ => Err(WireError::new("request body must be a JSON object")),
        }
    }

    /// The text of a complete (non-streamed) JSON reply, as segments with JSON locations.
    pub fn extract_reply(&self, reply: &Value) -> Vec<Segment> {
        let mut out = Vec::new();
        if reply.get(self.0.reply_member()).is_none() {
            // Not the API's own shape, but its client reads it all the same: every string in it
            // is judged rather than none.
            reply::texts(reply, String::new(), Source::Assistant, &mut out);
        } else {
            self.0.reply_text(reply, &mut out);
        }
        out
    }

    /// The text of a reply that is not JSON: an event stream sent without its content type
    /// (judged event by event, as a stream would be), or anything else, judged whole.
    pub fn extract_text_reply(&self, text: &str) -> Vec<Segment> {
        reply::text_reply(*self, text)
    }

    /// `original` rewritten as a well-formed answer carrying `message` (see
    /// [`WireFormat::block_reply`]).
    pub fn blocked_reply(&self, original: &Value, message: &str) -> Value {
        // Indexing a JSON value that is neither an object nor null panics: a malformed reply (a
        // body that is an array) is rebuilt rather than edited.
        let mut v = if original.is_object() {
            original.clone()
        } else {
            Value::Object(Map::new())
        };
        self.0.block_reply(&mut v, message);
        v
    }

    /// Serialized JSON error in the API's own shape.
    pub fn error_body(&self, kind: &ErrorKind, message: &str) -> Vec<u8> {
        self.0.error_body(kind, message).to_string().into_bytes()
    }

    /// The text deltas of one streamed event (see [`WireFormat::delta_texts`]).
    pub fn delta_texts<'a>(&self, event: &'a mut Value) -> Vec<(String, &'a mut String)> {
        self.0.delta_texts(event)
    }

    /// A tracker for one streamed reply of this API.
    pub fn stream(&self) -> StreamTracker {
        StreamTracker::new(self.0.stream_state())
    }

    /// The text the reply to the request `body` continues (see [`WireFormat::continued_text`]).
    /// Read leniently: the upstream accepted the request, and the input guard, when the route has
    /// one, already refused what the strict parser refuses.
    pub fn continued_text(&self, body: &[u8]) -> Option<String> {
        match serde_json::from_slice(body).ok()? {
            Value::Object(obj) => self.0.continued_text(&obj),
            _ => None,
        }
    }
}

impl PartialEq for Api {
    fn eq(&self, other: &Api) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Api {}

impl std::hash::Hash for Api {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Api({})", self.name())
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Instructions,
    User,
    Assistant,
    ToolResult,
    ToolDefinition,
    ToolCall,
    Other,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Instructions => "instructions",
            Source::User => "user",
            Source::Assistant => "assistant",
            Source::ToolResult => "tool_result",
            Source::ToolDefinition => "tool_definition",
            Source::ToolCall => "tool_call",
            Source::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub source: Source,
    pub text: String,
    /// JSON path of the text in the request, e.g. `messages[2].content[0].text`.
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub model: Option<String>,
    pub stream: bool,
    /// In document order.
    pub segments: Vec<Segment>,
    /// Images, audio, files: non-text parts the text classifier cannot see.
    pub unclassified_parts: usize,
    /// Locations whose strings are not plain text (see [`Spots`]).
    pub spots: Spots,
}

/// Where a request holds strings that its segments do not show as they are: what rewrites the
/// request (redaction) needs to know beyond the segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spots {
    /// Tool-call arguments: a string holding JSON (or a custom tool's free text), or an object
    /// (Anthropic's `input`).
    pub arguments: Vec<String>,
    /// Names (of tools, servers, namespaces) the model reads as words but that identify
    /// something: never rewritten.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Readable, names the JSON path of the offending value.
    pub message: String,
    pub param: Option<String>,
}

impl WireError {
    pub(crate) fn new(message: impl Into<String>) -> WireError {
        WireError {
            message: message.into(),
            param: None,
        }
    }

    /// An error about the value at `path`; the path doubles as the OpenAI
    /// `param` so clients can point at the offending field.
    pub(crate) fn at(path: &str, message: impl fmt::Display) -> WireError {
        WireError {
            message: format!("{path}: {message}"),
            param: Some(path.to_string()),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}
