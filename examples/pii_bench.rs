//! CPU cost of the `redact` detectors: nanoseconds per KiB of chat-like text, for each detector
//! alone and all together, on text without personal data (the common case on the allow path:
//! the byte pre-scan should make it cheap) and on the same text with some in it.
//!
//! The texts are built from the labelled set's lines (tests/data/pii/labelled.jsonl): "clean"
//! is ordinary chat prose (its near-miss lines excluded, since dates and order numbers are
//! exactly what makes a detector work), "near misses" is the near-miss lines alone, "with PII"
//! the lines with expected spans. Each is repeated to about 16 KiB and cut into 1 KiB messages,
//! as requests carry them.
//!
//!   cargo build --release --bins --examples
//!   target/release/examples/pii_bench [--iters N]

use guardgate::redact::detect::{Detectors, Kind};
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Plain chat without anything a detector looks for beyond `@`-free prose and a few numbers.
const CLEAN: &str = "Could you help me rewrite this paragraph so it sounds friendlier? We are \
writing to let you know that the workshop has moved to the larger room on the second floor, and \
that lunch will be served at noon. Please bring your laptop and a charger. If you have dietary \
requirements, tell the organisers before Thursday so they can plan for them. The slides from \
last week are on the shared drive under the training folder. Thanks for your patience while we \
sorted out the schedule, and see you there. Also: what are three good icebreakers for a group \
of twenty people who mostly know each other already? Keep each one under two minutes. ";

/// Median over 7 rounds of the mean time per call of `f`.
fn time<T>(iters: u32, mut f: impl FnMut() -> T) -> Duration {
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[3]
}

/// Cuts `source` (repeated as needed) into messages of about 1 KiB, 16 of them, at char
/// boundaries between lines.
fn messages(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in lines.iter().cycle() {
        cur.push_str(line);
        cur.push('\n');
        if cur.len() >= 1024 {
            out.push(std::mem::take(&mut cur));
            if out.len() == 16 {
                break;
            }
        }
    }
    out
}

fn main() {
    let iters: u32 = arg("--iters", "200").parse().unwrap();
    let set = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pii/labelled.jsonl"
    ))
    .expect("labelled set");
    let (mut pii, mut near) = (Vec::new(), Vec::new());
    for line in set.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let text = v["text"].as_str().unwrap().to_string();
        if v.get("spans").is_some() {
            pii.push(text);
        } else {
            near.push(text);
        }
    }
    let clean: Vec<String> = CLEAN.split(". ").map(|s| format!("{s}.")).collect();
    let corpora = [
        ("clean", messages(&clean)),
        ("near misses", messages(&near)),
        ("with PII", messages(&pii)),
    ];
    let mut configs: Vec<(String, Detectors)> = Kind::ALL
        .iter()
        .map(|&k| {
            (
                k.as_str().to_string(),
                Detectors {
                    kinds: vec![k],
                    ..Detectors::default()
                },
            )
        })
        .collect();
    configs.push(("all".into(), Detectors::all()));
    // First use compiles the patterns and libphonenumber's metadata: not per-request cost.
    for (_, d) in &configs {
        for (_, msgs) in &corpora {
            for m in msgs {
                std::hint::black_box(d.find(m));
            }
        }
    }
    print!("| detectors |");
    for (name, _) in &corpora {
        print!(" {name} (ns/KiB) |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(corpora.len()));
    for (name, d) in &configs {
        print!("| {name} |");
        for (_, msgs) in &corpora {
            let bytes: usize = msgs.iter().map(String::len).sum();
            let per_round = time(iters, || {
                let mut n = 0;
                for m in msgs {
                    n += d.find(m).len();
                }
                n
            });
            let ns_per_kib = per_round.as_nanos() as f64 * 1024.0 / bytes as f64;
            print!(" {ns_per_kib:.0} |");
        }
        println!();
    }
    let found: usize = corpora[2]
        .1
        .iter()
        .map(|m| Detectors::all().find(m).len())
        .sum();
    println!(
        "\n16 messages of about 1 KiB each per corpus; {found} spans found in the PII corpus; median of 7 rounds of {iters}."
    );
}
