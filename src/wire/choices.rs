//! The streamed form that OpenAI's two completion APIs share: `data:` chunks with an envelope
//! (id, created, model) and a `choices` array, ended by `[DONE]`. Each API says what a choice's
//! text is and how a filtered choice ends ([`ChoiceFormat`]).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use super::reply::{arr, NOT_TEXT};
use super::stream::{data_event, same_api, Ending, EventText, StreamState};

/// What differs between the chat and the legacy completions chunk.
pub(super) trait ChoiceFormat: Default + Clone + fmt::Debug + Send + Sync + 'static {
    /// `object` of a chunk the gateway makes up when the upstream sent none to copy.
    const CHUNK_OBJECT: &'static str;

    /// The text deltas of choice `i` of one chunk.
    fn choice_deltas(i: u64, choice: &Value, out: &mut EventText);

    /// Choice `i` of the chunk that ends it as filtered, with `text` (a refusal) as its last text.
    fn filtered_choice(i: u64, text: Option<&str>) -> Value;

    /// The members of a choice that `choice_deltas` reads (or that are not text).
    const CHOICE_FIELDS: &'static [&'static str];

    /// Whether text under `key` continues the request (see `StreamState::continues_request`).
    fn continues_request(_key: &str) -> bool {
        false
    }
}

/// Chunk members that are not text, or repeat the envelope in every chunk.
const ENVELOPE: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "choices",
    "system_fingerprint",
    "service_tier",
    "usage",
    "obfuscation",
];

#[derive(Debug, Clone, Default)]
pub(super) struct ChoicesStream<F> {
    /// Envelope fields of the first chunk (id, object, created, model) to reuse in made-up chunks.
    envelope: Value,
    /// Indices of the choices seen: each is ended.
    choices: BTreeSet<u64>,
    /// Digests of the last value of each chunk member outside the envelope (see `extras`).
    extras: BTreeMap<String, [u8; 32]>,
    format: PhantomData<F>,
}

impl<F: ChoiceFormat> ChoicesStream<F> {
    /// Members of a chunk or a choice that compatible servers add (search results, citations, a
    /// message in place of a delta, an error) are shown by the clients written for them: they are
    /// judged too, each under its own key. Chunk members repeated unchanged in every chunk are
    /// judged once.
    fn extras(&mut self, v: &Value, out: &mut EventText) {
        let Some(obj) = v.as_object() else {
            return;
        };
        for (k, x) in obj {
            if ENVELOPE.contains(&k.as_str()) || x.is_null() {
                continue;
            }
            let digest: [u8; 32] = Sha256::digest(x.to_string().as_bytes()).into();
            if self.extras.insert(k.clone(), digest) != Some(digest) {
                out.push_texts(k.clone(), x);
            }
        }
    }
}

impl<F: ChoiceFormat> StreamState for ChoicesStream<F> {
    fn on_event(&mut self, v: &Value, out: &mut EventText) {
        if self.envelope.is_null() {
            self.envelope = json!({"id": v.get("id"), "object": v.get("object"), "created": v.get("created"), "model": v.get("model")});
        }
        for c in arr(v, "choices") {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            self.choices.insert(i);
            F::choice_deltas(i, c, out);
            for (k, x) in c.as_object().into_iter().flatten() {
                if !F::CHOICE_FIELDS.contains(&k.as_str()) && !NOT_TEXT.contains(&k.as_str()) {
                    out.push_texts(format!("choices[{i}].{k}"), x);
                }
            }
        }
        self.extras(v, out);
    }

    fn continues_request(&self, key: &str) -> bool {
        F::continues_request(key)
    }

    fn ending(&self, how: Ending) -> Vec<u8> {
        let mut s = String::new();
        if let Ending::Error(msg) = how {
            s += &data_event(
                &json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": "content_policy_violation"}}),
            );
        } else if let Ending::Filtered(text) = how {
            let indices: Vec<u64> = if self.choices.is_empty() {
                vec![0]
            } else {
                self.choices.iter().copied().collect()
            };
            for i in indices {
                let mut c = self.envelope.clone();
                if !c.is_object() {
                    c = json!({"id": "guardgate", "object": F::CHUNK_OBJECT, "created": 0, "model": ""});
                }
                c["choices"] = json!([F::filtered_choice(i, text)]);
                s += &data_event(&c);
            }
        }
        s += "data: [DONE]\n\n";
        s.into_bytes()
    }

    fn cut_after(&self, upstream: &dyn StreamState, how: Ending) -> Vec<u8> {
        match same_api::<Self>(upstream) {
            // The client saw no chunk yet: the ending copies the upstream's envelope.
            Some(up) if !self.envelope.is_object() => {
                let mut t = self.clone();
                t.envelope = up.envelope.clone();
                t.ending(how)
            }
            _ => self.ending(how),
        }
    }

    fn clone_box(&self) -> Box<dyn StreamState> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The string each choice of a streamed chunk holds where `text` points, keyed by the choice's
/// index: the chat and completions formats' text deltas.
pub(super) fn choice_texts<'a>(
    event: &'a mut Value,
    text: impl Fn(&'a mut Value) -> Option<&'a mut Value>,
) -> Vec<(String, &'a mut String)> {
    let Some(Value::Array(choices)) = event.get_mut("choices") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in choices {
        let i = c.get("index").and_then(Value::as_u64).unwrap_or(0);
        if let Some(Value::String(s)) = text(c) {
            out.push((format!("choices[{i}]"), s));
        }
    }
    out
}
