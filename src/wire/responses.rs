//! OpenAI Responses (`/v1/responses`): the request's instructions, input items and tools; the
//! reply's output items, plain and streamed as typed events.

use serde_json::{json, Map, Value};
use std::any::Any;
use std::collections::BTreeMap;

use super::extract::{
    as_object, collect_descriptions, collect_strings, content_field, expected, field, index,
    inline_file, lookup, model_field, opt_array, opt_object, opt_str, present, quoted, req_str,
    stream_flag, tool_choice, tool_definitions, values, Extractor,
};
use super::fields::{self, Field::*, Fields};
use super::filled::{Filled, Whole};
use super::reply::{arr, call_text, s, seg, texts, NOT_TEXT as REPLY_NOT_TEXT};
use super::stream::{named_event, same_api, Ending, EventText, StreamState};
use super::{errors, Api, ErrorKind, ParsedRequest, Segment, Source, WireError, WireFormat};

type Obj = Map<String, Value>;

pub(super) const API: Api = Api(&Responses);

struct Responses;

impl WireFormat for Responses {
    fn name(&self) -> &'static str {
        "openai-responses"
    }

    fn default_path(&self) -> &'static str {
        "/v1/responses"
    }

    fn parse_request(&self, body: &Obj) -> Result<ParsedRequest, WireError> {
        parse(body)
    }

    fn reply_member(&self) -> &'static str {
        "output"
    }

    fn reply_text(&self, v: &Value, out: &mut Vec<Segment>) {
        for (i, item) in arr(v, "output").iter().enumerate() {
            match s(item, "type") {
                "message" => {
                    for (j, p) in arr(item, "content").iter().enumerate() {
                        texts(
                            p,
                            format!("output[{i}].content[{j}]"),
                            Source::Assistant,
                            out,
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
                            texts(p, format!("output[{i}].{key}[{j}]"), Source::Assistant, out);
                        }
                    }
                }
                // Hosted tools (web search, MCP, code interpreter, shell, computer use) and
                // newer item types: their text sits in type-specific fields.
                _ => texts(item, format!("output[{i}]"), Source::ToolCall, out),
            }
        }
    }

    fn block_reply(&self, v: &mut Value, message: &str) {
        v["status"] = json!("incomplete");
        v["incomplete_details"] = json!({"reason": "content_filter"});
        v["output"] = json!([{
            "type": "message", "id": REFUSAL_ITEM, "status": "incomplete", "role": "assistant",
            "content": [{"type": "output_text", "text": message, "annotations": []}]
        }]);
    }

    fn error_body(&self, kind: &ErrorKind, message: &str) -> Value {
        errors::openai(kind, message)
    }

    /// `response.output_text.delta`'s `delta`, keyed by output item and content part.
    fn delta_texts<'a>(&self, event: &'a mut Value) -> Vec<(String, &'a mut String)> {
        let index = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
        let key = match event.get("type").and_then(Value::as_str) {
            Some("response.output_text.delta") => format!(
                "output[{}].content[{}]",
                index("output_index"),
                index("content_index")
            ),
            // A function call's arguments stream as JSON text.
            Some("response.function_call_arguments.delta") => {
                format!("output[{}]{}", index("output_index"), super::JSON_TEXT)
            }
            _ => return Vec::new(),
        };
        match event.get_mut("delta") {
            Some(Value::String(s)) => vec![(key, s)],
            _ => Vec::new(),
        }
    }

    fn stream_state(&self) -> Box<dyn StreamState> {
        Box::<ResponsesStream>::default()
    }
}

/// The id of the message item that carries a refusal in place of the model's output.
const REFUSAL_ITEM: &str = "msg_guardgate";

/// Keys of the texts a client reads whole: the SDKs' `output_text` is every `output_text` part of
/// every message, one after another; refusals, reasoning and its summaries likewise.
const OUTPUT_TEXT: &str = "output_text";

/// A streamed response: typed events with sequence numbers, text keyed by what the client reads
/// as one text.
#[derive(Debug, Clone, Default)]
struct ResponsesStream {
    /// Output items' types by index.
    items: BTreeMap<u64, String>,
    /// What each text field holds so far, so that the whole values the stream sends as well
    /// (`.done` events, `output_item.done`, the final response) add only what is new.
    filled: Filled,
    /// The `response` of `response.created`, which the ending repeats as incomplete.
    response: Option<Value>,
    last_seq: Option<u64>,
}

/// The field of its item that a `<kind>.delta` / `<kind>.done` event fills, and the member of the
/// `.done` event that holds the whole value. Kinds newer than this code fill a field named after
/// them.
fn event_field(kind: &str, v: &Value) -> (String, &'static str) {
    let ci = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
    let si = v.get("summary_index").and_then(Value::as_u64).unwrap_or(0);
    match kind {
        "response.output_text" | "response.reasoning_text" => {
            (format!("content[{ci}].text"), "text")
        }
        "response.refusal" => (format!("content[{ci}].refusal"), "refusal"),
        "response.reasoning_summary_text" => (format!("summary[{si}].text"), "text"),
        "response.function_call_arguments" | "response.mcp_call_arguments" => {
            ("arguments".into(), "arguments")
        }
        "response.custom_tool_call_input" => ("input".into(), "input"),
        "response.code_interpreter_call_code" => ("code".into(), "code"),
        other => (other.to_string(), ""),
    }
}

/// Members of a `.done` event of a kind newer than this code that say where, not what.
const DONE_PLACE: &[&str] = &[
    "item_id",
    "output_index",
    "content_index",
    "summary_index",
    "sequence_number",
    "obfuscation",
];

