//! Adversarial cases: paths. The gateway chooses the route (and so the format a request is judged
//! in) from the path; the upstream chooses its endpoint from the same path. Every spelling here
//! is one that a standard resolver (RFC 3986, WHATWG, a server that decodes, merges slashes or
//! strips `;` parameters) reads as a model endpoint while a naive reading sees another route or
//! none: each carries a blocked phrase in the body of the endpoint a resolver reaches, goes
//! through the gateway with the shipped config's unrouted-path settings, and must never reach the
//! upstream.
//!
//! The requests are written on raw TCP: an HTTP client library would resolve the path itself.

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoints::shipped;
use super::{POLICY, WORD};
use crate::support::mock::{self, MockUpstream};
use crate::support::{free_port, raw};
use crate::support::{try_start_gateway, GatewayProc};

/// A request written byte for byte.
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    /// The request target as it goes on the request line.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Case {
    /// A JSON POST.
    pub fn post(name: &'static str, target: impl Into<String>, body: &Value) -> Case {
        Case {
            name,
            method: "POST",
            target: target.into(),
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Sends `c` on a fresh connection; the status and the whole reply.
pub async fn send_raw(gw: &GatewayProc, c: &Case) -> (u16, String) {
    let mut req = format!("{} {} HTTP/1.1\r\nhost: 127.0.0.1\r\n", c.method, c.target).into_bytes();
    for (k, v) in &c.headers {
        req.extend(format!("{k}: {v}\r\n").bytes());
    }
    req.extend(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            c.body.len()
        )
        .bytes(),
    );
    req.extend(&c.body);
    let reply = raw::exchange(gw.port, &req).await;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, reply)
}

