//! `[telemetry]`: traces over OTLP/HTTP (`src/telemetry.rs`). Off unless `otlp_endpoint` is set.

use serde::Deserialize;
use std::collections::BTreeMap;

use super::secret_from_env;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP traces URL (`http://127.0.0.1:4318/v1/traces`); absent, no span
    /// is made and nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every span.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces sampled (0.0–1.0). A request with a `traceparent` follows its caller's
    /// sampling decision (parent-based sampler).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (a collector's tenant, say). Plain values: use
    /// `headers_env` for anything secret.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables: header name → variable name (an
    /// `authorization` token, for instance), so the secret is never in the file.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Time one export may take (connection, retries and all) before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Finished spans waiting for export; beyond this new spans are dropped, never waited for.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Most spans in one export request.
    #[serde(default = "default_max_export_batch_size")]
    pub max_export_batch_size: usize,
    /// How long spans wait to be batched before an export, at most.
    #[serde(default = "default_scheduled_delay_ms")]
    pub scheduled_delay_ms: u64,
}

fn default_service_name() -> String {
    "guardgate".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_queue_size() -> usize {
    2_048
}
fn default_max_export_batch_size() -> usize {
    512
}
fn default_scheduled_delay_ms() -> u64 {
    5_000
}

impl Default for TelemetrySection {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl TelemetrySection {
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// Every export header with its value, the environment's read now. Call after `validate`.
    pub fn export_headers(&self) -> BTreeMap<String, String> {
        let mut all = self.headers.clone();
        for (name, var) in &self.headers_env {
            if let Some(v) = secret_from_env(var) {
                all.insert(name.clone(), v);
            }
        }
        all
    }

    /// The first setting that is wrong, as (key under `telemetry.`, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: String| Err((format!("telemetry.{key}"), reason));
        if let Some(url) = &self.otlp_endpoint {
            match url.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                }
                Ok(_) => {
                    return err(
                        "otlp_endpoint",
                        format!("{url:?}: not an http:// or https:// URL"),
                    )
                }
                Err(e) => return err("otlp_endpoint", format!("{url:?}: {e}")),
            }
        }
        if self.service_name.trim().is_empty() {
            return err("service_name", "must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return err(
                "sample_ratio",
                format!("{} is not between 0.0 and 1.0", self.sample_ratio),
            );
        }
        for (name, value) in &self.headers {
            let key = format!("headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return err(&key, "not a valid header name".into());
            }
            if http::HeaderValue::from_str(value).is_err() {
                return err(&key, "not a valid header value".into());
            }
        }
        for (name, var) in &self.headers_env {
            let key = format!("headers_env.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return err(&key, "not a valid header name".into());
            }
            match secret_from_env(var) {
                None => {
                    return err(
                        &key,
                        format!("environment variable {var} is not set or empty"),
                    )
                }
                Some(v) if http::HeaderValue::from_str(&v).is_err() => {
                    return err(
                        &key,
                        format!("environment variable {var} is not a valid header value"),
                    )
                }
                Some(_) => {}
            }
        }
        if self.timeout_ms == 0 {
            return err("timeout_ms", "must be positive".into());
        }
        if self.scheduled_delay_ms == 0 {
            return err("scheduled_delay_ms", "must be positive".into());
        }
        if self.max_queue_size == 0 {
            return err("max_queue_size", "must be positive".into());
        }
        if self.max_export_batch_size == 0 || self.max_export_batch_size > self.max_queue_size {
            return err(
                "max_export_batch_size",
                "must be positive and at most max_queue_size".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TelemetrySection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn off_by_default_with_documented_defaults() {
        let t = TelemetrySection::default();
        assert!(!t.enabled());
        assert_eq!(t.service_name, "guardgate");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.timeout_ms, 10_000);
        assert_eq!((t.max_queue_size, t.max_export_batch_size), (2_048, 512));
        t.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                "otlp_endpoint = \"127.0.0.1:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"ftp://x/v1/traces\"",
                "telemetry.otlp_endpoint",
            ),
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("sample_ratio = -0.1", "telemetry.sample_ratio"),
            ("service_name = \" \"", "telemetry.service_name"),
            ("headers = { \"a b\" = \"x\" }", "telemetry.headers.a b"),
            (
                "headers = { \"x-tenant\" = \"a\\nb\" }",
                "telemetry.headers.x-tenant",
            ),
            (
                "headers_env = { authorization = \"GUARDGATE_TEST_UNSET_OTLP_VAR\" }",
                "telemetry.headers_env.authorization",
            ),
            ("timeout_ms = 0", "telemetry.timeout_ms"),
            (
                "max_export_batch_size = 4096",
                "telemetry.max_export_batch_size",
            ),
            ("max_queue_size = 0", "telemetry.max_queue_size"),
        ];
        for (text, key) in cases {
            let (k, reason) = parse(text).validate().unwrap_err();
            assert_eq!(k, key, "{text}: {reason}");
        }
        assert!(toml::from_str::<TelemetrySection>("endpoint = \"http://x\"").is_err());
    }

    #[test]
    fn headers_from_the_environment_join_the_plain_ones() {
        // PATH is set in any test environment; its value stands in for a token.
        let t = parse(
            "otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nheaders = { \"x-tenant\" = \"a\" }\nheaders_env = { \"x-path\" = \"PATH\" }",
        );
        t.validate().unwrap();
        let h = t.export_headers();
        assert_eq!(h["x-tenant"], "a");
        assert_eq!(h["x-path"], std::env::var("PATH").unwrap().trim());
    }
}