impl ResponsesStream {
    /// The key of field `path` of item `oi`: the text the client reads it as part of.
    fn key(&self, oi: u64, path: &str) -> String {
        let kind = self.items.get(&oi).map(String::as_str);
        let in_part = |field: &str| {
            path.strip_prefix("content[")
                .and_then(|p| p.split_once(']'))
                .is_some_and(|(n, f)| n.parse::<u64>().is_ok() && f == field)
        };
        let in_summary = path
            .strip_prefix("summary[")
            .and_then(|p| p.split_once(']'))
            .is_some_and(|(n, f)| n.parse::<u64>().is_ok() && f == ".text");
        match kind {
            Some("message") | None if in_part(".text") => OUTPUT_TEXT.into(),
            Some("message") | None if in_part(".refusal") => "refusal".into(),
            Some("reasoning") if in_part(".text") => "reasoning".into(),
            Some("reasoning") | None if in_summary => "reasoning_summary".into(),
            Some("message" | "reasoning") => format!("output[{oi}].{path}"),
            // Each field on its own: a tool's name sent whole must not land inside arguments
            // streamed around it.
            _ => format!("output[{oi}].tool_call.{path}"),
        }
    }

    fn delta(&mut self, oi: u64, path: &str, delta: &str, out: &mut EventText) {
        self.filled.append((oi, path), delta);
        out.push(self.key(oi, path), delta);
    }

    /// Field `path` of item `oi` sent whole.
    fn whole(&mut self, oi: u64, path: &str, value: &str, out: &mut EventText) {
        match self.filled.whole((oi, path), value) {
            Whole::Same => {}
            Whole::More(t) => out.push(self.key(oi, path), t),
            // Judged on its own: it stands in for what was streamed.
            Whole::Other(t) => out.push(format!("{}.final", self.key(oi, path)), t),
        }
    }

    /// Every text field of `v`, a part of item `oi` (or the item itself) at `path`, sent whole.
    fn whole_fields(&mut self, oi: u64, path: &str, v: &Value, out: &mut EventText) {
        let mut segs = Vec::new();
        texts(v, path.to_string(), Source::Assistant, &mut segs);
        for sg in segs {
            let field = sg.location.trim_start_matches('.');
            self.whole(oi, field, &sg.text, out);
        }
    }

    /// Output item `oi` as a whole (added, done, or in a response).
    fn item(&mut self, oi: u64, item: &Value, out: &mut EventText) {
        self.items.insert(oi, s(item, "type").to_string());
        self.whole_fields(oi, "", item, out);
    }

    /// A response as a whole: the SDKs take its output as the reply's.
    fn whole_response(&mut self, r: &Value, out: &mut EventText) {
        for (oi, item) in arr(r, "output").iter().enumerate() {
            self.item(oi as u64, item, out);
        }
        // A failed response's reason is shown to the user.
        out.push_texts("error".into(), r.get("error").unwrap_or(&Value::Null));
    }
}

