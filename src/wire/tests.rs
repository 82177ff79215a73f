//! The reply side of every API through the registry: complete replies, blocked replies, streams
//! and their endings.

use super::sse::SseParser;
use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CHAT: Api = super::openai_chat::API;
const COMPLETIONS: Api = super::completions::API;
const RESPONSES: Api = super::responses::API;
const MESSAGES: Api = super::anthropic::API;

#[test]
fn extracts_every_api_reply() {
    let chat = json!({"choices":[{"index":0,"message":{"role":"assistant","content":"hello","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}]});
    let t: Vec<String> = CHAT
        .extract_reply(&chat)
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(t, vec!["hello", "f({\"a\":1})"]);
    let resp = json!({"output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]},{"type":"function_call","name":"g","arguments":"x"}]});
    let t: Vec<String> = RESPONSES
        .extract_reply(&resp)
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(t, vec!["hi", "g(x)"]);
    let msg = json!({"content":[{"type":"text","text":"yo"},{"type":"tool_use","name":"h","input":{"q":"z"}}]});
    let t: Vec<String> = MESSAGES
        .extract_reply(&msg)
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(t, vec!["yo", "h {\"q\":\"z\"}"]);
    let c = json!({"choices":[{"text":"abc"}]});
    assert_eq!(COMPLETIONS.extract_reply(&c)[0].text, "abc");
}

fn texts_of(api: Api, v: &Value) -> Vec<(String, Source)> {
    api.extract_reply(v)
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
        texts_of(CHAT, &chat),
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
    let t: Vec<String> = texts_of(RESPONSES, &resp)
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
        texts_of(MESSAGES, &msg),
        vec![
            ("q {\"x\":\"y\"}".into(), Source::ToolCall),
            ("page".into(), Source::ToolResult),
            ("u".into(), Source::ToolResult),
        ]
    );
}

fn stream_text(api: Api, stream: &str) -> BTreeMap<String, String> {
    let mut t = api.stream();
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
    let t = stream_text(CHAT, chat);
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
    let t = stream_text(RESPONSES, resp);
    assert_eq!(t["reasoning"], "think");
    assert_eq!(t["output[1].tool_call.name"], "lookup");
    assert_eq!(t["output[1].tool_call.arguments"], "{\"q\":1}");
    assert_eq!(t["output[1].tool_call.output"], " result");
    assert_eq!(t.len(), 4, "audio data is not text: {t:?}");

    let msg = concat!(
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"run\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"c\\\":2}\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"web_search_tool_result\",\"tool_use_id\":\"t\",\"content\":[{\"type\":\"web_search_result\",\"title\":\"found\"}]}}\n\n",
    );
    let t = stream_text(MESSAGES, msg);
    assert_eq!(t["content[0].tool_call"], "run{\"c\":2}");
    assert_eq!(t["content[1].tool_result"], "found");
    assert_eq!(source_of_key("content[1].tool_result"), Source::ToolResult);
}

/// Events as `(event name, JSON data)`, written as an SSE stream.
fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// What the client reads as one text is one key: an Anthropic message's text blocks across a
/// tool use, and only their text (another field of a delta cannot split the text it is not shown
/// in).
#[test]
fn anthropic_text_blocks_are_one_text() {
    let msg = sse(&[
        (
            "message_start",
            json!({"type":"message_start","message":{"id":"m","content":[{"type":"text","text":"Start. "}]}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the pipe ","thinking":"x"}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"quoted"}}}),
        ),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"calc","input":{}}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}),
        ),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":1}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":2,"content_block":{"type":"text","text":"bo"}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"mb"}}),
        ),
        (
            "error",
            json!({"type":"error","error":{"type":"overloaded_error","message":"said late"}}),
        ),
    ]);
    let t = stream_text(MESSAGES, &msg);
    assert_eq!(t["text"], "Start. the pipe bomb");
    assert_eq!(t["content[0]"], "x");
    assert_eq!(t["content[0].citations"], "quoted");
    assert_eq!(t["content[1].tool_call"], "calc{}");
    assert_eq!(t["error"], "said late");
}

