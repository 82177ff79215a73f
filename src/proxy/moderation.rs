//! Verdict-only endpoints for services that want a judgement, not a proxy:
//! `POST /v1/moderations` in the OpenAI moderation API's shape (one category per policy), and
//! `POST /guardgate/v1/classify` (policy ids + text or messages in, one decision per policy out).
//! Both use the same cascade, deadlines and audit trail as proxied traffic; rationales stay in
//! the audit log.

use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::time::Duration;

use super::body::read_body;
use super::exchange::{Exchange, Judging, Outcome};
use super::gateway::Gateway;
use super::respond;
use crate::config::Action;
use crate::metrics::BadRequest;
use crate::policy::registry::selects;
use crate::policy::{Bound, Snapshot};
use crate::wire::{self, Api, ErrorKind, Segment, Source};

/// A request's judgement, as the moderation endpoints report it.
const JUDGING: Judging = Judging::Request {
    unclassified_parts: 0,
};

pub const MODERATIONS: &str = "/v1/moderations";
pub const CLASSIFY: &str = "/guardgate/v1/classify";

fn bad(msg: impl Into<String>) -> (ErrorKind, String) {
    (ErrorKind::InvalidRequest { param: None }, msg.into())
}

fn text_segments(v: &Value, field: &str) -> Result<Vec<Segment>, (ErrorKind, String)> {
    let seg = |i: usize, t: &str| Segment {
        source: Source::User,
        text: t.to_string(),
        location: format!("{field}[{i}]"),
    };
    match v.get(field) {
        Some(Value::String(s)) => Ok(vec![seg(0, s)]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| match it {
                Value::String(s) => Some(Ok(seg(i, s))),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("text") => {
                    o.get("text").and_then(Value::as_str).map(|t| Ok(seg(i, t)))
                }
                // Images cannot be judged by a text classifier; say so rather than skip them.
                Value::Object(_) => Some(Err(bad(format!(
                    "{field}[{i}]: only text inputs can be classified"
                )))),
                _ => Some(Err(bad(format!(
                    "{field}[{i}]: expected a string or a text part"
                )))),
            })
            .collect(),
        _ => Err(bad(format!(
            "{field}: expected a string or an array of strings"
        ))),
    }
}

/// The moderation policy set from the live snapshot.
fn moderation_policies(gw: &Gateway, snap: &Snapshot) -> Vec<Bound> {
    snap.policies
        .values()
        .filter(|p| {
            gw.config
                .moderation
                .policies
                .iter()
                .any(|s| selects(s, &p.id))
        })
        .filter(|p| gw.cascade.supports_any(p))
        .map(|p| Bound {
            policy: p.clone(),
            action: Action::Block,
            candidate: None,
            sample_rate: 1.0,
            joint: false,
        })
        .collect()
}

fn authorized(gw: &Gateway, session: &ServerSession) -> bool {
    let Some(var) = &gw.config.moderation.token_env else {
        return true;
    };
    let Some(want) = crate::config::secret_from_env(var) else {
        return false;
    };
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            t.len() == want.len()
                && t.bytes()
                    .zip(want.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        })
}

/// Whether `path` is one of the two endpoints and they are enabled.
pub fn is_endpoint(gw: &Gateway, path: &str) -> bool {
    gw.config.moderation.enabled && (path == MODERATIONS || path == CLASSIFY)
}

/// Handles both endpoints (`path` is one of them: see `is_endpoint`).
pub async fn handle(
    ex: &mut Exchange,
    path: &str,
    session: &mut ServerSession,
) -> pingora::Result<()> {
    let gw = ex.gw.clone();
    let name = if path == MODERATIONS {
        "moderations"
    } else {
        "classify"
    };
    let deadline = Duration::from_millis(gw.config.moderation.deadline_ms);
    ex.for_endpoint(
        name,
        path.trim_start_matches('/').replace('/', "-"),
        deadline,
    );
    if session.req_header().method != http::Method::POST {
        ex.outcome = Outcome::Rejected;
        let msg = format!("{path} accepts POST only");
        return ex
            .refuse(session, ErrorKind::MethodNotAllowed, &msg, true)
            .await;
    }
    if !authorized(&gw, session) {
        ex.outcome = Outcome::Rejected;
        let body = ex.api().error_body(
            &ErrorKind::InvalidRequest { param: None },
            "missing or wrong bearer token",
        );
        let headers = [("x-guardgate-request-id", ex.request_id.clone())];
        return respond::json(session, 401, body, &headers, true).await;
    }
    let limit = gw.config.moderation.max_body_bytes;
    let timeout = Duration::from_millis(gw.config.limits.body_read_timeout_ms);
    let raw = match read_body(session, limit, timeout).await {
        Ok(b) => b,
        Err(e) => {
            ex.outcome = Outcome::Rejected;
            return ex
                .refuse(session, ErrorKind::PayloadTooLarge, &e.message(), true)
                .await;
        }
    };
    let snap = ex.snapshot();
    let result = match wire::parse_strict(&raw) {
        Err(e) => Err(bad(e.message)),
        Ok(v) if name == "moderations" => moderations(ex, &snap, &v).await,
        Ok(v) => classify(ex, &snap, &v).await,
    };
    match result {
        Ok(body) => {
            ex.outcome = Outcome::Classified;
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let headers = [("x-guardgate-request-id", ex.request_id.clone())];
            respond::json(session, 200, bytes, &headers, false).await
        }
        Err((kind, msg)) => {
            ex.reject(BadRequest::InvalidBody);
            ex.refuse(session, kind, &msg, false).await
        }
    }
}

