//! Secrets read from the environment.

/// A secret (token, API key) from the environment, without surrounding whitespace: a Kubernetes
/// Secret made with `--from-file` ends in a newline, which no client can send in a header, so the
/// token could never match (and an API key with it makes an invalid header). `None` when unset or
/// blank.
pub fn secret_from_env(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}
