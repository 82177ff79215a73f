//! Restore in a streamed reply: the placeholders the request made are put back in each event's
//! text for the client. A placeholder the model streamed in pieces (`[EMA` | `IL_1]`) is caught by
//! holding back the end of a delta that may start one until the next delta of the same stream key
//! decides it; held text is sent before any event that is not a text delta (a block's end, the
//! final chunk, `[DONE]`) and at the end of the stream. Which field holds delta text is each API's
//! own knowledge (`Api::delta_texts`).

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::placeholder::Placeholders;
use crate::wire::sse::{SseEvent, SseParser};
use crate::wire::Api;

/// Held text of one stream key, with the event it came in: the template of the event that sends
/// it if no later delta takes it along.
#[derive(Debug)]
struct Held {
    text: String,
    event: Option<String>,
    template: Value,
}

#[derive(Debug)]
pub struct StreamRestore {
    api: Api,
    placeholders: Arc<Placeholders>,
    parser: SseParser,
    held: BTreeMap<String, Held>,
}

impl StreamRestore {
    pub fn new(api: Api, placeholders: Arc<Placeholders>) -> StreamRestore {
        StreamRestore {
            api,
            placeholders,
            parser: SseParser::new(),
            held: BTreeMap::new(),
        }
    }

    /// The client's bytes for the next piece of the stream (complete events only; the rest waits
    /// in the parser).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        for ev in self.parser.push(chunk) {
            self.event(ev, &mut out);
        }
        out.freeze()
    }

    /// What is still held at the end of the stream: held text, then any incomplete event.
    pub fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.flush(&mut out);
        out.extend_from_slice(&self.parser.take_buffered());
        out.freeze()
    }

    fn event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        let data = ev.data.as_deref().unwrap_or("");
        if self.held.is_empty() && !self.placeholders.may_start_in(data) {
            out.extend_from_slice(&ev.raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            // `[DONE]`, a comment, text: the end of what any delta continues.
            self.flush(out);
            out.extend_from_slice(&ev.raw);
            return;
        };
        let p = self.placeholders.clone();
        let mut kept = Vec::new();
        {
            let deltas = self.api.delta_texts(&mut v);
            if deltas.is_empty() {
                self.flush(out);
            }
            for (key, text) in deltas {
                let mut whole = self.held.remove(&key).map(|h| h.text).unwrap_or_default();
                whole.push_str(text);
                let cut = p.undecided_tail(&whole);
                let tail = whole.split_off(cut);
                *text = if key.ends_with(crate::wire::JSON_TEXT) {
                    p.restore_escaped(&whole).into_owned()
                } else {
                    p.restore(&whole).into_owned()
                };
                if !tail.is_empty() {
                    kept.push((key, tail));
                }
            }
        }
        // Whole texts (a part's `done`, the final response, a block's start) are restored as
        // they are.
        p.restore_value(&mut v);
        for (key, text) in kept {
            let held = Held {
                text,
                event: ev.event.clone(),
                template: v.clone(),
            };
            self.held.insert(key, held);
        }
        write_event(out, ev.event.as_deref(), &v);
    }

    /// Sends every held text, each in a copy of the event it came in with that text as its only
    /// delta.
    fn flush(&mut self, out: &mut BytesMut) {
        for (key, held) in std::mem::take(&mut self.held) {
            let mut v = held.template;
            for (k, text) in self.api.delta_texts(&mut v) {
                if k == key {
                    text.clone_from(&held.text);
                } else {
                    text.clear();
                }
            }
            write_event(out, held.event.as_deref(), &v);
        }
    }
}

