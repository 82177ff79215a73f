//! The load generator of `bench/offpath/run.sh`: sends chat completion requests to one URL from
//! `--conc` clients, each waiting for its reply before sending the next (every request a
//! different text, so no verdict cache answers), until `--n` requests or `--seconds` have
//! passed, and prints one summary line:
//!
//!   n=.. ok=.. failed=.. p50_ms=.. p99_ms=.. max_ms=.. mean_ms=.. rps=..
//!
//! With `--out FILE`, one line per request: `request_id status latency_us` (the id is the
//! gateway's `x-guardgate-request-id`, which the audit records carry).
//!
//!   offpath_load --url http://127.0.0.1:18600/shadow/v1/chat/completions --n 40 --conc 1 \
//!       --header 'x-mock-delay-ms: 500' [--seconds S] [--tag T] [--out FILE]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    n: usize,
    conc: usize,
    seconds: Option<f64>,
    headers: Vec<(String, String)>,
    tag: String,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        n: usize::MAX,
        conc: 1,
        seconds: None,
        headers: Vec::new(),
        tag: "run".into(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        match k.as_str() {
            "--url" => a.url = v,
            "--n" => a.n = v.parse().unwrap_or_else(|_| usage("--n")),
            "--conc" => a.conc = v.parse().unwrap_or_else(|_| usage("--conc")),
            "--seconds" => a.seconds = Some(v.parse().unwrap_or_else(|_| usage("--seconds"))),
            "--header" => {
                let (name, value) = v.split_once(':').unwrap_or_else(|| usage("--header"));
                a.headers.push((name.trim().into(), value.trim().into()));
            }
            "--tag" => a.tag = v,
            "--out" => a.out = Some(v),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.url.is_empty() || (a.n == usize::MAX && a.seconds.is_none()) || a.conc == 0 {
        usage("--url and one of --n, --seconds are required");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("offpath_load: {why}\nusage: offpath_load --url URL (--n N | --seconds S) [--conc C] [--header 'k: v']... [--tag T] [--out FILE]");
    std::process::exit(2);
}

/// One request as the client saw it.
struct Done {
    id: String,
    status: u16,
    latency: Duration,
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(a.conc)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let started = Instant::now();
    let stop_at = a.seconds.map(|s| started + Duration::from_secs_f64(s));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Mutex::new(Vec::<Done>::new()));
    let workers: Vec<_> = (0..a.conc)
        .map(|_| {
            let (a, client, next, done) = (a.clone(), client.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= a.n || stop_at.is_some_and(|t| Instant::now() >= t) {
                        return;
                    }
                    let text = format!(
                        "Plan a quiet weekend by the coast for two, with walks and a good book ({} #{i}).",
                        a.tag
                    );
                    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]});
                    let mut rb = client.post(&a.url).json(&body);
                    for (k, v) in &a.headers {
                        rb = rb.header(k, v);
                    }
                    let t0 = Instant::now();
                    let (status, id) = match rb.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let id = r
                                .headers()
                                .get("x-guardgate-request-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string();
                            // The whole body: latency is until the client has the reply.
                            match r.bytes().await {
                                Ok(_) => (status, id),
                                Err(_) => (0, id),
                            }
                        }
                        Err(_) => (0, "-".to_string()),
                    };
                    let latency = t0.elapsed();
                    done.lock().unwrap().push(Done {
                        id,
                        status,
                        latency,
                    });
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    let done = std::mem::take(&mut *done.lock().unwrap());
    if let Some(path) = &a.out {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("--out file"));
        for d in &done {
            writeln!(f, "{} {} {}", d.id, d.status, d.latency.as_micros()).unwrap();
        }
    }
    let ok = done
        .iter()
        .filter(|d| (200..300).contains(&d.status))
        .count();
    let mut ms: Vec<f64> = done.iter().map(|d| d.latency.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if ms.is_empty() {
            return f64::NAN;
        }
        let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    println!(
        "n={} ok={} failed={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} mean_ms={:.2} rps={:.1}",
        done.len(),
        ok,
        done.len() - ok,
        pct(0.50),
        pct(0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        mean,
        done.len() as f64 / elapsed.as_secs_f64()
    );
}
