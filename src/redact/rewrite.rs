//! The request rewrite: every string the API's parser reads as text, found by the JSON locations
//! its segments carry, with what the detectors find replaced by placeholders. Tool-call arguments
//! (JSON inside a JSON string, or an object) are redacted inside and stay valid JSON. Keys, ids,
//! roles, names, model, base64 payloads and URLs are never touched: they are not text segments.

use serde_json::Value;
use std::collections::HashSet;

use super::detect::Detectors;
use super::placeholder::Placeholders;
use crate::wire::{ParsedRequest, Source};

/// `body` (the decoded request, which `parsed` was read from) with every span found replaced,
/// serialised again; `None` when nothing was found (the original bytes then go upstream as they
/// are).
pub fn rewrite(
    body: &[u8],
    parsed: &ParsedRequest,
    detectors: &[&Detectors],
    placeholders: &mut Placeholders,
) -> Option<Vec<u8>> {
    if detectors.is_empty() {
        return None;
    }
    // Cheap first look on the segments already read: most requests carry nothing to redact, and
    // they must not pay for a second parse.
    let structured: HashSet<&str> = parsed.spots.arguments.iter().map(String::as_str).collect();
    let names: HashSet<&str> = parsed.spots.names.iter().map(String::as_str).collect();
    let mut doc: Option<Value> = None;
    let mut changed = false;
    for seg in &parsed.segments {
        let loc = seg.location.as_str();
        if seg.source == Source::ToolDefinition || structured.contains(loc) || names.contains(loc) {
            continue;
        }
        if detectors.iter().all(|d| d.find(&seg.text).is_empty()) {
            continue;
        }
        let doc = doc_of(&mut doc, body)?;
        // Only a string that holds exactly the segment's text is the text itself: a decoded
        // inline file, a name read as words or a tool call's summary point elsewhere.
        if let Some(Value::String(s)) = at_path(doc, loc) {
            if *s == seg.text {
                if let Some(r) = redact_all(detectors, s, placeholders) {
                    *s = r;
                    changed = true;
                }
            }
        }
    }
    for loc in &parsed.spots.arguments {
        let doc = doc_of(&mut doc, body)?;
        if let Some(v) = at_path(doc, loc) {
            changed |= arguments(detectors, v, placeholders);
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(doc.as_ref()?).ok()
}

fn doc_of<'a>(doc: &'a mut Option<Value>, body: &[u8]) -> Option<&'a mut Value> {
    if doc.is_none() {
        *doc = Some(serde_json::from_slice(body).ok()?);
    }
    doc.as_mut()
}

fn redact_all(detectors: &[&Detectors], text: &str, p: &mut Placeholders) -> Option<String> {
    let mut cur: Option<String> = None;
    for (i, d) in detectors.iter().enumerate() {
        p.from_source(i);
        if let Some(r) = p.redact(d, cur.as_deref().unwrap_or(text)) {
            cur = Some(r);
        }
    }
    cur
}

/// Tool-call arguments: a string holding JSON is redacted inside its strings (values, not keys)
/// and written back as JSON; a string that is not JSON is redacted as text; an object (Anthropic's
/// `input`) is redacted in place.
fn arguments(detectors: &[&Detectors], v: &mut Value, p: &mut Placeholders) -> bool {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(mut inner @ (Value::Object(_) | Value::Array(_))) => {
                if strings(detectors, &mut inner, p) {
                    *s = inner.to_string();
                    true
                } else {
                    false
                }
            }
            _ => match redact_all(detectors, s, p) {
                Some(r) => {
                    *s = r;
                    true
                }
                None => false,
            },
        },
        Value::Object(_) | Value::Array(_) => strings(detectors, v, p),
        _ => false,
    }
}

fn strings(detectors: &[&Detectors], v: &mut Value, p: &mut Placeholders) -> bool {
    match v {
        Value::String(s) => match redact_all(detectors, s, p) {
            Some(r) => {
                *s = r;
                true
            }
            None => false,
        },
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |any, x| strings(detectors, x, p) | any),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |any, x| strings(detectors, x, p) | any),
        _ => false,
    }
}

