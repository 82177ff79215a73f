//! The review store's benchmark: how fast the writer stores captured decisions (masking, cutting
//! and batched inserts, as `serve` runs them), and how long the queue page takes on a store of
//! that size (the query, the filter menus and the HTML), p50 and p99 per filter.
//!
//!   review_bench [RECORDS] [DB-PATH]      (default 100000 decisions, a temp SQLite file)
//!   REVIEW_BENCH_PG_URL=postgres://...    the same on PostgreSQL instead
//!
//! A record is one decision of a captured chat request (a system prompt and a user message, ~480
//! characters); each request is judged against 4 policies, as in bench/proxy's rules scenario, so
//! one capture carries 4 decisions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guardgate::review::capture::{Capture, Segment};
use guardgate::review::store::{Filter, LabelFilter, Location, NewDecision, Store};
use guardgate::review::web::{Params, Query};
use guardgate::review::writer::{Entry, Writer};

const POLICIES: [&str; 4] = [
    "general/self-harm",
    "general/prompt-injection",
    "general/hate-harassment",
    "general/violent-extremism",
];

fn policy(id: &str) -> Arc<guardgate::policy::Policy> {
    let text = format!(
        "+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1.0.0\"\n[[codes]]\ncode = \"C1\"\ntitle = \"c\"\n+++\n# {id}\n"
    );
    Arc::new(
        guardgate::policy::parse_policy(std::path::Path::new("/nonexistent/p.md"), text.as_bytes())
            .expect("policy"),
    )
}

