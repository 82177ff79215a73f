//! Writes the tiny gpt-oss checkpoint of the tests (random weights, a scripted harmony answer;
//! see tests/it/support/tiny_gpt_oss.rs), for bench/model/gpu-check.sh and for trying the
//! gpt-oss path by hand:
//!
//!   tiny_gpt_oss OUT_DIR [--tiktoken models/o200k_base.tiktoken] [--final 1] [--analysis WORDS]
//!
//! `--final` is the final channel's text and `--analysis` the analysis channel's, as
//! space-separated tokens of o200k_base (a leading `_` stands for a space: `The _user _asks`);
//! `--analysis ""` leaves the analysis message out.

#[allow(dead_code)]
#[path = "../tests/it/support/tiny_gpt_oss.rs"]
mod tiny_gpt_oss;

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut tiktoken = PathBuf::from("models/o200k_base.tiktoken");
    let mut final_answer = "1".to_string();
    let mut analysis = "The _content _asks _for _nothing _harmful .".to_string();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--tiktoken" => tiktoken = value().into(),
            "--final" => final_answer = value(),
            "--analysis" => analysis = value(),
            _ if out.is_none() && !a.starts_with('-') => out = Some(PathBuf::from(&a)),
            _ => {
                eprintln!("usage: tiny_gpt_oss OUT_DIR [--tiktoken PATH] [--final TEXT] [--analysis WORDS]");
                std::process::exit(2)
            }
        }
    }
    let Some(out) = out else {
        eprintln!(
            "usage: tiny_gpt_oss OUT_DIR [--tiktoken PATH] [--final TEXT] [--analysis WORDS]"
        );
        std::process::exit(2)
    };
    let words =
        |s: &str| -> Vec<String> { s.split_whitespace().map(|w| w.replace('_', " ")).collect() };
    let analysis = words(&analysis);
    let final_answer = words(&final_answer);
    let a: Vec<&str> = analysis.iter().map(String::as_str).collect();
    let f: Vec<&str> = final_answer.iter().map(String::as_str).collect();
    let script = tiny_gpt_oss::Script {
        analysis: &a,
        final_answer: &f,
    };
    if let Err(e) = tiny_gpt_oss::write(&out, &tiktoken, &script) {
        eprintln!("tiny_gpt_oss: {e}");
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}
