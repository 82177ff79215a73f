//! Wire formats of the LLM APIs the gateway fronts: requests (strict), replies (`output`) and SSE.
//!
//! The gateway must classify *everything the upstream model will read*, so
//! extraction is deliberately strict: a field with an unexpected type is a
//! refusal rather than something silently skipped, because anything we skip
//! is text the classifier never saw.

mod anthropic;
mod errors;
pub mod json;
mod openai;
pub mod output;
mod responses;
pub mod sse;

use serde_json::{Map, Value};
use std::fmt;

pub use json::parse_strict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiResponses,
    AnthropicMessages,
}

impl Api {
    pub const ALL: [Api; 4] = [
        Api::OpenAiChat,
        Api::OpenAiCompletions,
        Api::OpenAiResponses,
        Api::AnthropicMessages,
    ];

    pub fn from_name(s: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == s)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai-chat",
            Api::OpenAiCompletions => "openai-completions",
            Api::OpenAiResponses => "openai-responses",
            Api::AnthropicMessages => "anthropic-messages",
        }
    }

    pub fn default_path(&self) -> &'static str {
        match self {
            Api::OpenAiChat => "/v1/chat/completions",
            Api::OpenAiCompletions => "/v1/completions",
            Api::OpenAiResponses => "/v1/responses",
            Api::AnthropicMessages => "/v1/messages",
        }
    }

    /// Serialized JSON error in the API's own shape, so that unmodified SDKs
    /// surface the gateway's refusal like any other API error.
    pub fn error_body(&self, kind: &ErrorKind, message: &str) -> Vec<u8> {
        errors::error_body(*self, kind, message)
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request is refused, independent of API; the api picks the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest {
        param: Option<String>,
    },
    PolicyViolation {
        policy: String,
        code: Option<String>,
    },
    PayloadTooLarge,
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    /// The gateway could not classify the request (fail-closed).
    Unavailable,
    /// The upstream could not be reached.
    BadGateway,
    GatewayTimeout,
    /// The gateway itself failed (a bug or an unexpected state); logged and counted.
    Internal,
}

impl ErrorKind {
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::InvalidRequest { .. } | ErrorKind::PolicyViolation { .. } => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Unavailable => 503,
            ErrorKind::BadGateway => 502,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::Internal => 500,
        }
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

