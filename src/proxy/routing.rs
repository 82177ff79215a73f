//! Who answers a request, decided once from its request header: a guarded route, a moderation
//! endpoint, the unmatched upstream (endpoints on `unmatched.allow`, and with
//! `unmatched.action = "passthrough"` every other unrouted one), or a refusal that says why and
//! names the setting that would change it.
//!
//! The order matters. The path rule (`urlpath::check`) comes first, so that everything after it
//! reads the path the way the upstream will. A POST on a route's path is that route's; other
//! methods on it (`GET /v1/chat/completions` lists stored completions) are unrouted requests
//! like any other. Nothing that no route guards reaches the upstream unless the config says so.

use http::{HeaderName, Method};
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::upstream::Upstream;
use crate::config::{FailMode, InputMode, NonTextParts, OutputConfig, UnmatchedAction};
use crate::metrics::BadRequest;
use crate::urlpath::{self, Ambiguity, Endpoint, Pattern};
use crate::wire::batch::Batch;
use crate::wire::{Api, ErrorKind};

/// A guarded route, resolved from its config.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path: String,
    pub api: Api,
    pub upstream: Arc<Upstream>,
    pub fail_mode: FailMode,
    pub deadline: Duration,
    pub output: OutputConfig,
    pub non_text_parts: NonTextParts,
    pub input_mode: InputMode,
    /// Set on a batch-upload route: the body holds requests of other APIs, each judged in its
    /// own format (`api` is then the API whose error shape answers for the upload).
    pub batch: Option<Batch>,
    /// The operator's refusal for blocks whose policy sets none.
    pub refusal: Option<crate::policy::refusal::Refusal>,
}

/// The routes, found by path.
#[derive(Default)]
pub struct Routes {
    /// Routes of literal paths, keyed in compared form (`urlpath::comparable`).
    literal: HashMap<String, Arc<Route>>,
    /// Routes of paths with `{name}` segments, tried when no literal path matches (config
    /// validation keeps them from overlapping one another).
    patterns: Vec<(Pattern, Arc<Route>)>,
}

impl Routes {
    pub fn insert(&mut self, pattern: Pattern, route: Arc<Route>) {
        match pattern.literal() {
            Some(key) => {
                self.literal.insert(key, route);
            }
            None => self.patterns.push((pattern, route)),
        }
    }

    /// The route for an accepted path in compared form.
    pub fn get(&self, compared: &str) -> Option<&Arc<Route>> {
        self.literal.get(compared).or_else(|| {
            self.patterns
                .iter()
                .find(|(p, _)| p.matches(compared))
                .map(|(_, r)| r)
        })
    }

    pub fn len(&self) -> usize {
        self.literal.len() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests no route guards: where the allowed ones go, and what happens to the rest.
pub struct Unmatched {
    pub upstream: Option<Arc<Upstream>>,
    pub action: UnmatchedAction,
    pub allow: Vec<Endpoint>,
}

impl Unmatched {
    fn allows(&self, method: &Method, compared: &str) -> bool {
        self.allow.iter().any(|e| e.matches(method, compared))
    }
}

/// Who answers a request.
pub enum Target {
    /// `/v1/moderations` or `/guardgate/v1/classify` (the path, one of the two).
    Moderation(String),
    Route(Arc<Route>),
    /// Proxied to the unmatched upstream, unjudged.
    Passthrough,
    Refused(Refusal),
}

/// Why a request is refused before anything else is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its path could be read two ways.
    Path(Ambiguity),
    /// It names a second method in a header (index into `METHOD_OVERRIDES`).
    MethodOverride(usize),
    /// An allowed endpoint, sent with a body or an upgrade that no such endpoint takes.
    BodyOnAllowed,
    /// No route guards it and the allow list does not list it.
    NotOpened,
    /// The allow list lists it, but no upstream is named to send it to.
    NoUpstream,
}

/// Headers that some frameworks read as the request's method in place of its request line:
/// with one, a GET the allow list lets through could act as a POST upstream.
const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

impl Refusal {
    pub fn kind(self) -> ErrorKind {
        match self {
            Refusal::NotOpened | Refusal::NoUpstream => ErrorKind::NotFound,
            _ => ErrorKind::InvalidRequest { param: None },
        }
    }

    pub fn reason(self) -> BadRequest {
        match self {
            Refusal::Path(_) => BadRequest::Path,
            Refusal::MethodOverride(_) => BadRequest::Method,
            Refusal::BodyOnAllowed => BadRequest::InvalidBody,
            Refusal::NotOpened | Refusal::NoUpstream => BadRequest::NotFound,
        }
    }

