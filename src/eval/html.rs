//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no external assets).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::metrics::fmt3;
use super::report::{PolicyReport, Report};

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2330;max-width:1100px}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}\
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}th,td{border:1px solid #d6d9e0;padding:.25rem .5rem;text-align:right}\
th{background:#f2f4f8}td.l,th.l{text-align:left}.bad{color:#b3261e;font-weight:600}.ok{color:#1b7f3b;font-weight:600}\
.muted{color:#667}.cm td{min-width:4.5rem;text-align:center}.chart{margin:.4rem 0}code{background:#f2f4f8;padding:0 .2rem}";

/// A horizontal bar chart of precision, recall, F1 and FPR (0..1).
pub fn chart(p: &PolicyReport) -> String {
    let m = &p.metrics;
    let bars = [
        ("precision", m.precision, "#3565c9"),
        ("recall", m.recall, "#2e9a5a"),
        ("F1", m.f1, "#7a4bc2"),
        ("FPR", m.fpr, "#c8452d"),
    ];
    let (w, bar_w, h) = (420, 300.0, 26);
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="metrics for {}" width="{w}" height="{}" viewBox="0 0 {w} {}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(&p.id),
        h * bars.len() + 8,
        h * bars.len() + 8
    );
    for (i, (name, v, color)) in bars.iter().enumerate() {
        let y = i * h + 4;
        let len = v.unwrap_or(0.0).clamp(0.0, 1.0) * bar_w;
        let _ = write!(
            s,
            r##"<text x="0" y="{}" font-size="12" fill="#333">{name}</text><rect x="70" y="{y}" width="{bar_w}" height="18" fill="#eef0f4"/><rect x="70" y="{y}" width="{len:.1}" height="18" fill="{color}"/><text x="{}" y="{}" font-size="12" fill="#333">{}</text>"##,
            y + 13,
            70.0 + bar_w + 6.0,
            y + 13,
            fmt3(*v)
        );
    }
    s.push_str("</svg>");
    s
}

fn policy_section(s: &mut String, p: &PolicyReport) {
    let c = &p.confusion;
    let _ = write!(
        s,
        r#"<h2 id="{id}">{id} <span class="muted">v{} · {} cases</span></h2>"#,
        escape(&p.version),
        p.n,
        id = escape(&p.id)
    );
    if !p.path.is_empty() {
        let _ = write!(
            s,
            r#"<p class="muted">{} · cases {}</p>"#,
            escape(&p.path),
            escape(&p.cases_path)
        );
    }
    s.push_str(&chart(p));
    let _ = write!(
        s,
        r#"<table class="cm"><tr><th></th><th>predicted 1</th><th>predicted 0</th></tr><tr><th>label 1</th><td>TP {}</td><td>FN {}</td></tr><tr><th>label 0</th><td>FP {}</td><td>TN {}</td></tr></table>"#,
        c.tp, c.fn_, c.fp, c.tn
    );
    let _ = write!(
        s,
        "<p>latency p50 {:.3} ms · p90 {:.3} ms · p99 {:.3} ms · errors {} · code mismatches {}</p>",
        p.latency.p50_ms, p.latency.p90_ms, p.latency.p99_ms, p.errors, p.code_mismatches
    );
    if !p.thresholds.is_empty() {
        if p.threshold_failures.is_empty() {
            s.push_str(r#"<p class="ok">thresholds met</p>"#);
        } else {
            let _ = write!(
                s,
                r#"<p class="bad">thresholds not met: {}</p>"#,
                escape(&p.threshold_failures.join("; "))
            );
        }
    }
    let failing: Vec<_> = p.failing().collect();
    if !failing.is_empty() {
        s.push_str(r#"<table><tr><th class="l">case</th><th class="l">outcome</th><th class="l">text</th><th class="l">expected</th><th class="l">why</th></tr>"#);
        for r in failing {
            let why = r
                .error
                .as_deref()
                .map(|e| format!("error: {e}"))
                .or_else(|| r.rationale.clone())
                .unwrap_or_else(|| "not flagged".into());
            let _ = write!(
                s,
                r#"<tr><td class="l">{}</td><td class="l bad">{}</td><td class="l">{}</td><td class="l">{}</td><td class="l">{}</td></tr>"#,
                escape(&r.id),
                r.outcome.as_str(),
                escape(&r.preview),
                escape(r.expected_code.as_deref().unwrap_or("")),
                escape(&why)
            );
        }
        s.push_str("</table>");
    }
}

/// Writes `report.json` and `report.html` into `dir` (created if needed).
pub fn write(r: &Report, dir: &std::path::Path) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)?;
    std::fs::write(&html, render(r))?;
    Ok((json, html))
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>guardgate {} report</title><style>{CSS}</style></head><body>",
        escape(&r.kind)
    );
    let _ = write!(
        s,
        "<h1>guardgate {} — backend <code>{}</code></h1><p class=\"muted\">generated at {} (unix) by guardgate {}</p>",
        escape(&r.kind),
        escape(&r.backend),
        r.generated_at,
        escape(&r.guardgate_version)
    );
    s.push_str(r#"<table><tr><th class="l">policy</th><th>n</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th><th>errors</th><th>precision</th><th>recall</th><th>F1</th><th>FPR</th><th>p50 ms</th><th>p99 ms</th><th class="l">thresholds</th></tr>"#);
    for p in r.policies.iter().chain(r.summary.iter()) {
        let c = &p.confusion;
        let m = &p.metrics;
        let th = if p.thresholds.is_empty() {
            String::new()
        } else if p.threshold_failures.is_empty() {
            r#"<span class="ok">met</span>"#.into()
        } else {
            r#"<span class="bad">not met</span>"#.into()
        };
        let _ = write!(
            s,
            r##"<tr><td class="l"><a href="#{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td class="l">{th}</td></tr>"##,
            p.n,
            c.tp,
            c.fp,
            c.tn,
            c.fn_,
            p.errors,
            fmt3(m.precision),
            fmt3(m.recall),
            fmt3(m.f1),
            fmt3(m.fpr),
            p.latency.p50_ms,
            p.latency.p99_ms,
            id = escape(&p.id)
        );
    }
    s.push_str("</table>");
    for p in r.policies.iter().chain(r.summary.iter()) {
        policy_section(&mut s, p);
    }
    s.push_str("</body></html>\n");
    s
}
