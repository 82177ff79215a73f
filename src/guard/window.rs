//! The hold-back window for streamed replies.
//!
//! Events are queued as they arrive; their text accumulates per stream key (one text the client
//! renders: a choice's content, a message's text blocks, a tool call). When enough unjudged text
//! has accumulated (or the stream ends, or text has waited too long) the caller judges a window:
//! for each key, the tail of what was already judged (the overlap) followed by the new text. Only
//! when a window is judged safe are the queued events released, so the client never sees text
//! that was not classified.
//!
//! Sizes are counted in normalised characters, the text the rules match: characters that
//! normalise to nothing (zero-width spaces) or collapse (runs of whitespace) count for nothing,
//! so padding cannot push the first half of a phrase out of the overlap. The overlap is kept
//! normalised for the same reason; it is normalised again as part of the next window, which
//! relies on normalisation being idempotent (see the tests).

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::classify::normalize::normalize;
use crate::wire::source_of_key;
use crate::wire::Segment;

/// A window is also due once its raw text reaches this many times `window_chars`: text that
/// normalises to (almost) nothing fills no window by itself, and must not pile up unjudged.
const RAW_PER_WINDOW_CHAR: usize = 8;

#[derive(Debug)]
pub struct HoldBack {
    window_chars: usize,
    overlap_chars: usize,
    max_hold: Duration,
    queue: Vec<Bytes>,
    /// Per key, the raw text not judged yet.
    pending: BTreeMap<String, String>,
    /// Normalised characters pending, over all keys: each delta normalised on its own, an
    /// estimate that only decides when a window is due.
    pending_chars: usize,
    /// Raw characters pending, over all keys.
    pending_raw: usize,
    /// Per key, the last `overlap_chars` normalised characters of what was judged.
    judged_tail: BTreeMap<String, String>,
    oldest_pending: Option<Instant>,
    pub windows_judged: u32,
}

fn tail(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    if count <= n {
        return s;
    }
    let skip = count - n;
    let idx = s.char_indices().nth(skip).map(|(i, _)| i).unwrap_or(0);
    &s[idx..]
}

impl HoldBack {
    pub fn new(window_chars: usize, overlap_chars: usize, max_hold: Duration) -> HoldBack {
        HoldBack {
            window_chars,
            overlap_chars,
            max_hold,
            queue: Vec::new(),
            pending: BTreeMap::new(),
            pending_chars: 0,
            pending_raw: 0,
            judged_tail: BTreeMap::new(),
            oldest_pending: None,
            windows_judged: 0,
        }
    }

    /// The part of `text` a window carries over: its last `overlap_chars` normalised characters.
    /// For text the reply continues (an assistant prefill), judged with the first window.
    pub fn overlap_of(&self, text: &str) -> String {
        tail(&normalize(text), self.overlap_chars).to_string()
    }

    /// Queues an event's bytes with the text it carries.
    pub fn push(&mut self, raw: Bytes, deltas: Vec<(String, String)>) {
        self.queue.push(raw);
        for (k, t) in deltas {
            self.pending_chars += normalize(&t).chars().count();
            self.pending_raw += t.chars().count();
            self.pending.entry(k).or_default().push_str(&t);
            self.oldest_pending.get_or_insert_with(Instant::now);
        }
    }

    pub fn has_pending_text(&self) -> bool {
        self.pending_raw > 0
    }

    pub fn window_full(&self) -> bool {
        self.pending_chars >= self.window_chars
            || self.pending_raw >= self.window_chars.saturating_mul(RAW_PER_WINDOW_CHAR)
    }

    /// When the oldest unjudged text must be judged even if the window is not full.
    pub fn hold_deadline(&self) -> Option<Instant> {
        self.oldest_pending.map(|t| t + self.max_hold)
    }

    /// Events with no unjudged text ahead of them (role chunks, pings) can go at once.
    pub fn releasable_now(&mut self) -> Option<Bytes> {
        if self.pending_raw == 0 {
            self.take_queue()
        } else {
            None
        }
    }

    /// The window to judge: per key, the judged overlap then the new text.
    pub fn window(&self) -> Vec<Segment> {
        self.pending
            .iter()
            .map(|(k, t)| {
                let prev = self.judged_tail.get(k).map(String::as_str).unwrap_or("");
                Segment {
                    source: source_of_key(k),
                    text: format!("{prev}{t}"),
                    location: k.clone(),
                }
            })
            .collect()
    }

    /// The window was judged safe: its text becomes overlap, and the queued events go out.
    pub fn approve(&mut self) -> Option<Bytes> {
        self.windows_judged += 1;
        for (k, t) in std::mem::take(&mut self.pending) {
            let prev = self.judged_tail.get(&k).map(String::as_str).unwrap_or("");
            let judged = normalize(&format!("{prev}{t}"));
            self.judged_tail
                .insert(k, tail(&judged, self.overlap_chars).to_string());
        }
        self.pending_chars = 0;
        self.pending_raw = 0;
        self.oldest_pending = None;
        self.take_queue()
    }

    /// The window violated: everything queued is discarded.
    pub fn reject(&mut self) {
        self.windows_judged += 1;
        self.queue.clear();
        self.pending.clear();
        self.pending_chars = 0;
        self.pending_raw = 0;
        self.oldest_pending = None;
    }

