//! The reply side of each API: what the model produced (for classification), how a blocked reply
//! is rewritten so clients see a normal, well-formed answer, and the streamed forms of both.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::sse::SseEvent;
use super::{Api, Segment, Source};

fn seg(source: Source, location: String, text: &str) -> Option<Segment> {
    (!text.is_empty()).then(|| Segment {
        source,
        text: text.to_string(),
        location,
    })
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Keys whose values are identifiers, states or encoded data rather than text anyone reads:
/// skipped when every string of a structure is taken.
const NOT_TEXT: &[&str] = &[
    "type",
    "id",
    "object",
    "role",
    "status",
    "index",
    "call_id",
    "tool_use_id",
    "approval_request_id",
    "encrypted_content",
    "signature",
    "data",
    "result",
    "image_url",
    "file_id",
    "b64_json",
    "partial_image_b64",
    "logprobs",
];

/// Every string under `v` except those of `NOT_TEXT` keys: for reply parts whose text may sit in
/// any field (hosted-tool items, server-tool results, parts of types newer than this code), so
/// a new shape is judged rather than passed unread.
fn texts(v: &Value, path: String, source: Source, out: &mut Vec<Segment>) {
    match v {
        Value::String(t) => out.extend(seg(source, path, t)),
        Value::Object(obj) => {
            for (key, child) in obj {
                if !NOT_TEXT.contains(&key.as_str()) {
                    texts(child, format!("{path}.{key}"), source, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                texts(child, format!("{path}[{i}]"), source, out);
            }
        }
        _ => {}
    }
}

/// `name(arguments)`, how a tool call is shown to the classifier.
fn call_text(name: &str, arguments: &str) -> String {
    format!("{}({arguments})", super::identifier_words(name))
}

/// Text of a complete (non-streamed) reply, as segments with JSON locations.
pub fn extract_reply(api: Api, v: &Value) -> Vec<Segment> {
    // A reply without the API's own shape (no `choices`, `output` or `content`) is still read by
    // its client: every string in it is judged rather than none.
    let body_key = match api {
        Api::OpenAiChat | Api::OpenAiCompletions => "choices",
        Api::OpenAiResponses => "output",
        Api::AnthropicMessages => "content",
    };
    if v.get(body_key).is_none() {
        let mut out = Vec::new();
        texts(v, String::new(), Source::Assistant, &mut out);
        return out;
    }
    let mut out = Vec::new();
    match api {
        Api::OpenAiChat => {
            for (i, c) in arr(v, "choices").iter().enumerate() {
                let m = c.get("message").unwrap_or(&Value::Null);
                // A string, or (some compatible servers) an array of parts; reasoning fields of
                // servers that return the model's reasoning; an audio reply's transcript.
                for key in [
                    "content",
                    "refusal",
                    "reasoning_content",
                    "reasoning",
                    "reasoning_details",
                ] {
                    if let Some(x) = m.get(key) {
                        texts(
                            x,
                            format!("choices[{i}].message.{key}"),
                            Source::Assistant,
                            &mut out,
                        );
                    }
                }
                out.extend(seg(
                    Source::Assistant,
                    format!("choices[{i}].message.audio.transcript"),
                    m.get("audio").map_or("", |a| s(a, "transcript")),
                ));
                for (j, t) in arr(m, "tool_calls").iter().enumerate() {
                    let text = match t.get("custom") {
                        Some(c) => call_text(s(c, "name"), s(c, "input")),
                        None => {
                            let f = t.get("function").unwrap_or(&Value::Null);
                            call_text(s(f, "name"), s(f, "arguments"))
                        }
                    };
                    out.extend(seg(
                        Source::ToolCall,
                        format!("choices[{i}].message.tool_calls[{j}]"),
                        &text,
                    ));
                }
                if let Some(f) = m.get("function_call") {
                    out.extend(seg(
                        Source::ToolCall,
                        format!("choices[{i}].message.function_call"),
                        &call_text(s(f, "name"), s(f, "arguments")),
                    ));
                }
            }
        }
        Api::OpenAiCompletions => {
            for (i, c) in arr(v, "choices").iter().enumerate() {
                out.extend(seg(
                    Source::Assistant,
                    format!("choices[{i}].text"),
                    s(c, "text"),
                ));
            }
        }
        Api::OpenAiResponses => {
            for (i, item) in arr(v, "output").iter().enumerate() {
                match s(item, "type") {
                    "message" => {
                        for (j, p) in arr(item, "content").iter().enumerate() {
                            texts(
                                p,
                                format!("output[{i}].content[{j}]"),
                                Source::Assistant,
                                &mut out,
                            );
                        }
                    }
                    "function_call" | "custom_tool_call" => {
                        let args = if item.get("arguments").is_some() {
                            s(item, "arguments")
                        } else {
                            s(item, "input")
                        };
                        out.extend(seg(
                            Source::ToolCall,
                            format!("output[{i}]"),
                            &call_text(s(item, "name"), args),
                        ));
                    }
                    "reasoning" => {
                        for key in ["summary", "content"] {
                            for (j, p) in arr(item, key).iter().enumerate() {
                                texts(
                                    p,
                                    format!("output[{i}].{key}[{j}]"),
                                    Source::Assistant,
                                    &mut out,
                                );
                            }
                        }
                    }
                    // Hosted tools (web search, MCP, code interpreter, shell, computer use) and
                    // newer item types: their text sits in type-specific fields.
                    _ => texts(item, format!("output[{i}]"), Source::ToolCall, &mut out),
                }
            }
        }
        Api::AnthropicMessages => {
            for (i, b) in arr(v, "content").iter().enumerate() {
                match s(b, "type") {
                    "text" => out.extend(seg(
                        Source::Assistant,
                        format!("content[{i}].text"),
                        s(b, "text"),
                    )),
                    "thinking" => out.extend(seg(
                        Source::Assistant,
                        format!("content[{i}].thinking"),
                        s(b, "thinking"),
                    )),
                    // Its `data` is encrypted: nothing a client can read.
                    "redacted_thinking" => {}
                    "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                        let input = b.get("input").map(Value::to_string).unwrap_or_default();
                        let text = format!("{} {}", s(b, "name"), input);
                        out.extend(seg(Source::ToolCall, format!("content[{i}]"), &text));
                    }
                    // Server-tool and MCP results, and newer block types.
                    _ => texts(b, format!("content[{i}]"), Source::ToolResult, &mut out),
                }
            }
        }
    }
    out
}

/// The reply rewritten as a well-formed answer that carries `message` instead of the model's
/// output, with the API's own "filtered" stop reason.
pub fn blocked_reply(api: Api, original: &Value, message: &str) -> Value {
    // Indexing a JSON value that is neither an object nor null panics: a malformed reply (a
    // choice that is a number, a body that is an array) is rebuilt rather than edited.
    let mut v = if original.is_object() {
        original.clone()
    } else {
        json!({})
    };
    match api {
        Api::OpenAiChat => {
            if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
                for c in choices.iter_mut() {
                    if !c.is_object() {
                        *c = json!({});
                    }
                    c["message"] =
                        json!({"role": "assistant", "content": message, "refusal": null});
                    c["finish_reason"] = json!("content_filter");
                    // The tokens' log-probabilities spell out the withheld reply.
                    c["logprobs"] = Value::Null;
                }
            }
        }
        Api::OpenAiCompletions => {
            if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
                for c in choices.iter_mut() {
                    if !c.is_object() {
                        *c = json!({});
                    }
                    c["text"] = json!(message);
                    c["finish_reason"] = json!("content_filter");
                    c["logprobs"] = Value::Null;
                }
            }
        }
        Api::OpenAiResponses => {
            v["status"] = json!("incomplete");
            v["incomplete_details"] = json!({"reason": "content_filter"});
            v["output"] = json!([{
                "type": "message", "id": "msg_guardgate", "status": "incomplete", "role": "assistant",
                "content": [{"type": "output_text", "text": message, "annotations": []}]
            }]);
        }
        Api::AnthropicMessages => {
            v["content"] = json!([{"type": "text", "text": message}]);
            v["stop_reason"] = json!("refusal");
            v["stop_sequence"] = Value::Null;
        }
    }
    v
}

