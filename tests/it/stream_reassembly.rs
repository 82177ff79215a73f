//! Property tests: however a real-format stream is split into reads, the SSE parser yields the
//! same events and the tracker reassembles exactly the text the model produced.

use crate::support::mock;
use guardgate::wire::sse::SseParser;
use guardgate::wire::Api;
use std::collections::BTreeMap;

/// xorshift64*: deterministic, so a failure names a seed that reproduces it.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn random_split<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        // Mostly tiny pieces (1-3 bytes, splitting UTF-8 and CRLF), sometimes large ones.
        let n = match rng.next() % 10 {
            0..=5 => 1 + (rng.next() % 3) as usize,
            6..=8 => 1 + (rng.next() % 40) as usize,
            _ => 1 + (rng.next() % 400) as usize,
        };
        let end = (i + n).min(data.len());
        out.push(&data[i..end]);
        i = end;
    }
    out
}

/// What a split may not change: the events' fields, the bytes they cover (concatenated: a CRLF
/// split after its CR sends the LF with the next event's bytes) and the reassembled text.
type Fields = Vec<(Option<String>, Option<String>)>;

fn api(name: &str) -> Api {
    Api::from_name(name).expect("a registered API")
}

fn reassemble(api: Api, pieces: &[&[u8]]) -> (Fields, Vec<u8>, BTreeMap<String, String>) {
    let mut p = SseParser::new();
    let mut t = api.stream();
    let mut fields = Vec::new();
    let mut raw = Vec::new();
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(p.push(piece));
    }
    // Whatever finish() returns may hold only a trailing line-ending byte, never a field.
    if let Some(tail) = p.finish() {
        assert!(tail.event.is_none() && tail.data.is_none(), "{tail:?}");
        events.push(tail);
    }
    for ev in events {
        for (k, d) in t.on_event(&ev).deltas {
            text.entry(k).or_default().push_str(&d);
        }
        if ev.event.is_some() || ev.data.is_some() {
            fields.push((ev.event.clone(), ev.data.clone()));
        }
        raw.extend_from_slice(&ev.raw);
    }
    (fields, raw, text)
}

#[test]
fn any_split_reassembles_the_same_events_and_text() {
    let reply =
        "Grüße! ☕ Ünïcödé, 日本語 and emoji 🎉🎉 across many words so there are many events.";
    for (api, stream, key) in [
        (
            api("openai-chat"),
            mock::chat_sse("m", reply),
            "choices[0].content",
        ),
        (
            api("anthropic-messages"),
            mock::anthropic_sse("m", reply),
            "text",
        ),
        (
            api("openai-responses"),
            mock::responses_sse("m", reply),
            "output_text",
        ),
    ] {
        // CRLF line endings are legal SSE too; test both.
        let crlf = String::from_utf8(stream.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        for data in [stream, crlf] {
            let (want_fields, raw, want_text) = reassemble(api, &[&data]);
            assert_eq!(want_text[key], reply, "{api:?}");
            assert_eq!(
                raw, data,
                "{api:?}: event bytes must cover the stream exactly"
            );
            for seed in 1..=300u64 {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let pieces = random_split(&data, &mut rng);
                let (fields, raw, text) = reassemble(api, &pieces);
                assert_eq!(fields, want_fields, "{api:?} seed {seed}");
                assert!(raw == data, "{api:?} seed {seed}: bytes differ");
                assert_eq!(text, want_text, "{api:?} seed {seed}");
            }
        }
    }
}
