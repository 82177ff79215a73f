//! Choosing a request's policy profile (`policy::profile`) from what it shows: the route, the
//! parsed `model`, trusted headers and the presented API key, which is hashed here once and
//! never kept or logged.

use pingora::protocols::http::ServerSession as Session;
use sha2::{Digest, Sha256};

use super::exchange::Exchange;
use crate::policy::profile::{Facts, Profile, Profiles, Selected, Unknown};

/// The profile the request is judged under (noted on the exchange and counted), or why it has
/// none when `unknown_profile = "refuse"`.
pub fn choose<'p>(
    ex: &mut Exchange,
    session: &Session,
    route: &str,
    profiles: &'p Profiles,
    model: Option<&str>,
) -> Result<&'p Profile, Unknown> {
    let headers = &session.req_header().headers;
    let key_sha256 = if profiles.uses_keys {
        presented_key(headers).map(|k| Sha256::digest(k).into())
    } else {
        None
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let facts = Facts {
        route,
        model,
        key_sha256,
        header: &header,
    };
    let metrics = &ex.gw.metrics;
    let index = match profiles.select(&facts) {
        Selected::Profile(i) => i,
        Selected::Unknown(_, Some(i)) => {
            metrics
                .profile_unknown
                .with_label_values(&["default"])
                .inc();
            i
        }
        Selected::Unknown(why, None) => {
            metrics
                .profile_unknown
                .with_label_values(&["refused"])
                .inc();
            return Err(why);
        }
    };
    let p = &profiles.list[index];
    metrics.profile_requests.with_label_values(&[&p.name]).inc();
    ex.use_profile(p.name.clone(), p.fail_mode, p.refusal.clone());
    Ok(p)
}

/// The API key as the providers' SDKs send it: `Authorization: Bearer` (OpenAI), `x-api-key`
/// (Anthropic), `api-key` (Azure OpenAI); the first of these present.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            let key = v[7..].trim_ascii();
            if !key.is_empty() {
                return Some(key);
            }
        }
    }
    ["x-api-key", "api-key"]
        .into_iter()
        .find_map(|h| headers.get(h).map(|v| v.as_bytes().trim_ascii()))
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_as_the_sdks_send_them() {
        let k = |pairs| presented_key(&headers(pairs)).map(|b| b.to_vec());
        assert_eq!(
            k(&[("authorization", "Bearer sk-1")]),
            Some(b"sk-1".to_vec())
        );
        assert_eq!(
            k(&[("authorization", "bearer  sk-1 ")]),
            Some(b"sk-1".to_vec())
        );
        assert_eq!(k(&[("x-api-key", "ak-2")]), Some(b"ak-2".to_vec()));
        assert_eq!(k(&[("api-key", "az-3")]), Some(b"az-3".to_vec()));
        assert_eq!(
            k(&[("x-api-key", "ak-2"), ("authorization", "Bearer sk-1")]),
            Some(b"sk-1".to_vec())
        );
        assert_eq!(k(&[("authorization", "Basic abc")]), None);
        assert_eq!(k(&[("authorization", "Bearer ")]), None);
        assert_eq!(k(&[]), None);
    }
}
