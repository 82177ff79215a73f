//! Adversarial cases: streamed replies. The mock streams events of any shape (`x-mock-sse-hex`),
//! split at awkward byte boundaries where that matters, and each case asserts that the client
//! never received the phrase: in its raw bytes, and in the text its SDK rebuilds from them
//! (deltas concatenated per choice, block or part; Responses' final items; Anthropic's blocks),
//! normalised as the rules read it. Each case also asserts the stream was ended as filtered, so
//! a case that passes only because the reply never came cannot pass.

use regex::Regex;
use serde_json::{json, Value};

use super::{start, PHRASE, WORD};
use crate::support::client;
use crate::support::GatewayProc;
use guardgate::classify::normalize::normalize;
use guardgate::wire::sse::SseParser;

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";
const RESPONSES: &str = "/v1/responses";
const MESSAGES: &str = "/v1/messages";

/// Harmless text a little longer than the default 200-character window, so that the phrase after
/// it falls in a later window than the text before it.
fn filler() -> String {
    "all is calm here and nothing is amiss at all. ".repeat(5)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| match e.get("type").and_then(Value::as_str) {
            Some(name) => format!("event: {name}\ndata: {e}\n\n"),
            None => format!("data: {e}\n\n"),
        })
        .collect()
}

/// A chat stream: a role chunk, one chunk per delta, the finish chunk and `[DONE]`.
fn chat_stream(deltas: &[Value]) -> String {
    let chunk = |delta: &Value, finish: Value| {
        json!({"id":"chatcmpl-adv","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]})
    };
    let mut events = vec![chunk(
        &json!({"role":"assistant","content":""}),
        Value::Null,
    )];
    events.extend(deltas.iter().map(|d| chunk(d, Value::Null)));
    events.push(chunk(&json!({}), json!("stop")));
    sse(&events) + "data: [DONE]\n\n"
}

/// Chat deltas of `text`, `n` characters each.
fn content_deltas(text: &str, n: usize) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(n)
        .map(|c| json!({"content": c.iter().collect::<String>()}))
        .collect()
}

fn completions_stream(text: &str, n: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let events: Vec<Value> = chars
        .chunks(n)
        .map(|c| json!({"id":"cmpl-adv","object":"text_completion","created":1,"model":"m",
                        "choices":[{"index":0,"text":c.iter().collect::<String>(),"logprobs":null,"finish_reason":null}]}))
        .collect();
    sse(&events) + "data: [DONE]\n\n"
}

/// A Responses stream: `response.created`, `middle`, and `response.completed` with `output`
/// (`None`: the stream has no completion, as when the client is cut off).
fn responses_stream(middle: &[Value], output: Option<Value>) -> String {
    let resp = |status: &str, output: Value| json!({"id":"resp_adv","object":"response","created_at":1,"status":status,"model":"m","output":output});
    let mut events =
        vec![json!({"type":"response.created","response":resp("in_progress", json!([]))})];
    events.extend(middle.iter().cloned());
    if let Some(o) = output {
        events.push(json!({"type":"response.completed","response":resp("completed", o)}));
    }
    for (i, e) in events.iter_mut().enumerate() {
        e["sequence_number"] = json!(i);
    }
    sse(&events)
}

fn message_item(oi: u64, parts: &[&str]) -> Value {
    let content: Vec<Value> = parts
        .iter()
        .map(|t| json!({"type":"output_text","text":t,"annotations":[]}))
        .collect();
    json!({"type":"message","id":format!("msg_{oi}"),"status":"completed","role":"assistant","content":content})
}

fn item_added(oi: u64, item: Value) -> Value {
    json!({"type":"response.output_item.added","output_index":oi,"item":item})
}

fn item_done(oi: u64, item: Value) -> Value {
    json!({"type":"response.output_item.done","output_index":oi,"item":item})
}

fn empty_message(oi: u64) -> Value {
    json!({"type":"message","id":format!("msg_{oi}"),"status":"in_progress","role":"assistant","content":[]})
}

fn part_added(oi: u64, ci: u64, text: &str) -> Value {
    json!({"type":"response.content_part.added","output_index":oi,"content_index":ci,"part":{"type":"output_text","text":text,"annotations":[]}})
}

fn text_delta(oi: u64, ci: u64, delta: &str) -> Value {
    json!({"type":"response.output_text.delta","output_index":oi,"content_index":ci,"delta":delta,"logprobs":[]})
}

/// Output-text deltas of `text`, `n` characters each, in part `ci` of item `oi`.
fn text_deltas(oi: u64, ci: u64, text: &str, n: usize) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(n)
        .map(|c| text_delta(oi, ci, &c.iter().collect::<String>()))
        .collect()
}