/// Adds `"guardgate": {...}` as the first member of a JSON object without re-serialising the rest,
/// so an annotated reply is otherwise byte-identical to what the upstream sent.
pub fn splice_annotation(raw: &[u8], annotation: &Value) -> Option<Vec<u8>> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    if raw[start] != b'{' {
        return None;
    }
    let rest = &raw[start + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(raw.len() + 128);
    out.extend_from_slice(&raw[..=start]);
    out.extend_from_slice(b"\"guardgate\":");
    out.extend_from_slice(annotation.to_string().as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// What one streamed event contributes.
#[derive(Debug, Default, PartialEq)]
pub struct EventText {
    /// (stream key, text delta): a key is one choice, content block or tool call.
    pub deltas: Vec<(String, String)>,
    /// The API's end-of-stream event (`[DONE]`, `message_stop`, `response.completed`, ...).
    pub terminal: bool,
}

/// Follows a streamed reply: text deltas per key, and what is needed to end the stream cleanly
/// if the gateway cuts it.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    api: Api,
    /// Envelope fields of the first chunk (id, created, model) to reuse in synthetic events.
    envelope: Value,
    choices: BTreeMap<u64, ()>,
    /// Open content blocks and the key their text goes under.
    open_blocks: BTreeMap<u64, String>,
    /// Responses output items by index: true for tool items, whose text is keyed as a tool call.
    items: BTreeMap<u64, bool>,
    response: Option<Value>,
    last_seq: Option<u64>,
}

impl StreamTracker {
    pub fn new(api: Api) -> StreamTracker {
        StreamTracker {
            api,
            envelope: Value::Null,
            choices: BTreeMap::new(),
            open_blocks: BTreeMap::new(),
            items: BTreeMap::new(),
            response: None,
            last_seq: None,
        }
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
        // Unparseable data is kept as text: it is still something the client will read.
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) => {
                out.deltas.push(("raw".into(), data.to_string()));
                return out;
            }
        };
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            self.last_seq = Some(n);
        }
        match self.api {
            Api::OpenAiChat | Api::OpenAiCompletions => {
                if self.envelope.is_null() {
                    self.envelope = json!({"id": v.get("id"), "object": v.get("object"), "created": v.get("created"), "model": v.get("model")});
                }
                for c in arr(&v, "choices") {
                    let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.choices.insert(i, ());
                    if self.api == Api::OpenAiCompletions {
                        push(&mut out, format!("choices[{i}].text"), s(c, "text"));
                        continue;
                    }
                    let d = c.get("delta").unwrap_or(&Value::Null);
                    for key in [
                        "content",
                        "refusal",
                        "reasoning_content",
                        "reasoning",
                        "reasoning_details",
                    ] {
                        if let Some(x) = d.get(key) {
                            push_texts(&mut out, format!("choices[{i}].{key}"), x);
                        }
                    }
                    if let Some(a) = d.get("audio") {
                        push(&mut out, format!("choices[{i}].audio"), s(a, "transcript"));
                    }
                    for t in arr(d, "tool_calls") {
                        let j = t.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let key = format!("choices[{i}].tool_calls[{j}]");
                        let (f, args) = match t.get("custom") {
                            Some(c) => (c, "input"),
                            None => (t.get("function").unwrap_or(&Value::Null), "arguments"),
                        };
                        push(&mut out, key.clone(), s(f, "name"));
                        push(&mut out, key, s(f, args));
                    }
                    // The deprecated single function call, still streamed by compatible servers.
                    if let Some(f) = d.get("function_call") {
                        let key = format!("choices[{i}].function_call");
                        push(&mut out, key.clone(), s(f, "name"));
                        push(&mut out, key, s(f, "arguments"));
                    }
                }
            }
            Api::OpenAiResponses => {
                let t = s(&v, "type");
                let oi = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                let key = |items: &BTreeMap<u64, bool>| {
                    if items.get(&oi).copied().unwrap_or(false) {
                        format!("output[{oi}].tool_call")
                    } else {
                        format!(
                            "output[{oi}].content[{}]",
                            v.get("content_index").and_then(Value::as_u64).unwrap_or(0)
                        )
                    }
                };
                match t {
                    "response.created" | "response.in_progress" => {
                        // Kept only when it is an object: the cut edits it.
                        self.response = v.get("response").filter(|r| r.is_object()).cloned()
                    }
                    "response.output_item.added" => {
                        let item = v.get("item").unwrap_or(&Value::Null);
                        let tool = !matches!(s(item, "type"), "message" | "reasoning");
                        self.items.insert(oi, tool);
                        push(&mut out, key(&self.items), s(item, "name"));
                    }
                    "response.output_item.done" => {
                        // What hosted tools produce arrives whole here (a search's query, an MCP
                        // tool's output); what was streamed as deltas is not read twice.
                        let item = v.get("item").unwrap_or(&Value::Null);
                        if let (false, Some(obj)) =
                            (STREAMED_ITEMS.contains(&s(item, "type")), item.as_object())
                        {
                            for (k, x) in obj {
                                let streamed = matches!(k.as_str(), "name" | "arguments" | "code");
                                if !streamed && !NOT_TEXT.contains(&k.as_str()) {
                                    push_texts(&mut out, key(&self.items), x);
                                }
                            }
                        }
                    }
                    "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                        out.terminal = true
                    }
                    // Every text delta (output text, refusals, reasoning and its summary,
                    // function, custom-tool and MCP arguments, code interpreter code, audio
                    // transcripts, and kinds newer than this code); the audio itself is not text.
                    _ if t.ends_with(".delta") && t != "response.audio.delta" => {
                        push(&mut out, key(&self.items), s(&v, "delta"));
                    }
                    // A citation's title and quoted text, shown next to the output text.
                    "response.output_text.annotation.added" => {
                        push_texts(
                            &mut out,
                            key(&self.items),
                            v.get("annotation").unwrap_or(&Value::Null),
                        );
                    }
                    _ => {}
                }
            }
            Api::AnthropicMessages => match s(&v, "type") {
                "message_start" => {
                    self.envelope = v
                        .get("message")
                        .filter(|m| m.is_object())
                        .cloned()
                        .unwrap_or(Value::Null)
                }
                "content_block_start" => {
                    let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let b = v.get("content_block").unwrap_or(&Value::Null);
                    let kind = s(b, "type");
                    let key = match kind {
                        "text" | "thinking" | "redacted_thinking" => format!("content[{i}]"),
                        "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                            format!("content[{i}].tool_call")
                        }
                        _ => format!("content[{i}].tool_result"),
                    };
                    match kind {
                        "text" => push(&mut out, key.clone(), s(b, "text")),
                        "thinking" => push(&mut out, key.clone(), s(b, "thinking")),
                        "redacted_thinking" => {}
                        "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                            push(&mut out, key.clone(), s(b, "name"));
                            // Streamed as partial JSON; an input already in the start event
                            // (not `{}`) is text too.
                            if let Some(input) = b
                                .get("input")
                                .filter(|x| x.as_object().map_or(!x.is_null(), |o| !o.is_empty()))
                            {
                                push(&mut out, key.clone(), &input.to_string());
                            }
                        }
                        // Server-tool and MCP results arrive whole in their start event.
                        _ => push_texts(&mut out, key.clone(), b),
                    }
                    self.open_blocks.insert(i, key);
                }
                "content_block_delta" => {
                    let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let key = self
                        .open_blocks
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| format!("content[{i}]"));
                    let d = v.get("delta").unwrap_or(&Value::Null);
                    for k in ["text", "partial_json", "thinking"] {
                        push(&mut out, key.clone(), s(d, k));
                    }
                    // A citation quotes the cited text (and titles it) for the client to show.
                    if let Some(c) = d.get("citation") {
                        push_texts(&mut out, key.clone(), c);
                    }
                }
                "content_block_stop" => {
                    let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.open_blocks.remove(&i);
                }
                "message_stop" | "error" => out.terminal = true,
                _ => {}
            },
        }
        out
    }

    /// The events that end the stream for a client that has seen only the events `self`
    /// followed (the released ones), where `upstream` followed every event the upstream sent,
    /// held and discarded ones included. The ending has to fit what the client saw: a content
    /// block it never saw start is not stopped, one it saw start is, and a start event it never
    /// got (`message_start`, `response.created`; the SDKs reject an ending without it) is sent
    /// first. Ids and sequence numbers come from the upstream's events.
    pub fn cut_after(&self, upstream: &StreamTracker, error_message: Option<&str>) -> Vec<u8> {
        let named = |name: &str, v: &Value| format!("event: {name}\ndata: {v}\n\n");
        let mut t = self.clone();
        t.last_seq = upstream.last_seq.max(self.last_seq);
        let mut start = String::new();
        match self.api {
            Api::OpenAiChat | Api::OpenAiCompletions if !t.envelope.is_object() => {
                t.envelope = upstream.envelope.clone();
            }
            Api::OpenAiResponses if error_message.is_none() && t.response.is_none() => {
                let r = upstream.response.clone().unwrap_or_else(|| {
                    json!({"id": "resp_guardgate", "object": "response", "created_at": 0, "status": "in_progress", "model": "", "output": []})
                });
                let seq = t.last_seq.map(|n| n + 1).unwrap_or(0);
                start += &named(
                    "response.created",
                    &json!({"type": "response.created", "response": r, "sequence_number": seq}),
                );
                t.last_seq = Some(seq);
                t.response = Some(r);
            }
            Api::AnthropicMessages if error_message.is_none() && !t.envelope.is_object() => {
                let m = if upstream.envelope.is_object() {
                    upstream.envelope.clone()
                } else {
                    json!({"id": "msg_guardgate", "type": "message", "role": "assistant", "model": "", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}})
                };
                start += &named(
                    "message_start",
                    &json!({"type": "message_start", "message": m}),
                );
            }
            _ => {}
        }
        let mut out = start.into_bytes();
        out.extend(t.cut_events(error_message));
        out
    }

    /// Events that end the stream the way the API ends a filtered reply. `error_message` set:
    /// end with the API's error event instead.
    pub fn cut_events(&self, error_message: Option<&str>) -> Vec<u8> {
        let mut s = String::new();
        let data = |v: &Value| format!("data: {v}\n\n");
        let named = |name: &str, v: &Value| format!("event: {name}\ndata: {v}\n\n");
        match self.api {
            Api::OpenAiChat | Api::OpenAiCompletions => {
                if let Some(msg) = error_message {
                    s += &data(
                        &json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": "content_policy_violation"}}),
                    );
                } else {
                    let indices: Vec<u64> = if self.choices.is_empty() {
                        vec![0]
                    } else {
                        self.choices.keys().copied().collect()
                    };
                    for i in indices {
                        let mut c = self.envelope.clone();
                        if !c.is_object() {
                            c = json!({"id": "guardgate", "object": if self.api == Api::OpenAiChat { "chat.completion.chunk" } else { "text_completion" }, "created": 0, "model": ""});
                        }
                        c["choices"] = if self.api == Api::OpenAiChat {
                            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": "content_filter"}])
                        } else {
                            json!([{"index": i, "text": "", "logprobs": null, "finish_reason": "content_filter"}])
                        };
                        s += &data(&c);
                    }
                }
                s += "data: [DONE]\n\n";
            }
            Api::OpenAiResponses => {
                let seq = self.last_seq.map(|n| n + 1).unwrap_or(0);
                if let Some(msg) = error_message {
                    s += &named(
                        "error",
                        &json!({"type": "error", "code": "content_policy_violation", "message": msg, "param": null, "sequence_number": seq}),
                    );
                } else {
                    let mut r = self.response.clone().unwrap_or_else(|| json!({"id": "resp_guardgate", "object": "response", "created_at": 0, "model": "", "output": []}));
                    r["status"] = json!("incomplete");
                    r["incomplete_details"] = json!({"reason": "content_filter"});
                    s += &named(
                        "response.incomplete",
                        &json!({"type": "response.incomplete", "response": r, "sequence_number": seq}),
                    );
                }
            }
            Api::AnthropicMessages => {
                if let Some(msg) = error_message {
                    s += &named(
                        "error",
                        &json!({"type": "error", "error": {"type": "invalid_request_error", "message": msg}}),
                    );
                } else {
                    for i in self.open_blocks.keys() {
                        s += &named(
                            "content_block_stop",
                            &json!({"type": "content_block_stop", "index": i}),
                        );
                    }
                    s += &named(
                        "message_delta",
                        &json!({"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": null}, "usage": {"output_tokens": 0}}),
                    );
                    s += &named("message_stop", &json!({"type": "message_stop"}));
                }
            }
        }
        s.into_bytes()
    }
}

