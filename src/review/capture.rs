//! What a decision keeps of the text it judged: the classifier's own items (source, JSON path,
//! raw text), taken at `Exchange::judge` for the decisions the capture mode selects, then masked
//! and cut to size off the request path (in the store's writer) before anything is stored.

use serde::{Deserialize, Serialize};

use super::mask;
use crate::classify::{ClassifyError, Content, Verdict};
use crate::config::CaptureMode;
use crate::decide::{Decision, Outcome};

/// One judged item as captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// `user`, `assistant`, `instructions`, ... (`wire::Source::as_str`).
    pub source: String,
    /// The item's JSON path in the request or reply, e.g. `messages[2].content`.
    pub location: String,
    pub text: String,
}

/// The content of one judgement, as the classifier saw it (raw, unmasked: it only lives in
/// memory on its way to the writer).
#[derive(Clone)]
pub struct Capture {
    pub segments: Vec<Segment>,
}

/// Sizes only: captured text must never reach a log line, and ledger entries are `Debug`.
impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("segments", &self.segments.len())
            .field(
                "chars",
                &self.segments.iter().map(|s| s.text.len()).sum::<usize>(),
            )
            .finish()
    }
}

impl Capture {
    pub fn of(content: &Content) -> Capture {
        Capture {
            segments: content
                .items
                .iter()
                .map(|i| Segment {
                    source: i.source.as_str().to_string(),
                    location: i.location.clone(),
                    text: i.raw.clone(),
                })
                .collect(),
        }
    }
}

/// A result worth a reviewer's look: a violation (above the threshold or not) or a failure.
fn notable(r: &Result<Verdict, ClassifyError>) -> bool {
    r.as_ref().map_or(true, |v| v.violation)
}

/// Whether `o` is flagged: a violation, a below-threshold hit, a classifier error, or a shadow
/// candidate that judged otherwise than the live version.
pub fn flagged(o: &Outcome) -> bool {
    notable(&o.result)
        || o.candidate
            .as_ref()
            .is_some_and(|(_, c)| disagree(&o.result, c))
}

/// Both versions judged and they differ (`None`: either failed).
pub fn disagreement(
    live: &Result<Verdict, ClassifyError>,
    cand: &Result<Verdict, ClassifyError>,
) -> Option<bool> {
    match (live, cand) {
        (Ok(l), Ok(c)) => Some(l.violation != c.violation),
        _ => None,
    }
}

fn disagree(live: &Result<Verdict, ClassifyError>, cand: &Result<Verdict, ClassifyError>) -> bool {
    disagreement(live, cand).unwrap_or(false)
}

/// Whether `mode` keeps this outcome.
pub fn selects(mode: CaptureMode, o: &Outcome) -> bool {
    match mode {
        CaptureMode::None => false,
        CaptureMode::Flagged => flagged(o),
        CaptureMode::All => true,
    }
}

/// Whether `mode` keeps any outcome of `d`: only then is the text copied.
pub fn selects_any(mode: CaptureMode, d: &Decision) -> bool {
    match mode {
        CaptureMode::None => false,
        CaptureMode::Flagged => d.outcomes.iter().any(flagged),
        CaptureMode::All => !d.outcomes.is_empty(),
    }
}

/// A capture made ready to store: masked, cut to `max_chars` in all, with a one-line preview.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub segments: Vec<Segment>,
    /// Characters kept (after masking).
    pub chars: usize,
    /// Some text was cut to fit the limit.
    pub truncated: bool,
    /// Credentials masked.
    pub masked: u32,
    pub preview: String,
}

/// Characters masked beyond the cut, so a secret that straddles the limit is masked whole before
/// the cut leaves half of it.
const MASK_MARGIN: usize = 1024;

/// Characters of the one-line preview a queue row shows.
const PREVIEW_CHARS: usize = 200;

