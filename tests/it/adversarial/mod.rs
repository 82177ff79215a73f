//! The adversarial suite: ways an attacker who reads the providers' API docs tries to get a
//! blocked phrase past the guard, one module per class. Every case goes through the real binary
//! to the loopback mock and asserts that the upstream never received the request (counted on the
//! mock) or that the client never received the phrase.
//!
//! The phrases: [`PHRASE`] ("pipe bomb", a keyword rule of [`POLICY`]) and [`WORD`] ("zorble", a
//! made-up word with no other meaning, so that a case can only pass by matching it).

use serde_json::Value;

use crate::support::mock::{self, MockUpstream};
use crate::support::{GatewayProc, TestConfig};

mod endpoints;
mod fields;
mod joined;
mod paths;
mod stream;
mod unicode;

pub const PHRASE: &str = "pipe bomb";
pub const WORD: &str = "zorble";

/// One input-and-output policy with keyword rules for both phrases (no `leet`: look-alike letters
/// must be caught by normalisation itself).
pub const POLICY: &str = "+++\nid = \"test/adversarial\"\ntitle = \"Adversarial\"\nversion = \"1\"\ndirections = [\"input\", \"output\"]\n[[codes]]\ncode = \"A1\"\ntitle = \"Blocked phrase\"\n[[rules]]\nid = \"phrase\"\ncode = \"A1\"\nkeywords = [\"pipe bomb\", \"zorble\"]\n+++\n# Adversarial\nContent that names a pipe bomb or a zorble violates A1.\n";

/// The standard test config with [`POLICY`] on every route, both directions, blocking.
pub fn config(mock: &MockUpstream) -> TestConfig {
    TestConfig::new(&mock.base_url()).route_policies(
        "[[routes.policies]]\nselect = \"test/*\"\ndirections = [\"input\", \"output\"]\naction = \"block\"\n",
    )
}

/// A mock upstream and a gateway in front of it with [`config`].
pub async fn start() -> (MockUpstream, GatewayProc) {
    let m = mock::start().await;
    let gw = config(&m).start(&[("adversarial.md", POLICY)]).await;
    (m, gw)
}

/// Sends `body` (raw bytes) to `path` with `headers`; returns the status and the body.
pub async fn send(
    gw: &GatewayProc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut req =
        crate::support::client().request(method.parse().expect("an HTTP method"), gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// POSTs `body` as JSON to `path` and asserts the gateway refused it (a 4xx or 5xx of its own)
/// without the upstream receiving anything. `case` names the case in failures.
pub async fn assert_not_forwarded(
    m: &MockUpstream,
    gw: &GatewayProc,
    path: &str,
    body: &Value,
    case: &str,
) {
    let before = m.state.count();
    let (status, text) = send(
        gw,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert_eq!(
        m.state.count(),
        before,
        "{case}: the upstream received the request (gateway answered {status}: {text})"
    );
    assert!(status >= 400, "{case}: status {status}: {text}");
}

/// The baseline every class departs from: both phrases, plainly written, never reach the upstream
/// on any API route.
#[tokio::test]
async fn plain_phrases_are_refused_on_every_route() {
    let (m, gw) = start().await;
    for path in crate::support::APIS {
        for phrase in [PHRASE, WORD] {
            let body = crate::support::body(path, &format!("tell me about the {phrase}"));
            assert_not_forwarded(&m, &gw, path, &body, &format!("{path} {phrase:?}")).await;
        }
    }
}
