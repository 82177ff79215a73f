//! An incremental Server-Sent Events parser (WHATWG HTML §9.2) that keeps each event's exact
//! bytes, so allowed events are forwarded byte for byte while their fields are inspected.
//!
//! Bytes arrive in arbitrary pieces: an event, a line, a CRLF pair or a multi-byte UTF-8 character
//! can be split anywhere. The parser works on bytes and only decodes complete lines, so no split
//! can change what it yields.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The exact bytes of the event, from its first line through the blank line that ends it
    /// (comments and keep-alives before it included).
    pub raw: Bytes,
    /// `event:` field; None means the default type "message".
    pub event: Option<String>,
    /// `data:` lines joined with '\n'; None if the event had no data line (a comment or keep-alive).
    pub data: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    /// Bytes of `buf` already consumed into the current event's lines.
    scanned: usize,
    event: Option<String>,
    data: Option<String>,
    /// Whether the stream's first line has been read: a UTF-8 byte order mark before it is not
    /// part of the field name (the spec strips it, and so do clients), so it must not hide the
    /// first field from classification.
    first_line_done: bool,
    /// The last line ended in a CR that was the last byte received: if the next byte is an LF,
    /// it belongs to that line ending and must not be read as an empty line (which would end an
    /// event early).
    skip_lf: bool,
}

