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

/// Text of a complete (non-streamed) reply, as segments with JSON locations.
pub fn extract_reply(api: Api, v: &Value) -> Vec<Segment> {
    let mut out = Vec::new();
    match api {
        Api::OpenAiChat => {
            for (i, c) in arr(v, "choices").iter().enumerate() {
                let m = c.get("message").unwrap_or(&Value::Null);
                out.extend(seg(
                    Source::Assistant,
                    format!("choices[{i}].message.content"),
                    s(m, "content"),
                ));
                out.extend(seg(
                    Source::Assistant,
                    format!("choices[{i}].message.refusal"),
                    s(m, "refusal"),
                ));
                for (j, t) in arr(m, "tool_calls").iter().enumerate() {
                    let f = t.get("function").unwrap_or(&Value::Null);
                    let text = format!("{}({})", s(f, "name"), s(f, "arguments"));
                    out.extend(seg(
                        Source::ToolCall,
                        format!("choices[{i}].message.tool_calls[{j}]"),
                        &text,
                    ));
                }
                if let Some(f) = m.get("function_call") {
                    let text = format!("{}({})", s(f, "name"), s(f, "arguments"));
                    out.extend(seg(
                        Source::ToolCall,
                        format!("choices[{i}].message.function_call"),
                        &text,
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
                            let text = match s(p, "type") {
                                "refusal" => s(p, "refusal"),
                                _ => s(p, "text"),
                            };
                            out.extend(seg(
                                Source::Assistant,
                                format!("output[{i}].content[{j}]"),
                                text,
                            ));
                        }
                    }
                    "function_call" | "custom_tool_call" => {
                        let args = if item.get("arguments").is_some() {
                            s(item, "arguments")
                        } else {
                            s(item, "input")
                        };
                        let text = format!("{}({})", s(item, "name"), args);
                        out.extend(seg(Source::ToolCall, format!("output[{i}]"), &text));
                    }
                    "reasoning" => {
                        for (j, p) in arr(item, "summary").iter().enumerate() {
                            out.extend(seg(
                                Source::Assistant,
                                format!("output[{i}].summary[{j}]"),
                                s(p, "text"),
                            ));
                        }
                    }
                    _ => {}
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
                    "tool_use" | "server_tool_use" => {
                        let input = b.get("input").map(Value::to_string).unwrap_or_default();
                        let text = format!("{} {}", s(b, "name"), input);
                        out.extend(seg(Source::ToolCall, format!("content[{i}]"), &text));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The reply rewritten as a well-formed answer that carries `message` instead of the model's
/// output, with the API's own "filtered" stop reason.
pub fn blocked_reply(api: Api, original: &Value, message: &str) -> Value {
    let mut v = original.clone();
    match api {
        Api::OpenAiChat => {
            if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
                for c in choices.iter_mut() {
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
#[derive(Debug)]
pub struct StreamTracker {
    api: Api,
    /// Envelope fields of the first chunk (id, created, model) to reuse in synthetic events.
    envelope: Value,
    choices: BTreeMap<u64, ()>,
    open_blocks: BTreeMap<u64, ()>,
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
                    push(&mut out, format!("choices[{i}].content"), s(d, "content"));
                    push(&mut out, format!("choices[{i}].refusal"), s(d, "refusal"));
                    for t in arr(d, "tool_calls") {
                        let j = t.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let f = t.get("function").unwrap_or(&Value::Null);
                        push(
                            &mut out,
                            format!("choices[{i}].tool_calls[{j}]"),
                            s(f, "name"),
                        );
                        push(
                            &mut out,
                            format!("choices[{i}].tool_calls[{j}]"),
                            s(f, "arguments"),
                        );
                    }
                }
            }
            Api::OpenAiResponses => {
                let t = s(&v, "type");
                let key = || {
                    format!(
                        "output[{}].content[{}]",
                        v.get("output_index").and_then(Value::as_u64).unwrap_or(0),
                        v.get("content_index").and_then(Value::as_u64).unwrap_or(0)
                    )
                };
                match t {
                    "response.created" | "response.in_progress" => {
                        self.response = v.get("response").cloned()
                    }
                    "response.output_text.delta"
                    | "response.refusal.delta"
                    | "response.reasoning_summary_text.delta"
                    | "response.function_call_arguments.delta"
                    | "response.custom_tool_call_input.delta" => {
                        push(&mut out, key(), s(&v, "delta"));
                    }
                    "response.output_item.added" => {
                        let item = v.get("item").unwrap_or(&Value::Null);
                        push(&mut out, key(), s(item, "name"));
                    }
                    "response.completed" | "response.incomplete" | "response.failed" | "error" => {
                        out.terminal = true
                    }
                    _ => {}
                }
            }
            Api::AnthropicMessages => match s(&v, "type") {
                "message_start" => self.envelope = v.get("message").cloned().unwrap_or(Value::Null),
                "content_block_start" => {
                    let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.open_blocks.insert(i, ());
                    let b = v.get("content_block").unwrap_or(&Value::Null);
                    push(&mut out, format!("content[{i}]"), s(b, "text"));
                    push(&mut out, format!("content[{i}]"), s(b, "name"));
                }
                "content_block_delta" => {
                    let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let d = v.get("delta").unwrap_or(&Value::Null);
                    for k in ["text", "partial_json", "thinking"] {
                        push(&mut out, format!("content[{i}]"), s(d, k));
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
                        if c.is_null() {
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
}