impl StreamState for ResponsesStream {
    fn on_event(&mut self, v: &Value, out: &mut EventText) {
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            self.last_seq = Some(n);
        }
        let t = s(v, "type");
        let oi = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let null = &Value::Null;
        match t {
            "response.created" | "response.in_progress" => {
                // Kept only when it is an object: the cut edits it.
                self.response = v.get("response").filter(|r| r.is_object()).cloned();
                self.whole_response(v.get("response").unwrap_or(null), out);
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.whole_response(v.get("response").unwrap_or(null), out);
                out.terminal = true;
            }
            "error" => {
                out.push_texts("error".into(), v);
                out.terminal = true;
            }
            "response.output_item.added" | "response.output_item.done" => {
                self.item(oi, v.get("item").unwrap_or(null), out);
            }
            "response.content_part.added" | "response.content_part.done" => {
                let ci = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
                let part = v.get("part").unwrap_or(null);
                self.whole_fields(oi, &format!("content[{ci}]"), part, out);
            }
            "response.reasoning_summary_part.added" | "response.reasoning_summary_part.done" => {
                let si = v.get("summary_index").and_then(Value::as_u64).unwrap_or(0);
                let part = v.get("part").unwrap_or(null);
                self.whole_fields(oi, &format!("summary[{si}]"), part, out);
            }
            // A citation's title and quoted text, shown next to the output text.
            "response.output_text.annotation.added" => {
                let ci = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
                let ai = v
                    .get("annotation_index")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let a = v.get("annotation").unwrap_or(null);
                self.whole_fields(oi, &format!("content[{ci}].annotations[{ai}]"), a, out);
            }
            // The audio itself is not text.
            "response.audio.delta" | "response.output_audio.delta" => {}
            // Every text delta (output text, refusals, reasoning and its summary, function,
            // custom-tool and MCP arguments, code interpreter code, audio transcripts, and kinds
            // newer than this code).
            _ if t.ends_with(".delta") => {
                let (path, _) = event_field(&t[..t.len() - ".delta".len()], v);
                self.delta(oi, &path, s(v, "delta"), out);
                // The chosen tokens spell the text out again, for clients that show them.
                let tokens: String = arr(v, "logprobs").iter().map(|l| s(l, "token")).collect();
                out.push(format!("{}.logprobs", self.key(oi, &path)), &tokens);
            }
            // The same text whole: read when the deltas did not carry it.
            _ if t.ends_with(".done") => {
                let (path, member) = event_field(&t[..t.len() - ".done".len()], v);
                if !member.is_empty() {
                    self.whole(oi, &path, s(v, member), out);
                    return;
                }
                for (k, x) in v.as_object().into_iter().flatten() {
                    if !DONE_PLACE.contains(&k.as_str()) && !REPLY_NOT_TEXT.contains(&k.as_str()) {
                        self.whole_fields(oi, &path, x, out);
                    }
                }
            }
            _ => {}
        }
    }

    fn ending(&self, how: Ending) -> Vec<u8> {
        let mut seq = self.last_seq.map(|n| n + 1).unwrap_or(0);
        // `type` first and `sequence_number` last, as the API writes its events.
        let mut event = |name: &str, fields: Value| {
            let mut v = json!({"type": name});
            merge(&mut v, &fields);
            v["sequence_number"] = json!(seq);
            seq += 1;
            named_event(name, &v)
        };
        let text = match how {
            Ending::Error(msg) => {
                return event(
                    "error",
                    json!({"code": "content_policy_violation", "message": msg, "param": null}),
                )
                .into_bytes()
            }
            Ending::Filtered(text) => text,
        };
        let mut out = String::new();
        let mut r = self.response.clone().unwrap_or_else(|| json!({"id": "resp_guardgate", "object": "response", "created_at": 0, "model": "", "output": []}));
        bare(&mut r);
        if let Some(t) = text {
            // A message item of its own after the items the client has, as the SDKs number
            // items by the order they were added.
            let oi = self.items.keys().next_back().map_or(0, |i| i + 1);
            let at = json!({"item_id": REFUSAL_ITEM, "output_index": oi, "content_index": 0});
            let with = |extra: Value| {
                let mut v = at.clone();
                merge(&mut v, &extra);
                v
            };
            let part = json!({"type": "output_text", "text": t, "annotations": []});
            let item = |status: &str, content: Value| json!({"type": "message", "id": REFUSAL_ITEM, "status": status, "role": "assistant", "content": content});
            out += &event(
                "response.output_item.added",
                json!({"output_index": oi, "item": item("in_progress", json!([]))}),
            );
            out += &event(
                "response.content_part.added",
                with(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
            );
            out += &event(
                "response.output_text.delta",
                with(json!({"delta": t, "logprobs": []})),
            );
            out += &event(
                "response.output_text.done",
                with(json!({"text": t, "logprobs": []})),
            );
            out += &event("response.content_part.done", with(json!({"part": part})));
            let done = item("incomplete", json!([part]));
            out += &event(
                "response.output_item.done",
                json!({"output_index": oi, "item": done}),
            );
            r["output"] = json!([done]);
        }
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "content_filter"});
        out += &event("response.incomplete", json!({"response": r}));
        out.into_bytes()
    }

    fn cut_after(&self, upstream: &dyn StreamState, how: Ending) -> Vec<u8> {
        let up = same_api::<Self>(upstream);
        let mut t = self.clone();
        // Sequence numbers go on from the last one the upstream sent, seen by the client or not.
        t.last_seq = up.and_then(|u| u.last_seq).max(self.last_seq);
        let mut start = String::new();
        if !matches!(how, Ending::Error(_)) && t.response.is_none() {
            // The SDKs reject an ending without the response.created they never got.
            let mut r = up.and_then(|u| u.response.clone()).unwrap_or_else(|| {
                json!({"id": "resp_guardgate", "object": "response", "created_at": 0, "status": "in_progress", "model": "", "output": []})
            });
            bare(&mut r);
            let seq = t.last_seq.map(|n| n + 1).unwrap_or(0);
            start += &named_event(
                "response.created",
                &json!({"type": "response.created", "response": r, "sequence_number": seq}),
            );
            t.last_seq = Some(seq);
            t.response = Some(r);
        }
        let mut out = start.into_bytes();
        out.extend(t.ending(how));
        out
    }

    fn clone_box(&self) -> Box<dyn StreamState> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The request's top-level fields (the OpenAI SDKs' `ResponseCreateParams`, and vLLM's
/// extras), see [`Field`].
const FIELDS: Fields = &[
    ("input", Read),
    ("instructions", Read),
    ("tools", Read),
    ("tool_choice", Read),
    ("text", Read),
    // Its variables; the stored prompt itself is out of reach (see the README).
    ("prompt", Read),
    ("model", Setting),
    ("stream", Setting),
    ("stream_options", Setting),
    ("background", Setting),
    ("context_management", Setting),
    // Earlier turns stored upstream, by id: judged when they went through the gateway.
    ("conversation", Setting),
    ("previous_response_id", Setting),
    ("include", Setting),
    ("max_output_tokens", Setting),
    ("max_tool_calls", Setting),
    ("metadata", Setting),
    ("moderation", Setting),
    ("parallel_tool_calls", Setting),
    ("prompt_cache_key", Setting),
    ("prompt_cache_options", Setting),
    ("prompt_cache_retention", Setting),
    ("reasoning", Setting),
    ("safety_identifier", Setting),
    ("service_tier", Setting),
    ("store", Setting),
    ("temperature", Setting),
    ("top_logprobs", Setting),
    ("top_p", Setting),
    ("truncation", Setting),
    ("user", Setting),
    // vLLM serving settings.
    ("priority", Setting),
    ("request_id", Setting),
    ("cache_salt", Setting),
];

/// `extra`'s members set on `v` (both objects), in `extra`'s order.
fn merge(v: &mut Value, extra: &Value) {
    for (k, x) in extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
}

/// A response the gateway sends in an ending, from the upstream's `response.created`: the
/// SDKs take its output (and error) as the reply's, and what it held may be what was cut.
fn bare(r: &mut Value) {
    if let Some(obj) = r.as_object_mut() {
        obj.insert("output".into(), json!([]));
        if obj.contains_key("error") {
            obj.insert("error".into(), Value::Null);
        }
    }
}