/// The value at a segment's location (`messages[2].content[0].text`, `a["odd.key"]`).
fn at_path<'a>(mut v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            if r.starts_with('"') {
                // A quoted key: a JSON string, then `]`.
                let mut de = serde_json::Deserializer::from_str(r).into_iter::<String>();
                let key = de.next()?.ok()?;
                let used = de.byte_offset();
                rest = r[used..].strip_prefix(']')?;
                v = v.as_object_mut()?.get_mut(&key)?;
            } else {
                let close = r.find(']')?;
                let i: usize = r[..close].parse().ok()?;
                rest = &r[close + 1..];
                v = v.as_array_mut()?.get_mut(i)?;
            }
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            v = v.as_object_mut()?.get_mut(key)?;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Kind;
    use crate::wire::Api;
    use serde_json::json;

    fn emails() -> Detectors {
        Detectors {
            kinds: vec![Kind::Email],
            ..Default::default()
        }
    }

    fn run(api: &str, body: &Value) -> (Option<Value>, Placeholders) {
        let bytes = serde_json::to_vec(body).unwrap();
        let parsed = Api::from_name(api).unwrap().parse_request(&bytes).unwrap();
        let mut p = Placeholders::new();
        let d = emails();
        let out = rewrite(&bytes, &parsed, &[&d], &mut p);
        (out.map(|b| serde_json::from_slice(&b).unwrap()), p)
    }

    #[test]
    fn paths_reach_quoted_keys_and_indices() {
        let mut v = json!({"a": [{"b.c": {"d": "x"}}]});
        assert_eq!(
            at_path(&mut v, r#"a[0]["b.c"].d"#).cloned(),
            Some(json!("x"))
        );
        assert_eq!(at_path(&mut v, "a[1]"), None);
        assert_eq!(at_path(&mut v, "a.b"), None);
    }

    #[test]
    fn chat_text_parts_and_tool_arguments() {
        let body = json!({
            "model": "m@x.io",
            "messages": [
                {"role": "system", "content": "ops: ops@corp.example"},
                {"role": "user", "name": "u", "content": [
                    {"type": "text", "text": "mail \"me\" at me@corp.example \\ ok"},
                    {"type": "image_url", "image_url": {"url": "https://x.example/a@b.com.png"}}
                ]},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "send", "arguments": "{\"to\":\"me@corp.example\",\"cc\":[\"z\\u0040corp.example\"]}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sent to me@corp.example"}
            ]
        });
        let (out, p) = run("openai-chat", &body);
        let out = out.unwrap();
        assert_eq!(out["model"], "m@x.io");
        assert_eq!(out["messages"][0]["content"], "ops: [EMAIL_1]");
        assert_eq!(
            out["messages"][1]["content"][0]["text"],
            "mail \"me\" at [EMAIL_2] \\ ok"
        );
        assert_eq!(
            out["messages"][1]["content"][1]["image_url"]["url"],
            "https://x.example/a@b.com.png"
        );
        let args: Value = serde_json::from_str(
            out["messages"][2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"to": "[EMAIL_2]", "cc": ["[EMAIL_3]"]}));
        assert_eq!(out["messages"][3]["content"], "sent to [EMAIL_2]");
        assert_eq!(out["messages"][2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(p.counts()["email"], 5);
    }

    /// Each kind is numbered on its own, and a value seen twice keeps its placeholder.
    #[test]
    fn other_kinds_get_their_own_placeholders() {
        let bytes = serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user",
            "content": "call +1 415 555 0134, pay 4111 1111 1111 1111 or DE89 3704 0044 0532 0130 00; again +1 415 555 0134"}]}))
        .unwrap();
        let parsed = Api::openai_chat().parse_request(&bytes).unwrap();
        let d = Detectors {
            kinds: Kind::ALL.to_vec(),
            ..Default::default()
        };
        let mut p = Placeholders::new();
        let out: Value =
            serde_json::from_slice(&rewrite(&bytes, &parsed, &[&d], &mut p).unwrap()).unwrap();
        assert_eq!(
            out["messages"][0]["content"],
            "call [PHONE_1], pay [CARD_1] or [IBAN_1]; again [PHONE_1]"
        );
        assert_eq!(p.counts()["phone"], 2);
    }

    #[test]
    fn nothing_found_is_none() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        assert!(run("openai-chat", &body).0.is_none());
    }

    #[test]
    fn responses_completions_and_anthropic() {
        let (out, _) = run(
            "openai-responses",
            &json!({"model": "m", "instructions": "i@x.io", "input": "a@x.io"}),
        );
        assert_eq!(
            out.unwrap(),
            json!({"model": "m", "instructions": "[EMAIL_1]", "input": "[EMAIL_2]"})
        );
        let (out, _) = run(
            "openai-completions",
            &json!({"model": "m", "prompt": ["a@x.io", "b"]}),
        );
        assert_eq!(out.unwrap()["prompt"], json!(["[EMAIL_1]", "b"]));
        let (out, _) = run(
            "anthropic-messages",
            &json!({"model": "m", "max_tokens": 5, "system": "s@x.io", "messages": [
                {"role": "user", "content": "u@x.io"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"to": "u@x.io"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok u@x.io"}]}
            ]}),
        );
        let out = out.unwrap();
        assert_eq!(out["system"], "[EMAIL_1]");
        assert_eq!(out["messages"][0]["content"], "[EMAIL_2]");
        assert_eq!(
            out["messages"][1]["content"][0]["input"],
            json!({"to": "[EMAIL_2]"})
        );
        assert_eq!(out["messages"][2]["content"][0]["content"], "ok [EMAIL_2]");
    }
}
