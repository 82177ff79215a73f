//! The per-request CPU of the rules' input path, in process: parsing `bench/proxy/body.json`,
//! normalising it (`Content::from_segments`: every reading of every item and the joined texts),
//! and judging it against the benchmark policies' 20 rules (`bench/proxy/policies/bench`), none of
//! which match. Each step is timed apart, and the same for variants of the body: with typographic
//! punctuation and accents (so the folded reading exists), with a zero-width space (the split
//! reading), and with the user's message cut into text parts (the glued join).
//!
//! Columns: `written` is the written reading of every item alone (the normalisation there was
//! before the folded and split readings); `content` is all readings and joins; `rules` is the
//! 20 rules as the gateway runs them (joined texts, then items only on a hit or for anchored
//! rules); `per-item` is every rule over every item's readings, for comparison.
//!
//!   cargo build --release --bins --examples
//!   target/release/examples/rules_cost [--iters N]

use std::path::Path;
use std::time::{Duration, Instant};

use guardgate::classify::normalize::normalize;
use guardgate::classify::rules::{in_item, RulesClassifier};
use guardgate::classify::Content;
use guardgate::policy::{parse_policy, Policy};
use guardgate::wire::Api;
use serde_json::Value;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

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

fn main() {
    let iters: u32 = arg("--iters", "20000").parse().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("bench/proxy/policies/bench");
    let mut policies: Vec<Policy> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| parse_policy(&p, &std::fs::read(&p).unwrap()).unwrap())
        .collect();
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    let rules: usize = policies.iter().map(|p| p.rules.rules.len()).sum();

    let body: Value =
        serde_json::from_slice(&std::fs::read(root.join("bench/proxy/body.json")).unwrap())
            .unwrap();
    let mut variants = vec![("body.json as it is (ASCII)", body.clone())];
    let mut accented = body.clone();
    accented["messages"][1]["content"] = Value::String(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .replace("don't", "don’t")
            .replace("Lisbon", "Lisbõa")
            .replace("early October", "early October — café season"),
    );
    variants.push(("with ’, õ, é and — (folded reading)", accented.clone()));
    let mut hidden = body.clone();
    hidden["messages"][3]["content"] = Value::String(
        body["messages"][3]["content"]
            .as_str()
            .unwrap()
            .replace("shoes", "sho\u{200B}es"),
    );
    variants.push(("with a zero-width space (split reading)", hidden));
    let mut parts = body.clone();
    let text = body["messages"][1]["content"].as_str().unwrap();
    let words: Vec<&str> = text.split(' ').collect();
    parts["messages"][1]["content"] = Value::Array(
        words
            .chunks(words.len().div_ceil(4))
            .map(|w| serde_json::json!({"type": "text", "text": w.join(" ")}))
            .collect(),
    );
    variants.push(("user message in 4 text parts (glued join)", parts));

    println!(
        "{} policies, {rules} rules; {iters} calls a round, median of 7 rounds",
        policies.len()
    );
    println!(
        "{:<44} {:>9} {:>12} {:>12} {:>11} {:>13} {:>6}",
        "body", "parse µs", "written µs", "content µs", "rules µs", "per-item µs", "joins"
    );
    let api = Api::openai_chat();
    for (name, body) in variants {
        let bytes = serde_json::to_vec(&body).unwrap();
        let parse = time(iters, || api.parse_request(&bytes).unwrap());
        let segments = api.parse_request(&bytes).unwrap().segments;
        // The written reading alone: what normalisation cost before there were other readings.
        let written = time(iters, || {
            segments
                .iter()
                .map(|s| normalize(&s.text).len())
                .sum::<usize>()
        });
        // Building takes the segments by value: the copy made for each call is not its cost.
        let copy = time(iters, || segments.clone());
        let content = time(iters, || Content::from_segments(segments.clone())).saturating_sub(copy);
        let c = Content::from_segments(segments.clone());
        for p in &policies {
            assert!(!RulesClassifier::check(p, &c).violation, "{name}: {}", p.id);
        }
        let judge = time(iters, || {
            policies
                .iter()
                .filter(|p| RulesClassifier::check(p, &c).violation)
                .count()
        });
        // Every rule over every reading of every item on its own, as matching ran before items
        // were joined: what the joined texts are matched instead of.
        let per_item = time(iters, || {
            policies
                .iter()
                .flat_map(|p| &p.rules.rules)
                .filter(|r| c.items.iter().any(|i| in_item(r, i)))
                .count()
        });
        println!(
            "{:<44} {:>9.2} {:>12.2} {:>12.2} {:>11.2} {:>13.2} {:>6}",
            name,
            parse.as_secs_f64() * 1e6,
            written.as_secs_f64() * 1e6,
            content.as_secs_f64() * 1e6,
            judge.as_secs_f64() * 1e6,
            per_item.as_secs_f64() * 1e6,
            c.joined().len()
        );
    }
}
