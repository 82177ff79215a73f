//! Replay: a candidate policy judged over captured traffic with the gateway's own cascade, and
//! what would change: decisions that flip (by code, with their texts), precision and recall of
//! the live decisions and of the candidate against the labelled ones, and what the replay cost
//! in model calls, tokens and time.
//!
//! It sees what was captured: with `capture = "flagged"`, the traffic the live version flagged
//! (so a candidate can be shown to stop flagging, never to start flagging the rest);
//! `capture = "all"` covers both ways.

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::store::Detail;
use crate::classify::{Cascade, Content};
use crate::eval::{Confusion, Metrics};
use crate::policy::Policy;
use crate::wire::{Segment, Source};

/// Captured decisions replayed at most, unless told otherwise.
pub const DEFAULT_LIMIT: usize = 1000;

/// Texts of flips kept in the report per direction.
const FLIPS_KEPT: usize = 200;

pub struct Options {
    pub concurrency: usize,
    /// Per decision.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Flip {
    pub decision_id: i64,
    pub request_id: String,
    pub ts_ms: i64,
    pub live_version: String,
    pub live: String,
    pub live_code: Option<String>,
    pub candidate: String,
    pub candidate_code: Option<String>,
    pub label: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CodeCounts {
    /// Allowed live, a violation under the candidate.
    pub to_violation: u64,
    /// A violation live, allowed under the candidate.
    pub to_allow: u64,
    /// A violation both times, under another code.
    pub code_changed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cost {
    /// Verdicts a model backend produced (not from its cache).
    pub model_calls: u64,
    pub cache_hits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wall-clock time of the whole replay.
    pub wall_ms: f64,
    /// Classifier time summed over decisions (more than `wall_ms` when they overlap).
    pub classifier_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quality {
    pub labelled: u64,
    pub confusion: Confusion,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayReport {
    pub policy_id: String,
    pub candidate_version: String,
    pub candidate_hash: String,
    /// Captured decisions replayed.
    pub replayed: u64,
    pub unchanged: u64,
    pub to_violation: u64,
    pub to_allow: u64,
    pub code_changed: u64,
    /// The candidate could not judge (the live decision stays as it was).
    pub candidate_errors: u64,
    /// Live decisions that were classifier errors (any verdict of the candidate is new).
    pub live_errors: u64,
    /// By code: the live code for flips to allow and code changes, the candidate's for flips to
    /// a violation (`-` when none).
    pub by_code: BTreeMap<String, CodeCounts>,
    pub flips: Vec<Flip>,
    /// Against the labelled decisions (both `None` without labels).
    pub live_quality: Option<Quality>,
    pub candidate_quality: Option<Quality>,
    pub cost: Cost,
}

fn source(s: &str) -> Source {
    match s {
        "instructions" => Source::Instructions,
        "user" => Source::User,
        "assistant" => Source::Assistant,
        "tool_result" => Source::ToolResult,
        "tool_definition" => Source::ToolDefinition,
        "tool_call" => Source::ToolCall,
        _ => Source::Other,
    }
}

/// The content as the classifier saw it (masked and cut as stored).
pub fn content(d: &Detail) -> Content {
    let segs = d
        .capture
        .as_ref()
        .map(|c| {
            c.segments
                .iter()
                .map(|s| Segment {
                    source: source(&s.source),
                    text: s.text.clone(),
                    location: s.location.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Content::from_segments(segs)
}

fn text_of(d: &Detail) -> String {
    d.capture
        .as_ref()
        .map(|c| {
            c.segments
                .iter()
                .map(|s| format!("[{}] {}", s.source, s.text))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Replays `candidate` over `rows` (decisions of its policy id with their captured text).
/// `progress` counts the decisions done.
pub async fn run(
    cascade: &Cascade,
    candidate: &Policy,
    rows: Vec<Detail>,
    opts: &Options,
    progress: Option<&AtomicUsize>,
) -> ReplayReport {
    let started = Instant::now();
    let futs: Vec<_> = rows
        .iter()
        .map(|d| async move {
            let content = content(d);
            let t = Instant::now();
            let r = cascade
                .classify(candidate, &content, Instant::now() + opts.timeout)
                .await;
            if let Some(p) = progress {
                p.fetch_add(1, Ordering::Relaxed);
            }
            (r, t.elapsed())
        })
        .collect();
    let results: Vec<_> = stream::iter(futs)
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut rep = ReplayReport {
        policy_id: candidate.id.clone(),
        candidate_version: candidate.version.clone(),
        candidate_hash: candidate.content_hash.clone(),
        replayed: rows.len() as u64,
        unchanged: 0,
        to_violation: 0,
        to_allow: 0,
        code_changed: 0,
        candidate_errors: 0,
        live_errors: 0,
        by_code: BTreeMap::new(),
        flips: Vec::new(),
        live_quality: None,
        candidate_quality: None,
        cost: Cost::default(),
    };
    let (mut live_q, mut cand_q) = (Confusion::default(), Confusion::default());
    let mut labelled = 0;
    for (d, (r, took)) in rows.iter().zip(results) {
        let dec = &d.decision;
        rep.cost.classifier_ms += took.as_secs_f64() * 1000.0;
        let v = match r {
            Ok(v) => v,
            Err(_) => {
                rep.candidate_errors += 1;
                continue;
            }
        };
        if v.model.is_some() {
            if v.cache_hit {
                rep.cost.cache_hits += 1;
            } else {
                rep.cost.model_calls += 1;
                rep.cost.prompt_tokens += v.prompt_tokens.unwrap_or(0) as u64;
                rep.cost.completion_tokens += v.completion_tokens.unwrap_or(0) as u64;
            }
        }
        if let Some(truth) = dec.label.and_then(|l| l.truth(&dec.verdict)) {
            labelled += 1;
            live_q.add(truth, dec.verdict == "violation");
            cand_q.add(truth, v.violation);
        }
        let live = match dec.verdict.as_str() {
            "violation" => Some(true),
            "allow" => Some(false),
            _ => {
                rep.live_errors += 1;
                None
            }
        };
        let kind = match (live, v.violation) {
            (Some(false), true) => Some("to_violation"),
            (Some(true), false) => Some("to_allow"),
            (Some(true), true) if dec.code != v.code => Some("code_changed"),
            (Some(_), _) => None,
            (None, _) => continue,
        };
        let Some(kind) = kind else {
            rep.unchanged += 1;
            continue;
        };
        let code = match kind {
            "to_violation" => v.code.clone(),
            _ => dec.code.clone(),
        }
        .unwrap_or_else(|| "-".into());
        let c = rep.by_code.entry(code).or_default();
        match kind {
            "to_violation" => {
                rep.to_violation += 1;
                c.to_violation += 1;
            }
            "to_allow" => {
                rep.to_allow += 1;
                c.to_allow += 1;
            }
            _ => {
                rep.code_changed += 1;
                c.code_changed += 1;
            }
        }
        if rep.flips.len() < FLIPS_KEPT * 3 {
            rep.flips.push(Flip {
                decision_id: dec.id,
                request_id: dec.request_id.clone(),
                ts_ms: dec.ts_ms,
                live_version: dec.policy_version.clone(),
                live: dec.verdict.clone(),
                live_code: dec.code.clone(),
                candidate: if v.violation { "violation" } else { "allow" }.into(),
                candidate_code: v.code.clone(),
                label: dec.label.map(|l| l.as_str().to_string()),
                text: text_of(d),
            });
        }
    }
    if labelled > 0 {
        let q = |c: Confusion| Quality {
            labelled,
            confusion: c,
            metrics: c.metrics(),
        };
        rep.live_quality = Some(q(live_q));
        rep.candidate_quality = Some(q(cand_q));
    }
    rep.cost.wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    rep
}

/// The report as text, for the terminal.
pub fn render_text(r: &ReplayReport, max_flips: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "replay of {} {} ({}) over {} captured decisions",
        r.policy_id, r.candidate_version, r.candidate_hash, r.replayed
    );
    let _ = writeln!(
        s,
        "  unchanged {}  allow->violation {}  violation->allow {}  code changed {}  candidate errors {}  live errors {}",
        r.unchanged, r.to_violation, r.to_allow, r.code_changed, r.candidate_errors, r.live_errors
    );
    if !r.by_code.is_empty() {
        let _ = writeln!(
            s,
            "\n  {:<14} {:>15} {:>15} {:>13}",
            "code", "allow->violation", "violation->allow", "code changed"
        );
        for (code, c) in &r.by_code {
            let _ = writeln!(
                s,
                "  {code:<14} {:>15} {:>15} {:>13}",
                c.to_violation, c.to_allow, c.code_changed
            );
        }
    }
    let f = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{v:.3}"));
    match (&r.live_quality, &r.candidate_quality) {
        (Some(l), Some(c)) => {
            let _ = writeln!(s, "\n  against {} labelled decisions:", l.labelled);
            let _ = writeln!(
                s,
                "    {:<10} {:>9} {:>7} {:>6} {:>4} {:>4} {:>4} {:>4}",
                "", "precision", "recall", "F1", "TP", "FP", "TN", "FN"
            );
            for (name, q) in [("live", l), ("candidate", c)] {
                let _ = writeln!(
                    s,
                    "    {name:<10} {:>9} {:>7} {:>6} {:>4} {:>4} {:>4} {:>4}",
                    f(q.metrics.precision),
                    f(q.metrics.recall),
                    f(q.metrics.f1),
                    q.confusion.tp,
                    q.confusion.fp,
                    q.confusion.tn,
                    q.confusion.fn_
                );
            }
        }
        _ => {
            let _ = writeln!(
                s,
                "\n  no labelled decisions: precision and recall need labels (the review page)"
            );
        }
    }
    let c = &r.cost;
    let _ = writeln!(
        s,
        "\n  cost: {} model calls ({} cache hits), {} prompt + {} completion tokens, {:.1} s wall, {:.1} s classifier time",
        c.model_calls, c.cache_hits, c.prompt_tokens, c.completion_tokens, c.wall_ms / 1000.0, c.classifier_ms / 1000.0
    );
    if !r.flips.is_empty() {
        let _ = writeln!(s, "\n  flips (first {}):", max_flips.min(r.flips.len()));
        for fl in r.flips.iter().take(max_flips) {
            let one_line: String = fl.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = one_line.chars().take(160).collect();
            let _ = writeln!(
                s,
                "    #{} {} {} -> {} {}{}  {}",
                fl.decision_id,
                fl.live,
                fl.live_code.as_deref().unwrap_or(""),
                fl.candidate,
                fl.candidate_code.as_deref().unwrap_or(""),
                fl.label
                    .as_deref()
                    .map(|l| format!(" [labelled {l}]"))
                    .unwrap_or_default(),
                short
            );
        }
    }
    s
}
