//! Checks of the policy's wording.

use regex::Regex;
use std::sync::OnceLock;

use super::{cached, Findings, LintRule, PolicyDoc};

/// Words that leave the model to guess where the line is.
pub const VAGUE_WORDS: &[&str] = &[
    "generally",
    "usually",
    "might",
    "may be",
    "often",
    "sometimes",
    "etc.",
];

/// Each of `VAGUE_WORDS` as a whole word (`etc.` ends in its own boundary).
fn vague_words() -> &'static [Regex] {
    static R: OnceLock<Vec<Regex>> = OnceLock::new();
    R.get_or_init(|| {
        VAGUE_WORDS
            .iter()
            .map(|w| {
                let tail = if w.ends_with('.') { "" } else { r"(?:$|\W)" };
                Regex::new(&format!(r"(?:^|\W){}{tail}", regex::escape(w))).expect("vague")
            })
            .collect()
    })
}

/// Quoted and code spans: the content being judged, not the policy's own wording.
fn quoted() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    cached(&R, r#""[^"]*"|“[^”]*”|`[^`]*`"#)
}

/// "generally", "usually", "might", "may be", "often", "sometimes", "etc." outside quotes: a
/// boundary the policy leaves vague is drawn by the model, differently from one request to the
/// next.
pub struct VagueWording;

impl LintRule for VagueWording {
    fn name(&self) -> &'static str {
        "vague-wording"
    }

    fn check(&self, doc: &PolicyDoc, out: &mut Findings) {
        for (i, ln) in doc.lines.iter().enumerate() {
            let own = quoted().replace_all(ln, " ").to_ascii_lowercase();
            for (w, r) in VAGUE_WORDS.iter().zip(vague_words()) {
                if r.is_match(&own) {
                    out.warning(
                        doc.at(i),
                        format!("vague wording {w:?}: say exactly when it applies"),
                    );
                }
            }
        }
    }
}
