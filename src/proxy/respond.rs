//! Writing the gateway's own responses (refusals, errors) in the API's error shape.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;

use crate::wire::{Api, ErrorKind};

/// Writes a complete JSON response. `close` drops the connection afterwards (used when the request
/// body was not read to the end, so the stream is not at a request boundary).
pub async fn json(
    session: &mut Session,
    status: u16,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
    close: bool,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (k, v) in headers {
        resp.insert_header(*k, v.as_str())?;
    }
    if close {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(Bytes::from(body), true).await?;
    Ok(())
}

/// Refuses the request with `kind`, in `api`'s error shape.
pub async fn error(
    session: &mut Session,
    api: Api,
    kind: ErrorKind,
    message: &str,
    request_id: &str,
    close: bool,
) -> pingora::Result<()> {
    error_in(session, api, kind, message, None, request_id, close).await
}

/// [`error`] with the language of `message` (a configured refusal), sent as `Content-Language`.
pub async fn error_in(
    session: &mut Session,
    api: Api,
    kind: ErrorKind,
    message: &str,
    language: Option<&str>,
    request_id: &str,
    close: bool,
) -> pingora::Result<()> {
    let status = kind.status();
    let body = api.error_body(&kind, message);
    let mut headers = vec![("x-guardgate-request-id", request_id.to_string())];
    if let Some(l) = language {
        headers.push(("content-language", l.to_string()));
    }
    if let ErrorKind::PolicyViolation { policy, code } = &kind {
        headers.push(("x-guardgate-blocked-by", policy.clone()));
        if let Some(c) = code {
            headers.push(("x-guardgate-code", c.clone()));
        }
    }
    json(session, status, body, &headers, close).await
}