/// A web fetch returns the page as a text source, and a document may be base64 of a text type:
/// their `data` is what the client shows.
#[test]
fn text_sources_in_tool_results_are_read() {
    let page = json!({"type":"web_fetch_tool_result","tool_use_id":"t","content":{"type":"web_fetch_result","url":"u","content":{"type":"document","source":{"type":"text","media_type":"text/plain","data":"page text"}}}});
    let b64 = json!({"type":"mcp_tool_result","tool_use_id":"t","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain; charset=utf-8","data":"aGlkZGVu\nIHRleHQ="}},{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"aGlkZGVu"}}]});
    let msg = sse(&[
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":page}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":b64}),
        ),
    ]);
    let t = stream_text(MESSAGES, &msg);
    assert_eq!(t["content[0].tool_result"], "upage text");
    assert_eq!(t["content[1].tool_result"], "hidden text");
    let plain = MESSAGES.extract_reply(&json!({"content": [page]}));
    assert!(plain.iter().any(|s| s.text == "page text"), "{plain:?}");
}

/// Responses: `output_text` parts are one text across parts and messages, and text sent only
/// whole (no deltas) is read once, however many events repeat it.
#[test]
fn responses_output_text_is_one_text_and_whole_values_are_read_once() {
    let item = |oi: u64, text: &str| json!({"type":"message","id":format!("m{oi}"),"role":"assistant","content":[{"type":"output_text","text":text,"annotations":[]}]});
    let stream = sse(&[
        (
            "response.created",
            json!({"type":"response.created","response":{"id":"r","output":[]}}),
        ),
        (
            "response.output_item.added",
            json!({"type":"response.output_item.added","output_index":0,"item":{"type":"message","id":"m0","role":"assistant","content":[]}}),
        ),
        (
            "response.content_part.added",
            json!({"type":"response.content_part.added","output_index":0,"content_index":0,"part":{"type":"output_text","text":"the "}}),
        ),
        (
            "response.output_text.delta",
            json!({"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"pipe ","logprobs":[{"token":"pipe"},{"token":" "}]}),
        ),
        (
            "response.output_text.done",
            json!({"type":"response.output_text.done","output_index":0,"content_index":0,"text":"the pipe "}),
        ),
        (
            "response.output_item.done",
            json!({"type":"response.output_item.done","output_index":0,"item":item(0, "the pipe ")}),
        ),
        // No deltas for this one: its text arrives whole, four times.
        (
            "response.output_item.added",
            json!({"type":"response.output_item.added","output_index":1,"item":{"type":"message","id":"m1","role":"assistant","content":[]}}),
        ),
        (
            "response.output_text.done",
            json!({"type":"response.output_text.done","output_index":1,"content_index":0,"text":"bomb"}),
        ),
        (
            "response.content_part.done",
            json!({"type":"response.content_part.done","output_index":1,"content_index":0,"part":{"type":"output_text","text":"bomb"}}),
        ),
        (
            "response.output_item.done",
            json!({"type":"response.output_item.done","output_index":1,"item":item(1, "bomb")}),
        ),
        (
            "response.completed",
            json!({"type":"response.completed","response":{"id":"r","output":[item(0, "the pipe "), item(1, "bomb"), item(2, "only here")]}}),
        ),
    ]);
    let t = stream_text(RESPONSES, &stream);
    assert_eq!(t["output_text"], "the pipe bombonly here");
    assert_eq!(t["output_text.logprobs"], "pipe ");
    assert_eq!(t.len(), 2, "{t:?}");

    // A whole value that differs from what was streamed stands in for it: judged on its own.
    let stream = sse(&[
        (
            "response.output_text.delta",
            json!({"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"harmless"}),
        ),
        (
            "response.output_text.done",
            json!({"type":"response.output_text.done","output_index":0,"content_index":0,"text":"a zorble"}),
        ),
        (
            "response.function_call_arguments.delta",
            json!({"type":"response.function_call_arguments.delta","output_index":1,"delta":"{\"a\""}),
        ),
        (
            "response.completed",
            json!({"type":"response.completed","response":{"output":[{"type":"message","content":[{"type":"output_text","text":"a zorble"}]},{"type":"function_call","name":"f","arguments":"{\"a\":1}"}]}}),
        ),
    ]);
    let t = stream_text(RESPONSES, &stream);
    assert_eq!(t["output_text"], "harmless");
    assert_eq!(t["output_text.final"], "a zorble");
    assert_eq!(t["output[1].tool_call.arguments"], "{\"a\":1}");
    assert_eq!(t["output[1].tool_call.name"], "f");
}

/// Chat: whatever else a chunk carries for its client is read, each under its own key: members
/// newer than this code, the tokens of logprobs, members compatible servers add to the chunk
/// (judged once while they repeat unchanged).
#[test]
fn chat_chunks_are_read_beyond_the_known_delta_members() {
    let chunk = |delta: Value, extra: Value| {
        let mut c = json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","obfuscation":"zzz",
            "choices":[{"index":0,"delta":delta,"logprobs":{"content":[{"token":"pi","logprob":0.0},{"token":"pe","logprob":0.0}]},"finish_reason":null}]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        format!("data: {c}\n\n")
    };
    let stream = [
        chunk(
            json!({"role":"assistant","content":"pipe"}),
            json!({"citations":["c1"]}),
        ),
        chunk(
            json!({"annotations":[{"type":"url_citation","url_citation":{"title":"t1"}}]}),
            json!({"citations":["c1"]}),
        ),
        chunk(
            json!({"audio":{"id":"a","data":"QUJD","transcript":"said"}}),
            json!({"citations":["c1","c2"]}),
        ),
    ]
    .concat();
    let t = stream_text(CHAT, &stream);
    assert_eq!(t["choices[0].content"], "pipe");
    assert_eq!(t["choices[0].annotations"], "t1");
    assert_eq!(t["choices[0].audio"], "said");
    assert_eq!(t["choices[0].logprobs.content"], "pipepipepipe");
    assert_eq!(t["citations"], "c1c1c2");
    assert_eq!(t.len(), 5, "{t:?}");
    let c = "data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"logprobs\":{\"tokens\":[\"a\"]},\"message\":{\"content\":\"b\"}}]}\n\n";
    let t = stream_text(COMPLETIONS, c);
    assert_eq!(t["choices[0].text"], "a");
    assert_eq!(t["choices[0].logprobs"], "a");
    assert_eq!(t["choices[0].message"], "b");
}

/// The text a reply continues comes before the first text of the keys that continue it.
#[test]
fn a_reply_continues_the_request_s_last_turn() {
    let prefill = json!({"model":"m","max_tokens":9,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"the "},{"type":"text","text":"pipe"}]}]});
    assert_eq!(
        MESSAGES.continued_text(prefill.to_string().as_bytes()),
        Some("the pipe".into())
    );
    let asked =
        json!({"model":"m","max_tokens":9,"messages":[{"role":"user","content":"the pipe"}]});
    assert_eq!(MESSAGES.continued_text(asked.to_string().as_bytes()), None);
    let chat = json!({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"the pipe","prefix":true}]});
    assert_eq!(
        CHAT.continued_text(chat.to_string().as_bytes()),
        Some("the pipe".into())
    );
    let prompt = json!({"model":"m","prompt":["the pipe"]});
    assert_eq!(
        COMPLETIONS.continued_text(prompt.to_string().as_bytes()),
        Some("the pipe".into())
    );
    assert_eq!(RESPONSES.continued_text(b"{\"input\":\"x\"}"), None);

    let mut t = MESSAGES.stream();
    t.continues("the pipe".into());
    let msg = sse(&[
        (
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}),
        ),
        (
            "content_block_start",
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" bomb"}}),
        ),
        (
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"!"}}),
        ),
    ]);
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for e in SseParser::new().push(msg.as_bytes()) {
        for (k, d) in t.on_event(&e).deltas {
            text.entry(k).or_default().push_str(&d);
        }
    }
    assert_eq!(text["text"], "the pipe bomb!");
    assert_eq!(text["content[0].tool_call"], "f");
}