/// Sends every case and asserts that the upstream received none of them and the gateway
/// refused each; the failures are listed together, by case name.
pub async fn assert_none_forwarded(m: &MockUpstream, gw: &GatewayProc, cases: &[Case]) {
    let mut failed = Vec::new();
    for c in cases {
        let before = m.state.count();
        let (status, reply) = send_raw(gw, c).await;
        if m.state.count() != before || !(400..500).contains(&status) {
            let head = reply.lines().next().unwrap_or("").to_string();
            let got = m.state.last().map(|r| r.target).unwrap_or_default();
            failed.push(format!(
                "{}: {} {} -> {head} (upstream last saw {got:?})",
                c.name, c.method, c.target
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases reached the upstream or were not refused:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

fn chat(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn paths_a_resolver_reads_as_another_endpoint_never_reach_the_upstream() {
    let m = mock::start().await;
    let gw = shipped(&m).start(&[("adversarial.md", POLICY)]).await;
    let c = chat(&format!("tell me about the {WORD}"));
    let both = json!({"model": "m", "prompt": format!("the {WORD}"),
        "messages": [{"role": "user", "content": format!("the {WORD}")}]});
    let absolute = format!("http://127.0.0.1:{}/v1/chat//../completions", gw.port);
    let cases = vec![
        // Dot segments after empty ones: RFC 3986 and WHATWG remove the empty segment, a reader
        // that merges slashes first removes `chat`.
        Case::post("empty_then_dotdot", "/v1/chat//../completions", &c),
        Case::post("empty_dot_dotdot", "/v1/chat//./../completions", &c),
        Case::post(
            "two_empties_two_dotdots",
            "/v1/chat///../../completions",
            &c,
        ),
        Case::post("absolute_form_empty_then_dotdot", absolute, &c),
        // Encoded slashes: a segment to RFC 3986, a separator to a reader that decodes first.
        Case::post("encoded_slash_segment", "/v1/chat/%2F/../completions", &c),
        Case::post(
            "encoded_slash_lowercase",
            "/v1/chat/x%2f/../completions",
            &c,
        ),
        Case::post("double_encoded_slash", "/v1/chat%252Fcompletions", &c),
        // Encoded dots: dot segments to WHATWG (and to decoders), data to RFC 3986.
        Case::post("encoded_dotdot", "/v1/x/%2e%2e/chat/completions", &c),
        Case::post("half_encoded_dotdot", "/v1/x/.%2E/chat/completions", &c),
        // Backslashes: '/' to WHATWG in http(s) URLs.
        Case::post("backslash_separator", "/v1/chat\\completions", &c),
        Case::post(
            "backslash_dotdot",
            "/v1/completions\\..\\chat\\completions",
            &c,
        ),
        Case::post(
            "mixed_slash_backslash",
            "/v1/completions/..\\chat/completions",
            &c,
        ),
        Case::post(
            "encoded_backslash_dotdot",
            "/v1/completions%5C..%5Cchat%5Ccompletions",
            &c,
        ),
        // Matrix parameters: stripped per segment by servlet containers.
        Case::post("matrix_param_last", "/v1/chat/completions;x=y", &c),
        Case::post("matrix_param_middle", "/v1/chat;v=1/completions", &c),
        Case::post("matrix_param_first", "/v1;a/chat/completions", &c),
        // Bytes that some servers truncate at or fold into '/'.
        Case::post("encoded_nul", "/v1/chat/completions%00", &c),
        Case::post("overlong_utf8_slash", "/v1/chat%c0%afcompletions", &c),
        Case::post("fullwidth_solidus", "/v1/chat\u{ff0f}completions", &c),
        // Spellings that merge to the route for some readers and not others.
        Case::post("trailing_slash", "/v1/chat/completions/", &c),
        Case::post("leading_double_slash", "//v1/chat/completions", &c),
        Case::post("encoded_letter", "/v1/%63hat/completions", &c),
        Case::post("leading_dot_segment", "/./v1/chat/completions", &c),
        // A fragment is not part of the request target: it cannot smuggle a second path (the
        // body carries the phrase for both readings, so any reading that judges it refuses it).
        Case::post(
            "fragment_dotdot",
            "/v1/completions#/../chat/completions",
            &both,
        ),
    ];
    assert_none_forwarded(&m, &gw, &cases).await;
}

/// Routes of the differential test: each goes to its own base path on the mock, so the path the
/// mock sees says which route the gateway chose. `None` is the unmatched upstream.
const ROUTES: [(&str, &str, &str); 5] = [
    ("chat", "/v1/chat/completions", "openai-chat"),
    ("completions", "/v1/completions", "openai-completions"),
    ("responses", "/v1/responses", "openai-responses"),
    ("messages", "/v1/messages", "anthropic-messages"),
    (
        "azure",
        "/openai/deployments/{deployment}/chat/completions",
        "openai-chat",
    ),
];

/// The route a server reaches from `path` as its resolver left it: literal segments compared
/// ignoring ASCII case, `{deployment}` any one segment.
fn route_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    ROUTES.iter().find_map(|(name, pattern, _)| {
        let want: Vec<&str> = pattern[1..].split('/').collect();
        let same = want.len() == segs.len()
            && want
                .iter()
                .zip(&segs)
                .all(|(w, s)| w.starts_with('{') || w.eq_ignore_ascii_case(s));
        same.then_some(*name)
    })
}

/// `path` with every percent-encoding decoded, as a server that decodes before routing reads it.
fn decoded(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path WHATWG's URL parser (the `url` crate) resolves a request target to: as a server that
/// parses `http://host` + target reads it, and as one that joins it onto its base URL (Node's
/// `new URL(req.url, base)`) does.
fn resolved(target: &str) -> Vec<String> {
    let base = url::Url::parse("http://upstream.test/").unwrap();
    let mut out = Vec::new();
    if let Ok(u) = url::Url::parse(&format!("http://upstream.test{target}")) {
        out.push(u.path().to_string());
    }
    if let Ok(u) = base.join(target) {
        out.push(u.path().to_string());
    }
    out
}

/// Path segments chosen to hit routes and every kind of ambiguity.
fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "v1",
        "chat",
        "completions",
        "responses",
        "messages",
        "openai",
        "deployments",
        "gpt-4o",
        "Chat",
        "COMPLETIONS",
        "x",
        "",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%2F",
        "%2f",
        "%5C",
        "\\",
        ";x=1",
        "chat;v",
        "%63hat",
        "%252F",
        "%3A",
        "a:b",
        "%00",
        "%c0%af",
        "~",
        "%40",
        "completions\\..",
        "%3B",
        "a%2Fb",
    ])
    .prop_map(str::to_string)
}

/// Segments every resolver reads alike: the side of the rule that must be accepted and routed
/// consistently (letter case, inert encodings, sub-delimiters).
fn plain_segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "v1",
        "chat",
        "completions",
        "responses",
        "messages",
        "openai",
        "deployments",
        "Deployments",
        "gpt-4o",
        "CHAT",
        "Completions",
        "x",
        "a:b",
        "%3A",
        "%3a",
        "%40",
        "a%2Cb",
        "~",
        "(x)",
        "$",
        "*",
    ])
    .prop_map(str::to_string)
}

/// A path of plain segments: a route's path with letters flipped in case and at most one
/// segment replaced, inserted or appended, or plain segments drawn at random.
fn plain_target() -> impl Strategy<Value = String> {
    let route = (
        prop::sample::select(
            ROUTES
                .map(|(_, p, _)| p.replace("{deployment}", "gpt-4o"))
                .to_vec(),
        ),
        prop::collection::vec(any::<bool>(), 8),
        any::<prop::sample::Index>(),
        0..4u8,
        plain_segment(),
    )
        .prop_map(|(path, upper, at, edit, seg)| {
            let mut segs: Vec<String> = path[1..]
                .split('/')
                .zip(upper)
                .map(|(s, up)| if up { s.to_ascii_uppercase() } else { s.into() })
                .collect();
            let i = at.index(segs.len());
            match edit {
                0 => {}
                1 => segs[i] = seg,
                2 => segs.insert(i, seg),
                _ => segs.push(seg),
            }
            format!("/{}", segs.join("/"))
        });
    let random = prop::collection::vec(plain_segment(), 1..7)
        .prop_map(|segs| format!("/{}", segs.join("/")));
    prop_oneof![route, random]
}