fn parse(obj: &Obj) -> Result<ParsedRequest, WireError> {
    let mut out = Extractor::default();
    fields::check_top_level(obj, FIELDS, &mut out)?;
    // `model` may be omitted when a stored prompt supplies it.
    let model = model_field(obj, false)?;
    let stream = stream_flag(obj)?;

    if let Some(instructions) = opt_str(obj, "instructions", "")? {
        out.text(
            Source::Instructions,
            instructions,
            "instructions".to_string(),
        );
    }
    match present(obj, "input") {
        None => {}
        Some(Value::String(s)) => out.text(Source::User, s, "input".to_string()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &index("input", i), &mut out)?;
            }
        }
        Some(v) => return Err(expected("input", "a string or an array of input items", v)),
    }

    tool_definitions(obj, "tools", &mut out)?;
    if let Some(choice) = present(obj, "tool_choice") {
        tool_choice(choice, "tool_choice", &mut out);
    }

    // Structured-output schemas are shown to the model, descriptions and all.
    if let Some(text) = opt_object(obj, "text", "")? {
        if let Some(format) = lookup(text, "format", "text")? {
            as_object(format, "text.format")?;
            collect_descriptions(format, "text.format", Source::Other, &mut out);
        }
    }

    // Variables are substituted into a stored prompt we cannot see; they are
    // still client text that reaches the model.
    if let Some(prompt) = opt_object(obj, "prompt", "")? {
        if let Some(vars) = opt_object(prompt, "variables", "prompt")? {
            for (name, value) in vars {
                let path = field("prompt.variables", name);
                match value {
                    Value::String(s) => out.text(Source::User, s, path),
                    Value::Object(_) => content_part(value, &path, Source::User, &mut out)?,
                    v => return Err(expected(&path, "a string or an input content part", v)),
                }
            }
        }
    }

    Ok(out.finish(model, stream))
}

fn input_item(item: &Value, path: &str, out: &mut Extractor) -> Result<(), WireError> {
    let it = as_object(item, path)?;
    match opt_str(it, "type", path)? {
        // Easy input messages omit the type.
        None | Some("message") => message(it, path, out),
        Some(ty @ ("function_call" | "custom_tool_call")) => {
            let key = if ty == "function_call" {
                "arguments"
            } else {
                "input"
            };
            let name = opt_str(it, "name", path)?.unwrap_or("");
            let arguments = opt_str(it, key, path)?.unwrap_or("");
            push_call(name, arguments, path, out);
            out.arguments(arguments, field(path, key));
            tool_namespace(it, path, out)
        }
        Some("function_call_output") | Some("custom_tool_call_output") => {
            tool_output(it, path, out)?;
            // Outputs may name the tool they answer.
            if let Some(name) = opt_str(it, "name", path)? {
                out.name(Source::ToolResult, name, field(path, "name"));
            }
            tool_namespace(it, path, out)
        }
        Some("reasoning") => {
            reasoning_texts(it, "summary", path, out)?;
            reasoning_texts(it, "content", path, out)
        }
        // A reference to a stored item: nothing in this request to classify.
        Some("item_reference") => Ok(()),
        Some(other) => {
            hosted_tool_item(other, it, path, out);
            Ok(())
        }
    }
}

/// The namespace a call's tool is in: part of the tool's name as the model knows it.
fn tool_namespace(it: &Obj, path: &str, out: &mut Extractor) -> Result<(), WireError> {
    if let Some(ns) = opt_str(it, "namespace", path)? {
        out.name(Source::ToolCall, ns, field(path, "namespace"));
    }
    Ok(())
}

fn message(it: &Obj, path: &str, out: &mut Extractor) -> Result<(), WireError> {
    let role = req_str(it, "role", path)?;
    let source = match role {
        "user" => Source::User,
        "system" | "developer" => Source::Instructions,
        "assistant" => Source::Assistant,
        other => {
            return Err(WireError::at(
                &field(path, "role"),
                format!("unknown role {}", quoted(other)),
            ))
        }
    };
    content_field(it, path, true, "content parts", source, out, content_part)
}

fn content_part(
    part: &Value,
    path: &str,
    source: Source,
    out: &mut Extractor,
) -> Result<(), WireError> {
    let p = as_object(part, path)?;
    match req_str(p, "type", path)? {
        "input_text" => out.text(source, req_str(p, "text", path)?, field(path, "text")),
        "output_text" => {
            out.text(source, req_str(p, "text", path)?, field(path, "text"));
            // Citations replayed with the text: titles, URLs and file names the model is shown.
            if let Some(annotations) = lookup(p, "annotations", path)? {
                let annotations_path = field(path, "annotations");
                values(annotations, &annotations_path, source, out);
            }
        }
        "refusal" => out.text(source, req_str(p, "refusal", path)?, field(path, "refusal")),
        "input_file" => inline_file(p, path, "file_data", source, out)?,
        "input_image" | "input_audio" => out.unclassified(),
        other => {
            return Err(WireError::at(
                &field(path, "type"),
                format!("unknown content part type {}", quoted(other)),
            ))
        }
    }
    Ok(())
}

fn tool_output(it: &Obj, path: &str, out: &mut Extractor) -> Result<(), WireError> {
    let output_path = field(path, "output");
    match lookup(it, "output", path)? {
        None => Ok(()),
        Some(Value::String(s)) => {
            out.text(Source::ToolResult, s, output_path);
            Ok(())
        }
        Some(Value::Array(parts)) => {
            for (i, part) in parts.iter().enumerate() {
                content_part(part, &index(&output_path, i), Source::ToolResult, out)?;
            }
            Ok(())
        }
        Some(v) => Err(expected(
            &output_path,
            "a string or an array of content parts",
            v,
        )),
    }
}