/// A verdict as a violation score in [0, 1], the moderation API's `category_scores`: a verdict's
/// confidence is P(violation) whichever way it went (`ModelClassifier`), and one without a
/// confidence counts as certain.
fn violation_score(v: &crate::classify::Verdict) -> f32 {
    v.confidence.unwrap_or(if v.violation { 1.0 } else { 0.0 })
}

async fn moderations(
    ex: &mut Exchange,
    snap: &Snapshot,
    v: &Value,
) -> Result<Value, (ErrorKind, String)> {
    let segments = text_segments(v, "input")?;
    let bound = moderation_policies(&ex.gw, snap);
    if bound.is_empty() {
        return Err((
            ErrorKind::Unavailable,
            "no moderation policies are loaded".into(),
        ));
    }
    // One result per input, as the OpenAI API does.
    let mut results = Vec::new();
    for seg in segments {
        let d = ex.judge(&bound, vec![seg], JUDGING).await;
        let mut categories = serde_json::Map::new();
        let mut scores = serde_json::Map::new();
        let mut flagged = false;
        for o in &d.outcomes {
            let hit = o.fires();
            flagged |= hit;
            categories.insert(o.policy.id.clone(), json!(hit));
            let score = match &o.result {
                Ok(v) => violation_score(v),
                Err(_) => 0.0,
            };
            scores.insert(
                o.policy.id.clone(),
                json!(if hit { score.max(0.5) } else { score.min(0.5) }),
            );
        }
        let errors: Vec<Value> = d
            .outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| json!({"policy": o.policy.id, "error": e.public_reason()}))
            })
            .collect();
        let mut r =
            json!({"flagged": flagged, "categories": categories, "category_scores": scores});
        if !errors.is_empty() {
            r["guardgate_errors"] = json!(errors);
        }
        results.push(r);
    }
    Ok(
        json!({"id": format!("modr-{}", ex.request_id), "model": v.get("model").cloned().unwrap_or(json!("guardgate")), "results": results}),
    )
}

async fn classify(
    ex: &mut Exchange,
    snap: &Snapshot,
    v: &Value,
) -> Result<Value, (ErrorKind, String)> {
    let ids: Vec<&str> = match v.get("policies") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| bad("policies: expected an array of policy ids"))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
        _ => return Err(bad("policies: expected an array of policy ids")),
    };
    let allowed = moderation_policies(&ex.gw, snap);
    let bound: Vec<Bound> = if ids.is_empty() {
        allowed
    } else {
        let mut out = Vec::new();
        for id in ids {
            match allowed.iter().find(|b| b.policy.id == id) {
                Some(b) => out.push(b.clone()),
                None => {
                    return Err(bad(format!(
                        "policies: {id:?} is not a loaded moderation policy"
                    )))
                }
            }
        }
        out
    };
    let segments = if v.get("messages").is_some() {
        Api::openai_chat()
            .parse_request(
                &serde_json::to_vec(&json!({"model": "x", "messages": v["messages"]}))
                    .unwrap_or_default(),
            )
            .map_err(|e| bad(e.message))?
            .segments
    } else {
        text_segments(v, "text")?
    };
    let request_id = ex.request_id.clone();
    let d = ex.judge(&bound, segments, JUDGING).await;
    let decisions: Vec<Value> = d
        .outcomes
        .iter()
        .map(|o| {
            let (verdict, v) = match &o.result {
                Ok(v) if v.violation => ("violation", Some(v)),
                Ok(v) => ("allow", Some(v)),
                Err(_) => ("error", None),
            };
            json!({
                "policy_id": o.policy.id,
                "policy_version": o.policy.version,
                "policy_hash": o.policy.content_hash,
                "verdict": verdict,
                "flagged": o.fires(),
                "code": v.and_then(|v| v.code.clone()),
                "rule_id": v.and_then(|v| v.rule_id.clone()),
                "severity": o.severity().map(|s| s.as_str()),
                "confidence": v.and_then(|v| v.confidence),
                "backend": v.map(|v| v.backend),
                "latency_ms": o.latency.as_secs_f64() * 1000.0,
                "error": o.result.as_ref().err().map(|e| e.public_reason()),
            })
        })
        .collect();
    let flagged = d.outcomes.iter().any(|o| o.fires());
    Ok(
        json!({"request_id": request_id, "flagged": flagged, "policy_generation": snap.generation, "decisions": decisions}),
    )
}

#[cfg(test)]
mod tests {
    use super::violation_score;
    use crate::classify::Verdict;

    fn v(violation: bool, confidence: Option<f32>) -> Verdict {
        Verdict {
            violation,
            confidence,
            ..Verdict::allow("t")
        }
    }

    #[test]
    fn scores_are_the_probability_of_a_violation() {
        assert_eq!(violation_score(&v(false, Some(0.02))), 0.02);
        assert_eq!(violation_score(&v(true, Some(0.93))), 0.93);
        // No confidence: the verdict is taken as certain.
        assert_eq!(violation_score(&v(true, None)), 1.0);
        assert_eq!(violation_score(&v(false, None)), 0.0);
    }
}
