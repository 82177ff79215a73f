//! The review page's routes on the admin listener (`/review...`): parses the request, asks the
//! store (on blocking threads: both databases' clients block), and hands the results to `page`
//! to render. Everything but the login form sits behind the admin token, given as the usual
//! bearer header or, for a browser, as a `SameSite=Strict` cookie that the login form sets (it
//! holds a hash of the token, not the token).

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::page;
pub use super::query::{Job, Jobs, Params, Query, FILTER_KEYS};
use super::replay;
use super::store::{Label, Store, StoreError};
use super::Review;
use crate::classify::Cascade;
use crate::policy::Registry;

pub const COOKIE: &str = "guardgate_review";

/// Decisions per queue page.
const PAGE_ROWS: usize = 50;

/// Largest form body read.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn html(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }
    fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }
    fn redirect(to: &str) -> Response {
        Response {
            status: 303,
            content_type: "text/plain",
            headers: vec![("location", to.to_string())],
            body: Vec::new(),
        }
    }
}

/// What the page needs from the gateway.
pub struct Ctx<'a> {
    pub review: Option<&'a Arc<Review>>,
    pub registry: &'a Arc<Registry>,
    pub cascade: &'a Arc<Cascade>,
    pub jobs: &'a Jobs,
    /// The admin token, when one is configured.
    pub token: Option<&'a str>,
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    /// Authorised by the bearer header (the cookie is checked here).
    pub bearer_ok: bool,
    pub cookie: Option<&'a str>,
    /// `Host`, `Origin` and `Sec-Fetch-Site`: where a browser says a form came from.
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
}

/// The cookie's value for `token`.
pub fn session_value(token: &str) -> String {
    hex::encode(Sha256::digest(format!("guardgate-review-session:{token}")))
}

fn cookie_ok(token: &str, cookie_header: Option<&str>) -> bool {
    let want = session_value(token);
    cookie_header
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && constant_eq(v.as_bytes(), want.as_bytes()))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| format!("review store task failed: {e}"))?
        .map_err(|e| e.to_string())
}

fn store_error(e: String) -> Response {
    tracing::error!(error = %e, "review page: store query failed");
    Response::html(503, page::message("Review store unavailable", &e))
}

pub async fn handle(ctx: &Ctx<'_>, req: &Request<'_>) -> Response {
    let now = super::now_ms();
    if req.path == "/review/login" {
        return login(ctx, req);
    }
    let authorised = match ctx.token {
        None => true,
        Some(t) => req.bearer_ok || cookie_ok(t, req.cookie),
    };
    if !authorised {
        return Response::redirect("/review/login");
    }
    if req.method == "POST" && !same_origin_form(req) {
        return Response::html(403, page::message("Refused", "a form from another site"));
    }
    let Some(review) = ctx.review else {
        return Response::html(
            200,
            page::message(
                "Capture is off",
                "Set [audit] capture = \"flagged\" or \"all\" in the config to keep the text of decisions for review.",
            ),
        );
    };
    let params = Params::parse(req.query.as_bytes());
    let q = Query::from_params(&params, now);
    let rest = req
        .path
        .trim_start_matches("/review")
        .trim_start_matches('/');
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method, segs.as_slice()) {
        ("GET", []) => queue(review, &q, now).await,
        ("GET", ["d", id]) => match id.parse() {
            Ok(id) => detail(review, &q, id, now).await,
            Err(_) => not_found(),
        },
        ("POST", ["d", id, "label"]) => match id.parse() {
            Ok(id) => label(review, id, req.body, now).await,
            Err(_) => not_found(),
        },
        ("GET", ["policy", hash]) => policy_text(review, hash).await,
        ("GET", ["export"]) => export_page(review, &params).await,
        ("GET", ["export.jsonl"]) => export_lines(review, &params).await,
        ("GET", ["replay"]) => Response::html(
            200,
            page::replay(&ctx.registry.snapshot(), ctx.jobs.current().as_deref(), now),
        ),
        ("POST", ["replay"]) => start_replay(ctx, review, req.body, now),
        _ => not_found(),
    }
}

fn not_found() -> Response {
    Response::html(404, page::message("Not found", "no such review page"))
}