/// A route's path with one edit, or segments drawn at random, or a path of plain segments.
fn target() -> impl Strategy<Value = String> {
    let near = (
        prop::sample::select(
            ROUTES
                .map(|(_, p, _)| p.replace("{deployment}", "d1"))
                .to_vec(),
        ),
        any::<prop::sample::Index>(),
        segment(),
        prop::sample::select(vec!["/", "\\", "/./", "//", "/../"]),
    )
        .prop_map(|(path, at, seg, sep)| {
            let i = at.index(path.len() + 1);
            let i = path[..i].rfind('/').unwrap_or(0);
            format!("{}{sep}{seg}{}", &path[..i], &path[i..])
        });
    let random = (
        prop::sample::select(vec!["/", "//", "/./"]),
        prop::collection::vec(segment(), 1..7),
        prop::sample::select(vec!["/", "\\"]),
    )
        .prop_map(|(lead, segs, sep)| format!("{lead}{}", segs.join(sep)));
    prop_oneof![near, random, plain_target()]
}

fn differential_config(mock_url: &str) -> String {
    let mut s = format!(
        r#"[server]
listen = "127.0.0.1:{}"
threads = 2
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
upgrade_sock = "upgrade.sock"
pid_file = "guardgate.pid"
[admin]
listen = "127.0.0.1:{}"
[policies]
dirs = ["policies"]
[audit]
sink = "off"
[unmatched]
action = "passthrough"
upstream = "none"
[[upstreams]]
name = "none"
base_url = "{mock_url}/r/none"
"#,
        free_port(),
        free_port()
    );
    for (name, path, api) in ROUTES {
        s += &format!(
            "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{mock_url}/r/{name}\"\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\napi = \"{api}\"\nupstream = \"{name}\"\n[[routes.policies]]\nselect = \"test/*\"\n"
        );
    }
    s
}

/// The differential test: random paths through the real binary, against the `url` crate's
/// resolution. For every path the gateway accepts, the resolver must leave the path as it is, and
/// the route the gateway chose (the mock sees it as a base path) must be the route the resolved
/// path reaches, decoded or not; the path goes upstream as sent. A refused path never reaches the
/// upstream. Unrouted paths pass through here (unmatched.action = "passthrough"), so that a
/// path the gateway reads as no route while a resolver reads it as one is caught too.
#[test]
fn accepted_paths_reach_the_route_that_judged_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (m, gw) = rt.block_on(async {
        let m = mock::start().await;
        let text = differential_config(&m.base_url());
        let gw = try_start_gateway(&text, &[("adversarial.md", POLICY)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (m, gw)
    });
    // A valid request of the route a server reaches from the path as sent: were the gateway to
    // choose another route, its parser would refuse it (a 400 that is not about the path) or the
    // mock would see the other route, and either fails the case.
    let body = |target: &str| match route_of(target) {
        Some("completions") => json!({"model": "m", "prompt": "hi"}),
        Some("responses") => json!({"model": "m", "input": "hi"}),
        Some("messages") => {
            json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        }
        _ => json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    };
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&target(), |target| {
        let case = Case::post("differential", target.clone(), &body(&target));
        let before = m.state.count();
        let (status, reply) = rt.block_on(send_raw(&gw, &case));
        if m.state.count() == before {
            prop_assert!(
                status == 400 && reply.contains("refuses the path"),
                "{target:?}: not forwarded, and not refused for its path: {reply}"
            );
            refused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        accepted.fetch_add(1, Ordering::Relaxed);
        prop_assert_eq!(status, 200, "{:?}: {}", target, reply);
        let seen = m.state.last().unwrap().target;
        let (chosen, forwarded) = seen
            .strip_prefix("/r/")
            .and_then(|r| r.split_once('/'))
            .map(|(name, rest)| (name.to_string(), format!("/{rest}")))
            .unwrap();
        prop_assert_eq!(&forwarded, &target, "the path went upstream changed");
        let chosen = (chosen != "none").then_some(chosen);
        for path in resolved(&target) {
            prop_assert_eq!(
                &path,
                &target,
                "a resolver reads the accepted path differently"
            );
            for reading in [path.clone(), decoded(&path)] {
                prop_assert_eq!(
                    route_of(&reading),
                    chosen.as_deref(),
                    "{:?}: the gateway chose {:?}, a resolver reaches {:?} ({:?})",
                    target,
                    chosen,
                    route_of(&reading),
                    reading
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    eprintln!("path differential: {accepted} accepted, {refused} refused");
    // Both sides of the rule were exercised, or the test proved nothing.
    assert!(
        accepted >= 100 && refused >= 100,
        "accepted {accepted}, refused {refused}"
    );
}
