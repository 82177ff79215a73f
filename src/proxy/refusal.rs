//! The words a blocked client reads: the refusal that applies to the block (the policy that
//! fired, the request's profile, the route: `policy::refusal::resolve`) in the language the
//! client asks for, or the gateway's own message when none is set.

use pingora::protocols::http::ServerSession as Session;

use super::routing::Route;
use crate::policy::refusal::{resolve, Refusal};
use crate::policy::Bound;

/// What a refusal says, and in which language when it is an operator's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    pub text: String,
    /// The BCP 47 tag of a configured refusal (it becomes `Content-Language`); `None` for the
    /// gateway's own message.
    pub language: Option<String>,
}

impl Words {
    /// The gateway's own message.
    pub fn plain(text: String) -> Words {
        Words {
            text,
            language: None,
        }
    }

    /// Whether an operator wrote the text (rather than the gateway).
    pub fn configured(&self) -> bool {
        self.language.is_some()
    }
}

/// The words for a block by `policy_id`, one of `bound`, on `route` under the request's profile
/// refusal `profile`; `default` is the gateway's own message.
pub fn for_block(
    route: Option<&Route>,
    profile: Option<&Refusal>,
    session: &Session,
    bound: &[Bound],
    policy_id: &str,
    default: impl FnOnce() -> String,
) -> Words {
    let fired = bound
        .iter()
        .find(|b| b.policy.id == policy_id)
        .and_then(|b| b.policy.refusal.as_ref());
    let route = route.and_then(|r| r.refusal.as_ref());
    let Some(refusal) = resolve(fired, profile, route) else {
        return Words::plain(default());
    };
    let accept = accept_language(session);
    let (text, language) = refusal.text_for(accept.as_deref());
    Words {
        text: text.to_string(),
        language: Some(language.to_string()),
    }
}

/// The request's `Accept-Language`, its header lines joined as one list (RFC 9110 §5.3).
fn accept_language(session: &Session) -> Option<String> {
    let values: Vec<&str> = session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}
