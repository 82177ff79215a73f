//! The test suite's imitation model server (an OpenAI-compatible chat API answering in the
//! gpt-oss-safeguard format, what the `remote` backend calls) as a standalone server whose every
//! verdict takes a fixed time, for the benchmarks (`bench/offpath/run.sh`):
//! `imitation_model 127.0.0.1:9200 300` answers after 300 ms; the remote backend's `base_url` is
//! `http://127.0.0.1:9200/v1`.

#[allow(dead_code)]
#[path = "../tests/it/support/model_server.rs"]
mod model_server;

use std::sync::atomic::Ordering;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9200".into());
    let delay_ms: u64 = match args.next().map(|s| s.parse()) {
        None => 300,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("usage: imitation_model [ADDR] [DELAY_MS]: {e}");
            std::process::exit(2);
        }
    };
    let ms = model_server::start_on(&addr).await;
    ms.state.delay_ms.store(delay_ms, Ordering::Relaxed);
    ms.state.forget_bodies.store(true, Ordering::Relaxed);
    println!(
        "imitation model server listening on {} ({delay_ms} ms per verdict)",
        ms.base_url()
    );
    tokio::signal::ctrl_c().await.ok();
}