fn write_event(out: &mut BytesMut, event: Option<&str>, data: &Value) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Detectors, Kind};
    use serde_json::json;

    // Whatever the detectors grow keeps its default.
    #[allow(clippy::needless_update)]
    fn placeholders() -> Arc<Placeholders> {
        let mut p = Placeholders::new();
        let d = Detectors {
            kinds: vec![Kind::Email],
            custom: vec![("Q".into(), regex::Regex::new(r#"q"\S*"#).unwrap())],
            ..Default::default()
        };
        p.redact(&d, r#"me@corp.example q"\z"#).unwrap();
        Arc::new(p)
    }

    fn chat_event(text: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})
        )
    }

    /// The client's text from a chat stream.
    fn chat_text(bytes: &[u8]) -> String {
        let mut text = String::new();
        for ev in SseParser::new().push(bytes) {
            let Ok(v) = serde_json::from_str::<Value>(ev.data.as_deref().unwrap_or("")) else {
                continue;
            };
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
        text
    }

    #[test]
    fn a_placeholder_split_anywhere_is_restored() {
        let whole = "write to [EMAIL_1] now";
        for cut in 0..=whole.len() {
            let mut r = StreamRestore::new(Api::openai_chat(), placeholders());
            let mut out = Vec::new();
            out.extend_from_slice(&r.push(chat_event(&whole[..cut]).as_bytes()));
            out.extend_from_slice(&r.push(chat_event(&whole[cut..]).as_bytes()));
            let end =
                json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            out.extend_from_slice(&r.push(format!("data: {end}\n\ndata: [DONE]\n\n").as_bytes()));
            out.extend_from_slice(&r.finish());
            assert_eq!(
                chat_text(&out),
                "write to me@corp.example now",
                "cut at {cut}"
            );
            let s = String::from_utf8(out).unwrap();
            assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
        }
    }

    /// Tool-call arguments stream as JSON text: an original goes back JSON-escaped, so the
    /// client's assembled arguments still parse, wherever the placeholder was split. One case
    /// per API that streams them.
    #[test]
    fn streamed_tool_arguments_get_their_values_back_escaped() {
        let args = r#"{"to": "[EMAIL_1]", "ref": "[Q_1]"}"#;
        let want = json!({"to": "me@corp.example", "ref": r#"q"\z"#});
        type Event = fn(&str) -> (Option<&'static str>, Value);
        let chat: Event = |a| {
            (
                None,
                json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]}),
            )
        };
        let claude: Event = |a| {
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": a}}),
            )
        };
        let responses: Event = |a| {
            (
                Some("response.function_call_arguments.delta"),
                json!({"type":
                "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_1",
                "delta": a}),
            )
        };
        type Read = fn(&Value) -> Option<&str>;
        let cases: [(Api, Event, Read); 3] = [
            (Api::openai_chat(), chat, |v| {
                v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            }),
            (Api::from_name("anthropic-messages").unwrap(), claude, |v| {
                v["delta"]["partial_json"].as_str()
            }),
            (
                Api::from_name("openai-responses").unwrap(),
                responses,
                |v| v["delta"].as_str(),
            ),
        ];
        for (api, event, read) in cases {
            for cut in 0..=args.len() {
                let mut r = StreamRestore::new(api, placeholders());
                let mut out = Vec::new();
                for piece in [&args[..cut], &args[cut..]] {
                    let (name, data) = event(piece);
                    let mut ev = String::new();
                    if let Some(n) = name {
                        ev.push_str(&format!("event: {n}\n"));
                    }
                    ev.push_str(&format!("data: {data}\n\n"));
                    out.extend_from_slice(&r.push(ev.as_bytes()));
                }
                out.extend_from_slice(&r.finish());
                let mut assembled = String::new();
                for ev in SseParser::new().push(&out) {
                    let v: Value = serde_json::from_str(ev.data.as_deref().unwrap()).unwrap();
                    assembled.push_str(read(&v).unwrap_or(""));
                }
                let got: Value = serde_json::from_str(&assembled)
                    .unwrap_or_else(|e| panic!("{}, cut at {cut}: {e}: {assembled}", api.name()));
                assert_eq!(got, want, "{}, cut at {cut}", api.name());
            }
        }
    }

    #[test]
    fn held_text_that_is_no_placeholder_is_sent_before_the_end() {
        let mut r = StreamRestore::new(Api::openai_chat(), placeholders());
        let mut out = Vec::new();
        out.extend_from_slice(&r.push(chat_event("see [EMA").as_bytes()));
        out.extend_from_slice(&r.push(b"data: [DONE]\n\n"));
        assert_eq!(chat_text(&out), "see [EMA");
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"));
        // Unknown placeholders pass as they are, escaping of originals is JSON's.
        let mut r = StreamRestore::new(Api::openai_chat(), placeholders());
        let out = r.push(chat_event("[EMAIL_9] [Q_1]").as_bytes());
        assert_eq!(chat_text(&out), r#"[EMAIL_9] q"\z"#);
    }

    #[test]
    fn events_without_placeholders_pass_byte_for_byte() {
        let mut r = StreamRestore::new(Api::openai_chat(), placeholders());
        let ev = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"plain\"}}]}\r\n\r\n";
        assert_eq!(&r.push(ev.as_bytes())[..], ev.as_bytes());
    }
}