fn entry(i: usize, policies: &[Arc<guardgate::policy::Policy>]) -> Entry {
    let ts = guardgate::review::now_ms() - 86_400_000 + i as i64;
    let user = format!(
        "Request {i}: can you summarise the attached meeting notes and list the action items with owners and due dates? Keep it under 200 words, and flag anything that looks like a risk to the launch date."
    );
    let capture = Capture {
        segments: vec![
            Segment {
                source: "instructions".into(),
                location: "messages[0].content".into(),
                text: "You are a helpful assistant for the operations team. Answer concisely, cite the notes you used, and never invent owners or dates that are not in the notes. If the notes are ambiguous, say so.".into(),
            },
            Segment {
                source: "user".into(),
                location: "messages[1].content".into(),
                text: user,
            },
        ],
    };
    let decisions = policies
        .iter()
        .enumerate()
        .map(|(k, p)| {
            // One decision in 50 a violation, so the filters have something to find.
            let violation = (i + k) % 50 == 0;
            let d = NewDecision {
                ts_ms: ts,
                request_id: format!("{i:032x}"),
                route: "chat".into(),
                api: "openai-chat".into(),
                direction: "input".into(),
                policy_id: p.id.clone(),
                policy_version: p.version.clone(),
                policy_hash: p.content_hash.clone(),
                verdict: if violation { "violation" } else { "allow" }.into(),
                effect: if violation { "blocked" } else { "allowed" }.into(),
                action: "block".into(),
                code: violation.then(|| "C1".into()),
                backend: Some("rules".into()),
                latency_us: 12,
                ..Default::default()
            };
            (d, p.clone())
        })
        .collect();
    Entry {
        key: format!("{i:032x}-input-{i}"),
        ts_ms: ts,
        capture: Arc::new(capture),
        decisions,
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let loc = match std::env::var("REVIEW_BENCH_PG_URL") {
        Ok(url) => Location::Postgres(url),
        Err(_) => Location::Sqlite(
            args.get(2)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| tmp.path().join("review.db")),
        ),
    };
    println!(
        "review store benchmark: {records} decisions, store {}",
        loc.describe()
    );
    let metrics = Arc::new(guardgate::metrics::Metrics::new());
    let policies: Vec<_> = POLICIES.iter().map(|p| policy(p)).collect();
    let store = Store::open(loc.clone()).expect("store");
    let mut w = Writer::new(
        loc.clone(),
        loc.open().expect("writer"),
        16_384,
        metrics.clone(),
    );

    // Writes: batches of 256 captures (1,024 decisions), the writer's largest batch.
    let requests = records.div_ceil(policies.len());
    let started = Instant::now();
    let mut i = 0;
    while i < requests {
        let n = 256.min(requests - i);
        w.write((i..i + n).map(|k| entry(k, &policies)).collect());
        i += n;
    }
    let took = started.elapsed();
    let errors = metrics.render();
    assert!(
        !String::from_utf8_lossy(&errors).contains("review_write"),
        "writes failed"
    );
    let stored = store.page(&Filter::default(), None, 1).unwrap().total;
    println!(
        "write: {} decisions ({requests} captures) in {:.2} s: {:.0} decisions/s, {:.0} captured requests/s (stored: {})",
        requests * policies.len(),
        took.as_secs_f64(),
        (requests * policies.len()) as f64 / took.as_secs_f64(),
        requests as f64 / took.as_secs_f64(),
        stored.map_or(format!("more than {}", guardgate::review::store::COUNT_CAP), |n| n.to_string()),
    );

    // Label every 20th violation, so "unreviewed" and label filters have both kinds.
    let viol = Filter {
        verdict: Some("violation".into()),
        ..Default::default()
    };
    for d in store
        .page(&viol, None, 2000)
        .unwrap()
        .rows
        .iter()
        .step_by(20)
    {
        store
            .label(
                d.id,
                Some(guardgate::review::store::Label::Correct),
                None,
                1,
            )
            .unwrap();
    }

    // The queue page: query + filter menus + HTML, as the admin listener serves it.
    let now = guardgate::review::now_ms();
    let mid = store
        .page(&Filter::default(), None, records / 2)
        .unwrap()
        .next;
    let cases: Vec<(&str, String)> = vec![
        ("newest, no filter", String::new()),
        ("one policy", "policy=general%2Fprompt-injection".into()),
        (
            "violations of one policy",
            "policy=general%2Fself-harm&verdict=violation".into(),
        ),
        ("code", "code=C1".into()),
        ("unreviewed, last 7d", "label=unreviewed&since=7d".into()),
        ("labelled correct", "label=correct".into()),
        ("effect blocked", "effect=blocked".into()),
        ("shadow disagreement (none)", "disagree=1".into()),
        ("page in the middle", format!("before={}", mid.unwrap_or(1))),
    ];
    let runs = 200;
    println!("\nqueue page (50 rows), {runs} loads each: query + menus + HTML");
    println!(
        "  {:<30} {:>9} {:>9} {:>8}",
        "filter", "p50 ms", "p99 ms", "rows"
    );
    let mut all = Vec::new();
    for (name, qs) in &cases {
        let q = Query::from_params(&Params::parse(qs.as_bytes()), now);
        let mut times = Vec::with_capacity(runs);
        let mut nrows = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let page = store.page(&q.filter, q.before, 50).unwrap();
            let facets = store.facets().unwrap();
            let html = guardgate::review::page::queue(&guardgate::review::page::QueueView {
                q: &q,
                page: &page,
                facets: &facets,
                mode: "all",
                store: "bench",
                now_ms: now,
            });
            std::hint::black_box(html);
            times.push(t.elapsed());
            nrows = page.rows.len();
        }
        all.extend_from_slice(&times);
        println!(
            "  {:<30} {:>9.2} {:>9.2} {:>8}",
            name,
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            nrows
        );
    }
    println!(
        "  {:<30} {:>9.2} {:>9.2}",
        "all filters",
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );
    // The detail view's queries (decision, text, neighbours, same request).
    let id = store.page(&Filter::default(), None, 1).unwrap().rows[0].id - records as i64 / 3;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let d = store.detail(id).unwrap().unwrap();
        let f = Filter {
            label: LabelFilter::Unreviewed,
            ..Default::default()
        };
        std::hint::black_box(store.neighbours(&f, id).unwrap());
        std::hint::black_box(store.same_request(&d.decision.request_id).unwrap());
        times.push(t.elapsed());
    }
    println!(
        "\ndetail view queries: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut times, 0.5),
        pct(&mut times, 0.99)
    );
}
