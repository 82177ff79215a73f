//! Masks credentials in captured text before anything is stored, with the credential rules of
//! the `redact` detectors (`redact::detect::credential`): one set of rules, so what the gateway
//! would redact is also what the review store never keeps.

use crate::redact::detect::credential::{COMPILED, RULES};

/// The rule ids, in the order they are applied.
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

/// `text` with every credential replaced by `[MASKED:<rule id>]`, and how many were masked. One
/// pass over a set of all patterns decides which rules run at all, so text without secrets costs
/// one scan.
pub fn mask(text: &str) -> (String, u32) {
    let c = &*COMPILED;
    let hits = c.set.matches(text);
    if !hits.matched_any() {
        return (text.to_string(), 0);
    }
    let mut out = text.to_string();
    let mut n = 0;
    for i in hits.iter() {
        let (id, re, group) = &c.rules[i];
        // Each rule runs on the previous rules' output: an earlier mask is never half-matched.
        let mut next = String::with_capacity(out.len());
        let mut last = 0;
        for caps in re.captures_iter(&out) {
            let Some(m) = caps.get(*group) else { continue };
            next.push_str(&out[last..m.start()]);
            next.push_str("[MASKED:");
            next.push_str(id);
            next.push(']');
            last = m.end();
            n += 1;
        }
        if last > 0 {
            next.push_str(&out[last..]);
            out = next;
        }
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample per rule, built at run time so no credential-shaped literal sits in the
    /// repository for scanners to trip on.
    fn samples() -> Vec<(&'static str, String)> {
        let r = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
        let mixed = |n: usize| {
            "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0z"
                .chars()
                .cycle()
                .take(n)
                .collect::<String>()
        };
        vec![
            (
                "private-key",
                format!(
                    "key:\n-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\nafter",
                    mixed(64)
                ),
            ),
            (
                "anthropic-api-key",
                format!("use sk-ant-api03-{} now", mixed(40)),
            ),
            ("openai-api-key", format!("key sk-proj-{} ok", mixed(48))),
            ("openai-api-key", format!("key sk-{} ok", mixed(48))),
            ("aws-access-token", format!("id AKIA{} ok", r('Q', 16))),
            (
                "aws-secret-access-key",
                format!("aws_secret_access_key = {}", mixed(40)),
            ),
            ("github-pat", format!("token ghp_{} ok", mixed(36))),
            (
                "github-fine-grained-pat",
                format!("github_pat_{} ok", mixed(60)),
            ),
            ("gitlab-pat", format!("glpat-{} ok", mixed(20))),
            ("slack-token", format!("xoxb-1234567890-{} ok", mixed(24))),
            (
                "slack-webhook-url",
                format!("https://hooks.slack.com/services/T000/B000/{}", mixed(24)),
            ),
            ("gcp-api-key", format!("AIza{} ok", mixed(35))),
            (
                "stripe-access-token",
                format!("sk_live_{} ok", mixed(24)),
            ),
            (
                "huggingface-access-token",
                format!("hf_{} ok", mixed(34)),
            ),
            ("npm-access-token", format!("npm_{} ok", mixed(36))),
            (
                "sendgrid-api-token",
                format!("SG.{}.{} ok", mixed(22), mixed(43)),
            ),
            (
                "jwt",
                format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}", mixed(43)),
            ),
            (
                "bearer-token",
                format!("Authorization: Bearer {}", mixed(32)),
            ),
            ("basic-auth", format!("Authorization: Basic {}==", mixed(24))),
            (
                "url-password",
                "connect to postgres://app:s3cr3t-pass@db.internal:5432/x".to_string(),
            ),
            ("generic-api-key", "config: password = \"hunter2hunter2\"".to_string()),
            ("generic-api-key", "API_KEY=abcd1234efgh5678".to_string()),
        ]
    }

    #[test]
    fn every_rule_masks_its_sample_and_nothing_of_it_is_left() {
        let mut covered = std::collections::HashSet::new();
        for (id, text) in samples() {
            let (out, n) = mask(&text);
            assert!(n >= 1, "{id}: nothing masked in {text:?}");
            assert!(
                out.contains(&format!("[MASKED:{id}]")),
                "{id}: {text:?} -> {out:?}"
            );
            // The secret part is gone: no run of 12+ characters with a digit in it (the made-up
            // secrets all have digits; the words around them have none) survives.
            for w in text.split(|c: char| !c.is_ascii_alphanumeric()) {
                if w.len() >= 12 && w.chars().any(|c| c.is_ascii_digit()) {
                    assert!(!out.contains(w), "{id}: {w:?} survived in {out:?}");
                }
            }
            covered.insert(id);
        }
        for id in rule_ids() {
            assert!(covered.contains(id), "rule {id} has no sample");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "How do I bake bread?",
            "The password policy says eight characters.",
            "Ask the bearer of the letter.",
            "My token: yes",
            "see https://example.com/path?q=1",
            "sk-short",
        ] {
            assert_eq!(mask(text), (text.to_string(), 0), "{text}");
        }
    }

    #[test]
    fn context_rules_mask_only_the_value() {
        let (out, _) = mask("Authorization: Bearer abcdefghijklmnop1234");
        assert_eq!(out, "Authorization: Bearer [MASKED:bearer-token]");
        let (out, _) = mask("postgres://app:pa55word@db/x");
        assert_eq!(out, "postgres://app:[MASKED:url-password]@db/x");
    }

    #[test]
    fn a_key_block_cut_off_by_the_capture_limit_is_masked_to_the_end() {
        let (out, n) = mask("before -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC");
        assert_eq!((out.as_str(), n), ("before [MASKED:private-key]", 1));
    }
}
