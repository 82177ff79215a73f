//! The hold-back window for streamed replies.
//!
//! Events are queued as they arrive; their text accumulates per stream key (choice, content block,
//! tool call). When enough unjudged text has accumulated (or the stream ends, or text has waited
//! too long) the caller judges a window: for each key, the tail of what was already judged (the
//! overlap) followed by the new text. Only when a window is judged safe are the queued events
//! released, so the client never sees text that was not classified.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::source_of_key;
use crate::wire::Segment;

#[derive(Debug)]
pub struct HoldBack {
    window_chars: usize,
    overlap_chars: usize,
    max_hold: Duration,
    queue: Vec<Bytes>,
    pending: BTreeMap<String, String>,
    pending_chars: usize,
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
            judged_tail: BTreeMap::new(),
            oldest_pending: None,
            windows_judged: 0,
        }
    }

    /// Queues an event's bytes with the text it carries.
    pub fn push(&mut self, raw: Bytes, deltas: Vec<(String, String)>) {
        self.queue.push(raw);
        for (k, t) in deltas {
            self.pending_chars += t.chars().count();
            self.pending.entry(k).or_default().push_str(&t);
            self.oldest_pending.get_or_insert_with(Instant::now);
        }
    }

    pub fn has_pending_text(&self) -> bool {
        self.pending_chars > 0
    }

    pub fn window_full(&self) -> bool {
        self.pending_chars >= self.window_chars
    }

    /// When the oldest unjudged text must be judged even if the window is not full.
    pub fn hold_deadline(&self) -> Option<Instant> {
        self.oldest_pending.map(|t| t + self.max_hold)
    }

    /// Events with no unjudged text ahead of them (role chunks, pings) can go at once.
    pub fn releasable_now(&mut self) -> Option<Bytes> {
        if self.pending_chars == 0 {
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
            let joined = format!(
                "{}{}",
                self.judged_tail.get(&k).map(String::as_str).unwrap_or(""),
                t
            );
            self.judged_tail
                .insert(k, tail(&joined, self.overlap_chars).to_string());
        }
        self.pending_chars = 0;
        self.oldest_pending = None;
        self.take_queue()
    }

    /// The window violated: everything queued is discarded.
    pub fn reject(&mut self) {
        self.windows_judged += 1;
        self.queue.clear();
        self.pending.clear();
        self.pending_chars = 0;
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

    #[test]
    fn multibyte_tails() {
        assert_eq!(tail("héllo☕", 2), "o☕");
        assert_eq!(tail("ab", 5), "ab");
    }
}