/// Responses item types whose text arrives as deltas, so their `output_item.done` repeats it.
const STREAMED_ITEMS: &[&str] = &["message", "reasoning", "function_call", "custom_tool_call"];

/// Every string of a streamed structure under one key (see `texts`).
fn push_texts(out: &mut EventText, key: String, v: &Value) {
    let mut segs = Vec::new();
    texts(v, String::new(), Source::Assistant, &mut segs);
    for sg in segs {
        out.deltas.push((key.clone(), sg.text));
    }
}

/// Streamed text gathered per key (see `EventText`), as the segments a classifier reads.
pub fn segments_of_keys(texts: BTreeMap<String, String>) -> Vec<Segment> {
    texts
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(k, t)| Segment {
            source: source_of_key(&k),
            text: t,
            location: k,
        })
        .collect()
}

/// Whether a text body is an event stream: every line empty, a comment or one of the SSE fields.
/// Anything else is read as plain text, so that prose which merely contains a `data:` line is
/// judged whole, not just that line.
fn looks_like_sse(text: &str) -> bool {
    let mut fields = 0;
    for line in text.split(['\r', '\n']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let name = line.split_once(':').map_or(line, |(n, _)| n);
        if !matches!(name, "data" | "event" | "id" | "retry") {
            return false;
        }
        fields += 1;
    }
    fields > 0
}

