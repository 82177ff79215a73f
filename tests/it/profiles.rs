//! Policy profiles through the real binary: selection by API key, trusted header, model and route;
//! the `unknown_profile` rule in each API's error shape; hot reload of the profiles file; the
//! profile in the audit record, and the key nowhere in the audit file or the log.

use crate::support::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Blocks "zorble", a word the default profile lets through.
const STRICT: &str = r#"+++
id = "test/strict"
title = "Strict"
version = "1.0.0"
action = "block"
[[codes]]
code = "S1"
title = "Zorble talk"
severity = "high"
[[rules]]
id = "zorble"
code = "S1"
keywords = ["zorble"]
+++
# Strict
Talk of zorbles violates this policy.
"#;

const TENANT_KEY: &str = "sk-tenant-a-7f3e9c2d41b8";
const OTHER_KEY: &str = "sk-tenant-b-0a1b2c3d4e5f";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Two profiles: `standard` (the default: weapons only) and `strict` (every test policy, in
/// and out), then `rest` (trusted headers, unknown rule, matchers).
fn profiles_file(rest: &str) -> String {
    format!(
        r#"{rest}
[[profile]]
name = "standard"
default = true
policies = [{{ select = "test/weapons" }}]

[[profile]]
name = "strict"
policies = [{{ select = "test/*", directions = ["input", "output"] }}]
"#
    )
}

/// A gateway whose routes bind no policies of their own, with `profiles` as its profiles file.
async fn start(profiles: &str) -> (mock::MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let gw = try_start(&m, profiles)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (m, gw)
}

async fn try_start(m: &mock::MockUpstream, profiles: &str) -> Result<GatewayProc, String> {
    let cfg = TestConfig::new(&m.base_url())
        .route_policies("")
        .extra("\n[profiles]\nfile = \"profiles.toml\"\n");
    let dir = tempfile::tempdir().unwrap();
    write_policies(
        &dir.path().join("policies"),
        &[("weapons.md", WEAPONS), ("strict.md", STRICT)],
    );
    std::fs::write(dir.path().join("profiles.toml"), profiles).unwrap();
    cfg.launch(dir).await
}

/// Posts `text` to `path` in that API's shape with `headers`; returns the status and the body.
async fn send(
    gw: &GatewayProc,
    path: &str,
    headers: &[(&str, &str)],
    text: &str,
    model: Option<&str>,
) -> (u16, Value) {
    let mut body = body(path, text);
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let mut req = client().post(gw.url(path)).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn an_api_key_selects_its_profile_and_is_never_written() {
    let file = profiles_file(&format!(
        "unknown_profile = \"default\"\n[[match]]\napi_key_sha256 = [\"{}\", \"{}\"]\nprofile = \"strict\"\n",
        sha256_hex("sk-unused-1"),
        sha256_hex(TENANT_KEY)
    ));
    let (m, gw) = start(&file).await;
    let tenant = bearer(TENANT_KEY);
    let other = bearer(OTHER_KEY);

    // The tenant's profile blocks what the default allows, on OpenAI's and Anthropic's headers.
    let (s, v) = send(&gw, CHAT, &[("authorization", &tenant)], "a zorble", None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "content_policy_violation", "{v}");
    let (s, v) = send(
        &gw,
        "/v1/messages",
        &[("x-api-key", TENANT_KEY)],
        "zorble",
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Another key, and no key, get the default profile.
    let (s, v) = send(&gw, CHAT, &[("authorization", &other)], "a zorble", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&gw, CHAT, &[], "a zorble", None).await;
    assert_eq!(s, 200, "{v}");
    // The default still has its own policy.
    let (s, v) = send(&gw, CHAT, &[("authorization", &other)], "a pipe bomb", None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        m.state.count(),
        2,
        "only the allowed requests went upstream"
    );

    let audit = gw
        .audit_until(|a| {
            a.iter().filter(|r| r["profile"] == "strict").count() >= 2
                && a.iter().filter(|r| r["profile"] == "standard").count() >= 3
        })
        .await;
    let strict: Vec<_> = audit.iter().filter(|r| r["profile"] == "strict").collect();
    assert!(
        strict
            .iter()
            .any(|r| r["policy_id"] == "test/strict" && r["verdict"] == "violation"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .filter(|r| r["profile"] == "standard")
            .all(|r| r["policy_id"] == "test/weapons"),
        "the default profile binds weapons only: {audit:?}"
    );
    let metrics = gw
        .metrics_eventually("guardgate_profile_unknown_total{outcome=\"default\"} 3")
        .await;
    assert!(
        metrics.contains("guardgate_profile_requests_total{profile=\"strict\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("guardgate_profile_requests_total{profile=\"standard\"} 3"),
        "{metrics}"
    );

    // The admin view shows the profiles and counts the keys, without their hashes.
    let p = gw.admin_json("/admin/policies").await;
    let profiles = &p["profiles"];
    assert_eq!(profiles["unknown_profile"], "default", "{p}");
    assert_eq!(profiles["profiles"][0]["name"], "standard", "{p}");
    assert_eq!(profiles["profiles"][0]["default"], true, "{p}");
    assert_eq!(
        profiles["profiles"][1]["input"][0]["id"], "test/strict",
        "{p}"
    );
    assert_eq!(
        profiles["profiles"][1]["input"][0]["version"], "1.0.0",
        "{p}"
    );
    assert_eq!(profiles["matchers"][0]["api_keys"], 2, "{p}");
    assert_eq!(profiles["matchers"][0]["profile"], "strict", "{p}");
    let shown = p.to_string();
    assert!(!shown.contains(&sha256_hex(TENANT_KEY)[..16]), "{shown}");

    // Neither the key nor its hash is written anywhere.
    let written = format!("{}\n{}", gw.audit_raw(), gw.log());
    for secret in [TENANT_KEY, OTHER_KEY, &sha256_hex(TENANT_KEY)] {
        assert!(!written.contains(secret), "{secret} was written");
    }
}

#[tokio::test]
async fn a_trusted_header_selects_and_unknown_profiles_are_refused_in_the_api_shape() {
    let file = profiles_file(
        "unknown_profile = \"refuse\"\ntrusted_headers = [\"X-Tenant\"]\n\
         [[match]]\nheader = \"x-tenant\"\nvalue = \"acme\"\nprofile = \"strict\"\n\
         [[match]]\nheader = \"x-tenant\"\n",
    );
    let (m, gw) = start(&file).await;
    let (s, v) = send(&gw, CHAT, &[("x-tenant", "acme")], "zorble", None).await;
    assert_eq!(s, 400, "{v}");
    // Without `value`, the header names the profile.
    let (s, v) = send(&gw, CHAT, &[("x-tenant", "standard")], "zorble", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&gw, CHAT, &[("x-tenant", "strict")], "zorble", None).await;
    assert_eq!(s, 400, "{v}");
    let before = m.state.count();

    // A header naming no profile, and no header at all: 403 in each API's own error shape,
    // with a reason that echoes nothing the client sent.
    for headers in [&[("x-tenant", "nonexistent-tenant")][..], &[]] {
        let (s, v) = send(&gw, CHAT, headers, "hello", None).await;
        assert_eq!(s, 403, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("profile"), "{v}");
        assert!(!msg.contains("nonexistent-tenant"), "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"].as_object().unwrap().contains_key("code"), "{v}");

        let (s, v) = send(&gw, "/v1/messages", headers, "hello", None).await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "permission_error", "{v}");
    }
    assert_eq!(
        m.state.count(),
        before,
        "refused requests never go upstream"
    );
    let metrics = gw
        .metrics_eventually("guardgate_profile_unknown_total{outcome=\"refused\"} 4")
        .await;
    assert!(
        metrics.contains("guardgate_requests_total{outcome=\"no_profile\",route=\"chat\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_header_that_is_not_trusted_stops_the_start() {
    let m = mock::start().await;
    let file = profiles_file(
        "unknown_profile = \"default\"\ntrusted_headers = [\"x-tenant\"]\n\
         [[match]]\nheader = \"x-user\"\nvalue = \"bob\"\nprofile = \"strict\"\n",
    );
    let Err(log) = try_start(&m, &file).await else {
        panic!("started with an untrusted header matcher");
    };
    assert!(log.contains("profiles.toml: match[0].header"), "{log}");
    assert!(log.contains("trusted_headers"), "{log}");
}

#[tokio::test]
async fn model_and_route_matchers() {
    let file = profiles_file(
        "unknown_profile = \"default\"\n\
         [[match]]\nmodel = \"gpt-4o*\"\nprofile = \"strict\"\n\
         [[match]]\nroute = \"messages\"\nprofile = \"strict\"\n",
    );
    let (_m, gw) = start(&file).await;
    let (s, v) = send(&gw, CHAT, &[], "zorble", Some("gpt-4o-mini")).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = send(&gw, CHAT, &[], "zorble", Some("gpt-3.5-turbo")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&gw, "/v1/completions", &[], "zorble", Some("gpt-4o")).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = send(&gw, "/v1/messages", &[], "zorble", Some("claude")).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = send(&gw, "/v1/responses", &[], "zorble", Some("o3")).await;
    assert_eq!(s, 200, "{v}");
    // A body that does not parse is refused as before, not judged under some profile.
    let r = client()
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Sends "zorble" with the tenant key until it is blocked (`true`) or allowed (`false`), for up
/// to 10 s; returns whether it got there.
async fn until_tenant(gw: &GatewayProc, blocked: bool) -> bool {
    let tenant = bearer(TENANT_KEY);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (s, _) = send(gw, CHAT, &[("authorization", &tenant)], "zorble", None).await;
        if (s == 400) == blocked {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_profiles_file_hot_reloads_and_a_broken_one_keeps_the_last() {
    let mapped = |profile: &str| {
        profiles_file(&format!(
            "unknown_profile = \"default\"\n[[match]]\napi_key_sha256 = [\"{}\"]\nprofile = \"{profile}\"\n",
            sha256_hex(TENANT_KEY)
        ))
    };
    let (_m, gw) = start(&mapped("strict")).await;
    assert!(until_tenant(&gw, true).await, "{}", gw.log());
    let generation = gw.admin_json("/admin/policies").await["generation"].clone();

    // The tenant moves to the default profile: the next requests follow.
    let path = gw.dir.path().join("profiles.toml");
    std::fs::write(&path, mapped("standard")).unwrap();
    assert!(until_tenant(&gw, false).await, "{}", gw.log());
    let p = gw.admin_json("/admin/policies").await;
    assert_ne!(p["generation"], generation, "{p}");
    assert_eq!(p["profiles"]["matchers"][0]["profile"], "standard", "{p}");

    // A broken file (a matcher on a profile that does not exist) keeps the live mapping and is
    // reported like a broken policy.
    std::fs::write(&path, mapped("missing")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let p = loop {
        let p = gw.admin_json("/admin/policies").await;
        if !p["last_reload_error"].is_null() || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors = p["last_reload_error"]["errors"].to_string();
    assert!(errors.contains("profiles.toml: match[0].profile"), "{p}");
    assert_eq!(p["profiles"]["matchers"][0]["profile"], "standard", "{p}");
    let (s, _) = send(
        &gw,
        CHAT,
        &[("authorization", &bearer(TENANT_KEY))],
        "zorble",
        None,
    )
    .await;
    assert_eq!(s, 200, "the last good mapping stays live");
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("guardgate_policy_reloads_total{result=\"failure\"} 0"),
        "{metrics}"
    );

    // Fixed again, it loads and the error clears.
    std::fs::write(&path, mapped("strict")).unwrap();
    assert!(until_tenant(&gw, true).await, "{}", gw.log());
}

#[tokio::test]
async fn a_profiles_fail_mode_replaces_the_routes() {
    let m = mock::start().await;
    let ms = model_server::start().await;
    let backend = format!(
        "\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{}\"\nmodel = \"openai/gpt-oss-safeguard-20b\"\nfamily = \"gpt-oss-safeguard\"\ntimeout_ms = 1000\nmax_retries = 0\n",
        ms.base_url()
    );
    let cfg = TestConfig::new(&m.base_url())
        .route_policies("")
        .extra(&backend)
        .extra("\n[profiles]\nfile = \"profiles.toml\"\n");
    let dir = tempfile::tempdir().unwrap();
    write_policies(&dir.path().join("policies"), &[("nl.md", NL_POLICY)]);
    let file = format!(
        "unknown_profile = \"default\"\n\
         [[profile]]\nname = \"standard\"\ndefault = true\npolicies = [{{ select = \"test/nl\" }}]\n\
         [[profile]]\nname = \"lenient\"\nfail_mode = \"open\"\npolicies = [{{ select = \"test/nl\" }}]\n\
         [[match]]\napi_key_sha256 = [\"{}\"]\nprofile = \"lenient\"\n",
        sha256_hex(TENANT_KEY)
    );
    std::fs::write(dir.path().join("profiles.toml"), file).unwrap();
    let gw = cfg.launch(dir).await.unwrap_or_else(|e| panic!("{e}"));
    // The model server answers "[malformed]" with something that is not a verdict: the policy
    // cannot be judged, and the fail mode decides.
    let (s, v) = send(&gw, CHAT, &[], "[malformed] hi", None).await;
    assert_eq!(s, 503, "the route is fail-closed: {v}");
    let tenant = bearer(TENANT_KEY);
    let (s, v) = send(
        &gw,
        CHAT,
        &[("authorization", &tenant)],
        "[malformed] hi",
        None,
    )
    .await;
    assert_eq!(s, 200, "the tenant's profile is fail-open: {v}");
    assert_eq!(m.state.count(), 1);
    let audit = gw
        .audit_until(|a| a.iter().any(|r| r["effect"] == "fail_open"))
        .await;
    assert!(
        audit
            .iter()
            .any(|r| r["effect"] == "fail_open" && r["profile"] == "lenient"),
        "{audit:?}"
    );
}

/// A profile's refusal words the blocks of its requests when the policy that fired has none; the
/// default profile, without one, keeps the gateway's message. The policy id stays in the headers.
#[tokio::test]
async fn a_profiles_refusal_words_its_blocks() {
    let file = format!(
        "{}\n[profile.refusal]\nmessage = \"Not for this workspace.\"\nlanguage = \"en\"\n[profile.refusal.messages]\nde = \"Nicht in diesem Arbeitsbereich.\"\n",
        profiles_file(&format!(
            "unknown_profile = \"default\"\n[[match]]\napi_key_sha256 = [\"{}\"]\nprofile = \"strict\"\n",
            sha256_hex(TENANT_KEY)
        ))
    );
    let (_m, gw) = start(&file).await;
    let tenant = bearer(TENANT_KEY);
    let r = client()
        .post(gw.url(CHAT))
        .header("authorization", &tenant)
        .header("accept-language", "de-CH, en;q=0.5")
        .json(&body(CHAT, "a zorble"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-language"], "de");
    assert_eq!(r.headers()["x-guardgate-blocked-by"], "test/strict");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["message"], "Nicht in diesem Arbeitsbereich.",
        "{v}"
    );
    let (s, v) = send(&gw, CHAT, &[("authorization", &tenant)], "a zorble", None).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["message"], "Not for this workspace.", "{v}");
    // The default profile has no refusal: the gateway's own message names the policy.
    let (s, v) = send(&gw, CHAT, &[], "a pipe bomb", None).await;
    assert_eq!(s, 400);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("test/weapons"), "{msg}");
}