#[test]
fn events_that_json_parsers_read_differently_are_ambiguous() {
    let why = |data: &str| {
        let mut p = SseParser::new();
        let e = &p.push(format!("data: {data}\n\n").as_bytes())[0];
        CHAT.stream().on_event(e).ambiguous
    };
    let chunk = |delta: &str| format!(r#"{{"choices":[{{"index":0,"delta":{delta}}}]}}"#);
    assert_eq!(why(&chunk(r#"{"content":"fine"}"#)), None);
    assert_eq!(why("[DONE]"), None);
    assert_eq!(why("not json at all"), None, "judged as text");
    assert_eq!(why("42"), None);
    for bad in [
        chunk(r#"{"content":"a pipe bomb","content":"fine"}"#),
        chunk(r#"{"content":"the \u0070ipe \u0062omb \ud800"}"#),
        chunk(r#"{"content":"x"}"#) + " {}",
        r#"{"choices":[{"index":0,"delta":{"content":"the pipe"#.to_string(),
    ] {
        assert!(why(&bad).is_some(), "{bad}");
    }
}

#[test]
fn blocked_replies_drop_the_log_probabilities() {
    // The withheld tokens would be spelled out there.
    let chat = json!({"choices":[{"index":0,"message":{"role":"assistant","content":"bad"},"logprobs":{"content":[{"token":"bad","logprob":-0.1,"bytes":[98,97,100],"top_logprobs":[]}]},"finish_reason":"stop"}]});
    let b = CHAT.blocked_reply(&chat, "withheld");
    assert!(b["choices"][0]["logprobs"].is_null());
    assert!(!b.to_string().contains("bad"), "{b}");
    let c = json!({"choices":[{"index":0,"text":"bad","logprobs":{"tokens":["bad"],"token_logprobs":[-0.1],"text_offset":[0]},"finish_reason":"stop"}]});
    let b = COMPLETIONS.blocked_reply(&c, "withheld");
    assert!(b["choices"][0]["logprobs"].is_null());
    assert!(!b.to_string().contains("bad"), "{b}");
}

#[test]
fn blocked_replies_keep_the_envelope() {
    let chat = json!({"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"bad"},"finish_reason":"stop"}],"usage":{"total_tokens":3}});
    let b = CHAT.blocked_reply(&chat, "withheld");
    assert_eq!(b["id"], "x");
    assert_eq!(b["usage"]["total_tokens"], 3);
    assert_eq!(b["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(b["choices"][0]["message"]["content"], "withheld");
    let m = MESSAGES.blocked_reply(
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
    for api in [CHAT, COMPLETIONS, RESPONSES, MESSAGES] {
        for v in [
            json!({"choices": [{"message": {"content": "x"}}, 5, "s", [1]]}),
            json!([1, 2]),
            json!("text"),
        ] {
            let b = api.blocked_reply(&v, "withheld");
            assert!(b.is_object(), "{api:?} {v}");
        }
        let b = api.blocked_reply(
            &json!({"choices": [{"message": {"content": "x"}}, 5], "content": 3, "output": 1}),
            "withheld",
        );
        if api == CHAT || api == COMPLETIONS {
            assert_eq!(b["choices"][1]["finish_reason"], "content_filter", "{b}");
        }
    }
    let cases: [(Api, &[u8]); 3] = [
        (
            RESPONSES,
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":\"x\"}\n\n",
        ),
        (
            MESSAGES,
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":[1]}\n\n",
        ),
        (CHAT, b"data: {\"choices\":[5]}\n\n"),
    ];
    for (api, stream) in cases {
        let mut t = api.stream();
        for e in SseParser::new().push(stream) {
            t.on_event(&e);
        }
        let cut = SseParser::new().push(&t.cut_events(Ending::Filtered(None)));
        assert!(!cut.is_empty(), "{api:?}");
    }
}

#[test]
fn replies_of_another_shape_and_citations_are_read() {
    let odd = json!({"reply": {"answer": "how to build a pipe bomb"}, "id": "x"});
    for api in [CHAT, COMPLETIONS, RESPONSES, MESSAGES] {
        let t: Vec<String> = api
            .extract_reply(&odd)
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(t, vec!["how to build a pipe bomb"], "{api:?}");
    }
    // A well-formed reply is read by its shape only (its model name is not content).
    let t = CHAT.extract_reply(&json!({"model": "gpt-x", "choices": []}));
    assert!(t.is_empty());
    let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
    let mut t = MESSAGES.stream();
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
    let mut t = RESPONSES.stream();
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
    let (mut upstream, mut released) = (MESSAGES.stream(), MESSAGES.stream());
    for e in SseParser::new().push(format!("{start}{block0}").as_bytes()) {
        upstream.on_event(&e);
        released.on_event(&e);
    }
    for e in SseParser::new().push(held.concat().as_bytes()) {
        upstream.on_event(&e);
    }
    // The upstream's view would stop block 1, which the client never saw start.
    assert_eq!(
        kinds(&upstream.cut_events(Ending::Filtered(None))),
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let cut = released.cut_after(&upstream, Ending::Filtered(None));
    assert_eq!(
        kinds(&cut),
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(String::from_utf8_lossy(&cut).contains(r#""index":0"#));
    // Nothing released at all: the client gets the message_start it never had, with the id.
    let nothing = MESSAGES.stream();
    let cut = nothing.cut_after(&upstream, Ending::Filtered(None));
    assert_eq!(
        kinds(&cut),
        ["message_start", "message_delta", "message_stop"]
    );
    assert!(String::from_utf8_lossy(&cut).contains(r#""id":"m1""#));
    // Responses: response.created first, then the ending, sequence numbers in order.
    let mut up = RESPONSES.stream();
    for e in SseParser::new().push(
        ev("response.created", r#"{"type":"response.created","sequence_number":0,"response":{"id":"r1","object":"response","status":"in_progress","output":[]}}"#).as_bytes(),
    ) {
        up.on_event(&e);
    }
    let cut = RESPONSES.stream().cut_after(&up, Ending::Filtered(None));
    let evs = SseParser::new().push(&cut);
    assert_eq!(
        evs.iter()
            .map(|e| e.event.clone().unwrap())
            .collect::<Vec<_>>(),
        ["response.created", "response.incomplete"]
    );
    let seq = |i: usize| -> u64 {
        serde_json::from_str::<Value>(evs[i].data.as_deref().unwrap()).unwrap()["sequence_number"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((seq(0), seq(1)), (1, 2));
}

#[test]
fn tracks_anthropic_stream_and_cuts_cleanly() {
    let mut p = SseParser::new();
    let mut t = MESSAGES.stream();
    let evs = p.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
    let texts: Vec<EventText> = evs.iter().map(|e| t.on_event(e)).collect();
    assert_eq!(
        texts[2].deltas,
        vec![("text".to_string(), "Hi".to_string())]
    );
    let cut = String::from_utf8(t.cut_events(Ending::Filtered(None))).unwrap();
    let evs = SseParser::new().push(cut.as_bytes());
    let kinds: Vec<_> = evs.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(
        kinds,
        vec!["content_block_stop", "message_delta", "message_stop"]
    );
}

#[test]
fn parallel_tool_calls_and_usage_chunks() {
    let mut t = CHAT.stream();
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
    let mut t = CHAT.stream();
    let mut p = SseParser::new();
    for e in p.push(b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n") {
        t.on_event(&e);
    }
    let cut = SseParser::new().push(&t.cut_events(Ending::Filtered(None)));
    assert_eq!(cut.len(), 3);
    let c0: Value = serde_json::from_str(cut[0].data.as_deref().unwrap()).unwrap();
    assert_eq!(c0["id"], "c1");
    assert_eq!(c0["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(cut[2].data.as_deref(), Some("[DONE]"));
}

#[test]
fn a_text_reply_is_judged_as_a_stream_or_whole() {
    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
    let segs = CHAT.extract_text_reply(sse);
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].text, "hello");
    assert_eq!(segs[0].source, Source::Assistant);
    // Prose with a data: line in it is prose: all of it is read.
    let prose = "Sure.\ndata: x\nthe rest of the answer";
    let segs = CHAT.extract_text_reply(prose);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].text, prose);
    assert_eq!(segs[0].location, "body");
    assert!(MESSAGES.extract_text_reply("").is_empty());
}

#[test]
fn api_names_round_trip() {
    for &api in Api::all() {
        assert_eq!(Api::from_name(api.name()), Some(api));
        assert!(api.default_path().starts_with("/v1/"));
    }
    assert_eq!(
        Api::names(),
        [
            "openai-chat",
            "openai-completions",
            "openai-responses",
            "anthropic-messages"
        ]
    );
    assert_eq!(Api::from_name("openai-chat"), Some(openai_chat::API));
    assert_eq!(Api::from_name("anthropic-messages"), Some(anthropic::API));
    assert_eq!(Api::from_name("OpenAI-Chat"), None);
    assert_eq!(Api::from_name(""), None);
    assert_eq!(responses::API.default_path(), "/v1/responses");
    assert_eq!(completions::API.default_path(), "/v1/completions");
    assert_ne!(openai_chat::API, completions::API);
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
    for api in Api::all() {
        let err = api.parse_request(b"[1,2]").unwrap_err();
        assert_eq!(err.message, "request body must be a JSON object");
        let err = api.parse_request(b"{\"a\":1,\"a\":2}").unwrap_err();
        assert!(err.message.contains("duplicate key"), "{}", err.message);
    }
}

/// Operator text as it may come: quotes, backslashes, line breaks, right-to-left and CJK script.
const REFUSAL: &str =
    "Blocked: \"quoted\" \\ path\nnext line\t— مرفوض بموجب السياسة 拒否されました 🚫";

/// A stream per API that has released some text ("Hello") and left a block open.
fn opened(api: Api) -> String {
    let chunk = |v: Value| format!("data: {v}\n\n");
    if api == CHAT {
        chunk(
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]}),
        )
    } else if api == COMPLETIONS {
        chunk(
            json!({"id": "c1", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": "Hello"}]}),
        )
    } else if api == RESPONSES {
        sse(&[
            (
                "response.created",
                json!({"type": "response.created", "sequence_number": 0, "response": {"id": "r1", "object": "response", "status": "in_progress", "output": []}}),
            ),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"type": "message", "id": "m1", "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            (
                "response.content_part.added",
                json!({"type": "response.content_part.added", "sequence_number": 2, "item_id": "m1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
            (
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "m1", "output_index": 0, "content_index": 0, "delta": "Hello"}),
            ),
        ])
    } else {
        sse(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "content": []}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ),
        ])
    }
}

/// A filtered ending with a refusal carries it where each API's readers collect the reply's text,
/// after what the client already had, and the stream stays well-formed for the API's tracker.
#[test]
fn a_refusal_is_the_last_text_of_a_filtered_stream() {
    for api in [CHAT, COMPLETIONS, RESPONSES, MESSAGES] {
        let start = opened(api);
        let mut t = api.stream();
        for e in SseParser::new().push(start.as_bytes()) {
            t.on_event(&e);
        }
        let ending = t.cut_after(&t.clone(), Ending::Filtered(Some(REFUSAL)));
        let ending = String::from_utf8(ending).unwrap();
        let text = stream_text(api, &format!("{start}{ending}"));
        let key = match api {
            a if a == CHAT => "choices[0].content",
            a if a == COMPLETIONS => "choices[0].text",
            a if a == RESPONSES => "output_text",
            _ => "text",
        };
        assert_eq!(text[key], format!("Hello{REFUSAL}"), "{api:?}: {text:?}");
        // Without a refusal, the filtered ending adds no text.
        let bare = String::from_utf8(t.cut_events(Ending::Filtered(None))).unwrap();
        assert_eq!(
            stream_text(api, &format!("{start}{bare}"))[key],
            "Hello",
            "{api:?}"
        );
        let events = SseParser::new().push(ending.as_bytes());
        let last = events.last().unwrap();
        match api {
            a if a == CHAT || a == COMPLETIONS => {
                assert_eq!(last.data.as_deref(), Some("[DONE]"));
                let v: Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
                assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
                assert_eq!(v["id"], "c1");
            }
            a if a == RESPONSES => {
                let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
                assert_eq!(
                    names,
                    [
                        "response.output_item.added",
                        "response.content_part.added",
                        "response.output_text.delta",
                        "response.output_text.done",
                        "response.content_part.done",
                        "response.output_item.done",
                        "response.incomplete"
                    ]
                );
                let data: Vec<Value> = events
                    .iter()
                    .map(|e| serde_json::from_str(e.data.as_deref().unwrap()).unwrap())
                    .collect();
                // A new item after the one the client has, numbered on from the upstream's.
                assert_eq!(data[0]["output_index"], 1);
                let seqs: Vec<u64> = data
                    .iter()
                    .map(|d| d["sequence_number"].as_u64().unwrap())
                    .collect();
                assert_eq!(seqs, (4..11).collect::<Vec<u64>>());
                let done = &data[6]["response"];
                assert_eq!(done["status"], "incomplete");
                assert_eq!(done["incomplete_details"]["reason"], "content_filter");
                assert_eq!(done["output"][0]["content"][0]["text"], REFUSAL);
            }
            _ => {
                let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
                assert_eq!(
                    names,
                    [
                        "content_block_stop",
                        "content_block_start",
                        "content_block_delta",
                        "content_block_stop",
                        "message_delta",
                        "message_stop"
                    ]
                );
                // Block 0 is closed and the refusal has a block of its own.
                let index = |i: usize| -> Value {
                    serde_json::from_str::<Value>(events[i].data.as_deref().unwrap()).unwrap()
                        ["index"]
                        .clone()
                };
                assert_eq!(
                    [index(0), index(1), index(2), index(3)],
                    [json!(0), json!(1), json!(1), json!(1)]
                );
                assert!(events[4].data.as_deref().unwrap().contains("\"refusal\""));
            }
        }
    }
}

/// An error ending carries the refusal as the error's message, escaped as JSON.
#[test]
fn a_refusal_is_the_message_of_an_error_ending() {
    for api in [CHAT, COMPLETIONS, RESPONSES, MESSAGES] {
        let t = api.stream();
        let ending = t.cut_events(Ending::Error(REFUSAL));
        let events = SseParser::new().push(&ending);
        let v: Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
        let message = if api == RESPONSES {
            &v["message"]
        } else {
            &v["error"]["message"]
        };
        assert_eq!(message, REFUSAL, "{api:?}: {v}");
        // The line break is escaped: a raw one would end the event's data line.
        assert_eq!(
            events.len(),
            if api == CHAT || api == COMPLETIONS {
                2
            } else {
                1
            }
        );
    }
}

/// A blocked reply and an error body carry the refusal text as given.
#[test]
fn a_refusal_survives_the_reply_and_error_shapes() {
    let reply = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}], "content": [], "output": []});
    for api in [CHAT, COMPLETIONS, RESPONSES, MESSAGES] {
        let b = api.blocked_reply(&reply, REFUSAL);
        let text: Vec<String> = api.extract_reply(&b).into_iter().map(|s| s.text).collect();
        assert_eq!(text, [REFUSAL], "{api:?}: {b}");
        let kind = ErrorKind::PolicyViolation {
            policy: "p".into(),
            code: None,
        };
        let v: Value = serde_json::from_slice(&api.error_body(&kind, REFUSAL)).unwrap();
        assert_eq!(v["error"]["message"], REFUSAL, "{api:?}");
    }
}
