//! The SSE parser on arbitrary bytes cut at arbitrary points (the first byte chooses the chunk
//! size): no panic, and every API's stream tracker reads whatever events come out.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/wire/mod.rs"]
mod wire;

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 64) + 1;
    let mut trackers: Vec<_> = wire::Api::all().iter().map(|a| a.stream()).collect();
    let mut parser = wire::sse::SseParser::new();
    let mut events = Vec::new();
    for chunk in body.chunks(size) {
        events.extend(parser.push(chunk));
    }
    events.extend(parser.finish());
    for ev in &events {
        for t in trackers.iter_mut() {
            let _ = t.on_event(ev);
        }
    }
});