/// An Anthropic stream: `message_start`, `blocks` (start, deltas and stop events), the end.
fn messages_stream(blocks: &[Value]) -> String {
    let mut events = vec![
        json!({"type":"message_start","message":{"id":"msg_adv","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}),
    ];
    events.extend(blocks.iter().cloned());
    events.push(json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}));
    events.push(json!({"type":"message_stop"}));
    sse(&events)
}

fn block_start(i: u64, block: Value) -> Value {
    json!({"type":"content_block_start","index":i,"content_block":block})
}

fn block_delta(i: u64, delta: Value) -> Value {
    json!({"type":"content_block_delta","index":i,"delta":delta})
}

fn block_stop(i: u64) -> Value {
    json!({"type":"content_block_stop","index":i})
}

/// A text block `i` streamed as `n`-character deltas.
fn text_block(i: u64, text: &str, n: usize) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![block_start(i, json!({"type":"text","text":""}))];
    out.extend(chars.chunks(n).map(|c| {
        block_delta(
            i,
            json!({"type":"text_delta","text":c.iter().collect::<String>()}),
        )
    }));
    out.push(block_stop(i));
    out
}

fn tool_use_block(i: u64) -> Vec<Value> {
    vec![
        block_start(
            i,
            json!({"type":"tool_use","id":"toolu_1","name":"lookup","input":{}}),
        ),
        block_delta(
            i,
            json!({"type":"input_json_delta","partial_json":"{\"q\":\"weather\"}"}),
        ),
        block_stop(i),
    ]
}

fn request(path: &str) -> Value {
    let mut body = crate::support::body(path, "tell me something");
    body["stream"] = json!(true);
    body
}

/// Sends `body` to `path` with the mock streaming `events` in `chunk`-byte pieces; the raw bytes
/// the client received.
async fn stream(
    gw: &GatewayProc,
    path: &str,
    body: &Value,
    events: &str,
    chunk: Option<usize>,
) -> String {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .header("x-mock-sse-hex", hex(events.as_bytes()));
    if let Some(n) = chunk {
        req = req
            .header("x-mock-chunk-bytes", n.to_string())
            .header("x-mock-gap-ms", "0");
    }
    let resp = req
        .body(body.to_string())
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200, "{path}");
    let bytes = resp.bytes().await.expect("the whole stream");
    String::from_utf8(bytes.to_vec()).expect("UTF-8 events")
}

fn events_of(raw: &str) -> Vec<Value> {
    let mut p = SseParser::new();
    let mut evs = p.push(raw.as_bytes());
    evs.extend(p.finish());
    evs.iter()
        .filter_map(|e| e.data.as_deref())
        .filter(|d| d.trim() != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("JSON events"))
        .collect()
}