pub fn parse_request(api: Api, body: &[u8]) -> Result<ParsedRequest, WireError> {
    let value = parse_strict(body)?;
    let obj = match value.as_object() {
        Some(obj) => obj,
        // parse_strict already guarantees an object; kept so this never panics.
        None => return Err(WireError::new("request body must be a JSON object")),
    };
    match api {
        Api::OpenAiChat => openai::parse_chat(obj),
        Api::OpenAiCompletions => openai::parse_completions(obj),
        Api::OpenAiResponses => responses::parse(obj),
        Api::AnthropicMessages => anthropic::parse(obj),
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the per-API extractors.
// ---------------------------------------------------------------------------

/// Accumulates segments in document order.
#[derive(Default)]
struct Extractor {
    segments: Vec<Segment>,
    unclassified_parts: usize,
}

impl Extractor {
    /// Empty strings carry nothing to classify, so they produce no segment.
    fn text(&mut self, source: Source, text: &str, location: String) {
        if !text.is_empty() {
            self.segments.push(Segment {
                source,
                text: text.to_string(),
                location,
            });
        }
    }

    /// A name (of a tool, a schema, a property) as the words it is made of, see
    /// `identifier_words`.
    fn name(&mut self, source: Source, name: &str, location: String) {
        self.text(source, &identifier_words(name), location)
    }

    fn unclassified(&mut self) {
        self.unclassified_parts += 1;
    }

    fn finish(self, model: Option<String>, stream: bool) -> ParsedRequest {
        ParsedRequest {
            model,
            stream,
            segments: self.segments,
            unclassified_parts: self.unclassified_parts,
        }
    }
}

/// A camel-cased identifier with its words apart (`buildPipeBomb` -> `build Pipe Bomb`,
/// `HTTPServer` -> `HTTP Server`): normalisation lower-cases text, which would glue the words
/// together and hide them from keyword rules. Other names come back as they are; underscores and
/// hyphens already separate words for the rules.
pub(crate) fn identifier_words(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().skip(1).any(char::is_uppercase) {
        return name.into();
    }
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_lower) {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out.into()
}

/// Longest client string echoed back in an error message; such strings are
/// attacker controlled and error bodies should stay small.
const MAX_ECHO: usize = 64;

/// A client-supplied string as a JSON literal for error messages, truncated.
fn quoted(s: &str) -> String {
    let shown: String = s.chars().take(MAX_ECHO).collect();
    let quoted = Value::String(shown).to_string();
    if s.chars().count() > MAX_ECHO {
        format!("{quoted}...")
    } else {
        quoted
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected(path: &str, what: &str, got: &Value) -> WireError {
    WireError::at(path, format!("expected {what}, got {}", type_name(got)))
}

fn missing(path: &str) -> WireError {
    WireError::at(path, "required field is missing")
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, WireError> {
    v.as_object().ok_or_else(|| expected(path, "an object", v))
}

/// Absent and `null` both mean "not given", matching how the APIs treat
/// optional fields.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, WireError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(expected(&field(path, key), "a string", v)),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, WireError> {
    opt_str(obj, key, path)?.ok_or_else(|| missing(&field(path, key)))
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Vec<Value>>, WireError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(expected(&field(path, key), "an array", v)),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, WireError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(v) => Err(expected(&field(path, key), "an object", v)),
    }
}

fn stream_flag(obj: &Map<String, Value>) -> Result<bool, WireError> {
    match present(obj, "stream") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(expected("stream", "a boolean", v)),
    }
}

fn model_field(obj: &Map<String, Value>, required: bool) -> Result<Option<String>, WireError> {
    let model = opt_str(obj, "model", "")?;
    if required && model.is_none() {
        return Err(missing("model"));
    }
    Ok(model.map(str::to_string))
}

/// The `content` field of a message, item or block, as every API spells it: a plain string, or
/// an array of typed parts that `part` reads. Absent or null is an error when `required`, and
/// otherwise nothing to read.
fn content_field(
    obj: &Map<String, Value>,
    path: &str,
    required: bool,
    parts: &str,
    source: Source,
    out: &mut Extractor,
    part: fn(&Value, &str, Source, &mut Extractor) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let content_path = field(path, "content");
    match present(obj, "content") {
        None if required => Err(missing(&content_path)),
        None => Ok(()),
        Some(Value::String(s)) => {
            out.text(source, s, content_path);
            Ok(())
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                part(item, &index(&content_path, i), source, out)?;
            }
            Ok(())
        }
        Some(v) => Err(expected(
            &content_path,
            &format!("a string or an array of {parts}"),
            v,
        )),
    }
}

/// Every string of a tool or output schema that the model reads: `description`, `title` and
/// MCP `server_description` strings, and the data values a schema carries
/// (`enum`, `const`, `default`, `examples`, Anthropic `input_examples`), at any depth. Schemas
/// are rendered into the model's prompt, so a tool definition can hide instructions anywhere in
/// them, not only in descriptions.
fn collect_descriptions(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::Object(obj) => {
            for (key, child) in obj {
                let child_path = field(path, key);
                match (key.as_str(), child) {
                    // A tool's or schema's name is read by the model like its description: a
                    // name can carry the instruction a bland description leaves out.
                    ("name", Value::String(s)) => out.name(source, s, child_path),
                    ("description" | "title" | "server_description", Value::String(s)) => {
                        out.text(source, s, child_path)
                    }
                    // Free text a schema may carry, which reaches a model that is shown the schema
                    // as JSON (Anthropic renders tool definitions into the prompt): a comment, a
                    // pattern, a vendor extension.
                    ("$comment" | "pattern", Value::String(s)) => out.text(source, s, child_path),
                    (k, Value::String(s)) if k.starts_with("x-") => out.text(source, s, child_path),
                    ("enum" | "const" | "default" | "examples" | "input_examples", _) => {
                        collect_strings(child, &child_path, source, out)
                    }
                    // Property names are words of the schema the model fills in.
                    ("properties" | "patternProperties", Value::Object(props)) => {
                        for (name, schema) in props {
                            let prop_path = field(&child_path, name);
                            out.name(source, name, prop_path.clone());
                            collect_descriptions(schema, &prop_path, source, out);
                        }
                    }
                    _ => collect_descriptions(child, &child_path, source, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_descriptions(child, &index(path, i), source, out);
            }
        }
        _ => {}
    }
}

/// Every string under `v`, object keys included: schema data values and examples are shown to
/// the model as they are.
fn collect_strings(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::String(s) => out.text(source, s, path.to_string()),
        Value::Object(obj) => {
            for (key, child) in obj {
                let child_path = field(path, key);
                out.text(source, key, child_path.clone());
                collect_strings(child, &child_path, source, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_strings(child, &index(path, i), source, out);
            }
        }
        _ => {}
    }
}

/// Tool definitions: an array of objects whose descriptions (at any depth)
/// are classified.
fn tool_definitions(
    obj: &Map<String, Value>,
    key: &str,
    out: &mut Extractor,
) -> Result<(), WireError> {
    if let Some(tools) = opt_array(obj, key, "")? {
        for (i, tool) in tools.iter().enumerate() {
            let path = index(key, i);
            as_object(tool, &path)?;
            collect_descriptions(tool, &path, Source::ToolDefinition, out);
        }
    }
    Ok(())
}

/// A segment as the extractors' tests expect it.
#[cfg(test)]
fn seg(source: Source, text: &str, location: &str) -> Segment {
    Segment {
        source,
        text: text.to_string(),
        location: location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_round_trip() {
        for api in Api::ALL {
            assert_eq!(Api::from_name(api.name()), Some(api));
            assert!(api.default_path().starts_with("/v1/"));
        }
        assert_eq!(Api::from_name("openai-chat"), Some(Api::OpenAiChat));
        assert_eq!(
            Api::from_name("anthropic-messages"),
            Some(Api::AnthropicMessages)
        );
        assert_eq!(Api::from_name("OpenAI-Chat"), None);
        assert_eq!(Api::from_name(""), None);
        assert_eq!(Api::OpenAiResponses.default_path(), "/v1/responses");
        assert_eq!(Api::OpenAiCompletions.default_path(), "/v1/completions");
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorKind::InvalidRequest { param: None }.status(), 400);
        assert_eq!(
            ErrorKind::PolicyViolation {
                policy: "p".into(),
                code: None
            }
            .status(),
            400
        );
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::UnsupportedMediaType.status(), 415);
        assert_eq!(ErrorKind::NotFound.status(), 404);
        assert_eq!(ErrorKind::MethodNotAllowed.status(), 405);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::Unavailable.status(), 503);
        assert_eq!(ErrorKind::BadGateway.status(), 502);
        assert_eq!(ErrorKind::GatewayTimeout.status(), 504);
        assert_eq!(ErrorKind::Internal.status(), 500);
    }

    #[test]
    fn source_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Source::ToolDefinition).unwrap(),
            "\"tool_definition\""
        );
        assert_eq!(
            serde_json::to_string(&Source::ToolResult).unwrap(),
            "\"tool_result\""
        );
        for s in [
            Source::Instructions,
            Source::User,
            Source::Assistant,
            Source::ToolResult,
            Source::ToolDefinition,
            Source::ToolCall,
            Source::Other,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn non_object_body_refused_for_every_api() {
        for api in Api::ALL {
            let err = parse_request(api, b"[1,2]").unwrap_err();
            assert_eq!(err.message, "request body must be a JSON object");
            let err = parse_request(api, b"{\"a\":1,\"a\":2}").unwrap_err();
            assert!(err.message.contains("duplicate key"), "{}", err.message);
        }
    }

    #[test]
    fn nested_descriptions_collected_with_paths() {
        let v: Value = serde_json::json!({
            "description": "top",
            "parameters": {"properties": {
                "description": {"type": "string", "description": "inner"},
                "list": {"items": [{"description": "in array"}]}
            }}
        });
        let mut ex = Extractor::default();
        collect_descriptions(&v, "tools[0]", Source::ToolDefinition, &mut ex);
        let got: Vec<(&str, &str)> = ex
            .segments
            .iter()
            .map(|s| (s.text.as_str(), s.location.as_str()))
            .collect();
        assert!(got.contains(&("top", "tools[0].description")));
        assert!(got.contains(&(
            "inner",
            "tools[0].parameters.properties.description.description"
        )));
        assert!(got.contains(&(
            "in array",
            "tools[0].parameters.properties.list.items[0].description"
        )));
        // Property names are read too: "description" and "list".
        assert!(got.contains(&("list", "tools[0].parameters.properties.list")));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn camel_case_names_come_apart() {
        for (name, want) in [
            ("buildPipeBomb", "build Pipe Bomb"),
            ("HTTPServer", "HTTP Server"),
            ("getV2Data", "get V2 Data"),
            ("ÜberGroß", "Über Groß"),
            ("get_weather", "get_weather"),
            ("Weather", "Weather"),
            ("ABC", "ABC"),
            ("", ""),
        ] {
            assert_eq!(identifier_words(name), want, "{name}");
        }
    }
}
