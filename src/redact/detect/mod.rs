//! Deterministic detectors of personal and secret data. Each finds spans of one [`Kind`] in a
//! text; [`Detectors::find`] runs the configured set and returns non-overlapping spans in order.

use regex::Regex;
use std::sync::LazyLock;

/// What a span is. The placeholder names it (`[EMAIL_1]`), the audit counts it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Credential,
    /// A policy's own pattern.
    Custom,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Iban,
        Kind::Ssn,
        Kind::Ip,
        Kind::Credential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Ssn => "ssn",
            Kind::Ip => "ip",
            Kind::Credential => "credential",
            Kind::Custom => "custom",
        }
    }
}

/// One span found: byte offsets into the text, and what it is. `label` is the placeholder's
/// name: the kind's in upper case, or a custom pattern's own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub label: String,
}

/// The detectors a policy turns on, plus its own named patterns.
#[derive(Debug, Clone, Default)]
pub struct Detectors {
    pub kinds: Vec<Kind>,
    /// (placeholder label such as `ORDER_ID`, pattern).
    pub custom: Vec<(String, Regex)>,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b").expect("email")
});

impl Detectors {
    /// Every span in `text`, sorted by start, non-overlapping (where two overlap, the earlier and
    /// then the longer wins).
    pub fn find(&self, text: &str) -> Vec<Found> {
        let mut all = Vec::new();
        for &kind in &self.kinds {
            if kind == Kind::Email {
                all.extend(EMAIL.find_iter(text).map(|m| Found {
                    start: m.start(),
                    end: m.end(),
                    kind,
                    label: "EMAIL".into(),
                }));
            }
        }
        for (label, re) in &self.custom {
            all.extend(re.find_iter(text).filter(|m| !m.is_empty()).map(|m| Found {
                start: m.start(),
                end: m.end(),
                kind: Kind::Custom,
                label: label.clone(),
            }));
        }
        all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept: Vec<Found> = Vec::with_capacity(all.len());
        for f in all {
            if kept.last().is_none_or(|k| f.start >= k.end) {
                kept.push(f);
            }
        }
        kept
    }
}
