//! Error bodies in each API's own shape, so SDKs raise their usual typed
//! exceptions for gateway refusals.

use super::{Api, ErrorKind};
use serde_json::{json, Value};

pub(super) fn error_body(api: Api, kind: &ErrorKind, message: &str) -> Vec<u8> {
    let body = match api {
        Api::OpenAiChat | Api::OpenAiCompletions | Api::OpenAiResponses => openai(kind, message),
        Api::AnthropicMessages => anthropic(kind, message),
    };
    body.to_string().into_bytes()
}

fn openai(kind: &ErrorKind, message: &str) -> Value {
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

fn anthropic(kind: &ErrorKind, message: &str) -> Value {
    let error_type = match kind {
        ErrorKind::InvalidRequest { .. }
        | ErrorKind::PolicyViolation { .. }
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::MethodNotAllowed => "invalid_request_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RequestTimeout | ErrorKind::GatewayTimeout => "timeout_error",
        ErrorKind::Unavailable => "overloaded_error",
        ErrorKind::BadGateway | ErrorKind::Internal => "api_error",
    };
    json!({
        "type": "error",
        "error": {
            "type": error_type,
            "message": message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiResponses,
        ] {
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
        let api = Api::OpenAiChat;
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
            "not_found_error",
            "invalid_request_error",
            "timeout_error",
            "overloaded_error",
            "api_error",
            "timeout_error",
        ];
        for (kind, ty) in all_kinds().iter().zip(expected) {
            let v = parse(Api::AnthropicMessages.error_body(kind, "msg"));
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
        for api in Api::ALL {
            let bytes = api.error_body(&ErrorKind::InvalidRequest { param: None }, msg);
            let v = parse(bytes);
            assert_eq!(v["error"]["message"], msg);
        }
    }
}
