//! The reply side's shared reading: the text of reply parts of any shape, annotations spliced
//! into a reply, and streamed text gathered per key into segments.

use serde_json::Value;
use std::collections::BTreeMap;

use super::{Api, Segment, Source};

pub(super) fn seg(source: Source, location: String, text: &str) -> Option<Segment> {
    (!text.is_empty()).then(|| Segment {
        source,
        text: text.to_string(),
        location,
    })
}

pub(super) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Keys whose values are identifiers, states or encoded data rather than text anyone reads:
/// skipped when every string of a structure is taken.
pub(super) const NOT_TEXT: &[&str] = &[
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
    "media_type",
    "b64_json",
    "partial_image_b64",
    "logprobs",
];

/// Every string under `v` except those of `NOT_TEXT` keys: for reply parts whose text may sit in
/// any field (hosted-tool items, server-tool results, parts of types newer than this code), so
/// a new shape is judged rather than passed unread. The `data` of a text source is text (see
/// `source_text`).
pub(super) fn texts(v: &Value, path: String, source: Source, out: &mut Vec<Segment>) {
    match v {
        Value::String(t) => out.extend(seg(source, path, t)),
        Value::Object(obj) => {
            for (key, child) in obj {
                if key == "data" {
                    if let Some(t) = source_text(v) {
                        out.extend(seg(source, format!("{path}.data"), &t));
                    }
                } else if !NOT_TEXT.contains(&key.as_str()) {
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

/// The text in the `data` of a document source: a text source's (`{"type": "text", "data":
/// ...}`, as web fetches return pages), or base64 of a text media type decoded. Elsewhere `data`
/// is an encoded file or audio, not text.
fn source_text(source: &Value) -> Option<String> {
    let data = source.get("data")?.as_str()?;
    match s(source, "type") {
        "text" => Some(data.to_string()),
        "base64" if is_text_media(s(source, "media_type")) => {
            Some(String::from_utf8_lossy(&base64_decode(data)?).into_owned())
        }
        _ => None,
    }
}

fn is_text_media(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(essence.as_str(), "application/json" | "application/xml")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

/// Standard or URL-safe base64, padded or not, whitespace ignored; `None` if it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `name(arguments)`, how a tool call is shown to the classifier.
pub(super) fn call_text(name: &str, arguments: &str) -> String {
    format!("{}({arguments})", super::extract::identifier_words(name))
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
pub(super) fn text_reply(api: Api, text: &str) -> Vec<Segment> {
    if !looks_like_sse(text) {
        return seg(Source::Assistant, "body".into(), text)
            .into_iter()
            .collect();
    }
    let mut parser = super::sse::SseParser::new();
    let mut tracker = api.stream();
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