    fn take_queue(&mut self) -> Option<Bytes> {
        match self.queue.len() {
            0 => None,
            1 => self.queue.pop(),
            _ => {
                let total = self.queue.iter().map(Bytes::len).sum();
                let mut out = Vec::with_capacity(total);
                for b in self.queue.drain(..) {
                    out.extend_from_slice(&b);
                }
                Some(Bytes::from(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(k: &str, t: &str) -> Vec<(String, String)> {
        vec![(k.to_string(), t.to_string())]
    }

    #[test]
    fn holds_until_judged_and_overlaps() {
        let mut h = HoldBack::new(10, 4, Duration::from_secs(1));
        h.push(Bytes::from_static(b"role"), vec![]);
        assert_eq!(h.releasable_now().as_deref(), Some(&b"role"[..]));
        h.push(Bytes::from_static(b"e1"), d("c0", "hello "));
        assert!(
            h.releasable_now().is_none(),
            "text must wait for its window"
        );
        assert!(!h.window_full());
        h.push(Bytes::from_static(b"e2"), d("c0", "world"));
        assert!(h.window_full());
        assert_eq!(h.window()[0].text, "hello world");
        assert_eq!(h.approve().as_deref(), Some(&b"e1e2"[..]));
        h.push(Bytes::from_static(b"e3"), d("c0", "!!"));
        // The next window starts with the judged tail, so a phrase across windows is seen whole.
        assert_eq!(h.window()[0].text, "orld!!");
        h.reject();
        assert!(h.approve().is_none(), "rejected events never come back");
    }

    #[test]
    fn a_phrase_split_across_windows_is_seen() {
        let mut h = HoldBack::new(8, 6, Duration::from_secs(1));
        let text = "so the pipe bomb is";
        let mut seen = Vec::new();
        for c in text.chars() {
            h.push(Bytes::new(), d("k", &c.to_string()));
            if h.window_full() {
                seen.push(h.window()[0].text.clone());
                h.approve();
            }
        }
        seen.push(h.window()[0].text.clone());
        assert!(seen.iter().any(|w| w.contains("pipe bomb")), "{seen:?}");
    }

    /// Every window `deltas` make under one key, normalised as the rules read it.
    fn windows_of(h: &mut HoldBack, deltas: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut seen = Vec::new();
        for t in deltas {
            h.push(Bytes::new(), d("k", &t));
            if h.window_full() {
                seen.push(normalize(&h.window()[0].text));
                h.approve();
            }
        }
        if h.has_pending_text() {
            seen.push(normalize(&h.window()[0].text));
            h.approve();
        }
        seen
    }

    #[test]
    fn padding_that_normalises_away_does_not_push_a_phrase_out_of_the_overlap() {
        for pad in ["\u{200B}", " ", "\n", "\u{00AD}", "\u{E0020}"] {
            for n in [250, 3_000] {
                let text = format!("so the pipe {}bomb is here", pad.repeat(n));
                let mut h = HoldBack::new(200, 50, Duration::from_secs(1));
                let seen = windows_of(&mut h, text.chars().map(String::from));
                assert!(
                    seen.iter().any(|w| w.contains("pipe bomb")),
                    "{pad:?} x{n}: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn text_that_normalises_to_nothing_still_fills_a_window() {
        let mut h = HoldBack::new(10, 4, Duration::from_secs(1));
        h.push(Bytes::new(), d("k", &"\u{200B}".repeat(79)));
        assert!(!h.window_full());
        assert!(h.has_pending_text(), "it is held: what follows may join it");
        h.push(Bytes::new(), d("k", "\u{200B}"));
        assert!(h.window_full(), "80 raw characters are 8 windows' worth");
    }

    #[test]
    fn the_overlap_is_counted_in_normalised_characters() {
        let mut h = HoldBack::new(10, 4, Duration::from_secs(1));
        h.push(Bytes::new(), d("k", "abc  d\u{200B}\u{200B}\u{200B}e"));
        h.approve();
        h.push(Bytes::new(), d("k", "f"));
        assert_eq!(h.window()[0].text, "c def");
        assert_eq!(h.overlap_of("Sure, here is the PIPE"), "pipe");
    }

    /// The overlap is kept normalised and normalised again with the next window's text, so a
    /// window reads what the rules would read in the whole text only if normalising twice changes
    /// nothing.
    #[test]
    fn normalisation_is_idempotent_as_the_overlap_needs() {
        for t in [
            "Ｐｉｐｅ\u{200B} ＢＯＭＢ",
            "p\u{0336}ipe  \t b\u{00AD}omb",
            "ﬁre  Straße ß",
            "cafe\u{0301} क्ष ☕",
            "ріре вомв \u{202E}x",
            "a\u{0085}b\u{3000}c",
        ] {
            let once = normalize(t);
            assert_eq!(normalize(&once), once, "{t:?}");
        }
    }

    #[test]
    fn multibyte_tails() {
        assert_eq!(tail("héllo☕", 2), "o☕");
        assert_eq!(tail("ab", 5), "ab");
    }
}
