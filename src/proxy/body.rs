//! Reading a request body completely, within size and time limits, and decoding its
//! Content-Encoding so that what is classified is what the upstream will read.

use bytes::{Bytes, BytesMut};
use std::io::Read;
use std::time::Duration;

use pingora::protocols::http::ServerSession as Session;

use crate::metrics::BadRequest;
use crate::wire::ErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooLarge { limit: usize },
    DecodedTooLarge { limit: usize },
    Timeout,
    UnsupportedEncoding(String),
    BadEncoding(String),
    Io(String),
}

impl BodyError {
    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => {
                format!("request body exceeds the limit of {limit} bytes")
            }
            BodyError::DecodedTooLarge { limit } => {
                format!("decoded request body exceeds the limit of {limit} bytes")
            }
            BodyError::Timeout => "request body was not received in time".into(),
            BodyError::UnsupportedEncoding(e) => format!(
                "Content-Encoding {e:?} is not supported; use gzip, deflate, br, zstd or identity"
            ),
            BodyError::BadEncoding(e) => format!("request body could not be decoded: {e}"),
            BodyError::Io(e) => format!("error reading request body: {e}"),
        }
    }

    pub fn reason(&self) -> BadRequest {
        match self {
            BodyError::TooLarge { .. } | BodyError::DecodedTooLarge { .. } => BadRequest::TooLarge,
            BodyError::Timeout => BadRequest::BodyTimeout,
            BodyError::UnsupportedEncoding(_) => BadRequest::UnsupportedEncoding,
            BodyError::BadEncoding(_) => BadRequest::BadEncoding,
            BodyError::Io(_) => BadRequest::BodyIo,
        }
    }

    /// The refusal this failure gets, in any API's shape.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BodyError::TooLarge { .. } | BodyError::DecodedTooLarge { .. } => {
                ErrorKind::PayloadTooLarge
            }
            BodyError::Timeout => ErrorKind::RequestTimeout,
            BodyError::UnsupportedEncoding(_) => ErrorKind::UnsupportedMediaType,
            BodyError::BadEncoding(_) | BodyError::Io(_) => {
                ErrorKind::InvalidRequest { param: None }
            }
        }
    }

    /// Whether the body may be partly unread, so the connection must close rather than read the
    /// rest as a new request.
    pub fn leaves_body_unread(&self) -> bool {
        !matches!(
            self,
            BodyError::UnsupportedEncoding(_)
                | BodyError::BadEncoding(_)
                | BodyError::DecodedTooLarge { .. }
        )
    }
}

/// Reads the whole body. The Content-Length header is checked first so an oversized upload is
/// refused before any of it is read.
pub async fn read_body(
    session: &mut Session,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    if let Some(len) = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(BodyError::TooLarge { limit });
        }
    }
    // An HTTP/1.0 client cannot read an interim response (it would take the 100 for the reply),
    // so its expectation is ignored (RFC 9110 10.1.1), as pingora-proxy does.
    let expects_continue = session.req_header().version >= http::Version::HTTP_11
        && session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // curl and others wait (up to a second) for this before sending a large body.
        session
            .write_continue_response()
            .await
            .map_err(|e| BodyError::Io(e.to_string()))?;
    }
    let read = async {
        let mut buf = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(BodyError::TooLarge { limit });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => return Err(BodyError::Io(e.to_string())),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

/// Decodes `body` per the Content-Encoding header (a comma-separated list applied in order, so
/// decoded in reverse). Output is capped at `limit` to defuse decompression bombs.
/// The Content-Encoding of a message as one list: every header line counts, because repeated
/// lines form one list, and reading only the first would let `identity` there hide `br` on the
/// next. None without the header.
pub fn content_codings(headers: &http::HeaderMap) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{FFFD}"))
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// The codings of a Content-Encoding list that change the bytes (`identity` does not).
fn codings_of(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Whether a body with this Content-Encoding list is not plain bytes.
pub fn is_coded(content_encoding: Option<&str>) -> bool {
    content_encoding.is_some_and(|h| !codings_of(h).is_empty())
}

pub fn decode(
    body: &Bytes,
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let Some(header) = content_encoding else {
        return Ok(body.clone());
    };
    let codings = codings_of(header);
    let mut data = body.clone();
    for coding in codings.iter().rev() {
        let reader: Box<dyn Read + '_> = match coding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
            "deflate" => {
                // HTTP "deflate" means zlib-wrapped, but raw deflate is common in the wild.
                if data.len() >= 2
                    && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
                    && data[0] & 0x0f == 8
                {
                    Box::new(flate2::read::ZlibDecoder::new(&data[..]))
                } else {
                    Box::new(flate2::read::DeflateDecoder::new(&data[..]))
                }
            }
            "br" => Box::new(brotli_decompressor::Decompressor::new(&data[..], 4096)),
            "zstd" => Box::new(
                zstd::stream::read::Decoder::new(&data[..])
                    .map_err(|e| BodyError::BadEncoding(format!("zstd: {e}")))?,
            ),
            other => return Err(BodyError::UnsupportedEncoding(other.to_string())),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::BadEncoding(format!("{coding}: {e}")))?;
        if out.len() > limit {
            return Err(BodyError::DecodedTooLarge { limit });
        }
        data = Bytes::from(out);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_each_coding() {
        let plain = b"{\"model\":\"m\"}".to_vec();
        let z = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let raw = {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (enc, body) in [
            ("gzip", gz(&plain)),
            ("deflate", z),
            ("deflate", raw),
            ("zstd", zs),
            ("identity", plain.clone()),
        ] {
            let out = decode(&Bytes::from(body), Some(enc), 1 << 20).unwrap();
            assert_eq!(&out[..], &plain[..], "{enc}");
        }
        // Stacked codings decode in reverse order of application.
        let twice = gz(&gz(&plain));
        assert_eq!(
            &decode(&Bytes::from(twice), Some("gzip, gzip"), 1 << 20).unwrap()[..],
            &plain[..]
        );
    }

    #[test]
    fn refuses_bombs_unknown_and_garbage() {
        let bomb = gz(&vec![b'a'; 10 << 20]);
        assert_eq!(
            decode(&Bytes::from(bomb), Some("gzip"), 1 << 20),
            Err(BodyError::DecodedTooLarge { limit: 1 << 20 })
        );
        assert!(matches!(
            decode(&Bytes::from_static(b"x"), Some("compress"), 10),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            decode(&Bytes::from_static(b"not gzip"), Some("gzip"), 100),
            Err(BodyError::BadEncoding(_))
        ));
    }
}
