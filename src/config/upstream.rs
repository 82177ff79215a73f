//! `[[upstreams]]`: where routes forward to.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `http://host:port[/base/path]` or `https://...`
    pub base_url: String,
    /// Environment variable with an API key that the gateway adds when the client sent no
    /// credential of its own. Client credentials always pass through unchanged.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Header that carries the key: `authorization` (sent as `Bearer KEY`), `x-api-key`
    /// (Anthropic) or `api-key` (Azure OpenAI).
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the next bytes of the upstream's reply (LLM replies can be slow).
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_true")]
    pub verify_tls: bool,
    /// Offer HTTP/2 over TLS.
    #[serde(default)]
    pub http2: bool,
}

fn default_auth_header() -> String {
    "authorization".into()
}
fn default_connect_timeout() -> u64 {
    5_000
}
fn default_read_timeout() -> u64 {
    600_000
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Prefix added in front of the request path; "" or "/something" (no trailing slash).
    pub base_path: String,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{s:?}: scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{s:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(format!("{s:?}: a base URL cannot carry a query string"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            base_path,
        })
    }

    /// The Host header value: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, p) => format!("{host}:{p}"),
        }
    }
}

/// How long a DNS answer is reused before the next request looks the name up again.
impl UpstreamConfig {
    /// Checks what can be checked before start; errors name the key under `upstreams[i]`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        UpstreamUrl::parse(&self.base_url).map_err(|r| ("base_url", r))?;
        match self.auth_header.as_str() {
            "authorization" | "x-api-key" | "api-key" => {}
            other => {
                return Err((
                    "auth_header",
                    format!("{other:?}: expected \"authorization\", \"x-api-key\" or \"api-key\""),
                ))
            }
        }
        if let Some(var) = &self.api_key_env {
            if super::secret_from_env(var).is_none() {
                return Err((
                    "api_key_env",
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = UpstreamUrl::parse("https://api.openai.com").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (true, 443, ""));
        assert_eq!(u.authority(), "api.openai.com");
        let u = UpstreamUrl::parse("http://127.0.0.1:8000/proxy/").unwrap();
        assert_eq!(
            (u.tls, u.port, u.base_path.as_str()),
            (false, 8000, "/proxy")
        );
        assert_eq!(u.authority(), "127.0.0.1:8000");
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("http://x/?a=1").is_err());
    }
}
