//! The verdict-only endpoints: OpenAI-shaped /v1/moderations and /guardgate/v1/classify.

use crate::support::*;
use serde_json::{json, Value};

/// The gateway with the verdict endpoints on, `extra_cfg` added to `[moderation]`, and `env` in
/// its environment.
async fn setup(
    extra_cfg: &str,
    env: &[(&str, &str)],
) -> (mock::MockUpstream, model_server::ModelServer, GatewayProc) {
    let m = mock::start().await;
    let ms = model_server::start().await;
    let extra = format!(
        "[moderation]\nenabled = true\npolicies = [\"test/*\"]\n{extra_cfg}\n[[backends]]\nname = \"safeguard\"\nkind = \"remote\"\nbase_url = \"{}\"\nmodel = \"safeguard-20b\"\n",
        ms.base_url()
    );
    let mut cfg = TestConfig::new(&m.base_url()).extra(&extra);
    for (name, value) in env {
        cfg = cfg.env(name, value);
    }
    let gw = cfg
        .start(&[("weapons.md", WEAPONS), ("nl.md", NL_POLICY)])
        .await;
    (m, ms, gw)
}

#[tokio::test]
async fn moderations_in_the_openai_shape() {
    let (m, _ms, gw) = setup("", &[]).await;
    let c = reqwest::Client::new();
    let r = c
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": ["how to make a pipe bomb", "tell me forbidden things", "hello"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 3);
    assert_eq!(res[0]["flagged"], true);
    assert_eq!(res[0]["categories"]["test/weapons"], true);
    assert_eq!(res[1]["categories"]["test/nl"], true);
    assert_eq!(res[1]["categories"]["test/weapons"], false);
    assert_eq!(res[2]["flagged"], false);
    assert!(res[0]["category_scores"]["test/weapons"].as_f64().unwrap() >= 0.5);
    assert!(
        !v.to_string().contains("SECRET-REASONING"),
        "rationale leaked: {v}"
    );
    assert_eq!(m.state.count(), 0, "the moderation API has no upstream");
    let audit = gw.audit_wait(6).await;
    assert!(audit.iter().any(|r| r["route"] == "moderations"
        && r["rationale"]
            .as_str()
            .is_some_and(|t| t.contains("SECRET-REASONING"))));
    // Bad input and methods.
    let r = c
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": [{"type": "image_url", "image_url": {"url": "x"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        c.get(gw.url("/v1/moderations"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn classify_endpoint_one_decision_per_policy() {
    let (_m, _ms, gw) = setup("", &[]).await;
    let c = reqwest::Client::new();
    let r = c
        .post(gw.url("/guardgate/v1/classify"))
        .json(&json!({"policies": ["test/weapons", "test/nl"], "text": "forbidden pipe bomb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let d = v["decisions"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["policy_id"], "test/weapons");
    assert_eq!(d[0]["backend"], "rules");
    assert_eq!(d[0]["code"], "W1");
    assert_eq!(d[1]["policy_id"], "test/nl");
    assert_eq!(d[1]["backend"], "remote:safeguard");
    assert_eq!(d[1]["verdict"], "violation");
    assert!(d[1].get("rationale").is_none());
    assert_eq!(v["flagged"], true);
    // A conversation, judged whole.
    let r = c.post(gw.url("/guardgate/v1/classify")).json(&json!({"policies": ["test/weapons"], "messages": [{"role": "system", "content": "nail bomb"}, {"role": "user", "content": "hi"}]})).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["decisions"][0]["verdict"], "violation", "{v}");
    let r = c
        .post(gw.url("/guardgate/v1/classify"))
        .json(&json!({"policies": ["nope/x"], "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn token_protects_the_verdict_endpoints() {
    // With the trailing newline a Secret made with `kubectl create secret --from-file` has.
    let (_m, _ms, gw) = setup(
        "token_env = \"GG_TEST_MOD_TOKEN\"",
        &[("GG_TEST_MOD_TOKEN", "modtok\n")],
    )
    .await;
    let c = reqwest::Client::new();
    let r = c
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(gw.url("/v1/moderations"))
        .bearer_auth("modtok")
        .json(&json!({"input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn classifier_errors_are_named_without_the_models_words() {
    let (_m, _ms, gw) = setup("", &[]).await;
    let c = reqwest::Client::new();
    // The imitation model answers prose for "[prose]": unparseable, so test/nl errs.
    let r = c
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": "[prose] hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("looks fine"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let errors = v["results"][0]["guardgate_errors"].as_array().unwrap();
    let nl = errors.iter().find(|e| e["policy"] == "test/nl");
    assert_eq!(nl.unwrap()["error"], "classifier failed", "{v}");
    let r = c
        .post(gw.url("/guardgate/v1/classify"))
        .json(&json!({"policies": ["test/nl"], "text": "[prose] hi"}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("looks fine"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["decisions"][0]["verdict"], "error", "{v}");
    assert_eq!(v["decisions"][0]["error"], "classifier failed", "{v}");
    // Reviewers still get the detail.
    let audit = gw.audit_wait(2).await;
    assert!(audit.iter().any(|r| r["error"]
        .as_str()
        .is_some_and(|e| e.contains("looks fine"))));
}
