//! Credentials: API keys and tokens of the common providers, private key blocks, JWTs, bearer
//! and basic authorisation values, passwords in URLs and `password=`-style assignments.
//!
//! The patterns follow the credential formats gitleaks' default rule set names (its rule ids are
//! kept, so a masked span in the review store says which kind of secret it was), written for
//! masking rather than alerting: where gitleaks narrows a rule to keep false alarms down (an
//! entropy floor, the `T3BlbkFJ` marker inside OpenAI keys), these match the broader shape,
//! because masking a harmless look-alike costs a reader a few characters while a missed key
//! would leave the gateway. No Rust crate ships gitleaks' rules as a library; the rule set is
//! small enough to keep here with a test per rule. The review store's masking
//! (`review::mask`) uses the same rules.
//!
//! Word boundaries are ASCII ones (`(?-u:\b)`): the tokens are ASCII, and a Unicode `\b` makes
//! the regex engine leave its DFAs for a much slower one on any text with a non-ASCII
//! character (measured: 3.6 against ~490 µs per KiB of multilingual chat).

use regex::{Regex, RegexSet};
use std::sync::LazyLock;

/// One kind of credential: where it is in a match (`group` 0 is the whole match; a rule that
/// needs context, such as `password=`, masks only the value).
pub struct Rule {
    pub id: &'static str,
    pub pattern: &'static str,
    pub group: usize,
}

pub const RULES: &[Rule] = &[
    Rule {
        id: "private-key",
        // A key block cut off by the capture limit is still masked to the end of the text.
        pattern: r"(?s)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|\z)",
        group: 0,
    },
    Rule {
        id: "anthropic-api-key",
        pattern: r"(?-u:\b)sk-ant-(?:api|admin|sid)\d{0,3}-[A-Za-z0-9_-]{16,}",
        group: 0,
    },
    Rule {
        id: "openai-api-key",
        pattern: r"(?-u:\b)sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
        group: 0,
    },
    Rule {
        id: "aws-access-token",
        pattern: r"(?-u:\b)(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "aws-secret-access-key",
        pattern: r#"(?i)aws.{0,20}?(?:secret|key).{0,20}?[\s'"=:]+([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        group: 1,
    },
    Rule {
        id: "github-pat",
        pattern: r"(?-u:\b)(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "github-fine-grained-pat",
        pattern: r"(?-u:\b)github_pat_[A-Za-z0-9_]{22,}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "gitlab-pat",
        pattern: r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "slack-token",
        pattern: r"(?-u:\b)xox[abposre]-[A-Za-z0-9-]{10,}",
        group: 0,
    },
    Rule {
        id: "slack-webhook-url",
        pattern: r"(?i)https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
        group: 0,
    },
    Rule {
        id: "gcp-api-key",
        pattern: r"(?-u:\b)AIza[0-9A-Za-z_-]{35}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "stripe-access-token",
        pattern: r"(?-u:\b)(?:sk|rk|pk)_(?:live|test|prod)_[A-Za-z0-9]{10,}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "huggingface-access-token",
        pattern: r"(?-u:\b)hf_[A-Za-z0-9]{30,}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "npm-access-token",
        pattern: r"(?-u:\b)npm_[A-Za-z0-9]{36}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "sendgrid-api-token",
        pattern: r"(?-u:\b)SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?-u:\b)",
        group: 0,
    },
    Rule {
        id: "jwt",
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        group: 0,
    },
    Rule {
        id: "bearer-token",
        pattern: r"(?i)(?-u:\b)bearer\s+([A-Za-z0-9._~+/=-]{12,})",
        group: 1,
    },
    Rule {
        id: "basic-auth",
        pattern: r"(?i)(?-u:\b)basic\s+([A-Za-z0-9+/]{12,}={0,2})",
        group: 1,
    },
    Rule {
        id: "url-password",
        pattern: r"(?-u:\b)[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]{1,256}:([^/\s@]{1,256})@",
        group: 1,
    },
    Rule {
        id: "generic-api-key",
        // Names that say "this is a secret" followed by an assignment. Eight characters at least
        // so that `password: yes` and prose ("the token is ...") stay readable.
        pattern: r#"(?i)(?-u:\b)(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?token|auth[_-]?token|token|passw(?:or)?d|pwd)(?-u:\b)["']?\s*(?:=|:|=>)\s*["']?([^\s"',;]{8,})"#,
        group: 1,
    },
];

/// The rules compiled once: a set that says which rules match at all, and each rule alone.
pub struct Compiled {
    pub set: RegexSet,
    pub rules: Vec<(&'static str, Regex, usize)>,
}

pub static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled {
    set: RegexSet::new(RULES.iter().map(|r| r.pattern)).expect("credential patterns compile"),
    rules: RULES
        .iter()
        .map(|r| {
            (
                r.id,
                Regex::new(r.pattern).expect("credential pattern compiles"),
                r.group,
            )
        })
        .collect(),
});