/// openai-python's `accumulate_delta`: strings concatenate, objects merge, list items merge by
/// their `index`.
fn accumulate(acc: &mut Value, delta: &Value) {
    match (acc, delta) {
        (Value::Object(a), Value::Object(d)) => {
            for (k, v) in d {
                match a.get_mut(k) {
                    Some(Value::String(s)) if v.is_string() => s.push_str(v.as_str().unwrap()),
                    Some(prev) if v.is_object() || v.is_array() => accumulate(prev, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(d)) => {
            for item in d {
                let at = item
                    .get("index")
                    .and_then(|i| a.iter().position(|x| x.get("index") == Some(i)));
                match at {
                    Some(p) => accumulate(&mut a[p], item),
                    None => a.push(item.clone()),
                }
            }
        }
        (a, d) => *a = d.clone(),
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The texts a client of `path`'s SDK shows from the stream `raw`.
fn rendered(path: &str, raw: &str) -> Vec<String> {
    let events = events_of(raw);
    let mut texts = Vec::new();
    match path {
        CHAT | COMPLETIONS => {
            let mut choices: Vec<Value> = Vec::new();
            for e in &events {
                let chunk_choices = e.get("choices").cloned().unwrap_or(json!([]));
                let mut acc = Value::Array(std::mem::take(&mut choices));
                accumulate(&mut acc, &chunk_choices);
                choices = acc.as_array().cloned().unwrap_or_default();
                // Members a compatible server adds to the chunk, shown by its clients.
                for (k, v) in e.as_object().into_iter().flatten() {
                    if !matches!(k.as_str(), "choices" | "id" | "object" | "model") {
                        strings(v, &mut texts);
                    }
                }
            }
            for c in &choices {
                strings(c, &mut texts);
                // Clients that show the chosen tokens show them one after another.
                for part in ["content", "refusal"] {
                    let tokens = c["logprobs"][part].as_array().cloned().unwrap_or_default();
                    texts.push(
                        tokens
                            .iter()
                            .map(|t| t["token"].as_str().unwrap_or(""))
                            .collect(),
                    );
                }
            }
        }
        RESPONSES => {
            // openai-python's ResponseStreamState: the snapshot, and the live deltas.
            let mut output: Vec<Value> = Vec::new();
            let mut live = String::new();
            for e in &events {
                let oi = e["output_index"].as_u64().unwrap_or(0) as usize;
                let ci = e["content_index"].as_u64().unwrap_or(0) as usize;
                match e["type"].as_str().unwrap_or("") {
                    "response.created" | "response.completed" | "response.incomplete" => {
                        output = e["response"]["output"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    }
                    "response.output_item.added" => output.push(e["item"].clone()),
                    "response.output_item.done" if oi < output.len() => {
                        output[oi] = e["item"].clone()
                    }
                    "response.content_part.added" if oi < output.len() => {
                        if let Some(c) = output[oi]["content"].as_array_mut() {
                            c.push(e["part"].clone());
                        }
                    }
                    "response.output_text.delta" => {
                        let d = e["delta"].as_str().unwrap_or("");
                        live.push_str(d);
                        if let Some(t) = output
                            .get_mut(oi)
                            .and_then(|o| o["content"].get_mut(ci))
                            .and_then(|p| p.get_mut("text"))
                        {
                            *t = json!(format!("{}{d}", t.as_str().unwrap_or("")));
                        }
                    }
                    t if t.ends_with(".delta") => {
                        strings(&e["delta"], &mut texts);
                    }
                    _ => {}
                }
            }
            // The SDKs' `output_text`: every output_text part of every message, in order.
            let output_text: String = output
                .iter()
                .filter(|o| o["type"] == "message")
                .flat_map(|o| o["content"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["type"] == "output_text")
                .map(|p| p["text"].as_str().unwrap_or("").to_string())
                .collect();
            texts.push(output_text);
            texts.push(live);
            for o in &output {
                strings(o, &mut texts);
            }
        }
        MESSAGES => {
            // The SDKs' message snapshot; text and thinking blocks read one after another.
            let mut content: Vec<Value> = Vec::new();
            for e in &events {
                let i = e["index"].as_u64().unwrap_or(0) as usize;
                match e["type"].as_str().unwrap_or("") {
                    "message_start" => {
                        content = e["message"]["content"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    }
                    "content_block_start" => {
                        content.resize(content.len().max(i + 1), Value::Null);
                        content[i] = e["content_block"].clone();
                    }
                    "content_block_delta" if i < content.len() => {
                        let d = &e["delta"];
                        for (k, field) in [
                            ("text", "text"),
                            ("thinking", "thinking"),
                            ("partial_json", "input_json"),
                        ] {
                            if let Some(x) = d[k].as_str() {
                                let prev = content[i][field].as_str().unwrap_or("").to_string();
                                content[i][field] = json!(prev + x);
                            }
                        }
                    }
                    _ => {}
                }
            }
            for field in ["text", "thinking"] {
                texts.push(
                    content
                        .iter()
                        .filter(|b| b["type"] == field)
                        .map(|b| b[field].as_str().unwrap_or("").to_string())
                        .collect(),
                );
            }
            for b in &content {
                strings(b, &mut texts);
            }
        }
        _ => unreachable!(),
    }
    texts
}

/// Whether the stream ends the way the API ends a filtered reply.
fn ended_as_filtered(path: &str, raw: &str) -> bool {
    match path {
        CHAT | COMPLETIONS => {
            raw.contains("\"finish_reason\":\"content_filter\"")
                && raw.ends_with("data: [DONE]\n\n")
        }
        RESPONSES => raw.contains("event: response.incomplete"),
        MESSAGES => raw.contains("\"stop_reason\":\"refusal\"") && raw.contains("message_stop"),
        _ => unreachable!(),
    }
}

/// The case's assertions: no text the client shows (after `continued`, the text the reply goes on
/// from) holds a blocked phrase once normalised, the raw bytes never hold `absent` (the part of
/// the phrase that must not arrive, as the upstream spelled it), and the stream was ended as
/// filtered.
fn assert_withheld(case: &str, path: &str, raw: &str, absent: &str, continued: &str) {
    let blocked = Regex::new(&format!("{}|{WORD}", PHRASE.replace(' ', r"[ _.\-]+"))).unwrap();
    for t in rendered(path, raw) {
        let n = normalize(&format!("{continued}{t}"));
        assert!(
            !blocked.is_match(&n),
            "{case}: the client shows {n:?}\n--- stream ---\n{raw}"
        );
    }
    assert!(
        !raw.contains(absent),
        "{case}: {absent:?} reached the client\n--- stream ---\n{raw}"
    );
    assert!(
        ended_as_filtered(path, raw),
        "{case}: the stream was not ended as filtered\n--- stream ---\n{raw}"
    );
}

async fn case(
    gw: &GatewayProc,
    name: &str,
    path: &str,
    body: &Value,
    events: String,
    chunk: Option<usize>,
    absent: &str,
) {
    let raw = stream(gw, path, body, &events, chunk).await;
    assert_withheld(name, path, &raw, absent, "");
}

/// A case whose reply continues `continued`, the end of the request.
async fn continuing_case(
    gw: &GatewayProc,
    name: &str,
    path: &str,
    body: &Value,
    events: String,
    continued: &str,
) {
    let raw = stream(gw, path, body, &events, Some(4)).await;
    assert_withheld(name, path, &raw, "bomb", continued);
}

// --- Padding that normalisation removes or collapses: the window and its overlap are counted in
// --- normalised characters.

fn padded(pad: &str, n: usize) -> String {
    format!("{}so the pipe {}bomb goes here.", filler(), pad.repeat(n))
}

#[tokio::test]
async fn chat_zero_width_spaces_between_the_words() {
    let (_m, gw) = start().await;
    let events = chat_stream(&content_deltas(&padded("\u{200B}", 250), 1));
    case(&gw, "chat zwsp", CHAT, &request(CHAT), events, None, "bomb").await;
}

#[tokio::test]
async fn chat_zero_width_padding_split_inside_characters() {
    let (_m, gw) = start().await;
    // 3-byte pieces cut every zero-width space and every JSON escape somewhere.
    let events = chat_stream(&content_deltas(&padded("\u{200B}\u{2060}", 200), 7));
    let body = request(CHAT);
    case(&gw, "chat split zwsp", CHAT, &body, events, Some(5), "bomb").await;
}

#[tokio::test]
async fn chat_whitespace_run_between_the_words() {
    let (_m, gw) = start().await;
    let events = chat_stream(&content_deltas(&padded(" \n\t", 200), 3));
    case(
        &gw,
        "chat whitespace",
        CHAT,
        &request(CHAT),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_padding_far_longer_than_a_window() {
    let (_m, gw) = start().await;
    let events = chat_stream(&content_deltas(&padded("\u{200B}", 5_000), 50));
    case(
        &gw,
        "chat long zwsp",
        CHAT,
        &request(CHAT),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn completions_zero_width_spaces_between_the_words() {
    let (_m, gw) = start().await;
    let events = completions_stream(&padded("\u{200B}", 300), 2);
    let body = request(COMPLETIONS);
    case(
        &gw,
        "completions zwsp",
        COMPLETIONS,
        &body,
        events,
        Some(3),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn responses_soft_hyphens_between_the_words() {
    let (_m, gw) = start().await;
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, &padded("\u{00AD}", 300), 4));
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "responses shy",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_tag_characters_between_the_words() {
    let (_m, gw) = start().await;
    let events = messages_stream(&text_block(0, &padded("\u{E0020}", 300), 3));
    case(
        &gw,
        "messages tags",
        MESSAGES,
        &request(MESSAGES),
        events,
        Some(7),
        "bomb",
    )
    .await;
}

// --- Text the client reads as one across blocks and parts.

#[tokio::test]
async fn messages_phrase_split_around_a_tool_use() {
    let (_m, gw) = start().await;
    let mut blocks = text_block(0, &format!("{}here is the pipe", filler()), 5);
    blocks.extend(tool_use_block(1));
    blocks.extend(text_block(2, " bomb, as promised.", 5));
    let events = messages_stream(&blocks);
    case(
        &gw,
        "text|tool|text",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_word_split_across_two_text_blocks() {
    let (_m, gw) = start().await;
    let mut blocks = text_block(0, "a short note on the zor", 4);
    blocks.extend(text_block(1, "ble and more.", 4));
    let events = messages_stream(&blocks);
    case(
        &gw,
        "text|text",
        MESSAGES,
        &request(MESSAGES),
        events,
        Some(3),
        "ble",
    )
    .await;
}

#[tokio::test]
async fn messages_phrase_split_across_thinking_blocks() {
    let (_m, gw) = start().await;
    let thinking = |i: u64, t: &str| {
        vec![
            block_start(i, json!({"type":"thinking","thinking":""})),
            block_delta(i, json!({"type":"thinking_delta","thinking":t})),
            block_delta(i, json!({"type":"signature_delta","signature":"c2ln"})),
            block_stop(i),
        ]
    };
    let mut blocks = thinking(0, "considering the pipe ");
    blocks.extend(tool_use_block(1));
    blocks.extend(thinking(2, "bomb question"));
    let events = messages_stream(&blocks);
    let body = request(MESSAGES);
    case(
        &gw,
        "thinking|tool|thinking",
        MESSAGES,
        &body,
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_stray_delta_member_between_the_words() {
    let (_m, gw) = start().await;
    // The SDKs show a text delta's `text` only: a second member must not split what they show.
    let blocks = vec![
        block_start(0, json!({"type":"text","text":""})),
        block_delta(
            0,
            json!({"type":"text_delta","text":"the pipe ","partial_json":"x"}),
        ),
        block_delta(0, json!({"type":"text_delta","text":"bomb is here"})),
        block_stop(0),
    ];
    let events = messages_stream(&blocks);
    case(
        &gw,
        "stray member",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_text_already_in_message_start() {
    let (_m, gw) = start().await;
    let mut events = messages_stream(&text_block(1, " and that is all.", 4));
    events = events.replacen(
        "\"content\":[]",
        &format!("\"content\":[{{\"type\":\"text\",\"text\":\"a {WORD} appears\"}}]"),
        1,
    );
    case(
        &gw,
        "message_start content",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        WORD,
    )
    .await;
}

#[tokio::test]
async fn responses_phrase_split_across_two_output_text_parts() {
    let (_m, gw) = start().await;
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, &format!("{}the pipe", filler()), 6));
    middle.push(part_added(0, 1, ""));
    middle.extend(text_deltas(0, 1, " bomb follows", 6));
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "part|part",
        RESPONSES,
        &request(RESPONSES),
        events,
        Some(9),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn responses_phrase_split_across_two_messages_around_reasoning() {
    let (_m, gw) = start().await;
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, "first the pipe", 3));
    middle.push(item_done(0, message_item(0, &["first the pipe"])));
    middle.push(item_added(
        1,
        json!({"type":"reasoning","id":"rs_1","summary":[]}),
    ));
    middle.push(item_added(2, empty_message(2)));
    middle.push(part_added(2, 0, ""));
    middle.extend(text_deltas(2, 0, " bomb then", 3));
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "message|reasoning|message",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn responses_text_in_content_part_added_then_deltas() {
    let (_m, gw) = start().await;
    let mut middle = vec![
        item_added(0, empty_message(0)),
        part_added(0, 0, "the pipe"),
    ];
    middle.extend(text_deltas(0, 0, " bomb is next", 4));
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "part.added text",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        "bomb",
    )
    .await;
}

// --- Text a Responses stream sends only whole: SDKs rebuild the reply from it.

#[tokio::test]
async fn responses_text_only_in_response_completed() {
    let (_m, gw) = start().await;
    let middle = vec![item_added(0, empty_message(0))];
    let output = json!([message_item(0, &[&format!("a {WORD} at the end")])]);
    let events = responses_stream(&middle, Some(output));
    case(
        &gw,
        "completed only",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        WORD,
    )
    .await;
}

#[tokio::test]
async fn responses_text_only_in_output_item_done() {
    let (_m, gw) = start().await;
    let middle = vec![
        item_added(0, empty_message(0)),
        item_done(0, message_item(0, &[&format!("a {WORD} here")])),
    ];
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "item.done only",
        RESPONSES,
        &request(RESPONSES),
        events,
        Some(11),
        WORD,
    )
    .await;
}

#[tokio::test]
async fn responses_final_text_differs_from_the_deltas() {
    let (_m, gw) = start().await;
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, "an innocent answer", 5));
    middle.push(json!({"type":"response.output_text.done","output_index":0,"content_index":0,"text":format!("an innocent {WORD}"),"logprobs":[]}));
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "done differs",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        WORD,
    )
    .await;
}

#[tokio::test]
async fn responses_phrase_split_between_deltas_and_final_parts() {
    let (_m, gw) = start().await;
    // Part 0 streamed, part 1 only in the final response: one output_text to the SDK.
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, "the pipe", 3));
    let output = json!([message_item(0, &["the pipe", " bomb at last"])]);
    let events = responses_stream(&middle, Some(output));
    case(
        &gw,
        "delta|final part",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn responses_function_arguments_only_in_output_item_done() {
    let (_m, gw) = start().await;
    let call = |args: &str| json!({"type":"function_call","id":"fc_1","call_id":"call_1","name":"lookup","arguments":args,"status":"completed"});
    let middle = vec![
        item_added(0, call("")),
        item_done(0, call(&format!("{{\"q\":\"{WORD}\"}}"))),
    ];
    let events = responses_stream(&middle, None);
    case(
        &gw,
        "arguments in done",
        RESPONSES,
        &request(RESPONSES),
        events,
        None,
        WORD,
    )
    .await;
}

// --- Tool results whose text sits in `data`.

#[tokio::test]
async fn messages_web_fetch_page_in_a_text_source() {
    let (_m, gw) = start().await;
    let result = json!({"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_1","content":{"type":"web_fetch_result","url":"https://example.com/page","retrieved_at":"2025-01-01T00:00:00Z",
        "content":{"type":"document","title":"A page","source":{"type":"text","media_type":"text/plain","data":format!("the page says {WORD}")}}}});
    let mut blocks = vec![block_start(0, result), block_stop(0)];
    blocks.extend(text_block(1, "Here is the page.", 5));
    let events = messages_stream(&blocks);
    case(
        &gw,
        "web fetch data",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        WORD,
    )
    .await;
}

#[tokio::test]
async fn messages_base64_text_document_in_a_tool_result() {
    let (_m, gw) = start().await;
    // "how to build a pipe bomb", base64.
    let data = "aG93IHRvIGJ1aWxkIGEgcGlwZSBib21i";
    let result = json!({"type":"mcp_tool_result","tool_use_id":"mcptoolu_1","is_error":false,
        "content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":data}}]});
    let blocks = vec![block_start(0, result), block_stop(0)];
    let events = messages_stream(&blocks);
    case(
        &gw,
        "base64 text data",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        data,
    )
    .await;
}

// --- A prefill: the reply continues the request's last turn, and the client reads both as one.

#[tokio::test]
async fn messages_prefill_continued_by_the_reply() {
    let (_m, gw) = start().await;
    let mut body = request(MESSAGES);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role":"assistant","content":"Sure. Step one of the pipe"}));
    let events = messages_stream(&text_block(0, " bomb is to", 3));
    continuing_case(&gw, "prefill", MESSAGES, &body, events, "of the pipe").await;
}

#[tokio::test]
async fn chat_prefix_message_continued_by_the_reply() {
    let (_m, gw) = start().await;
    let mut body = request(CHAT);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role":"assistant","content":"Sure, the pipe","prefix":true}));
    let events = chat_stream(&content_deltas(" bomb is made like so", 3));
    continuing_case(&gw, "chat prefix", CHAT, &body, events, "the pipe").await;
}

#[tokio::test]
async fn completions_prompt_continued_by_the_completion() {
    let (_m, gw) = start().await;
    let body = json!({"model":"m","prompt":"Chapter one. He built a pipe","stream":true});
    let events = completions_stream(" bomb in the shed.", 2);
    continuing_case(&gw, "prompt", COMPLETIONS, &body, events, "a pipe").await;
}

// --- Other text a client shows.

#[tokio::test]
async fn chat_refusal_delta() {
    let (_m, gw) = start().await;
    let events = chat_stream(&[
        json!({"refusal":"I won't describe a pipe"}),
        json!({"refusal":" bomb."}),
    ]);
    case(
        &gw,
        "refusal",
        CHAT,
        &request(CHAT),
        events,
        Some(6),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_logprobs_tokens_without_content() {
    let (_m, gw) = start().await;
    let chunk = |tok: &str| {
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":{"content":""},"logprobs":{"content":[{"token":tok,"logprob":-0.1,"bytes":null,"top_logprobs":[]}]},"finish_reason":null}]})
    };
    let events = sse(&[chunk("a zor"), chunk("ble!")]) + "data: [DONE]\n\n";
    case(&gw, "logprobs", CHAT, &request(CHAT), events, None, "ble").await;
}

#[tokio::test]
async fn chat_audio_transcript_split_across_chunks() {
    let (_m, gw) = start().await;
    let events = chat_stream(&[
        json!({"audio":{"id":"audio_1","transcript":"the pi"}}),
        json!({"audio":{"transcript":"pe bomb"}}),
    ]);
    case(
        &gw,
        "transcript",
        CHAT,
        &request(CHAT),
        events,
        Some(3),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_delta_member_newer_than_the_gateway() {
    let (_m, gw) = start().await;
    let events = chat_stream(&[
        json!({"content":"See the source."}),
        json!({"annotations":[{"type":"url_citation","url_citation":{"url":"https://example.com","title":format!("All about the {WORD}")}}]}),
    ]);
    case(&gw, "annotations", CHAT, &request(CHAT), events, None, WORD).await;
}

#[tokio::test]
async fn chat_chunk_level_search_results() {
    let (_m, gw) = start().await;
    let chunk = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
        "search_results":[{"title":format!("The {WORD} handbook"),"url":"https://example.com"}],
        "choices":[{"index":0,"delta":{"content":"Found it."},"finish_reason":null}]});
    let events = sse(&[chunk]) + "data: [DONE]\n\n";
    case(&gw, "chunk-level", CHAT, &request(CHAT), events, None, WORD).await;
}

#[tokio::test]
async fn messages_error_event_message() {
    let (_m, gw) = start().await;
    let mut blocks = text_block(0, "Starting.", 3);
    blocks.push(json!({"type":"error","error":{"type":"overloaded_error","message":format!("the {WORD} failed")}}));
    let events = messages_stream(&blocks);
    case(
        &gw,
        "error event",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        WORD,
    )
    .await;
}

// --- SSE framing split and spelled in every way the spec allows.

#[tokio::test]
async fn chat_stream_in_one_byte_pieces() {
    let (_m, gw) = start().await;
    let events = chat_stream(&content_deltas("Grüße ☕ — the pipe bomb is here 🎉", 3));
    case(
        &gw,
        "1-byte pieces",
        CHAT,
        &request(CHAT),
        events,
        Some(1),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_stream_with_cr_line_endings_split_after_each_cr() {
    let (_m, gw) = start().await;
    let events = chat_stream(&content_deltas("the pipe bomb is here", 2)).replace('\n', "\r");
    // 2-byte pieces end many pieces on a CR whose line may or may not go on.
    case(
        &gw,
        "CR endings",
        CHAT,
        &request(CHAT),
        events,
        Some(2),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn responses_stream_with_crlf_split_between_cr_and_lf() {
    let (_m, gw) = start().await;
    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, "the pipe bomb is here", 2));
    let events = responses_stream(&middle, None).replace('\n', "\r\n");
    case(
        &gw,
        "CRLF",
        RESPONSES,
        &request(RESPONSES),
        events,
        Some(3),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_stream_with_a_byte_order_mark_before_the_first_event() {
    let (_m, gw) = start().await;
    let events = format!(
        "\u{FEFF}{}",
        messages_stream(&text_block(0, &format!("a {WORD} first"), 30))
    );
    case(
        &gw,
        "BOM",
        MESSAGES,
        &request(MESSAGES),
        events,
        Some(2),
        WORD,
    )
    .await;
}

#[tokio::test]
async fn chat_event_data_over_several_data_lines_with_comments_between() {
    let (_m, gw) = start().await;
    // The data lines join with a newline, which JSON reads as whitespace between its tokens.
    let events = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":\n: keep-alive\ndata:[{\"index\":0,\n\
         data: \"delta\":{\"content\":\"the pipe bomb\"}}]}\n\ndata: [DONE]\n\n"
        .to_string();
    case(
        &gw,
        "multi-line data",
        CHAT,
        &request(CHAT),
        events,
        Some(5),
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_phrase_spelled_in_json_escapes_split_inside_an_escape() {
    let (_m, gw) = start().await;
    let events = chat_stream(&[json!({"content":"the pipe"}), json!({"content":" bomb"})])
        .replace("pipe", "\\u0070ipe")
        .replace("bomb", "\\u0062\\u006fmb");
    case(
        &gw,
        "escapes",
        CHAT,
        &request(CHAT),
        events,
        Some(3),
        "\\u0062",
    )
    .await;
}

// --- Events that JSON parsers read differently: the stream is cut before them.

#[tokio::test]
async fn chat_delta_with_a_repeated_key() {
    let (_m, gw) = start().await;
    // First-wins parsers (gjson, in Go clients) show the first value; serde and the SDKs the last.
    let events = chat_stream(&[json!({"content":"Here: "}), json!({"content":"REPLACE"})]).replace(
        "\"content\":\"REPLACE\"",
        "\"content\":\"the pipe bomb\",\"content\":\"nothing\"",
    );
    case(
        &gw,
        "repeated key",
        CHAT,
        &request(CHAT),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn messages_event_type_given_twice() {
    let (_m, gw) = start().await;
    let events = messages_stream(&text_block(0, "REPLACE", 10)).replace(
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"REPLACE\"}}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a pipe bomb\"},\"type\":\"ping\"}",
    );
    assert!(events.contains("\"type\":\"ping\"}"), "the case is built");
    case(
        &gw,
        "type twice",
        MESSAGES,
        &request(MESSAGES),
        events,
        None,
        "bomb",
    )
    .await;
}

#[tokio::test]
async fn chat_delta_with_a_lone_surrogate() {
    let (_m, gw) = start().await;
    // JSON.parse and Python's json read this (the surrogate as is); serde refuses it.
    let events = chat_stream(&[json!({"content":"REPLACE"})])
        .replace("REPLACE", "the \\u0070ipe \\u0062omb \\ud800");
    case(
        &gw,
        "lone surrogate",
        CHAT,
        &request(CHAT),
        events,
        None,
        "\\u0062omb",
    )
    .await;
}

// --- The harmless variants: the same shapes with nothing blocked go through byte for byte.

/// Streams `events` and asserts the client got exactly the upstream's bytes.
async fn passes(
    gw: &GatewayProc,
    name: &str,
    path: &str,
    body: &Value,
    events: String,
    chunk: Option<usize>,
) {
    let raw = stream(gw, path, body, &events, chunk).await;
    assert!(
        raw == events,
        "{name}: the stream was changed\n--- sent ---\n{events}\n--- received ---\n{raw}"
    );
}

#[tokio::test]
async fn harmless_variants_stream_through_unchanged() {
    let (_m, gw) = start().await;
    let calm =
        |pad: &str, n: usize| format!("{}so the pipe {}dream goes here.", filler(), pad.repeat(n));
    passes(
        &gw,
        "chat zwsp",
        CHAT,
        &request(CHAT),
        chat_stream(&content_deltas(&calm("\u{200B}", 250), 1)),
        None,
    )
    .await;
    passes(
        &gw,
        "chat 1-byte",
        CHAT,
        &request(CHAT),
        chat_stream(&content_deltas("Grüße ☕ — the pipe dream 🎉", 3)),
        Some(1),
    )
    .await;
    passes(
        &gw,
        "chat CR",
        CHAT,
        &request(CHAT),
        chat_stream(&content_deltas("the pipe dream", 2)).replace('\n', "\r"),
        Some(2),
    )
    .await;
    passes(
        &gw,
        "completions",
        COMPLETIONS,
        &request(COMPLETIONS),
        completions_stream(&calm("\u{200B}", 300), 2),
        Some(3),
    )
    .await;

    let mut blocks = text_block(0, &format!("{}here is the pipe", filler()), 5);
    blocks.extend(tool_use_block(1));
    blocks.extend(text_block(2, " dream, as promised.", 5));
    passes(
        &gw,
        "text|tool|text",
        MESSAGES,
        &request(MESSAGES),
        messages_stream(&blocks),
        None,
    )
    .await;
    let bom = format!(
        "\u{FEFF}{}",
        messages_stream(&text_block(0, "a zebra first", 30))
    );
    passes(&gw, "BOM", MESSAGES, &request(MESSAGES), bom, Some(2)).await;

    let mut middle = vec![item_added(0, empty_message(0)), part_added(0, 0, "")];
    middle.extend(text_deltas(0, 0, &format!("{}the pipe", filler()), 6));
    middle.push(part_added(0, 1, ""));
    middle.extend(text_deltas(0, 1, " dream follows", 6));
    let output = json!([message_item(
        0,
        &[&format!("{}the pipe", filler()), " dream follows"]
    )]);
    let events = responses_stream(&middle, Some(output)).replace('\n', "\r\n");
    passes(
        &gw,
        "part|part|completed",
        RESPONSES,
        &request(RESPONSES),
        events,
        Some(9),
    )
    .await;
    let only_final = responses_stream(
        &[item_added(0, empty_message(0))],
        Some(json!([message_item(0, &["a zebra at the end"])])),
    );
    passes(
        &gw,
        "completed only",
        RESPONSES,
        &request(RESPONSES),
        only_final,
        None,
    )
    .await;

    let mut body = request(MESSAGES);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role":"assistant","content":"Sure. Step one of the pipe"}));
    passes(
        &gw,
        "prefill",
        MESSAGES,
        &body,
        messages_stream(&text_block(0, " dream is to", 3)),
        Some(4),
    )
    .await;
}
