//! The test suite's mock LLM upstream as a standalone server, for the Python SDK tests, the
//! benchmarks and local try-outs: `cargo run --example mock_upstream -- 127.0.0.1:9100`.

#[path = "../tests/it/support/mock.rs"]
mod mock;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let m = mock::start_on(&addr).await;
    println!("mock upstream listening on {}", m.base_url());
    tokio::signal::ctrl_c().await.ok();
}