/// `summary` / `content` of a reasoning item: `[{type, text}]`.
fn reasoning_texts(it: &Obj, key: &str, path: &str, out: &mut Extractor) -> Result<(), WireError> {
    if let Some(parts) = opt_array(it, key, path)? {
        let list_path = field(path, key);
        for (i, part) in parts.iter().enumerate() {
            let part_path = index(&list_path, i);
            let p = as_object(part, &part_path)?;
            if let Some(text) = opt_str(p, "text", &part_path)? {
                out.text(Source::Assistant, text, field(&part_path, "text"));
            }
        }
    }
    Ok(())
}

fn push_call(name: &str, arguments: &str, path: &str, out: &mut Extractor) {
    if !name.is_empty() || !arguments.is_empty() {
        out.text(
            Source::ToolCall,
            &format!("{}({arguments})", super::extract::identifier_words(name)),
            path.to_string(),
        );
    }
}

/// Items replayed from hosted tools (shell, MCP, code interpreter, ...).
/// Their shapes evolve quickly, so this reads the text it recognises, and
/// every string of the items it does not, instead of refusing them; the
/// upstream validates them.
fn hosted_tool_item(ty: &str, it: &Obj, path: &str, out: &mut Extractor) {
    let s = |key: &str| it.get(key).and_then(Value::as_str).unwrap_or("");
    match ty {
        "mcp_call" | "mcp_approval_request" => {
            push_call(s("name"), s("arguments"), path, out);
            out.arguments(s("arguments"), field(path, "arguments"));
            out.name(
                Source::ToolCall,
                s("server_label"),
                field(path, "server_label"),
            );
            out.text(Source::ToolResult, s("output"), field(path, "output"));
            // A string, or an error object with a message.
            if let Some(error) = it.get("error") {
                values(error, &field(path, "error"), Source::ToolResult, out);
            }
        }
        // Tool lists replayed from an MCP server, a tool search or a developer's mid-input
        // addition: definitions like `tools`.
        "mcp_list_tools" | "tool_search_output" | "additional_tools" => {
            out.name(
                Source::ToolDefinition,
                s("server_label"),
                field(path, "server_label"),
            );
            out.text(Source::ToolResult, s("error"), field(path, "error"));
            if let Some(tools) = it.get("tools") {
                collect_descriptions(tools, &field(path, "tools"), Source::ToolDefinition, out);
            }
        }
        "local_shell_call" | "shell_call" => {
            let action_path = field(path, "action");
            if let Some(action) = it.get("action").and_then(Value::as_object) {
                for (key, v) in action {
                    let location = field(&action_path, key);
                    match (key.as_str(), v) {
                        // The command line as the shell gets it, so words split across
                        // arguments are read together.
                        ("command" | "commands", Value::Array(cmd)) => {
                            let words: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
                            out.text(Source::ToolCall, &words.join(" "), location);
                        }
                        ("type", _) => {}
                        // The environment (names and values), working directory and user.
                        _ => collect_strings(v, &location, Source::ToolCall, out),
                    }
                }
            }
        }
        // A base64 image: not text.
        "image_generation_call" => out.unclassified(),
        "code_interpreter_call" => {
            out.text(Source::ToolCall, s("code"), field(path, "code"));
            if let Some(outputs) = it.get("outputs").and_then(Value::as_array) {
                for (i, o) in outputs.iter().enumerate() {
                    let o_path = index(&field(path, "outputs"), i);
                    match o.get("type").and_then(Value::as_str) {
                        Some("image") => out.unclassified(),
                        _ => {
                            let logs = o.get("logs").and_then(Value::as_str).unwrap_or("");
                            out.text(Source::ToolResult, logs, field(&o_path, "logs"));
                        }
                    }
                }
            }
        }
        // The file's path and the diff.
        "apply_patch_call" => {
            if let Some(operation) = it.get("operation") {
                values(operation, &field(path, "operation"), Source::ToolCall, out);
            }
        }
        "local_shell_call_output" | "shell_call_output" | "apply_patch_call_output" => {
            match it.get("output") {
                Some(Value::String(o)) => out.text(Source::ToolResult, o, field(path, "output")),
                Some(Value::Array(chunks)) => {
                    for (i, chunk) in chunks.iter().enumerate() {
                        let c_path = index(&field(path, "output"), i);
                        for key in ["stdout", "stderr"] {
                            let text = chunk.get(key).and_then(Value::as_str).unwrap_or("");
                            out.text(Source::ToolResult, text, field(&c_path, key));
                        }
                    }
                }
                _ => {}
            }
        }
        "computer_call_output" => out.unclassified(),
        "file_search_call" => {
            if let Some(queries) = it.get("queries").and_then(Value::as_array) {
                for (i, q) in queries.iter().enumerate() {
                    let q = q.as_str().unwrap_or("");
                    out.text(Source::ToolCall, q, index(&field(path, "queries"), i));
                }
            }
            // Each result's text, file name and attributes, as the model was shown them.
            if let Some(results) = it.get("results").and_then(Value::as_array) {
                for (i, r) in results.iter().enumerate() {
                    let r_path = index(&field(path, "results"), i);
                    for key in ["text", "filename"] {
                        let text = r.get(key).and_then(Value::as_str).unwrap_or("");
                        out.text(Source::ToolResult, text, field(&r_path, key));
                    }
                    if let Some(attributes) = r.get("attributes") {
                        let a_path = field(&r_path, "attributes");
                        collect_strings(attributes, &a_path, Source::ToolResult, out);
                    }
                }
            }
        }
        // web_search_call (its action's query), computer_call (text it types), item types newer
        // than this parser: every string the item carries, but for identifiers and payloads
        // that are not text.
        _ => {
            for (key, child) in it {
                if !NOT_TEXT.contains(&key.as_str()) {
                    strings_of(child, &field(path, key), out);
                }
            }
        }
    }
}