pub fn prepare(c: &Capture, max_chars: usize) -> Prepared {
    let budgets = shares(
        &c.segments
            .iter()
            .map(|s| s.text.chars().count())
            .collect::<Vec<_>>(),
        max_chars,
    );
    let mut masked = 0;
    let mut truncated = false;
    let mut chars = 0;
    let segments: Vec<Segment> = c
        .segments
        .iter()
        .zip(budgets)
        .map(|(s, budget)| {
            let head = take_chars(&s.text, budget + MASK_MARGIN);
            let (m, n) = mask::mask(head);
            masked += n;
            let text = if m.chars().count() > budget {
                truncated = true;
                format!("{}…", take_chars(&m, budget))
            } else {
                if head.len() < s.text.len() {
                    truncated = true;
                }
                m
            };
            chars += text.chars().count();
            Segment {
                source: s.source.clone(),
                location: s.location.clone(),
                text,
            }
        })
        .collect();
    let preview = preview(&segments);
    Prepared {
        segments,
        chars,
        truncated,
        masked,
        preview,
    }
}

/// Splits `total` characters among items of `lens` characters: a short item keeps all of its
/// text, and what it leaves goes to the longer ones (a long system prompt cannot push the user's
/// message out).
fn shares(lens: &[usize], total: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut out = vec![0; lens.len()];
    let mut left = total;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (lens.len() - k);
        out[i] = lens[i].min(fair);
        left -= out[i];
    }
    out
}

fn take_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The text a queue row shows: the last user (or, for replies, assistant) item, else the last
/// item, on one line.
fn preview(segments: &[Segment]) -> String {
    let pick = segments
        .iter()
        .rev()
        .find(|s| s.source == "user")
        .or_else(|| segments.iter().rev().find(|s| s.source == "assistant"))
        .or(segments.last());
    let Some(s) = pick else {
        return String::new();
    };
    let one_line = s.text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > PREVIEW_CHARS {
        format!("{}…", take_chars(&one_line, PREVIEW_CHARS))
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(source: &str, text: &str) -> Segment {
        Segment {
            source: source.into(),
            location: "x".into(),
            text: text.into(),
        }
    }

    #[test]
    fn short_items_keep_their_text_and_long_ones_share_the_rest() {
        assert_eq!(shares(&[10, 1000, 20], 100), vec![10, 70, 20]);
        assert_eq!(shares(&[500, 500], 100), vec![50, 50]);
        assert_eq!(shares(&[3, 4], 100), vec![3, 4]);
        assert_eq!(shares(&[], 100), Vec::<usize>::new());
    }

    #[test]
    fn prepare_masks_before_it_cuts_and_says_what_it_did() {
        let key = format!("sk-proj-{}", "Ab3".repeat(20));
        let c = Capture {
            segments: vec![
                seg("instructions", &"s".repeat(5000)),
                seg("user", &format!("my key is {key} please help")),
            ],
        };
        let p = prepare(&c, 100);
        assert!(p.truncated);
        assert_eq!(p.masked, 1);
        assert!(!p.segments[1].text.contains(&key));
        assert!(p.segments[1].text.contains("[MASKED:openai-api-key]"));
        // The user's short message is whole; the long system prompt took what was left.
        assert_eq!(
            p.segments[1].text,
            "my key is [MASKED:openai-api-key] please help"
        );
        assert!(p.segments[0].text.ends_with('…'));
        assert!(p.chars <= 100 + 1 + p.segments[1].text.len());
        assert_eq!(p.preview, p.segments[1].text);
    }

    #[test]
    fn a_secret_across_the_limit_is_masked_not_halved() {
        let key = format!("ghp_{}", "Zx9".repeat(12));
        let text = format!("{} {key}", "a".repeat(94));
        let p = prepare(
            &Capture {
                segments: vec![seg("user", &text)],
            },
            100,
        );
        assert_eq!(p.masked, 1);
        assert!(
            !p.segments[0].text.contains("ghp_Zx9"),
            "{}",
            p.segments[0].text
        );
        assert!(
            !p.segments[0].text.contains("Zx9Zx9"),
            "{}",
            p.segments[0].text
        );
    }
}
