//! Typed placeholders: `[EMAIL_1]`, `[PHONE_2]`, numbered per label within one request. The same
//! value always gets the same placeholder, so the model sees consistent references, and the
//! originals stay here (never in a record) for the reply's restore.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::detect::{Detectors, Found};

/// The placeholders one request made, and how many spans each label replaced.
#[derive(Debug, Default, Clone)]
pub struct Placeholders {
    /// (label, original) -> placeholder.
    by_value: HashMap<(String, String), String>,
    /// placeholder -> original.
    originals: HashMap<String, String>,
    /// Placeholders made so far, per label: the next one's number.
    made: HashMap<String, usize>,
    /// Spans replaced, per label in lower case (`email`, or a custom rule's id), for each set of
    /// detectors (one per policy) in the order they ran.
    counts: Vec<BTreeMap<String, usize>>,
    /// Spans replaced, all sets together.
    total: BTreeMap<String, usize>,
    /// The set of detectors running now (an index into `counts`).
    source: usize,
    longest: usize,
}

impl Placeholders {
    pub fn new() -> Placeholders {
        Placeholders::default()
    }

    /// The placeholder for `value` found as `label`, made on first sight.
    fn for_value(&mut self, label: &str, value: &str) -> &str {
        let kind = label.to_ascii_lowercase();
        if self.counts.len() <= self.source {
            self.counts.resize_with(self.source + 1, BTreeMap::new);
        }
        *self.counts[self.source].entry(kind.clone()).or_default() += 1;
        *self.total.entry(kind).or_default() += 1;
        let key = (label.to_string(), value.to_string());
        if !self.by_value.contains_key(&key) {
            let n = self.made.entry(label.to_string()).or_default();
            *n += 1;
            let placeholder = format!("[{label}_{n}]");
            self.longest = self.longest.max(placeholder.len());
            self.originals
                .insert(placeholder.clone(), value.to_string());
            self.by_value.insert(key.clone(), placeholder);
        }
        &self.by_value[&key]
    }