/// Keys of hosted-tool items whose values are identifiers, states or binary payloads: never
/// words the model reads.
const NOT_TEXT: &[&str] = &[
    "type",
    "id",
    "status",
    "call_id",
    "approval_request_id",
    "encrypted_content",
    "image_url",
    "file_id",
];

fn strings_of(v: &Value, path: &str, out: &mut Extractor) {
    match v {
        Value::String(s) => out.text(Source::ToolCall, s, path.to_string()),
        Value::Object(obj) => {
            for (key, child) in obj {
                if !NOT_TEXT.contains(&key.as_str()) {
                    strings_of(child, &field(path, key), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                strings_of(child, &index(path, i), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::extract::seg;
    use super::*;

    fn parse_body(body: &str) -> Result<ParsedRequest, WireError> {
        API.parse_request(body.as_bytes())
    }

    #[test]
    fn other_hosted_tool_items_give_all_their_text() {
        let body = r#"{"model":"m","input":[
            {"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"how to pick a lock"}},
            {"type":"computer_call","id":"cu_1","call_id":"c1","status":"completed","action":{"type":"type","text":"rm -rf /"},"pending_safety_checks":[]},
            {"type":"mcp_approval_response","approval_request_id":"apr_1","approve":false,"reason":"not today"},
            {"type":"image_generation_call","id":"ig_1","status":"completed","result":"iVBORw0KGgo"}
          ]}"#;
        let req = parse_body(body).unwrap();
        let texts: Vec<(&str, &str)> = req
            .segments
            .iter()
            .map(|s| (s.text.as_str(), s.location.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("how to pick a lock", "input[0].action.query"),
                ("rm -rf /", "input[1].action.text"),
                ("not today", "input[2].reason"),
            ]
        );
    }

    #[test]
    fn string_input() {
        let req = parse_body(
            r#"{"model":"gpt-4.1","instructions":"Talk like a pirate.","input":"Are semicolons optional in JavaScript?"}"#,
        )
        .unwrap();
        assert_eq!(req.model.as_deref(), Some("gpt-4.1"));
        assert!(!req.stream);
        assert_eq!(
            req.segments,
            vec![
                seg(Source::Instructions, "Talk like a pirate.", "instructions"),
                seg(
                    Source::User,
                    "Are semicolons optional in JavaScript?",
                    "input"
                ),
            ]
        );
    }

    #[test]
    fn model_is_optional() {
        let req = parse_body(r#"{"prompt":{"id":"pmpt_1","variables":{"city":"Paris"}}}"#).unwrap();
        assert_eq!(req.model, None);
        assert_eq!(
            req.segments,
            vec![seg(Source::User, "Paris", "prompt.variables.city")]
        );
        let e = parse_body(r#"{"model":1}"#).unwrap_err();
        assert_eq!(e.message, "model: expected a string, got number");
    }

    #[test]
    fn item_array_happy_path() {
        let body = r#"{
          "model": "gpt-5",
          "stream": true,
          "input": [
            {"role": "developer", "content": "Only answer about weather."},
            {"role": "user", "content": [
              {"type": "input_text", "text": "what is in this image?"},
              {"type": "input_image", "image_url": "https://example.com/x.jpg"},
              {"type": "input_file", "file_id": "file-1"},
              {"type": "input_audio", "input_audio": {"data": "AA", "format": "mp3"}}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking about weather"}],
             "encrypted_content": "gAAA"},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
              {"type": "output_text", "text": "Let me check.", "annotations": []},
              {"type": "refusal", "refusal": "Cannot share that."}
            ]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2", "output": [
              {"type": "input_text", "text": "see chart"}, {"type": "input_image", "image_url": "data:..."}]},
            {"type": "custom_tool_call", "call_id": "call_3", "name": "code_exec", "input": "print(1)"},
            {"type": "custom_tool_call_output", "call_id": "call_3", "output": "1"},
            {"type": "item_reference", "id": "msg_old"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}
          ],
          "tools": [{"type": "function", "name": "get_weather", "description": "Get weather",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}}},
                    {"type": "web_search"}],
          "text": {"format": {"type": "json_schema", "name": "out", "description": "Answer schema",
                              "schema": {"type": "object"}, "strict": true}}
        }"#;
        let req = parse_body(body).unwrap();
        assert!(req.stream);
        assert_eq!(req.unclassified_parts, 4);
        assert_eq!(
            req.segments,
            vec![
                seg(
                    Source::Instructions,
                    "Only answer about weather.",
                    "input[0].content"
                ),
                seg(
                    Source::User,
                    "what is in this image?",
                    "input[1].content[0].text"
                ),
                seg(
                    Source::Assistant,
                    "Thinking about weather",
                    "input[2].summary[0].text"
                ),
                seg(
                    Source::Assistant,
                    "Let me check.",
                    "input[3].content[0].text"
                ),
                seg(
                    Source::Assistant,
                    "Cannot share that.",
                    "input[3].content[1].refusal"
                ),
                seg(
                    Source::ToolCall,
                    "get_weather({\"city\":\"Paris\"})",
                    "input[4]"
                ),
                seg(Source::ToolResult, "18C", "input[5].output"),
                seg(Source::ToolResult, "see chart", "input[6].output[0].text"),
                seg(Source::ToolCall, "code_exec(print(1))", "input[7]"),
                seg(Source::ToolResult, "1", "input[8].output"),
                seg(Source::ToolDefinition, "get_weather", "tools[0].name"),
                seg(
                    Source::ToolDefinition,
                    "Get weather",
                    "tools[0].description"
                ),
                seg(
                    Source::ToolDefinition,
                    "city",
                    "tools[0].parameters.properties.city"
                ),
                seg(
                    Source::ToolDefinition,
                    "City name",
                    "tools[0].parameters.properties.city.description"
                ),
                seg(Source::Other, "out", "text.format.name"),
                seg(Source::Other, "Answer schema", "text.format.description"),
            ]
        );
    }

    #[test]
    fn hosted_tool_items_are_read() {
        let body = r#"{"model":"m","input":[
          {"type":"local_shell_call","call_id":"c","action":{"type":"exec","command":["rm","-rf","/"]}},
          {"type":"local_shell_call_output","call_id":"c","output":"done"},
          {"type":"mcp_call","id":"m","server_label":"s","name":"fetch","arguments":"{}","output":"page"},
          {"type":"mcp_list_tools","id":"l","server_label":"s","tools":[{"name":"t","description":"mcp tool",
             "input_schema":{"properties":{"a":{"description":"mcp arg"}}}}]},
          {"type":"code_interpreter_call","id":"ci","code":"import os","outputs":[{"type":"logs","logs":"ok"},{"type":"image","url":"u"}]},
          {"type":"computer_call_output","call_id":"cc","output":{"type":"computer_screenshot","image_url":"data:"}}
        ]}"#;
        let req = parse_body(body).unwrap();
        let texts: Vec<(&str, Source)> = req
            .segments
            .iter()
            .map(|s| (s.text.as_str(), s.source))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("rm -rf /", Source::ToolCall),
                ("done", Source::ToolResult),
                ("fetch({})", Source::ToolCall),
                ("s", Source::ToolCall),
                ("page", Source::ToolResult),
                ("s", Source::ToolDefinition),
                ("t", Source::ToolDefinition),
                ("mcp tool", Source::ToolDefinition),
                ("a", Source::ToolDefinition),
                ("mcp arg", Source::ToolDefinition),
                ("import os", Source::ToolCall),
                ("ok", Source::ToolResult),
            ]
        );
        assert_eq!(req.unclassified_parts, 2);
    }

    #[test]
    fn wrong_types_name_the_path() {
        let cases = [
            (
                r#"{"model":"m","input":5}"#,
                "input: expected a string or an array of input items, got number",
            ),
            (
                r#"{"model":"m","input":["hi"]}"#,
                "input[0]: expected an object, got string",
            ),
            (
                r#"{"model":"m","input":[{"content":"hi"}]}"#,
                "input[0].role: required field is missing",
            ),
            (
                r#"{"model":"m","input":[{"role":"tool","content":"hi"}]}"#,
                "input[0].role: unknown role \"tool\"",
            ),
            (
                r#"{"model":"m","input":[{"role":"user"}]}"#,
                "input[0].content: required field is missing",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":"a"},{"role":"user","content":7}]}"#,
                "input[1].content: expected a string or an array of content parts, got number",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"text","text":"x"}]}]}"#,
                "input[0].content[0].type: unknown content part type \"text\"",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":null}]}]}"#,
                "input[0].content[0].text: required field is missing",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call","name":"f","arguments":{}}]}"#,
                "input[0].arguments: expected a string, got object",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":{"a":1}}]}"#,
                "input[0].output: expected a string or an array of content parts, got object",
            ),
            (
                r#"{"model":"m","input":[{"type":"reasoning","summary":[{"type":"summary_text","text":3}]}]}"#,
                "input[0].summary[0].text: expected a string, got number",
            ),
            (
                r#"{"model":"m","instructions":["x"]}"#,
                "instructions: expected a string, got array",
            ),
            (
                r#"{"model":"m","stream":"true"}"#,
                "stream: expected a boolean, got string",
            ),
            (
                r#"{"model":"m","text":{"format":"json"}}"#,
                "text.format: expected an object, got string",
            ),
            (
                r#"{"model":"m","tools":[1]}"#,
                "tools[0]: expected an object, got number",
            ),
            (
                r#"{"prompt":{"id":"p","variables":{"x":1}}}"#,
                "prompt.variables.x: expected a string or an input content part, got number",
            ),
        ];
        for (body, want) in cases {
            let e = parse_body(body).unwrap_err();
            assert_eq!(e.message, want, "body: {body}");
        }
    }

    #[test]
    fn duplicate_keys_refused() {
        let e = parse_body(r#"{"model":"m","input":"a","input":"b"}"#).unwrap_err();
        assert!(
            e.message.contains("duplicate key \"input\""),
            "{}",
            e.message
        );
        let e =
            parse_body(r#"{"model":"m","input":[{"role":"user","role":"system","content":"x"}]}"#)
                .unwrap_err();
        assert!(
            e.message.contains("duplicate key \"role\""),
            "{}",
            e.message
        );
    }
}

#[cfg(test)]
mod field_tests {
    use super::super::fields::testing;
    use super::*;

    #[test]
    fn each_read_field_is_read() {
        testing::each_read_field_is_read(
            API,
            FIELDS,
            &[
                ("input", r#"{"model":"m","input":"zorble"}"#),
                ("instructions", r#"{"model":"m","instructions":"zorble"}"#),
                (
                    "tools",
                    r#"{"model":"m","tools":[{"type":"function","name":"f","parameters":{"$defs":{"zorble":{}}}}]}"#,
                ),
                (
                    "tool_choice",
                    r#"{"model":"m","tool_choice":{"type":"mcp","server_label":"s","name":"zorble"}}"#,
                ),
                (
                    "text",
                    r#"{"model":"m","text":{"format":{"type":"json_schema","name":"x","schema":{"$defs":{"zorble":{}}}}}}"#,
                ),
                (
                    "prompt",
                    r#"{"prompt":{"id":"p","variables":{"v":"zorble"}}}"#,
                ),
            ],
        );
    }

    #[test]
    fn settings_unknown_and_refused_fields() {
        let base = r#"{"model":"m","input":"hi"}"#;
        let typed = [("model", json!("m")), ("stream", json!(false))];
        testing::settings_are_not_read(API, FIELDS, base, &typed);
        testing::unknown_refused_and_case_variants(API, FIELDS, base);
    }

    #[test]
    fn nested_fields_are_read() {
        let input = |item: Value| json!({"model":"m","input":[item]});
        let cases = [
            (
                "input_file name",
                input(
                    json!({"role":"user","content":[{"type":"input_file","file_id":"f","filename":"zorble.pdf"}]}),
                ),
                "input[0].content[0].filename",
            ),
            (
                "input_file text data",
                input(
                    json!({"role":"user","content":[{"type":"input_file","filename":"a.txt","file_data":"data:text/plain;base64,em9yYmxl"}]}),
                ),
                "input[0].content[0].file_data",
            ),
            (
                "output_text annotation",
                input(
                    json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[{"type":"url_citation","url":"u","title":"zorble","start_index":0,"end_index":1}]}]}),
                ),
                "input[0].content[0].annotations[0].title",
            ),
            (
                "function_call arguments with escapes",
                input(
                    json!({"type":"function_call","call_id":"c","name":"f","arguments":"{\"q\":\"\\u007aorble\"}"}),
                ),
                "input[0].arguments",
            ),
            (
                "custom_tool_call input with escapes",
                input(
                    json!({"type":"custom_tool_call","call_id":"c","name":"f","input":"{\"q\":\"\\u007aorble\"}"}),
                ),
                "input[0].input",
            ),
            (
                "function_call namespace",
                input(
                    json!({"type":"function_call","call_id":"c","name":"f","arguments":"{}","namespace":"zorble"}),
                ),
                "input[0].namespace",
            ),
            (
                "function_call_output name",
                input(
                    json!({"type":"function_call_output","call_id":"c","output":"ok","name":"zorble"}),
                ),
                "input[0].name",
            ),
            (
                "mcp_call arguments with escapes",
                input(
                    json!({"type":"mcp_call","id":"m","server_label":"s","name":"f","arguments":"{\"q\":\"\\u007aorble\"}"}),
                ),
                "input[0].arguments",
            ),
            (
                "mcp_call error object",
                input(
                    json!({"type":"mcp_call","id":"m","server_label":"s","name":"f","arguments":"{}","error":{"type":"tool_execution_error","message":"zorble"}}),
                ),
                "input[0].error.message",
            ),
            (
                "apply_patch_call path",
                input(
                    json!({"type":"apply_patch_call","call_id":"c","status":"completed","operation":{"type":"delete_file","path":"zorble.txt"}}),
                ),
                "input[0].operation.path",
            ),
            (
                "apply_patch_call diff",
                input(
                    json!({"type":"apply_patch_call","call_id":"c","status":"completed","operation":{"type":"update_file","path":"a","diff":"+zorble"}}),
                ),
                "input[0].operation.diff",
            ),
            (
                "local_shell_call env",
                input(
                    json!({"type":"local_shell_call","id":"l","call_id":"c","status":"completed","action":{"type":"exec","command":["env"],"env":{"X":"zorble"}}}),
                ),
                "input[0].action.env.X",
            ),
            (
                "local_shell_call working directory",
                input(
                    json!({"type":"local_shell_call","id":"l","call_id":"c","status":"completed","action":{"type":"exec","command":["ls"],"env":{},"working_directory":"/zorble"}}),
                ),
                "input[0].action.working_directory",
            ),
            (
                "file_search_call result file name",
                input(
                    json!({"type":"file_search_call","id":"f","status":"completed","queries":[],"results":[{"file_id":"f","filename":"zorble.md","text":"t"}]}),
                ),
                "input[0].results[0].filename",
            ),
            (
                "file_search_call result attributes",
                input(
                    json!({"type":"file_search_call","id":"f","status":"completed","queries":[],"results":[{"attributes":{"author":"zorble"}}]}),
                ),
                "input[0].results[0].attributes.author",
            ),
            (
                "program_output result",
                input(
                    json!({"type":"program_output","id":"p","call_id":"c","status":"completed","result":"zorble"}),
                ),
                "input[0].result",
            ),
            (
                "additional_tools property names",
                input(
                    json!({"type":"additional_tools","role":"developer","tools":[{"type":"function","name":"f","parameters":{"properties":{"zorble":{}}}}]}),
                ),
                "input[0].tools[0].parameters.properties.zorble",
            ),
            (
                "web_search tool user location",
                json!({"model":"m","tools":[{"type":"web_search","user_location":{"type":"approximate","city":"zorble"}}]}),
                "tools[0].user_location.city",
            ),
            (
                "custom tool grammar",
                json!({"model":"m","tools":[{"type":"custom","name":"t","format":{"type":"grammar","syntax":"regex","definition":"zorble"}}]}),
                "tools[0].format.definition",
            ),
            (
                "namespace tool",
                json!({"model":"m","tools":[{"type":"namespace","name":"n","description":"zorble","tools":[]}]}),
                "tools[0].description",
            ),
        ];
        for (case, body, location) in cases {
            let req = API
                .parse_request(body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(
                req.segments
                    .iter()
                    .any(|s| s.text.contains("zorble") && s.location == location),
                "{case}: {:?}",
                req.segments
            );
        }
    }
}
