//! Precision and recall of the `redact` detectors over a labelled set, per kind (span-exact and
//! overlap), as a Markdown table; `--mistakes` also lists every missed and wrongly found span.
//!
//!   cargo build --release --bins --examples
//!   target/release/examples/pii_eval [tests/data/pii/labelled.jsonl] [--mistakes]

use guardgate::redact::detect::eval::evaluate;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pii/labelled.jsonl").to_string()
        });
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let report = match evaluate(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    print!("{}", report.table());
    if args.iter().any(|a| a == "--mistakes") {
        println!();
        for m in &report.mistakes {
            println!("{m}");
        }
    }
}
