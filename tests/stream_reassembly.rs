//! Property tests: however a real-format stream is split into reads, the SSE parser yields the
//! same events and the tracker reassembles exactly the text the model produced.

mod support;

use guardgate::wire::output::StreamTracker;
use guardgate::wire::sse::SseParser;
use guardgate::wire::Api;
use std::collections::BTreeMap;
use support::mock;

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

fn reassemble(api: Api, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, BTreeMap<String, String>) {
    let mut p = SseParser::new();
    let mut t = StreamTracker::new(api);
    let mut raws = Vec::new();
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for piece in pieces {
        for ev in p.push(piece) {
            for (k, d) in t.on_event(&ev).deltas {
                text.entry(k).or_default().push_str(&d);
            }
            raws.push(ev.raw.to_vec());
        }
    }
    assert!(p.finish().is_none());
    (raws, text)
}

#[test]
fn any_split_reassembles_the_same_events_and_text() {
    let reply =
        "Grüße! ☕ Ünïcödé, 日本語 and emoji 🎉🎉 across many words so there are many events.";
    for (api, stream, key) in [
        (
            Api::OpenAiChat,
            mock::chat_sse("m", reply),
            "choices[0].content",
        ),
        (
            Api::AnthropicMessages,
            mock::anthropic_sse("m", reply),
            "content[0]",
        ),
        (
            Api::OpenAiResponses,
            mock::responses_sse("m", reply),
            "output[0].content[0]",
        ),
    ] {
        // CRLF line endings are legal SSE too; test both.
        let crlf = String::from_utf8(stream.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        for data in [stream, crlf] {
            let (want_raw, want_text) = reassemble(api, &[&data]);
            assert_eq!(want_text[key], reply, "{api:?}");
            let joined: Vec<u8> = want_raw.concat();
            assert_eq!(
                joined, data,
                "{api:?}: event bytes must cover the stream exactly"
            );
            for seed in 1..=300u64 {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let pieces = random_split(&data, &mut rng);
                let (raw, text) = reassemble(api, &pieces);
                assert_eq!(raw, want_raw, "{api:?} seed {seed}");
                assert_eq!(text, want_text, "{api:?} seed {seed}");
            }
        }
    }
}
