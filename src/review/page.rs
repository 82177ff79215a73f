//! The review page's HTML: server-rendered, every value escaped, a little inline JavaScript for
//! the keyboard. No assets to serve and nothing to build.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::query::{Job, Query};
use super::replay::ReplayReport;
use super::store::{Decision, Detail, Facets, Label, Page, PolicyText};
use crate::eval::html::escape as e;
use crate::policy::Snapshot;

const CSS: &str = r#"
:root{--fg:#1c2230;--muted:#667085;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--accent:#2f5bd3;
--red:#b42318;--redbg:#fdecea;--amber:#9a5b00;--amberbg:#fff4e0;--green:#146c43;--greenbg:#e6f4ea;--grey:#475467;--greybg:#eef0f3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#141a26;color:#fff;padding:.55rem 1.2rem;display:flex;gap:1.4rem;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a:hover,header a.on{color:#fff}
header .brand{font-weight:650;color:#fff;letter-spacing:.01em}header .meta{margin-left:auto;color:#98a2b3;font-size:12px}
main{padding:1rem 1.2rem;max-width:1500px;margin:0 auto}
a{color:var(--accent)}
form.filters{display:flex;flex-wrap:wrap;gap:.45rem .6rem;align-items:end;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6rem .75rem;margin-bottom:.8rem}
form.filters label{display:flex;flex-direction:column;font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;gap:2px}
form.filters label.check{flex-direction:row;align-items:center;gap:.3rem;text-transform:none;font-size:13px;color:var(--fg);padding-bottom:.3rem}
select,input[type=text],textarea{font:inherit;border:1px solid #cfd4dc;border-radius:6px;padding:.25rem .4rem;background:#fff;min-width:7rem}
button,.button{font:inherit;border:1px solid #cfd4dc;background:#fff;border-radius:6px;padding:.3rem .75rem;cursor:pointer;color:var(--fg);text-decoration:none;display:inline-block}
button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
button:disabled{opacity:.4;cursor:not-allowed}
.summary{display:flex;gap:1rem;align-items:baseline;margin:.2rem 0 .5rem;color:var(--muted)}
.summary b{color:var(--fg)}
table.queue{width:100%;border-collapse:separate;border-spacing:0;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
.queue th{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);text-align:left;padding:.45rem .6rem;border-bottom:1px solid var(--line);background:#fafbfc;white-space:nowrap}
.queue td{padding:.42rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
.queue tr:last-child td{border-bottom:0}
.queue tbody tr{cursor:pointer}.queue tbody tr:hover{background:#f5f8ff}
.queue tr.sel{background:#e8efff;box-shadow:inset 3px 0 0 var(--accent)}
.queue td.text{max-width:0;width:46%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;color:#344054}
.queue td.when{white-space:nowrap;color:var(--muted);font-variant-numeric:tabular-nums}
.queue td.pol{white-space:nowrap}.queue td.pol small{color:var(--muted)}
.badge{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:12px;font-weight:560;white-space:nowrap;line-height:1.6}
.v-violation{background:var(--redbg);color:var(--red)}.v-allow{background:var(--greenbg);color:var(--green)}.v-error{background:var(--amberbg);color:var(--amber)}
.e{background:var(--greybg);color:var(--grey)}
.l-correct{background:var(--greenbg);color:var(--green)}.l-false_positive,.l-false_negative{background:var(--amberbg);color:var(--amber)}
.l-none{color:var(--muted);font-size:12px}
.dis{background:#f1e8ff;color:#6b3fb5}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.pager{display:flex;gap:.6rem;margin:.8rem 0}
.keys{color:var(--muted);font-size:12px;margin-top:1rem}
kbd{font-family:ui-monospace,monospace;font-size:11px;border:1px solid #cfd4dc;border-bottom-width:2px;border-radius:4px;padding:0 .3rem;background:#fff;color:var(--fg)}
.cols{display:grid;grid-template-columns:minmax(0,1.45fr) minmax(320px,1fr);gap:1rem;align-items:start}
@media (max-width:1000px){.cols{grid-template-columns:1fr}}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;margin-bottom:1rem}
.card h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 .6rem}
.seg{border:1px solid var(--line);border-radius:6px;margin-bottom:.6rem;overflow:hidden}
.seg .head{display:flex;gap:.6rem;align-items:center;background:#fafbfc;border-bottom:1px solid var(--line);padding:.25rem .55rem;font-size:12px;color:var(--muted)}
.seg.hit{border-color:#f3b4ae}.seg.hit .head{background:var(--redbg)}
.seg pre{margin:0;padding:.55rem .65rem;white-space:pre-wrap;word-break:break-word;font:13.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;max-height:28rem;overflow:auto}
.masked{background:#fff3c4;border-radius:3px;padding:0 2px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.25rem .9rem;margin:0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-word}
.rationale{white-space:pre-wrap;background:#fafbfc;border:1px solid var(--line);border-radius:6px;padding:.5rem .6rem;max-height:18rem;overflow:auto;margin:.3rem 0 0}
.verdict{font-size:18px;font-weight:650;margin-bottom:.4rem;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.labelform .buttons{display:flex;gap:.4rem;flex-wrap:wrap;margin:.5rem 0}
.labelform textarea{width:100%;min-height:3.2rem}
.nav{display:flex;gap:.5rem;align-items:center;margin-bottom:.8rem}.nav .crumb{margin-right:auto}
.note{color:var(--muted);font-size:12px}
pre.policy{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;white-space:pre-wrap;font:13px/1.5 ui-monospace,monospace}
table.small{border-collapse:collapse;font-size:13px}table.small td,table.small th{border:1px solid var(--line);padding:.25rem .5rem;text-align:right}table.small th{background:#fafbfc}table.small td.l,table.small th.l{text-align:left}
.flash{background:var(--greenbg);color:var(--green);border-radius:6px;padding:.4rem .7rem;margin-bottom:.8rem}
#help{display:none;position:fixed;right:1.2rem;bottom:1.2rem;background:#141a26;color:#fff;border-radius:8px;padding:.8rem 1rem;font-size:13px;box-shadow:0 6px 24px rgba(0,0,0,.25)}
#help kbd{color:#141a26}
"#;

/// Keyboard shortcuts. The queue: `j`/`k` move, `Enter`/`o` open, `/` the first filter. The
/// detail view: `c`/`f`/`n` label (correct, false positive, false negative) and go to the next
/// decision, `u` clears the label, `e` the note, `j`/`k` older/newer, `p` the policy text,
/// `Esc` back to the queue. `?` shows the list. Keys typed into a field stay in the field.
const JS: &str = r#"
(function(){
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr[data-href]'));
  var sel = rows.length ? 0 : -1;
  function mark(){ rows.forEach(function(r,i){ r.classList.toggle('sel', i===sel); });
    if (sel>=0) rows[sel].scrollIntoView({block:'nearest'}); }
  rows.forEach(function(r,i){ r.addEventListener('click', function(ev){
    if (ev.target.closest('a')) return; location.href = r.dataset.href; }); });
  mark();
  function go(id){ var a = document.getElementById(id); if (a) { location.href = a.href; return true; } return false; }
  function submitLabel(v){ var b = document.querySelector('button[name=label][value="'+v+'"]');
    if (b && !b.disabled) { b.click(); return true; } return false; }
  document.addEventListener('keydown', function(ev){
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target, typing = t && (t.tagName==='INPUT' || t.tagName==='TEXTAREA' || t.tagName==='SELECT');
    if (typing) { if (ev.key==='Escape') t.blur(); return; }
    var k = ev.key, done = true;
    if (rows.length && (k==='j' || k==='ArrowDown')) { sel = Math.min(sel+1, rows.length-1); mark(); }
    else if (rows.length && (k==='k' || k==='ArrowUp')) { sel = Math.max(sel-1, 0); mark(); }
    else if (rows.length && (k==='Enter' || k==='o')) { location.href = rows[sel].dataset.href; }
    else if (!rows.length && k==='j') { done = go('older'); }
    else if (!rows.length && k==='k') { done = go('newer'); }
    else if (k==='c') { done = submitLabel('correct'); }
    else if (k==='f') { done = submitLabel('false_positive'); }
    else if (k==='n') { done = submitLabel('false_negative'); }
    else if (k==='u') { done = submitLabel('clear'); }
    else if (k==='e') { var n = document.getElementById('note'); if (n) n.focus(); else done = false; }
    else if (k==='p') { done = go('policy-link'); }
    else if (k==='Escape') { done = go('back'); }
    else if (k==='/') { var f = document.querySelector('form.filters select'); if (f) f.focus(); else done = false; }
    else if (k==='?') { var h = document.getElementById('help'); h.style.display = h.style.display==='block' ? 'none' : 'block'; }
    else done = false;
    if (done) ev.preventDefault();
  });
})();
"#;

fn layout(title: &str, on: &str, body: &str) -> String {
    let tab = |href: &str, name: &str, key: &str| {
        format!(
            "<a href=\"{href}\"{}>{name}</a>",
            if on == key { " class=\"on\"" } else { "" }
        )
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · guardgate review</title><style>{CSS}</style></head><body><header><span class=\"brand\">guardgate review</span>{}{}{}<span class=\"meta\">press <kbd>?</kbd> for keys</span></header><main>{body}</main><div id=\"help\"><b>Keys</b><br><kbd>j</kbd>/<kbd>k</kbd> next/previous · <kbd>Enter</kbd> open<br><kbd>c</kbd> correct · <kbd>f</kbd> false positive · <kbd>n</kbd> false negative · <kbd>u</kbd> clear<br><kbd>e</kbd> note · <kbd>p</kbd> policy text · <kbd>Esc</kbd> back · <kbd>/</kbd> filters</div><script>{JS}</script></body></html>",
        e(title),
        tab("/review", "Queue", "queue"),
        tab("/review/export", "Export", "export"),
        tab("/review/replay", "Replay", "replay"),
    )
}

pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        "",
        &format!(
            "<div class=\"card\"><h2>{}</h2><p>{}</p></div>",
            e(title),
            e(text)
        ),
    )
}

pub fn login(error: Option<&str>) -> String {
    let err = error
        .map(|m| format!("<p class=\"bad\" style=\"color:var(--red)\">{}</p>", e(m)))
        .unwrap_or_default();
    layout(
        "Sign in",
        "",
        &format!(
            "<div class=\"card\" style=\"max-width:28rem\"><h2>Admin token</h2>{err}<form method=\"post\" action=\"/review/login\"><p><input type=\"text\" name=\"token\" id=\"token\" autocomplete=\"off\" style=\"width:100%\" autofocus></p><button class=\"primary\" type=\"submit\">Sign in</button></form><p class=\"note\">The token of <code>admin.token_env</code>. The page keeps a hash of it in a cookie for this path.</p></div>"
        ),
    )
}

fn ts(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

fn ago(now: i64, ms: i64) -> String {
    let s = ((now - ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn verdict_badge(v: &str) -> String {
    format!("<span class=\"badge v-{0}\">{0}</span>", e(v))
}

fn label_badge(l: Option<Label>) -> String {
    match l {
        Some(l) => format!(
            "<span class=\"badge l-{}\">{}</span>",
            l.as_str(),
            l.title()
        ),
        None => "<span class=\"l-none\">unreviewed</span>".into(),
    }
}

fn options(values: &[String], chosen: &str, any: &str) -> String {
    let mut s = format!("<option value=\"\">{}</option>", e(any));
    for v in values {
        let _ = write!(
            s,
            "<option{}>{}</option>",
            if v == chosen { " selected" } else { "" },
            e(v)
        );
    }
    // A value in the URL that no facet lists (yet) still shows as chosen.
    if !chosen.is_empty() && !values.iter().any(|v| v == chosen) {
        let _ = write!(s, "<option selected>{}</option>", e(chosen));
    }
    s
}

pub struct QueueView<'a> {
    pub q: &'a Query,
    pub page: &'a Page,
    pub facets: &'a Facets,
    pub mode: &'a str,
    pub store: &'a str,
    pub now_ms: i64,
}

fn detail_href(id: i64, qs: &str) -> String {
    if qs.is_empty() {
        format!("/review/d/{id}")
    } else {
        format!("/review/d/{id}?{qs}")
    }
}

pub fn queue(v: &QueueView<'_>) -> String {
    let q = v.q;
    let qs = q.qs();
    let mut b = String::new();
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/review\">");
    for (name, kind, any) in [
        ("policy", "policy", "all policies"),
        ("version", "version", "any version"),
        ("effect", "effect", "any effect"),
        ("code", "code", "any code"),
        ("backend", "backend", "any backend"),
        ("route", "route", "any route"),
    ] {
        let _ = write!(
            b,
            "<label>{name}<select name=\"{name}\">{}</select></label>",
            options(v.facets.of(kind), q.value(name), any)
        );
    }
    let fixed = |vals: &[&str]| vals.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let _ = write!(
        b,
        "<label>verdict<select name=\"verdict\">{}</select></label>",
        options(
            &fixed(&["violation", "allow", "error"]),
            q.value("verdict"),
            "any verdict"
        )
    );
    let _ = write!(
        b,
        "<label>direction<select name=\"direction\">{}</select></label>",
        options(&fixed(&["input", "output"]), q.value("direction"), "both")
    );
    let _ = write!(
        b,
        "<label>time<select name=\"since\">{}</select></label>",
        options(&fixed(&["1h", "24h", "7d", "30d"]), &q.since, "all time")
    );
    let mut label_opts = String::from("<option value=\"\">any label</option>");
    for (val, name) in [
        ("unreviewed", "unreviewed"),
        ("reviewed", "reviewed"),
        ("correct", "correct"),
        ("false_positive", "false positive"),
        ("false_negative", "false negative"),
    ] {
        let _ = write!(
            label_opts,
            "<option value=\"{val}\"{}>{name}</option>",
            if q.label == val { " selected" } else { "" }
        );
    }
    let _ = write!(
        b,
        "<label>review<select name=\"label\">{label_opts}</select></label>"
    );
    let _ = write!(
        b,
        "<label class=\"check\"><input type=\"checkbox\" name=\"disagree\" value=\"1\"{}> shadow disagreement</label>",
        if q.filter.disagree { " checked" } else { "" }
    );
    b.push_str("<button class=\"primary\" type=\"submit\">Apply</button><a class=\"button\" href=\"/review\">Reset</a></form>");

    let total = match v.page.total {
        Some(n) => format!("<b>{n}</b> decisions"),
        None => format!("more than <b>{}</b> decisions", super::store::COUNT_CAP),
    };
    let _ = write!(
        b,
        "<div class=\"summary\"><span id=\"total\">{total}</span><span>capture <b>{}</b> · store <span class=\"mono\">{}</span></span></div>",
        e(v.mode),
        e(v.store)
    );
    if v.page.rows.is_empty() {
        b.push_str("<div class=\"card\" id=\"empty\"><p>No decisions match. Captured decisions appear here within a second of being made.</p></div>");
    } else {
        b.push_str("<table class=\"queue\" id=\"queue\"><thead><tr><th>when</th><th>policy</th><th>verdict</th><th>effect</th><th>code</th><th>backend</th><th>text</th><th>review</th></tr></thead><tbody>");
        for d in &v.page.rows {
            row(&mut b, d, &qs, v.now_ms);
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<div class=\"pager\">");
    if q.before.is_some() {
        let _ = write!(
            b,
            "<a class=\"button\" href=\"/review{}\">« newest</a>",
            if qs.is_empty() {
                String::new()
            } else {
                format!("?{qs}")
            }
        );
    }
    if let Some(n) = v.page.next {
        let sep = if qs.is_empty() { "" } else { "&" };
        let _ = write!(
            b,
            "<a class=\"button\" id=\"next-page\" href=\"/review?{qs}{sep}before={n}\">older »</a>"
        );
    }
    b.push_str("</div>");
    b.push_str("<p class=\"keys\"><kbd>j</kbd> <kbd>k</kbd> move · <kbd>Enter</kbd> open · <kbd>/</kbd> filters · <kbd>?</kbd> all keys</p>");
    layout("Queue", "queue", &b)
}

fn row(b: &mut String, d: &Decision, qs: &str, now: i64) {
    let href = detail_href(d.id, qs);
    let dis = if d.disagree == Some(true) {
        " <span class=\"badge dis\" title=\"the shadow candidate judged otherwise\">shadow ≠</span>"
    } else {
        ""
    };
    let text = d
        .preview
        .as_deref()
        .map(e)
        .unwrap_or_else(|| "<span class=\"l-none\">text purged</span>".into());
    let _ = write!(
        b,
        "<tr data-href=\"{href}\" data-id=\"{id}\"><td class=\"when\" title=\"{t}\">{ago}</td><td class=\"pol\"><a href=\"{href}\">{pol}</a> <small>{ver}</small></td><td>{verdict}{dis}</td><td><span class=\"badge e\">{eff}</span></td><td class=\"mono\">{code}</td><td class=\"mono\">{backend}</td><td class=\"text\">{dir}{text}</td><td>{label}</td></tr>",
        id = d.id,
        t = ts(d.ts_ms),
        ago = ago(now, d.ts_ms),
        pol = e(&d.policy_id),
        ver = e(&d.policy_version),
        verdict = verdict_badge(&d.verdict),
        eff = e(&d.effect),
        code = e(d.code.as_deref().unwrap_or("")),
        backend = e(d.backend.as_deref().unwrap_or("")),
        dir = if d.direction == "output" { "<span class=\"note\">reply · </span>" } else { "" },
        label = label_badge(d.label),
    );
}

pub struct DetailView<'a> {
    pub q: &'a Query,
    pub d: &'a Detail,
    pub older: Option<i64>,
    pub newer: Option<i64>,
    pub same_request: &'a [Decision],
    pub policy_text: bool,
    pub now_ms: i64,
}

/// Captured text with the masks picked out.
fn show_text(t: &str) -> String {
    let escaped = e(t);
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped.as_str();
    while let Some(i) = rest.find("[MASKED:") {
        let Some(j) = rest[i..].find(']') else { break };
        out.push_str(&rest[..i]);
        let _ = write!(out, "<span class=\"masked\">{}</span>", &rest[i..i + j + 1]);
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

pub fn detail(v: &DetailView<'_>) -> String {
    let d = &v.d.decision;
    let qs = v.q.qs();
    let back = if qs.is_empty() {
        "/review".to_string()
    } else {
        format!("/review?{qs}")
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"nav\"><span class=\"crumb\"><a id=\"back\" href=\"{back}\">← queue</a> · decision <b>#{}</b> · <span title=\"{}\">{}</span></span>",
        d.id,
        ts(d.ts_ms),
        ago(v.now_ms, d.ts_ms)
    );
    match v.newer {
        Some(n) => {
            let _ = write!(
                b,
                "<a class=\"button\" id=\"newer\" href=\"{}\">‹ newer <kbd>k</kbd></a>",
                detail_href(n, &qs)
            );
        }
        None => b.push_str("<button disabled>‹ newer</button>"),
    }
    match v.older {
        Some(n) => {
            let _ = write!(
                b,
                "<a class=\"button\" id=\"older\" href=\"{}\">older <kbd>j</kbd> ›</a>",
                detail_href(n, &qs)
            );
        }
        None => b.push_str("<button disabled>older ›</button>"),
    }
    b.push_str("</div><div class=\"cols\"><div>");

    // What was judged.
    b.push_str("<div class=\"card\" id=\"captured\"><h2>What the classifier saw</h2>");
    match &v.d.capture {
        Some(c) => {
            let mut notes = vec![format!("{} characters", c.chars)];
            if c.masked > 0 {
                notes.push(format!("{} credential(s) masked", c.masked));
            }
            if c.truncated {
                notes.push("cut to the capture limit".into());
            }
            let _ = write!(b, "<p class=\"note\">{}</p>", e(&notes.join(" · ")));
            for s in &c.segments {
                let hit = d.location.as_deref() == Some(s.location.as_str());
                let _ = write!(
                    b,
                    "<div class=\"seg{}\"><div class=\"head\"><span class=\"badge e\">{}</span><code>{}</code>{}</div><pre>{}</pre></div>",
                    if hit { " hit" } else { "" },
                    e(&s.source),
                    e(&s.location),
                    if hit { "<span>where the rule matched</span>" } else { "" },
                    show_text(&s.text)
                );
            }
        }
        None => b.push_str("<p class=\"note\">No text: it was not captured, or the retention period purged it.</p>"),
    }
    b.push_str("</div>");
    if v.same_request.len() > 1 {
        b.push_str("<div class=\"card\"><h2>Other decisions on this request</h2><table class=\"small\"><tr><th class=\"l\">policy</th><th class=\"l\">direction</th><th class=\"l\">verdict</th><th class=\"l\">effect</th><th class=\"l\">code</th></tr>");
        for o in v.same_request.iter().filter(|o| o.id != d.id) {
            let _ = write!(
                b,
                "<tr><td class=\"l\"><a href=\"{}\">{}</a></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l mono\">{}</td></tr>",
                detail_href(o.id, &qs),
                e(&o.policy_id),
                e(&o.direction),
                verdict_badge(&o.verdict),
                e(&o.effect),
                e(o.code.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table></div>");
    }
    b.push_str("</div><div>");

    // The verdict.
    let _ = write!(
        b,
        "<div class=\"card\" id=\"verdict\"><h2>Verdict</h2><div class=\"verdict\">{} <span class=\"badge e\">{}</span>{}</div><dl class=\"kv\">",
        verdict_badge(&d.verdict),
        e(&d.effect),
        d.code
            .as_deref()
            .map(|c| format!("<code>{}</code>", e(c)))
            .unwrap_or_default()
    );
    let mut kv = |k: &str, val: String| {
        if !val.is_empty() {
            let _ = write!(b, "<dt>{}</dt><dd>{val}</dd>", e(k));
        }
    };
    let policy_link = if v.policy_text {
        format!(
            " · <a id=\"policy-link\" href=\"/review/policy/{}\">policy text at this version</a>",
            e(&d.policy_hash)
        )
    } else {
        String::new()
    };
    kv(
        "policy",
        format!(
            "<b>{}</b> {} <span class=\"mono note\">{}</span>{policy_link}",
            e(&d.policy_id),
            e(&d.policy_version),
            e(&d.policy_hash)
        ),
    );
    kv("action", e(&d.action));
    kv("severity", e(d.severity.as_deref().unwrap_or("")));
    kv(
        "rule",
        d.rule_id
            .as_deref()
            .map(|r| format!("<code>{}</code>", e(r)))
            .unwrap_or_default(),
    );
    kv("backend", e(d.backend.as_deref().unwrap_or("")));
    kv("model", e(d.model.as_deref().unwrap_or("")));
    kv(
        "confidence",
        d.confidence.map(|c| format!("{c:.3}")).unwrap_or_default(),
    );
    kv(
        "tokens",
        match (d.prompt_tokens, d.completion_tokens) {
            (Some(p), Some(c)) => format!("{p} prompt + {c} completion"),
            _ => String::new(),
        },
    );
    kv("latency", format!("{:.2} ms", d.latency_us as f64 / 1000.0));
    kv(
        "where",
        d.location
            .as_deref()
            .map(|l| format!("<code>{}</code>", e(l)))
            .unwrap_or_default(),
    );
    kv(
        "request",
        format!(
            "<code>{}</code> · {} · {} · {}",
            e(&d.request_id),
            e(&d.route),
            e(&d.api),
            e(&d.direction)
        ),
    );
    if let Some(cv) = &d.candidate_version {
        kv(
            "shadow candidate",
            format!(
                "{} → {} {}{}",
                e(cv),
                verdict_badge(d.candidate_verdict.as_deref().unwrap_or("-")),
                e(d.candidate_code.as_deref().unwrap_or("")),
                if d.disagree == Some(true) {
                    " <span class=\"badge dis\">disagrees</span>"
                } else {
                    ""
                }
            ),
        );
    }
    kv("error", e(d.error.as_deref().unwrap_or("")));
    b.push_str("</dl>");
    if let Some(r) = &d.rationale {
        let _ = write!(
            b,
            "<h2 style=\"margin-top:.8rem\">{}</h2><div class=\"rationale\">{}</div>",
            if d.model.is_some() {
                "Model rationale"
            } else {
                "Rationale"
            },
            e(r)
        );
    }
    b.push_str("</div>");

    // The label.
    let _ = write!(
        b,
        "<div class=\"card labelform\" id=\"label\"><h2>Review</h2><p>Now: <span id=\"current-label\">{}</span>{}</p><form method=\"post\" action=\"/review/d/{}/label\"><input type=\"hidden\" name=\"q\" value=\"{}\"><input type=\"hidden\" name=\"advance\" value=\"1\"><textarea id=\"note\" name=\"note\" placeholder=\"note (why; goes into the exported case)\">{}</textarea><div class=\"buttons\">",
        label_badge(d.label),
        d.label_note.as_deref().map(|n| format!(" — <i>{}</i>", e(n))).unwrap_or_default(),
        d.id,
        e(&qs),
        e(d.label_note.as_deref().unwrap_or(""))
    );
    for (l, key) in [
        (Label::Correct, "c"),
        (Label::FalsePositive, "f"),
        (Label::FalseNegative, "n"),
    ] {
        let ok = l.truth(&d.verdict).is_some();
        let _ =
            write!(
            b,
            "<button type=\"submit\" name=\"label\" value=\"{}\"{}{}>{} <kbd>{key}</kbd></button>",
            l.as_str(),
            if d.label == Some(l) { " class=\"primary\"" } else { "" },
            if ok { "" } else { " disabled" },
            l.title()
        );
    }
    b.push_str("<button type=\"submit\" name=\"label\" value=\"clear\">clear <kbd>u</kbd></button></div><p class=\"note\">Labelling moves on to the next decision in the queue. A false positive applies to a violation, a false negative to an allow.</p></form></div>");
    b.push_str("</div></div>");
    layout(&format!("Decision {}", d.id), "queue", &b)
}

pub fn policy_text(t: &PolicyText) -> String {
    let b = format!(
        "<div class=\"nav\"><span class=\"crumb\"><a id=\"back\" href=\"javascript:history.back()\">← back</a> · <b>{}</b> {} · <span class=\"mono\">{}</span> · <span class=\"mono note\">{}</span></span></div>{}<pre class=\"policy\" id=\"policy-text\">{}</pre>",
        e(&t.policy_id),
        e(&t.version),
        e(&t.hash),
        e(&t.path),
        if t.exact {
            String::new()
        } else {
            "<p class=\"note\">The file had changed before the store read it: this is the policy body the classifier read, without its front matter.</p>".into()
        },
        e(&t.text)
    );
    layout(&format!("{} {}", t.policy_id, t.version), "", &b)
}

pub fn export(
    policies: &[String],
    chosen: Option<&str>,
    out: Option<&super::export::Export>,
) -> String {
    let mut b = format!(
        "<form class=\"filters\" method=\"get\" action=\"/review/export\"><label>policy<select name=\"policy\">{}</select></label><button class=\"primary\" type=\"submit\">Show case lines</button></form>",
        options(policies, chosen.unwrap_or(""), "choose a policy")
    );
    if let (Some(p), Some(x)) = (chosen, out) {
        let _ = write!(
            b,
            "<div class=\"card\"><h2>{} new case line(s) for {}</h2><p class=\"note\">{} duplicate(s) merged, {} conflicting label(s) (latest kept), {} label(s) that state no truth skipped. <code>guardgate review export --policy {}</code> appends these to the policy's case file, leaving out what it already holds.</p><p><a class=\"button\" id=\"download\" href=\"/review/export.jsonl?policy={}\">Download JSONL</a></p><pre class=\"policy\" id=\"export-lines\">",
            x.cases.len(),
            e(p),
            x.duplicates,
            x.conflicts,
            x.skipped,
            e(p),
            form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
        );
        for c in &x.cases {
            b.push_str(&e(&serde_json::to_string(c).unwrap_or_default()));
            b.push('\n');
        }
        b.push_str("</pre></div>");
    }
    layout("Export", "export", &b)
}

pub fn replay(snap: &Snapshot, job: Option<&Job>, now: i64) -> String {
    let mut cands: Vec<_> = snap.candidates.values().collect();
    cands.sort_by(|a, b| a.id.cmp(&b.id));
    let mut b = String::new();
    if cands.is_empty() {
        b.push_str("<div class=\"card\"><h2>Replay</h2><p>No shadow candidate is loaded. Add one next to the live policy (same <code>id</code>, <code>candidate = true</code>); or run <code>guardgate policy replay CANDIDATE.md --since 24h</code> on any file.</p></div>");
    } else {
        let opts: String = cands
            .iter()
            .map(|c| {
                format!(
                    "<option value=\"{}\">{} {} ({})</option>",
                    e(&c.id),
                    e(&c.id),
                    e(&c.version),
                    e(&c.path.display().to_string())
                )
            })
            .collect();
        let _ = write!(
            b,
            "<form class=\"filters\" method=\"post\" action=\"/review/replay\"><label>candidate<select name=\"candidate\">{opts}</select></label><label>since<select name=\"since\"><option>1h</option><option selected>24h</option><option>7d</option><option>30d</option></select></label><label>at most<input type=\"text\" name=\"limit\" value=\"{}\" size=\"6\"></label><button class=\"primary\" type=\"submit\" id=\"run-replay\">Replay over captured traffic</button></form>",
            super::replay::DEFAULT_LIMIT
        );
    }
    if let Some(j) = job {
        let result = j.result.lock().ok().and_then(|r| r.clone());
        match result {
            None => {
                let _ = write!(
                    b,
                    "<meta http-equiv=\"refresh\" content=\"2\"><div class=\"card\" id=\"replay-running\"><h2>Running</h2><p>{} since {}: {} of {} decisions ({})</p></div>",
                    e(&j.candidate),
                    e(&j.since),
                    j.done.load(std::sync::atomic::Ordering::Relaxed),
                    j.total.load(std::sync::atomic::Ordering::Relaxed),
                    ago(now, j.started_ms)
                );
            }
            Some(Err(msg)) => {
                let _ = write!(
                    b,
                    "<div class=\"card\"><h2>Failed</h2><p>{}</p></div>",
                    e(&msg)
                );
            }
            Some(Ok(r)) => b.push_str(&replay_report(&r)),
        }
    }
    layout("Replay", "replay", &b)
}

fn replay_report(r: &ReplayReport) -> String {
    let f = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut b = format!(
        "<div class=\"card\" id=\"replay-result\"><h2>{} {} over {} captured decisions</h2><table class=\"small\"><tr><th class=\"l\">unchanged</th><th>allow → violation</th><th>violation → allow</th><th>code changed</th><th>candidate errors</th></tr><tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        e(&r.policy_id),
        e(&r.candidate_version),
        r.replayed,
        r.unchanged,
        r.to_violation,
        r.to_allow,
        r.code_changed,
        r.candidate_errors
    );
    if !r.by_code.is_empty() {
        b.push_str("<h2 style=\"margin-top:1rem\">By code</h2><table class=\"small\"><tr><th class=\"l\">code</th><th>allow → violation</th><th>violation → allow</th><th>code changed</th></tr>");
        for (code, c) in &r.by_code {
            let _ = write!(
                b,
                "<tr><td class=\"l mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(code),
                c.to_violation,
                c.to_allow,
                c.code_changed
            );
        }
        b.push_str("</table>");
    }
    match (&r.live_quality, &r.candidate_quality) {
        (Some(l), Some(c)) => {
            let _ = write!(b, "<h2 style=\"margin-top:1rem\">Against {} labelled decisions</h2><table class=\"small\"><tr><th class=\"l\"></th><th>precision</th><th>recall</th><th>F1</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th></tr>", l.labelled);
            for (name, q) in [("live", l), ("candidate", c)] {
                let _ = write!(
                    b,
                    "<tr><td class=\"l\">{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    f(q.metrics.precision),
                    f(q.metrics.recall),
                    f(q.metrics.f1),
                    q.confusion.tp,
                    q.confusion.fp,
                    q.confusion.tn,
                    q.confusion.fn_
                );
            }
            b.push_str("</table>");
        }
        _ => b.push_str("<p class=\"note\">No labelled decisions among them: label some in the queue for precision and recall.</p>"),
    }
    let c = &r.cost;
    let _ = write!(
        b,
        "<p>Cost: <b>{}</b> model calls ({} from cache), {} prompt + {} completion tokens, {:.1} s wall, {:.1} s classifier time.</p>",
        c.model_calls,
        c.cache_hits,
        c.prompt_tokens,
        c.completion_tokens,
        c.wall_ms / 1000.0,
        c.classifier_ms / 1000.0
    );
    if !r.flips.is_empty() {
        b.push_str("<h2 style=\"margin-top:1rem\">Flips</h2><table class=\"queue\"><thead><tr><th>decision</th><th>live</th><th>candidate</th><th>review</th><th>text</th></tr></thead><tbody>");
        for fl in &r.flips {
            let href = format!("/review/d/{}", fl.decision_id);
            let _ = write!(
                b,
                "<tr data-href=\"{href}\"><td><a href=\"{href}\">#{}</a></td><td>{} <code>{}</code></td><td>{} <code>{}</code></td><td>{}</td><td class=\"text\">{}</td></tr>",
                fl.decision_id,
                verdict_badge(&fl.live),
                e(fl.live_code.as_deref().unwrap_or("")),
                verdict_badge(&fl.candidate),
                e(fl.candidate_code.as_deref().unwrap_or("")),
                label_badge(fl.label.as_deref().and_then(Label::parse)),
                e(&fl.text)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_picked_out_and_everything_else_is_escaped() {
        assert_eq!(
            show_text("<b>key</b> [MASKED:openai-api-key] end"),
            "&lt;b&gt;key&lt;/b&gt; <span class=\"masked\">[MASKED:openai-api-key]</span> end"
        );
        assert_eq!(show_text("[MASKED:x"), "[MASKED:x");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(10_000, 9_000), "1s ago");
        assert_eq!(ago(7_200_000, 0), "2h ago");
        assert_eq!(ago(0, 5), "0s ago");
    }
}
