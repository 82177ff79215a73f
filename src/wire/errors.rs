//! Why the gateway refuses a request, independent of API, and OpenAI's error shape, which the
//! three OpenAI APIs share (each API module picks its shape).

use serde_json::{json, Value};

/// Why a request is refused, independent of API; the API picks the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest {
        param: Option<String>,
    },
    PolicyViolation {
        policy: String,
        code: Option<String>,
    },
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The request may not use this route (e.g. no policy profile applies to it).
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    /// The gateway could not classify the request (fail-closed).
    Unavailable,
    /// The upstream could not be reached.
    BadGateway,
    GatewayTimeout,
    /// The gateway itself failed (a bug or an unexpected state); logged and counted.
    Internal,
}

impl ErrorKind {
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::InvalidRequest { .. } | ErrorKind::PolicyViolation { .. } => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Unavailable => 503,
            ErrorKind::BadGateway => 502,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }
}

/// OpenAI's error body (`{"error": {message, type, param, code}}`).
pub(super) fn openai(kind: &ErrorKind, message: &str) -> Value {
    let error_type = if kind.status() >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let (param, code): (Option<&str>, Option<&str>) = match kind {
        ErrorKind::InvalidRequest { param } => (param.as_deref(), None),
        // One stable code for every policy block, so clients can branch on it; the policy id and
        // rule code are in the message and the x-guardgate-* headers.
        ErrorKind::PolicyViolation { .. } => (None, Some("content_policy_violation")),
        ErrorKind::PayloadTooLarge => (None, Some("request_too_large")),
        _ => (None, None),
    };
    json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": param,
            "code": code,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Api;

    fn api(name: &str) -> Api {
        Api::from_name(name).expect("registered")
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorKind::InvalidRequest { param: None }.status(), 400);
        assert_eq!(
            ErrorKind::PolicyViolation {
                policy: "p".into(),
                code: None
            }
            .status(),
            400
        );
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::UnsupportedMediaType.status(), 415);
        assert_eq!(ErrorKind::Forbidden.status(), 403);
        assert_eq!(ErrorKind::NotFound.status(), 404);
        assert_eq!(ErrorKind::MethodNotAllowed.status(), 405);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::Unavailable.status(), 503);
        assert_eq!(ErrorKind::BadGateway.status(), 502);
        assert_eq!(ErrorKind::GatewayTimeout.status(), 504);
        assert_eq!(ErrorKind::Internal.status(), 500);
    }

    fn all_kinds() -> Vec<ErrorKind> {
        vec![
            ErrorKind::InvalidRequest {
                param: Some("messages[0].content".into()),
            },
            ErrorKind::InvalidRequest { param: None },
            ErrorKind::PolicyViolation {
                policy: "no-malware".into(),
                code: None,
            },
            ErrorKind::PayloadTooLarge,
            ErrorKind::UnsupportedMediaType,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::MethodNotAllowed,
            ErrorKind::RequestTimeout,
            ErrorKind::Unavailable,
            ErrorKind::BadGateway,
            ErrorKind::GatewayTimeout,
            ErrorKind::Internal,
        ]
    }

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).expect("error body is JSON")
    }

    #[test]
    fn openai_shapes() {
        for api in ["openai-chat", "openai-completions", "openai-responses"].map(api) {
            for kind in all_kinds() {
                let v = parse(api.error_body(&kind, "nope"));
                let err = v["error"].as_object().expect("error object");
                assert_eq!(err.len(), 4, "{v}");
                assert_eq!(err["message"], "nope");
                let expected_type = if kind.status() >= 500 {
                    "server_error"
                } else {
                    "invalid_request_error"
                };
                assert_eq!(err["type"], expected_type, "{kind:?}");
                assert!(err.contains_key("param") && err.contains_key("code"));
            }
        }
    }

    #[test]
    fn openai_param_and_codes() {
        let api = api("openai-chat");
        let v = parse(api.error_body(
            &ErrorKind::InvalidRequest {
                param: Some("messages[0].content".into()),
            },
            "bad",
        ));
        assert_eq!(v["error"]["param"], "messages[0].content");
        assert_eq!(v["error"]["code"], Value::Null);

        let v = parse(api.error_body(
            &ErrorKind::PolicyViolation {
                policy: "p".into(),
                code: None,
            },
            "blocked",
        ));
        assert_eq!(v["error"]["code"], "content_policy_violation");
        assert_eq!(v["error"]["param"], Value::Null);
        assert_eq!(v["error"]["type"], "invalid_request_error");

        let v = parse(api.error_body(
            &ErrorKind::PolicyViolation {
                policy: "p".into(),
                code: Some("custom_code".into()),
            },
            "blocked",
        ));
        assert_eq!(v["error"]["code"], "content_policy_violation");

        let v = parse(api.error_body(&ErrorKind::PayloadTooLarge, "big"));
        assert_eq!(v["error"]["code"], "request_too_large");

        let v = parse(api.error_body(&ErrorKind::Unavailable, "down"));
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], Value::Null);
    }

    #[test]
    fn anthropic_shapes() {
        let expected = [
            "invalid_request_error",
            "invalid_request_error",
            "invalid_request_error",
            "request_too_large",
            "invalid_request_error",
            "permission_error",
            "not_found_error",
            "invalid_request_error",
            "timeout_error",
            "overloaded_error",
            "api_error",
            "timeout_error",
        ];
        for (kind, ty) in all_kinds().iter().zip(expected) {
            let v = parse(api("anthropic-messages").error_body(kind, "msg"));
            assert_eq!(v["type"], "error");
            assert_eq!(v.as_object().map(|o| o.len()), Some(2));
            assert_eq!(v["error"]["type"], ty, "{kind:?}");
            assert_eq!(v["error"]["message"], "msg");
            assert_eq!(v["error"].as_object().map(|o| o.len()), Some(2));
        }
    }

    #[test]
    fn messages_are_escaped() {
        let msg = "quote \" backslash \\ newline \n control \u{1} unicode \u{2603}";
        for api in Api::all() {
            let bytes = api.error_body(&ErrorKind::InvalidRequest { param: None }, msg);
            let v = parse(bytes);
            assert_eq!(v["error"]["message"], msg);
        }
    }
}