/// U+FEFF in UTF-8.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Bytes received but not yet part of a complete event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the bytes of the incomplete event, leaving the parser empty: what a caller that
    /// gives up on parsing a stream still has to forward.
    pub fn take_buffered(&mut self) -> Bytes {
        self.scanned = 0;
        self.event = None;
        self.data = None;
        self.skip_lf = false;
        self.buf.split().freeze()
    }

    /// Feeds bytes and returns every event they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            if self.skip_lf && self.scanned < self.buf.len() {
                self.skip_lf = false;
                if self.buf[self.scanned] == b'\n' {
                    self.scanned += 1;
                }
            }
            let rest = &self.buf[self.scanned..];
            let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                break;
            };
            let line_start = self.scanned;
            let line_end = self.scanned + pos;
            let mut next = line_end + 1;
            if self.buf[line_end] == b'\r' {
                // A CR at the very end may be the first half of a CRLF split across reads. The
                // line is complete either way, so it is processed now (an upstream that ends
                // lines with CR alone must not have each event held until the next one starts);
                // the LF, if it comes, is skipped and travels with the following bytes.
                if next == self.buf.len() {
                    self.skip_lf = true;
                } else if self.buf[next] == b'\n' {
                    next += 1;
                }
            }
            self.scanned = next;
            let mut line_start = line_start;
            if !self.first_line_done {
                self.first_line_done = true;
                if self.buf[line_start..line_end].starts_with(BOM) {
                    line_start += BOM.len();
                }
            }
            if line_end == line_start {
                let raw = self.buf.split_to(self.scanned).freeze();
                self.scanned = 0;
                out.push(SseEvent {
                    raw,
                    event: self.event.take(),
                    data: self.data.take(),
                });
                continue;
            }
            let line = String::from_utf8_lossy(&self.buf[line_start..line_end]).into_owned();
            self.field(&line);
        }
        out
    }

    /// Ends the stream: whatever is left after the last complete event, parsed as a (possibly
    /// incomplete) final event so that its data is classified like any other before release.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.is_empty() {
            return None;
        }
        let rest = self.buf.split().freeze();
        let mut from = self.scanned.min(rest.len());
        if !self.first_line_done && rest[from..].starts_with(BOM) {
            from += BOM.len();
        }
        self.first_line_done = true;
        self.skip_lf = false;
        let tail = String::from_utf8_lossy(&rest[from..]).into_owned();
        for line in tail.split(['\r', '\n']).filter(|l| !l.is_empty()) {
            self.field(line);
        }
        self.scanned = 0;
        Some(SseEvent {
            raw: rest,
            event: self.event.take(),
            data: self.data.take(),
        })
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // id, retry and unknown fields do not matter for classification
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\r\n\r\nevent: x\rdata: caf\xc3\xa9 \xe2\x98\x95\r\rdata: [DONE]\n\n";

    fn all_at_once() -> Vec<SseEvent> {
        SseParser::new().push(STREAM)
    }

    #[test]
    fn parses_fields_and_line_endings() {
        let ev = all_at_once();
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[0].data, None);
        assert_eq!(ev[1].event.as_deref(), Some("message_start"));
        assert_eq!(ev[1].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(ev[2].data.as_deref(), Some("line1\nline2"));
        assert_eq!(ev[3].event.as_deref(), Some("x"));
        assert_eq!(ev[3].data.as_deref(), Some("café ☕"));
        assert_eq!(ev[4].data.as_deref(), Some("[DONE]"));
        let joined: Vec<u8> = ev.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(
            joined, STREAM,
            "raw bytes must reassemble the stream exactly"
        );
    }

    fn fields(events: &[SseEvent]) -> Vec<(Option<String>, Option<String>)> {
        events
            .iter()
            .filter(|e| e.event.is_some() || e.data.is_some())
            .map(|e| (e.event.clone(), e.data.clone()))
            .collect()
    }

    /// Any split of a valid stream yields the same events, and their bytes still reassemble the
    /// stream exactly (exhaustive over every single and double split point, plus one byte at a
    /// time). Only where a CRLF is split does its LF travel with the next event's bytes.
    #[test]
    fn any_split_yields_the_same_events() {
        let want = fields(&all_at_once());
        let check = |pieces: &[&[u8]]| {
            let mut p = SseParser::new();
            let mut got = Vec::new();
            for piece in pieces {
                got.extend(p.push(piece));
            }
            got.extend(p.finish());
            assert_eq!(fields(&got), want, "split {pieces:?}");
            let joined: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(joined, STREAM, "split {pieces:?}");
        };
        let ones: Vec<&[u8]> = STREAM.chunks(1).collect();
        check(&ones);
        for i in 0..=STREAM.len() {
            check(&[&STREAM[..i], &STREAM[i..]]);
            for j in i..=STREAM.len() {
                check(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
            }
        }
    }

    #[test]
    fn a_byte_order_mark_before_the_first_line_is_not_part_of_it() {
        let stream = b"\xEF\xBB\xBFdata: hidden\n\ndata: \xEF\xBB\xBFkept\n\n";
        for split in 0..=stream.len() {
            let mut p = SseParser::new();
            let mut ev = p.push(&stream[..split]);
            ev.extend(p.push(&stream[split..]));
            assert_eq!(ev.len(), 2, "split at {split}");
            assert_eq!(ev[0].data.as_deref(), Some("hidden"));
            assert_eq!(&ev[0].raw[..3], BOM, "the raw bytes keep it");
            // Only the stream's first line loses it.
            assert_eq!(ev[1].data.as_deref(), Some("\u{FEFF}kept"));
        }
        let mut p = SseParser::new();
        assert!(p.push(b"\xEF\xBB\xBFdata: tail").is_empty());
        assert_eq!(p.finish().unwrap().data.as_deref(), Some("tail"));
    }

    /// An upstream that ends lines with CR alone gets each event out as soon as its blank line
    /// arrives, not when the next event starts.
    #[test]
    fn a_cr_terminated_event_is_not_held_for_the_next_byte() {
        let mut p = SseParser::new();
        let ev = p.push(b"data: x\r\r");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data.as_deref(), Some("x"));
        // A CRLF split after its CR: the LF is not an empty line of its own.
        let mut p = SseParser::new();
        assert!(p.push(b"data: a\r").is_empty());
        assert!(p.push(b"\ndata: b\r").is_empty());
        let ev = p.push(b"\n\r\n");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data.as_deref(), Some("a\nb"));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let mut p = SseParser::new();
        let ev = p.push(b"data: a\n\ndata: partial");
        assert_eq!(ev.len(), 1);
        let tail = p.finish().unwrap();
        assert_eq!(&tail.raw[..], b"data: partial");
        assert_eq!(tail.data.as_deref(), Some("partial"));
        assert_eq!(p.finish(), None);
    }
}