/// Whether a POST came from this page: browsers say where a form came from (`Sec-Fetch-Site`,
/// else `Origin`), and one from another site is refused even though the cookie, being
/// `SameSite=Strict`, would not have been sent with it. Clients that are not browsers (curl with
/// the bearer token) send neither header.
fn same_origin_form(req: &Request<'_>) -> bool {
    if let Some(site) = req.fetch_site {
        return matches!(site, "same-origin" | "none");
    }
    match (req.origin, req.host) {
        (Some(o), Some(h)) => o
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn login(ctx: &Ctx<'_>, req: &Request<'_>) -> Response {
    let Some(token) = ctx.token else {
        return Response::redirect("/review");
    };
    if req.method == "POST" {
        let p = Params::parse(req.body);
        if p.get("token")
            .is_some_and(|t| constant_eq(t.as_bytes(), token.as_bytes()))
        {
            let mut r = Response::redirect("/review");
            r.headers.push((
                "set-cookie",
                format!(
                    "{COOKIE}={}; Path=/review; HttpOnly; SameSite=Strict",
                    session_value(token)
                ),
            ));
            return r;
        }
        return Response::html(401, page::login(Some("wrong token")));
    }
    Response::html(200, page::login(None))
}

async fn queue(review: &Arc<Review>, q: &Query, now: i64) -> Response {
    let (f, before) = (q.filter.clone(), q.before);
    let r = blocking(&review.store, move |s| {
        Ok((s.page(&f, before, PAGE_ROWS)?, s.facets()?))
    })
    .await;
    match r {
        Ok((page_, facets)) => Response::html(
            200,
            page::queue(&page::QueueView {
                q,
                page: &page_,
                facets: &facets,
                mode: review.mode.as_str(),
                store: &review.store.location().describe(),
                now_ms: now,
            }),
        ),
        Err(e) => store_error(e),
    }
}

async fn detail(review: &Arc<Review>, q: &Query, id: i64, now: i64) -> Response {
    let f = q.filter.clone();
    let r = blocking(&review.store, move |s| {
        let Some(d) = s.detail(id)? else {
            return Ok(None);
        };
        let nb = s.neighbours(&f, id)?;
        let same = s.same_request(&d.decision.request_id)?;
        let has_text = s.policy_text(&d.decision.policy_hash)?.is_some();
        Ok(Some((d, nb, same, has_text)))
    })
    .await;
    match r {
        Ok(Some((d, (older, newer), same, has_text))) => Response::html(
            200,
            page::detail(&page::DetailView {
                q,
                d: &d,
                older,
                newer,
                same_request: &same,
                policy_text: has_text,
                now_ms: now,
            }),
        ),
        Ok(None) => not_found(),
        Err(e) => store_error(e),
    }
}

async fn label(review: &Arc<Review>, id: i64, body: &[u8], now: i64) -> Response {
    let p = Params::parse(body);
    let label = match p.get("label") {
        Some("clear") => None,
        Some(l) => match Label::parse(l) {
            Some(l) => Some(l),
            None => return Response::html(422, page::message("Bad label", l)),
        },
        None => return Response::html(422, page::message("Bad label", "no label given")),
    };
    let note = p.get("note").map(str::to_string);
    let back = p.get("q").unwrap_or("").to_string();
    let advance = p.get("advance").is_some();
    let q = Query::from_params(&Params::parse(back.as_bytes()), now);
    let f = q.filter.clone();
    let r = blocking(&review.store, move |s| {
        let Some(d) = s.detail(id)? else {
            return Ok(Err(404));
        };
        if let Some(l) = label {
            if l.truth(&d.decision.verdict).is_none() {
                return Ok(Err(422));
            }
        }
        s.label(id, label, note.as_deref(), now)?;
        Ok(Ok(if advance {
            s.neighbours(&f, id)?.0
        } else {
            None
        }))
    })
    .await;
    let sep = if back.is_empty() { "" } else { "?" };
    match r {
        Ok(Ok(Some(next))) => Response::redirect(&format!("/review/d/{next}{sep}{back}")),
        Ok(Ok(None)) => Response::redirect(&format!("/review/d/{id}{sep}{back}")),
        Ok(Err(404)) => not_found(),
        Ok(Err(_)) => Response::html(
            422,
            page::message(
                "Label does not apply",
                "a false positive needs a violation, a false negative an allow, and an error has no verdict to judge",
            ),
        ),
        Err(e) => store_error(e),
    }
}

async fn policy_text(review: &Arc<Review>, hash: &str) -> Response {
    let h = hash.to_string();
    match blocking(&review.store, move |s| s.policy_text(&h)).await {
        Ok(Some(t)) => Response::html(200, page::policy_text(&t)),
        Ok(None) => not_found(),
        Err(e) => store_error(e),
    }
}

async fn export_page(review: &Arc<Review>, p: &Params) -> Response {
    let policy = p.get("policy").map(str::to_string);
    let r = blocking(&review.store, move |s| {
        let facets = s.facets()?;
        let lines = match &policy {
            Some(id) => Some(super::export::lines(&s.labelled(id)?, &[])),
            None => None,
        };
        Ok((facets, policy, lines))
    })
    .await;
    match r {
        Ok((facets, policy, lines)) => Response::html(
            200,
            page::export(facets.of("policy"), policy.as_deref(), lines.as_ref()),
        ),
        Err(e) => store_error(e),
    }
}

async fn export_lines(review: &Arc<Review>, p: &Params) -> Response {
    let Some(policy) = p.get("policy").map(str::to_string) else {
        return Response::html(422, page::message("Export", "name a policy: ?policy=ID"));
    };
    match blocking(&review.store, move |s| s.labelled(&policy)).await {
        Ok(rows) => {
            let out = super::export::lines(&rows, &[]);
            let mut body = String::new();
            for c in &out.cases {
                body.push_str(&serde_json::to_string(c).unwrap_or_default());
                body.push('\n');
            }
            Response::text(200, "application/x-ndjson; charset=utf-8", body)
        }
        Err(e) => store_error(e),
    }
}

fn start_replay(ctx: &Ctx<'_>, review: &Arc<Review>, body: &[u8], now: i64) -> Response {
    let p = Params::parse(body);
    let Some(id) = p.get("candidate").map(str::to_string) else {
        return Response::html(422, page::message("Replay", "choose a candidate policy"));
    };
    let since = p.get("since").unwrap_or("24h").to_string();
    let Ok(window) = humantime::parse_duration(&since) else {
        return Response::html(
            422,
            page::message("Replay", "since: a duration such as 24h or 7d"),
        );
    };
    let limit = p
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(replay::DEFAULT_LIMIT);
    let snap = ctx.registry.snapshot();
    let Some(candidate) = snap.candidates.get(&id).cloned() else {
        return Response::html(
            422,
            page::message("Replay", "no shadow candidate with that id"),
        );
    };
    let mut slot = match ctx.jobs.current.lock() {
        Ok(s) => s,
        Err(_) => return Response::html(500, page::message("Replay", "job state poisoned")),
    };
    if slot
        .as_ref()
        .is_some_and(|j| j.result.lock().map(|r| r.is_none()).unwrap_or(false))
    {
        return Response::html(409, page::message("Replay", "a replay is already running"));
    }
    let job = Arc::new(Job {
        candidate: format!("{} {}", candidate.id, candidate.version),
        since: since.clone(),
        started_ms: now,
        done: AtomicUsize::new(0),
        total: AtomicUsize::new(0),
        result: Mutex::new(None),
    });
    *slot = Some(job.clone());
    let store = review.store.clone();
    let cascade = ctx.cascade.clone();
    tokio::spawn(async move {
        let since_ms = now - window.as_millis() as i64;
        let pid = candidate.id.clone();
        let rows = blocking(&store, move |s| s.captured(&pid, since_ms, limit)).await;
        let result = match rows {
            Ok(rows) => {
                job.total.store(rows.len(), Ordering::Relaxed);
                let opts = replay::Options {
                    concurrency: 4,
                    timeout: Duration::from_secs(120),
                };
                Ok(replay::run(&cascade, &candidate, rows, &opts, Some(&job.done)).await)
            }
            Err(e) => Err(e),
        };
        if let Ok(mut r) = job.result.lock() {
            *r = Some(result);
        }
    });
    Response::redirect("/review/replay")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::store::LabelFilter;

    #[test]
    fn the_cookie_holds_a_hash_of_the_token() {
        let v = session_value("s3cret");
        assert!(!v.contains("s3cret"));
        assert!(cookie_ok("s3cret", Some(&format!("a=b; {COOKIE}={v}"))));
        assert!(!cookie_ok(
            "s3cret",
            Some(&format!("{COOKIE}={}", session_value("other")))
        ));
        assert!(!cookie_ok("s3cret", None));
    }

    fn post<'a>(origin: Option<&'a str>, site: Option<&'a str>) -> Request<'a> {
        Request {
            method: "POST",
            path: "/review/d/1/label",
            query: "",
            body: b"",
            bearer_ok: false,
            cookie: None,
            host: Some("127.0.0.1:9090"),
            origin,
            fetch_site: site,
        }
    }

    #[test]
    fn forms_from_other_sites_are_refused() {
        assert!(same_origin_form(&post(None, Some("same-origin"))));
        assert!(!same_origin_form(&post(None, Some("cross-site"))));
        assert!(same_origin_form(&post(Some("http://127.0.0.1:9090"), None)));
        assert!(!same_origin_form(&post(Some("http://evil.example"), None)));
        assert!(same_origin_form(&post(None, None)));
    }

    #[test]
    fn the_query_round_trips_its_filters_and_drops_the_cursor() {
        let p =
            Params::parse(b"policy=a%2Fx&code=&since=24h&label=unreviewed&before=99&disagree=1");
        let q = Query::from_params(&p, 100_000_000);
        assert_eq!(q.filter.policy.as_deref(), Some("a/x"));
        assert_eq!(q.filter.code, None);
        assert_eq!(q.filter.since_ms, Some(100_000_000 - 86_400_000));
        assert_eq!(q.filter.label, LabelFilter::Unreviewed);
        assert!(q.filter.disagree);
        assert_eq!(q.before, Some(99));
        assert_eq!(q.qs(), "policy=a%2Fx&since=24h&label=unreviewed&disagree=1");
    }
}