/// The text of a reply that is not JSON: an event stream sent without its content type (judged
/// event by event, as a stream would be), or anything else the client will read, judged whole.
pub fn extract_text_reply(api: Api, text: &str) -> Vec<Segment> {
    if !looks_like_sse(text) {
        return seg(Source::Assistant, "body".into(), text)
            .into_iter()
            .collect();
    }
    let mut parser = super::sse::SseParser::new();
    let mut tracker = StreamTracker::new(api);
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let events = parser.push(text.as_bytes());
    for ev in events.iter().chain(parser.finish().as_ref()) {
        for (k, d) in tracker.on_event(ev).deltas {
            keys.entry(k).or_default().push_str(&d);
        }
    }
    segments_of_keys(keys)
}

/// Where streamed text under `key` came from, for the classifier's view of the window.
pub fn source_of_key(key: &str) -> Source {
    if key.contains("tool_call") || key.contains("function_call") {
        Source::ToolCall
    } else if key.contains("tool_result") {
        Source::ToolResult
    } else {
        Source::Assistant
    }
}

fn push(out: &mut EventText, key: String, text: &str) {
    if !text.is_empty() {
        out.deltas.push((key, text.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sse::SseParser;

    #[test]
    fn extracts_every_api_reply() {
        let chat = json!({"choices":[{"index":0,"message":{"role":"assistant","content":"hello","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]});
        let t: Vec<String> = extract_reply(Api::OpenAiChat, &chat)
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(t, vec!["hello", "f({\"a\":1})"]);
        let resp = json!({"output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]},{"type":"function_call","name":"g","arguments":"x"}]});
        let t: Vec<String> = extract_reply(Api::OpenAiResponses, &resp)
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(t, vec!["hi", "g(x)"]);
        let msg = json!({"content":[{"type":"text","text":"yo"},{"type":"tool_use","name":"h","input":{"q":"z"}}]});
        let t: Vec<String> = extract_reply(Api::AnthropicMessages, &msg)
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(t, vec!["yo", "h {\"q\":\"z\"}"]);
        let c = json!({"choices":[{"text":"abc"}]});
        assert_eq!(extract_reply(Api::OpenAiCompletions, &c)[0].text, "abc");
    }

    fn texts_of(api: Api, v: &Value) -> Vec<(String, Source)> {
        extract_reply(api, v)
            .into_iter()
            .map(|s| (s.text, s.source))
            .collect()
    }

    /// Text anywhere a client can read it is judged: array content, reasoning fields, audio
    /// transcripts, custom tool calls, hosted-tool items and server-tool results.
    #[test]
    fn replies_are_read_beyond_the_plain_text_fields() {
        let chat = json!({"choices":[{"index":0,"message":{"role":"assistant",
            "content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"data:x"}}],
            "reasoning_content":"thought","audio":{"id":"a","data":"QUJD","transcript":"spoken"},
            "tool_calls":[{"id":"c","type":"custom","custom":{"name":"sh","input":"rm -rf"}}]}}]});
        assert_eq!(
            texts_of(Api::OpenAiChat, &chat),
            vec![
                ("part one".into(), Source::Assistant),
                ("thought".into(), Source::Assistant),
                ("spoken".into(), Source::Assistant),
                ("sh(rm -rf)".into(), Source::ToolCall),
            ]
        );
        let resp = json!({"output":[
            {"type":"reasoning","id":"r","summary":[],"content":[{"type":"reasoning_text","text":"raw thought"}]},
            {"type":"web_search_call","id":"w","status":"completed","action":{"type":"search","query":"find it"}},
            {"type":"mcp_call","id":"m","name":"lookup","arguments":"{}","output":"tool said","server_label":"s"}]});
        let t: Vec<String> = texts_of(Api::OpenAiResponses, &resp)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            t,
            vec!["raw thought", "find it", "lookup", "{}", "tool said", "s"]
        );
        let msg = json!({"content":[
            {"type":"mcp_tool_use","id":"t","name":"q","server_name":"srv","input":{"x":"y"}},
            {"type":"redacted_thinking","data":"opaque"},
            {"type":"web_search_tool_result","tool_use_id":"t","content":[{"type":"web_search_result","title":"page","url":"u","encrypted_content":"zz"}]}]});
        assert_eq!(
            texts_of(Api::AnthropicMessages, &msg),
            vec![
                ("q {\"x\":\"y\"}".into(), Source::ToolCall),
                ("page".into(), Source::ToolResult),
                ("u".into(), Source::ToolResult),
            ]
        );
    }

    fn stream_text(api: Api, stream: &str) -> BTreeMap<String, String> {
        let mut t = StreamTracker::new(api);
        let mut text: BTreeMap<String, String> = BTreeMap::new();
        for e in SseParser::new().push(stream.as_bytes()) {
            for (k, d) in t.on_event(&e).deltas {
                text.entry(k).or_default().push_str(&d);
            }
        }
        text
    }

    #[test]
    fn streams_are_read_beyond_the_plain_text_deltas() {
        let chat = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"f\",\"arguments\":\"\"}}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"arguments\":\"{\\\"a\\\":1}\"}}}]}\n\n",
        );
        let t = stream_text(Api::OpenAiChat, chat);
        assert_eq!(t["choices[0].reasoning_content"], "hm");
        assert_eq!(t["choices[0].function_call"], "f{\"a\":1}");
        assert_eq!(source_of_key("choices[0].function_call"), Source::ToolCall);
        assert_eq!(
            source_of_key("choices[0].reasoning_content"),
            Source::Assistant
        );

        let resp = concat!(
            "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"reasoning\"}}\n\n",
            "data: {\"type\":\"response.reasoning_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"think\"}\n\n",
            "data: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"mcp_call\",\"name\":\"lookup\"}}\n\n",
            "data: {\"type\":\"response.mcp_call_arguments.delta\",\"output_index\":1,\"delta\":\"{\\\"q\\\":1}\"}\n\n",
            "data: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"type\":\"mcp_call\",\"id\":\"m\",\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":1}\",\"output\":\" result\"}}\n\n",
            "data: {\"type\":\"response.audio.delta\",\"output_index\":2,\"delta\":\"QUJD\"}\n\n",
        );
        let t = stream_text(Api::OpenAiResponses, resp);
        assert_eq!(t["output[0].content[0]"], "think");
        assert_eq!(t["output[1].tool_call"], "lookup{\"q\":1} result");
        assert_eq!(t.len(), 2, "audio data is not text: {t:?}");

        let msg = concat!(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"run\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"c\\\":2}\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"web_search_tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":\"web_search_result\",\"title\":\"found\"}]}}\n\n",
        );
        let t = stream_text(Api::AnthropicMessages, msg);
        assert_eq!(t["content[0].tool_call"], "run{\"c\":2}");
        assert_eq!(t["content[1].tool_result"], "found");
        assert_eq!(source_of_key("content[1].tool_result"), Source::ToolResult);
    }

    #[test]
    fn blocked_replies_drop_the_log_probabilities() {
        // The withheld tokens would be spelled out there.
        let chat = json!({"choices":[{"index":0,"message":{"role":"assistant","content":"bad"},"logprobs":{"content":[{"token":"bad","logprob":-0.1,"bytes":[98,97,100],"top_logprobs":[]}]},"finish_reason":"stop"}]});
        let b = blocked_reply(Api::OpenAiChat, &chat, "withheld");
        assert!(b["choices"][0]["logprobs"].is_null());
        assert!(!b.to_string().contains("bad"), "{b}");
        let c = json!({"choices":[{"index":0,"text":"bad","logprobs":{"tokens":["bad"],"token_logprobs":[-0.1],"text_offset":[0]},"finish_reason":"stop"}]});
        let b = blocked_reply(Api::OpenAiCompletions, &c, "withheld");
        assert!(b["choices"][0]["logprobs"].is_null());
        assert!(!b.to_string().contains("bad"), "{b}");
    }

    #[test]
    fn blocked_replies_keep_the_envelope() {
        let chat = json!({"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"bad"},"finish_reason":"stop"}],"usage":{"total_tokens":3}});
        let b = blocked_reply(Api::OpenAiChat, &chat, "withheld");
        assert_eq!(b["id"], "x");
        assert_eq!(b["usage"]["total_tokens"], 3);
        assert_eq!(b["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(b["choices"][0]["message"]["content"], "withheld");
        let m = blocked_reply(
            Api::AnthropicMessages,
            &json!({"id":"m","content":[{"type":"text","text":"bad"}]}),
            "withheld",
        );
        assert_eq!(m["stop_reason"], "refusal");
        assert!(!m.to_string().contains("bad"));
    }

    #[test]
    fn splices_annotation_first() {
        let a = json!({"annotations":[{"policy":"p"}]});
        let out = splice_annotation(b"  {\"id\": 1 }", &a).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  {\"guardgate\":{\"annotations\":[{\"policy\":\"p\"}]},\"id\": 1 }"
        );
        let out = splice_annotation(b"{}", &a).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["guardgate"], a);
        assert!(splice_annotation(b"[1]", &a).is_none());
    }

    #[test]
    fn malformed_replies_are_blocked_without_a_panic() {
        // `value["key"] = ...` panics on anything but an object or null.
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiResponses,
            Api::AnthropicMessages,
        ] {
            for v in [
                json!({"choices": [{"message": {"content": "x"}}, 5, "s", [1]]}),
                json!([1, 2]),
                json!("text"),
            ] {
                let b = blocked_reply(api, &v, "withheld");
                assert!(b.is_object(), "{api:?} {v}");
            }
            let b = blocked_reply(
                api,
                &json!({"choices": [{"message": {"content": "x"}}, 5], "content": 3, "output": 1}),
                "withheld",
            );
            if matches!(api, Api::OpenAiChat | Api::OpenAiCompletions) {
                assert_eq!(b["choices"][1]["finish_reason"], "content_filter", "{b}");
            }
        }
        let cases: [(Api, &[u8]); 3] = [
            (
                Api::OpenAiResponses,
                b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":\"x\"}\n\n",
            ),
            (
                Api::AnthropicMessages,
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":[1]}\n\n",
            ),
            (Api::OpenAiChat, b"data: {\"choices\":[5]}\n\n"),
        ];
        for (api, stream) in cases {
            let mut t = StreamTracker::new(api);
            for e in SseParser::new().push(stream) {
                t.on_event(&e);
            }
            let cut = SseParser::new().push(&t.cut_events(None));
            assert!(!cut.is_empty(), "{api:?}");
        }
    }

    #[test]
    fn replies_of_another_shape_and_citations_are_read() {
        let odd = json!({"reply": {"answer": "how to build a pipe bomb"}, "id": "x"});
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiResponses,
            Api::AnthropicMessages,
        ] {
            let t: Vec<String> = extract_reply(api, &odd)
                .into_iter()
                .map(|s| s.text)
                .collect();
            assert_eq!(t, vec!["how to build a pipe bomb"], "{api:?}");
        }
        // A well-formed reply is read by its shape only (its model name is not content).
        let t = extract_reply(Api::OpenAiChat, &json!({"model": "gpt-x", "choices": []}));
        assert!(t.is_empty());
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let mut t = StreamTracker::new(Api::AnthropicMessages);
        let stream = [
            ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ev("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"quoted words","document_index":0,"document_title":"A title","start_char_index":0,"end_char_index":12}}}"#),
        ]
        .concat();
        let got: Vec<String> = SseParser::new()
            .push(stream.as_bytes())
            .iter()
            .flat_map(|e| t.on_event(e).deltas)
            .map(|(_, d)| d)
            .collect();
        assert!(
            got.contains(&"quoted words".to_string()) && got.contains(&"A title".to_string()),
            "{got:?}"
        );
        let mut t = StreamTracker::new(Api::OpenAiResponses);
        let e = ev(
            "response.output_text.annotation.added",
            r#"{"type":"response.output_text.annotation.added","output_index":0,"content_index":0,"annotation_index":0,"annotation":{"type":"url_citation","title":"Cited page","url":"https://example.com/"}}"#,
        );
        let got: Vec<String> = SseParser::new()
            .push(e.as_bytes())
            .iter()
            .flat_map(|e| t.on_event(e).deltas)
            .map(|(_, d)| d)
            .collect();
        assert!(got.contains(&"Cited page".to_string()), "{got:?}");
    }

    #[test]
    fn a_cut_ends_what_the_client_saw() {
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let start = ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","content":[]}}"#,
        );
        let block0 = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        let held = [
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#,
            ),
            ev(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"search","input":{}}}"#,
            ),
        ];
        let kinds = |b: &[u8]| -> Vec<String> {
            SseParser::new()
                .push(b)
                .iter()
                .map(|e| e.event.clone().unwrap_or_default())
                .collect()
        };
        // Released: the start and block 0's start; held, then discarded: the rest.
        let (mut upstream, mut released) = (
            StreamTracker::new(Api::AnthropicMessages),
            StreamTracker::new(Api::AnthropicMessages),
        );
        for e in SseParser::new().push(format!("{start}{block0}").as_bytes()) {
            upstream.on_event(&e);
            released.on_event(&e);
        }
        for e in SseParser::new().push(held.concat().as_bytes()) {
            upstream.on_event(&e);
        }
        // The upstream's view would stop block 1, which the client never saw start.
        assert_eq!(
            kinds(&upstream.cut_events(None)),
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let cut = released.cut_after(&upstream, None);
        assert_eq!(
            kinds(&cut),
            ["content_block_stop", "message_delta", "message_stop"]
        );
        assert!(String::from_utf8_lossy(&cut).contains(r#""index":0"#));
        // Nothing released at all: the client gets the message_start it never had, with the id.
        let nothing = StreamTracker::new(Api::AnthropicMessages);
        let cut = nothing.cut_after(&upstream, None);
        assert_eq!(
            kinds(&cut),
            ["message_start", "message_delta", "message_stop"]
        );
        assert!(String::from_utf8_lossy(&cut).contains(r#""id":"m1""#));
        // Responses: response.created first, then the ending, sequence numbers in order.
        let mut up = StreamTracker::new(Api::OpenAiResponses);
        for e in SseParser::new().push(
            ev("response.created", r#"{"type":"response.created","sequence_number":0,"response":{"id":"r1","object":"response","status":"in_progress","output":[]}}"#).as_bytes(),
        ) {
            up.on_event(&e);
        }
        let cut = StreamTracker::new(Api::OpenAiResponses).cut_after(&up, None);
        let evs = SseParser::new().push(&cut);
        assert_eq!(
            evs.iter()
                .map(|e| e.event.clone().unwrap())
                .collect::<Vec<_>>(),
            ["response.created", "response.incomplete"]
        );
        let seq = |i: usize| -> u64 {
            serde_json::from_str::<Value>(evs[i].data.as_deref().unwrap()).unwrap()
                ["sequence_number"]
                .as_u64()
                .unwrap()
        };
        assert_eq!((seq(0), seq(1)), (1, 2));
    }

    #[test]
    fn tracks_anthropic_stream_and_cuts_cleanly() {
        let mut p = SseParser::new();
        let mut t = StreamTracker::new(Api::AnthropicMessages);
        let evs = p.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
        let texts: Vec<EventText> = evs.iter().map(|e| t.on_event(e)).collect();
        assert_eq!(
            texts[2].deltas,
            vec![("content[0]".to_string(), "Hi".to_string())]
        );
        let cut = String::from_utf8(t.cut_events(None)).unwrap();
        let evs = SseParser::new().push(cut.as_bytes());
        let kinds: Vec<_> = evs.iter().map(|e| e.event.clone().unwrap()).collect();
        assert_eq!(
            kinds,
            vec!["content_block_stop", "message_delta", "message_stop"]
        );
    }

    #[test]
    fn parallel_tool_calls_and_usage_chunks() {
        let mut t = StreamTracker::new(Api::OpenAiChat);
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"search\",\"arguments\":\"\"}},{\"index\":1,\"function\":{\"name\":\"fetch\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"u\\\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":2}\"}}]}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":9}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut text: BTreeMap<String, String> = BTreeMap::new();
        let mut terminal = false;
        for e in SseParser::new().push(stream.as_bytes()) {
            let et = t.on_event(&e);
            terminal |= et.terminal;
            for (k, d) in et.deltas {
                text.entry(k).or_default().push_str(&d);
            }
        }
        assert_eq!(text["choices[0].tool_calls[0]"], "search{\"q\":2}");
        assert_eq!(text["choices[0].tool_calls[1]"], "fetch{\"u\":1}");
        assert_eq!(text.len(), 2, "the usage chunk carries no text: {text:?}");
        assert!(terminal);
    }

    #[test]
    fn chat_cut_names_every_choice_then_done() {
        let mut t = StreamTracker::new(Api::OpenAiChat);
        let mut p = SseParser::new();
        for e in p.push(b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n") {
            t.on_event(&e);
        }
        let cut = SseParser::new().push(&t.cut_events(None));
        assert_eq!(cut.len(), 3);
        let c0: Value = serde_json::from_str(cut[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(c0["id"], "c1");
        assert_eq!(c0["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(cut[2].data.as_deref(), Some("[DONE]"));
    }

    #[test]
    fn a_text_reply_is_judged_as_a_stream_or_whole() {
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
        let segs = extract_text_reply(Api::OpenAiChat, sse);
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert_eq!(segs[0].text, "hello");
        assert_eq!(segs[0].source, Source::Assistant);
        // Prose with a data: line in it is prose: all of it is read.
        let prose = "Sure.\ndata: x\nthe rest of the answer";
        let segs = extract_text_reply(Api::OpenAiChat, prose);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].text, prose);
        assert_eq!(segs[0].location, "body");
        assert!(extract_text_reply(Api::AnthropicMessages, "").is_empty());
    }
}