/// The rule ids, in the order they are applied.
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

/// Every credential in `text` as (start, end, rule id), in rule order; spans of different rules
/// may overlap (a JWT after `Bearer`), which `Detectors::find` settles.
pub fn spans(text: &str) -> Vec<(usize, usize, &'static str)> {
    let c = &*COMPILED;
    let mut out = Vec::new();
    for i in c.set.matches(text).iter() {
        let (id, re, group) = &c.rules[i];
        for caps in re.captures_iter(text) {
            if let Some(m) = caps.get(*group).filter(|m| !m.is_empty()) {
                out.push((m.start(), m.end(), *id));
            }
        }
    }
    out
}

pub(super) fn find(text: &str, push: &mut impl FnMut(usize, usize)) {
    for (start, end, _) in spans(text) {
        push(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample per rule, built at run time so no credential-shaped literal sits in the
    /// repository for scanners to trip on; each with the part that must be found.
    fn samples() -> Vec<(&'static str, String, String)> {
        let mixed = |n: usize| {
            "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0z"
                .chars()
                .cycle()
                .take(n)
                .collect::<String>()
        };
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
            mixed(64)
        );
        let whole = |id: &'static str, secret: String, before: &str, after: &str| {
            (id, format!("{before}{secret}{after}"), secret)
        };
        vec![
            whole("private-key", pem, "key:\n", "\nafter"),
            whole(
                "anthropic-api-key",
                format!("sk-ant-api03-{}", mixed(40)),
                "use ",
                " now",
            ),
            whole(
                "openai-api-key",
                format!("sk-proj-{}", mixed(48)),
                "key ",
                " ok",
            ),
            whole(
                "aws-access-token",
                format!("AKIA{}", "Q".repeat(16)),
                "id ",
                " ok",
            ),
            whole(
                "aws-secret-access-key",
                mixed(40),
                "aws_secret_access_key = ",
                "",
            ),
            whole("github-pat", format!("ghp_{}", mixed(36)), "token ", " ok"),
            whole(
                "github-fine-grained-pat",
                format!("github_pat_{}", mixed(60)),
                "",
                " ok",
            ),
            whole("gitlab-pat", format!("glpat-{}", mixed(20)), "", " ok"),
            whole(
                "slack-token",
                format!("xoxb-1234567890-{}", mixed(24)),
                "",
                " ok",
            ),
            whole(
                "slack-webhook-url",
                format!("https://hooks.slack.com/services/T000/B000/{}", mixed(24)),
                "post to ",
                "",
            ),
            whole("gcp-api-key", format!("AIza{}", mixed(35)), "", " ok"),
            whole(
                "stripe-access-token",
                format!("sk_live_{}", mixed(24)),
                "",
                " ok",
            ),
            whole(
                "huggingface-access-token",
                format!("hf_{}", mixed(34)),
                "",
                " ok",
            ),
            whole("npm-access-token", format!("npm_{}", mixed(36)), "", " ok"),
            whole(
                "sendgrid-api-token",
                format!("SG.{}.{}", mixed(22), mixed(43)),
                "",
                " ok",
            ),
            whole(
                "jwt",
                format!(
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}",
                    mixed(43)
                ),
                "jwt=",
                "",
            ),
            whole("bearer-token", mixed(32), "Authorization: Bearer ", ""),
            whole(
                "basic-auth",
                format!("{}==", mixed(24)),
                "Authorization: Basic ",
                "",
            ),
            whole(
                "url-password",
                "s3cr3t-pass".into(),
                "postgres://app:",
                "@db.example.com/x",
            ),
            whole(
                "generic-api-key",
                "hunter2hunter2".into(),
                "password = \"",
                "\"",
            ),
        ]
    }

    #[test]
    fn every_rule_finds_its_secret_exactly() {
        let mut covered = std::collections::HashSet::new();
        for (id, text, secret) in samples() {
            let got = spans(&text);
            let want = text.find(&secret).map(|s| (s, s + secret.len(), id));
            assert!(
                want.is_some_and(|w| got.contains(&w)),
                "{id}: {text:?} -> {got:?}"
            );
            covered.insert(id);
        }
        for id in rule_ids() {
            assert!(covered.contains(id), "rule {id} has no sample");
        }
    }

    #[test]
    fn ordinary_text_has_no_credentials() {
        for text in [
            "How do I bake bread?",
            "The password policy says eight characters.",
            "Ask the bearer of the letter.",
            "My token: yes",
            "see https://example.com/path?q=1",
            "sk-short",
        ] {
            assert!(spans(text).is_empty(), "{text}");
        }
    }
}