    /// The client's error message for `req`.
    pub fn message(self, req: &RequestHeader) -> String {
        let (method, path) = (&req.method, req.uri.path());
        match self {
            Refusal::Path(why) => format!(
                "guardgate refuses the path {:?}: {why}.",
                String::from_utf8_lossy(req.raw_path())
            ) + " A path is accepted only when every standard resolver reads it the same way (no '.', '..' or empty segments, no '\\' or ';', nothing percent-encoded but ! $ & ' ( ) * + , = : @)"
            ,
            Refusal::MethodOverride(i) => format!(
                "guardgate refuses the {} header: a request has the one method on its request line",
                METHOD_OVERRIDES[i]
            ),
            Refusal::BodyOnAllowed => format!(
                "{method} {path} passes upstream unjudged because it carries no model input, so guardgate refuses it with a body or an Upgrade header"
            ),
            Refusal::NotOpened => format!(
                "guardgate does not guard {method} {path}, so it refuses it: no route serves it and unmatched.allow does not list it. To pass it upstream unjudged, add \"{method} {path}\" to unmatched.allow (a {{name}} segment stands for any one segment)"
            ),
            Refusal::NoUpstream => format!(
                "{method} {path} is on unmatched.allow, but unmatched.upstream names no upstream to send it to"
            ),
        }
    }
}

/// The API whose error shape answers a request that no route takes: Anthropic's for a request
/// an Anthropic client sends (its SDKs name `anthropic-version` on every request), OpenAI's
/// otherwise.
pub fn shape_of(req: &RequestHeader) -> Api {
    match req.headers.contains_key("anthropic-version") {
        true => Api::from_name("anthropic-messages").unwrap_or_else(Api::openai_chat),
        false => Api::openai_chat(),
    }
}

/// Whether the request could carry input past its header: a body, or a protocol upgrade (after a
/// `101`, pingora-proxy relays whatever either side writes, unread).
fn carries_input(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req.headers.contains_key(http::header::UPGRADE)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() != b"0")
}

/// Whether the request target is one whose path the gateway reads as the upstream will: the
/// origin-form (`/v1/...`), or an absolute-form URL, whose path pingora extracts and the upstream
/// gets in origin-form. pingora anchors any other target to `/` while keeping its bytes, which
/// would judge one path and name another.
fn readable_target(req: &RequestHeader) -> bool {
    let raw = req.raw_path();
    let starts = |p: &[u8]| raw.len() >= p.len() && raw[..p.len()].eq_ignore_ascii_case(p);
    raw.first() == Some(&b'/') || starts(b"http://") || starts(b"https://")
}

/// Who answers `req`: one of `routes`, a verdict endpoint (`is_moderation`), the allow list or
/// the unmatched action of `unmatched`, or a refusal.
pub fn target(
    routes: &Routes,
    unmatched: &Unmatched,
    is_moderation: impl Fn(&str) -> bool,
    req: &RequestHeader,
) -> Target {
    let path = req.uri.path();
    if !readable_target(req) {
        return Target::Refused(Refusal::Path(Ambiguity::NotAbsolute));
    }
    if let Err(why) = urlpath::check(path) {
        return Target::Refused(Refusal::Path(why));
    }
    if let Some(i) = METHOD_OVERRIDES
        .iter()
        .position(|h| req.headers.contains_key(h))
    {
        return Target::Refused(Refusal::MethodOverride(i));
    }
    if is_moderation(path) {
        return Target::Moderation(path.to_string());
    }
    let compared = urlpath::comparable(path);
    let route = routes.get(&compared);
    if let (Some(route), &Method::POST) = (route, &req.method) {
        return Target::Route(route.clone());
    }
    if unmatched.allows(&req.method, &compared) {
        let bodiless = matches!(
            req.method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
        );
        return if bodiless && carries_input(req) {
            Target::Refused(Refusal::BodyOnAllowed)
        } else if unmatched.upstream.is_some() {
            Target::Passthrough
        } else {
            Target::Refused(Refusal::NoUpstream)
        };
    }
    if let Some(route) = route {
        // Refused there, with the method the route accepts.
        return Target::Route(route.clone());
    }
    match (unmatched.action, &unmatched.upstream) {
        (UnmatchedAction::Passthrough, Some(_)) => Target::Passthrough,
        _ => Target::Refused(Refusal::NotOpened),
    }
}