    /// `text` with every span `detectors` find replaced; `None` when nothing was found.
    pub fn redact(&mut self, detectors: &Detectors, text: &str) -> Option<String> {
        let found = detectors.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for Found {
            start, end, label, ..
        } in &found
        {
            // The seam promises sorted, non-overlapping spans on char boundaries; a span that
            // breaks that is left in place rather than cut mid-character.
            if *start < at || !text.is_char_boundary(*start) || !text.is_char_boundary(*end) {
                continue;
            }
            out.push_str(&text[at..*start]);
            out.push_str(self.for_value(label, &text[*start..*end]));
            at = *end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Spans replaced, by label in lower case (`{"email": 2}`); never the values.
    pub fn counts(&self) -> &BTreeMap<String, usize> {
        &self.total
    }

    /// What the set of detectors `source` replaced (see [`Placeholders::from_source`]).
    pub fn counts_of(&self, source: usize) -> BTreeMap<String, usize> {
        self.counts.get(source).cloned().unwrap_or_default()
    }

    /// Counts the next spans under the set of detectors `source` (a policy's place among the
    /// request's redact bindings).
    pub fn from_source(&mut self, source: usize) {
        self.source = source;
    }

    /// Bytes of the longest placeholder made.
    pub fn longest(&self) -> usize {
        self.longest
    }

    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.originals.get(placeholder).map(String::as_str)
    }

    /// Where the placeholder that starts at `text[i]` (a `[`) ends, with its original.
    fn at(&self, text: &[u8], i: usize) -> Option<(usize, &str)> {
        let window = &text[i..text.len().min(i + self.longest)];
        let close = window.iter().position(|&b| b == b']')?;
        let candidate = std::str::from_utf8(&window[..=close]).ok()?;
        self.original(candidate).map(|o| (i + close + 1, o))
    }

    /// `text` with the placeholders this request made put back (`escape`: each original written
    /// as the inside of a JSON string, for text that is raw JSON). A placeholder the request did
    /// not make is left as it is.
    fn put_back(&self, text: &[u8], escape: bool) -> Option<Vec<u8>> {
        if self.is_empty() || !text.contains(&b'[') {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut i = 0;
        while let Some(p) = text[i..].iter().position(|&b| b == b'[') {
            let start = i + p;
            match self.at(text, start) {
                Some((end, original)) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 64));
                    o.extend_from_slice(&text[copied..start]);
                    if escape {
                        let quoted = serde_json::to_string(original).unwrap_or_default();
                        o.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
                    } else {
                        o.extend_from_slice(original.as_bytes());
                    }
                    copied = end;
                    i = end;
                }
                None => i = start + 1,
            }
        }
        let mut o = out?;
        o.extend_from_slice(&text[copied..]);
        Some(o)
    }

    /// `text` with this request's placeholders put back.
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.put_back_text(text, false)
    }

    /// `text`, a piece of JSON text (streamed tool-call arguments), with this request's
    /// placeholders put back JSON-escaped: a placeholder can only sit inside one of its strings.
    pub fn restore_escaped<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.put_back_text(text, true)
    }

    fn put_back_text<'t>(&self, text: &'t str, escaped: bool) -> Cow<'t, str> {
        match self.put_back(text.as_bytes(), escaped) {
            // Placeholders and originals are whole strings, so the result is UTF-8.
            Some(b) => Cow::Owned(String::from_utf8(b).unwrap_or_else(|_| text.to_string())),
            None => Cow::Borrowed(text),
        }
    }

    /// A JSON document (bytes) with this request's placeholders put back inside its strings,
    /// each original JSON-escaped; `None` when there was none. A placeholder can only be inside
    /// a string (its characters are not JSON syntax), so no parse is needed.
    pub fn restore_json(&self, json: &[u8]) -> Option<Vec<u8>> {
        self.put_back(json, true)
    }

    /// Where the tail of `text` that may be the start of a placeholder begins (it must wait for
    /// the next piece of text to be decided), or `text.len()` when no tail may be. Never more
    /// than the longest placeholder is kept back.
    pub fn undecided_tail(&self, text: &str) -> usize {
        let from = text.len().saturating_sub(self.longest.saturating_sub(1));
        for (i, &b) in text.as_bytes().iter().enumerate().skip(from) {
            if b == b'[' {
                let tail = &text[i..];
                if self
                    .originals
                    .keys()
                    .any(|p| p.len() > tail.len() && p.starts_with(tail))
                {
                    return i;
                }
            }
        }
        text.len()
    }

    /// Whether `data` (an event's JSON) may hold one of this request's placeholders or the start
    /// of one: a `[` followed by a label's first character, or ending a string (`["`). JSON's own
    /// brackets are followed by neither in the events of the APIs' streams, which then pass
    /// untouched without being parsed.
    pub fn may_start_in(&self, data: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let b = data.as_bytes();
        b.iter().enumerate().any(|(i, &c)| {
            c == b'['
                && b.get(i + 1).is_some_and(|&n| {
                    n == b'"'
                        || self
                            .originals
                            .keys()
                            .any(|p| p.as_bytes().get(1) == Some(&n))
                })
        })
    }

    /// Every string in `v` with this request's placeholders put back; whether any was.
    pub fn restore_value(&self, v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::String(s) => match self.restore(s) {
                Cow::Owned(r) => {
                    *s = r;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(a) => a
                .iter_mut()
                .fold(false, |any, x| self.restore_value(x) | any),
            Value::Object(o) => o
                .values_mut()
                .fold(false, |any, x| self.restore_value(x) | any),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Kind;

    fn emails() -> Detectors {
        Detectors {
            kinds: vec![Kind::Email],
            ..Default::default()
        }
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder() {
        let mut p = Placeholders::new();
        let out = p
            .redact(&emails(), "a@x.io, b@x.io and a@x.io again")
            .unwrap();
        assert_eq!(out, "[EMAIL_1], [EMAIL_2] and [EMAIL_1] again");
        assert_eq!(p.counts()["email"], 3);
        assert_eq!(p.original("[EMAIL_2]"), Some("b@x.io"));
        assert_eq!(p.redact(&emails(), "nothing here"), None);
        // Numbering goes on across the texts of one request.
        assert_eq!(p.redact(&emails(), "c@x.io").unwrap(), "[EMAIL_3]");
    }

    #[test]
    fn custom_labels_number_on_their_own() {
        let mut p = Placeholders::new();
        #[allow(clippy::needless_update)]
        let d = Detectors {
            kinds: vec![Kind::Email],
            custom: vec![("ORDER_ID".into(), regex::Regex::new(r"ORD-\d+").unwrap())],
            ..Default::default()
        };
        let out = p.redact(&d, "ORD-1 for a@x.io, ORD-2").unwrap();
        assert_eq!(out, "[ORDER_ID_1] for [EMAIL_1], [ORDER_ID_2]");
        assert_eq!(p.counts()["order_id"], 2);
    }

    #[test]
    fn restore_leaves_unknown_placeholders_and_escapes_json() {
        let mut p = Placeholders::new();
        let d = Detectors {
            custom: vec![("Q".into(), regex::Regex::new(r#"q"\\é"#).unwrap())],
            ..Default::default()
        };
        assert_eq!(p.redact(&d, r#"say q"\é"#).unwrap(), "say [Q_1]");
        assert_eq!(p.restore("[Q_1] [Q_2] [Q_1"), r#"q"\é [Q_2] [Q_1"#);
        let json = br#"{"t":"[Q_1]","u":"[EMAIL_1]"}"#;
        let back = p.restore_json(json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(v["t"], r#"q"\é"#);
        assert_eq!(v["u"], "[EMAIL_1]");
        assert_eq!(p.restore_json(br#"{"t":"[nothing]"}"#), None);
    }

    #[test]
    fn only_a_possible_placeholder_start_waits() {
        let mut p = Placeholders::new();
        p.redact(&emails(), "a@x.io").unwrap();
        for (text, kept) in [
            ("hi [", "["),
            ("hi [EMA", "[EMA"),
            ("hi [EMAIL_1", "[EMAIL_1"),
            ("hi [EMAIL_1]", ""),
            ("hi [EMAIL_2", ""),
            ("hi [x", ""),
            ("hi", ""),
            ("[[E", "[E"),
        ] {
            let at = p.undecided_tail(text);
            assert_eq!(&text[at..], kept, "{text}");
        }
    }
}
