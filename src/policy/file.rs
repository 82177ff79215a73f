//! One policy file: TOML front matter between `+++` lines, then the natural-language policy text
//! the model reads. Parsing here is pure (text in, `Policy` out) so lint, tests and the registry
//! share it.

use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use super::binding::{Action, Direction};
use super::refusal::Refusal;
use crate::classify::normalize::{fold_leet, readings, Reading};
use crate::classify::verdict::OutputFormat;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    id: String,
    title: String,
    version: String,
    /// Absent: input and output, or input only for a redact policy.
    #[serde(default)]
    directions: Option<Vec<Direction>>,
    #[serde(default = "default_action")]
    action: Action,
    #[serde(default = "default_threshold")]
    severity_threshold: Severity,
    #[serde(default)]
    codes: Vec<CodeDef>,
    #[serde(default)]
    rules: Vec<RuleDef>,
    /// How a model backend must answer: `json` (default) or `binary`.
    #[serde(default)]
    output_format: OutputFormat,
    /// Reasoning effort for harmony models (gpt-oss-safeguard): low, medium or high.
    #[serde(default)]
    reasoning_effort: Option<Effort>,
    /// A candidate version of the live policy with the same id: judged on live traffic next to
    /// it and compared, never enforced (shadow evaluation before promotion).
    #[serde(default)]
    candidate: bool,
    /// Reload gate: a changed version goes live only if its case file meets `[thresholds]`.
    #[serde(default)]
    gate: bool,
    /// Which classifier stages may judge this policy, by name (`rules`, or a `[[backends]]` name),
    /// in cascade order. Absent: every configured stage.
    #[serde(default)]
    backends: Option<Vec<String>>,
    /// Quality bar for `guardgate policy test`: the run fails when the policy's cases miss it.
    #[serde(default)]
    thresholds: Thresholds,
    /// What a client reads when this policy blocks its request or reply.
    #[serde(default)]
    refusal: Option<Refusal>,
    /// The redact action's settings (`action = "redact"` only).
    #[serde(default)]
    redact: Option<RedactDef>,
}

/// `[redact]` in front matter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactDef {
    /// Which detectors run; absent: all of them.
    #[serde(default)]
    detect: Option<Vec<crate::redact::Kind>>,
    /// Put the originals back in the reply for the client.
    #[serde(default)]
    restore: bool,
    /// The region phone numbers without a country code are read in (ISO 3166 alpha-2).
    #[serde(default)]
    phone_region: Option<String>,
}

/// A redact policy's settings, compiled: its detectors (the kinds it names and its rules, each
/// under its id in upper case as the placeholder's name, and the phone region), and whether the
/// reply is restored.
#[derive(Debug, Clone)]
pub struct Redaction {
    pub detectors: crate::redact::Detectors,
    pub restore: bool,
}

/// `[thresholds]` in front matter: minimum quality the policy's case file must show
/// (`guardgate policy test` exits non-zero otherwise). Values are fractions in `[0, 1]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default)]
    pub min_recall: Option<f64>,
    #[serde(default)]
    pub min_precision: Option<f64>,
    #[serde(default)]
    pub min_f1: Option<f64>,
    #[serde(default)]
    pub max_fpr: Option<f64>,
}

impl Thresholds {
    pub fn is_empty(&self) -> bool {
        self.min_recall.is_none()
            && self.min_precision.is_none()
            && self.min_f1.is_none()
            && self.max_fpr.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn as_str(&self) -> &'static str {
        match self {
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// One step down, for the retry after reasoning used up the budget.
    pub fn lower(&self) -> Option<Effort> {
        match self {
            Effort::High => Some(Effort::Medium),
            Effort::Medium => Some(Effort::Low),
            Effort::Low => None,
        }
    }
}

fn default_directions(action: Action) -> Vec<Direction> {
    match action {
        Action::Redact => vec![Direction::Input],
        _ => vec![Direction::Input, Direction::Output],
    }
}
fn default_action() -> Action {
    Action::Block
}
fn default_threshold() -> Severity {
    Severity::Low
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CodeDef {
    pub code: String,
    pub title: String,
    #[serde(default = "default_code_severity")]
    pub severity: Severity,
}

fn default_code_severity() -> Severity {
    Severity::High
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: String,
    /// Required, and declared in `[[codes]]`, except in a redact policy, whose rules name what
    /// they replace by their id.
    #[serde(default)]
    code: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    /// Also match digit/symbol-for-letter spellings ("k1ll").
    #[serde(default)]
    leet: bool,
}

/// A deterministic rule, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub code: String,
    pub leet: bool,
    pub regex: Regex,
    /// The pattern anchors to the start or end of the text or of a line (`^`, `$`, `\A`, `\z`,
    /// in multi-line mode too: normalised text has no line breaks): it means "the start (end) of
    /// an item", so it is searched in each item, never in the items joined together.
    pub anchored: bool,
}

impl Rule {
    /// Whether the rule matches `norm` (normalised text), or for a leet rule also `leet`, the
    /// leet folding of it (`None`: not computed). A leet rule is tried on both: a regex written
    /// against plain text may need a character the folding replaces (`!`, a digit).
    pub fn is_match(&self, norm: &str, leet: Option<&str>) -> bool {
        self.regex.is_match(norm) || (self.leet && leet.is_some_and(|t| self.regex.is_match(t)))
    }

    /// Where the rule matches `norm`, or for a leet rule its leet folding (same offsets).
    pub fn find(&self, norm: &str, leet: Option<&str>) -> Option<std::ops::Range<usize>> {
        let leet = leet.filter(|_| self.leet);
        self.regex
            .find(norm)
            .or_else(|| self.regex.find(leet?))
            .map(|m| m.range())
    }
}

/// The rules of one policy. Each rule is searched on its own rather than through one `RegexSet`:
/// a set cannot use the per-rule literal optimisations (a rare word inside the pattern found with
/// SIMD search), so on benign text 20 separate searches cost less than 8 set searches did.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// Some rule anchors to an item's edges: items are searched even when the joined texts
    /// have no match.
    anchored: bool,
}

impl RuleSet {
    fn new(rules: Vec<Rule>) -> RuleSet {
        let anchored = rules.iter().any(|r| r.anchored);
        RuleSet { rules, anchored }
    }

    /// Whether some rule anchors to the start or end of an item (see [`Rule::anchored`]).
    pub fn has_anchored(&self) -> bool {
        self.anchored
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Indices of rules matching `norm` (already normalised) or its leet folding `leet`, in
    /// declaration order.
    pub fn matches(&self, norm: &str, leet: Option<&str>) -> Vec<usize> {
        (0..self.rules.len())
            .filter(|&i| self.rules[i].is_match(norm, leet))
            .collect()
    }

    /// Whether any rule matches anywhere in `norm` (or its leet folding).
    pub fn is_match(&self, norm: &str, leet: Option<&str>) -> bool {
        self.rules.iter().any(|r| r.is_match(norm, leet))
    }

    pub fn has_leet(&self) -> bool {
        self.rules.iter().any(|r| r.leet)
    }
}

/// Whether a pattern (already accepted by `regex`) matches only at the start or end of the text
/// or of a line somewhere. Unparseable here means unknown, and unknown counts as anchored: the
/// rule is then searched per item only.
fn anchors_to_text_edges(pattern: &str) -> bool {
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map(|h| h.properties().look_set().contains_anchor())
        .unwrap_or(true)
}

/// Where a keyword starts and ends: a word boundary, or an underscore, which `\b` counts as a word
/// character but identifiers (tool and property names) use to separate words.
const KW_EDGE: &str = r"(?:\b|_)";

/// Between a keyword's words, the text may have a space, an underscore, a hyphen or a dot
/// (`make_pipe_bomb`, `pipe-bomb`): spelling it as an identifier must not dodge the rule.
const KW_GAP: &str = r"[ _.\-]+";

/// A normalised keyword as a pattern: its words escaped and joined by `KW_GAP`. `None` when it
/// has no words. For a leet rule the keyword is folded as the text is (`c4 explosive` must match
/// the folded `ca explosive`), and `i` and `l` match each other, since `1` and `|` stand for either
/// and the text folds them to `i` (`k1ll` -> `kiii`).
fn keyword_pattern(norm: &str, leet: bool) -> Option<String> {
    let folded;
    let norm = if leet {
        folded = fold_leet(norm);
        folded.as_str()
    } else {
        norm
    };
    let words: Vec<String> = norm
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = regex::escape(w);
            if leet {
                w.replace(['i', 'l'], "[il]")
            } else {
                w
            }
        })
        .collect();
    (!words.is_empty()).then(|| words.join(KW_GAP))
}

/// Rules run on normalised (lower-cased) text: `(?i)` only where it can change a match, because
/// it costs the pattern its fast literal search (see `casefold`).
fn case_insensitive_where_needed(pattern: String) -> String {
    if super::casefold::needs_case_folding(&pattern) {
        format!("(?i){pattern}")
    } else {
        pattern
    }
}

/// A parsed, validated, compiled policy. Immutable once built; shared by `Arc` from snapshots.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub title: String,
    pub version: String,
    /// sha256 of the file's bytes (hex, 16 chars): changes with any edit, even without a version bump.
    pub content_hash: String,
    pub directions: Vec<Direction>,
    pub action: Action,
    pub severity_threshold: Severity,
    pub codes: Vec<CodeDef>,
    pub rules: RuleSet,
    /// The natural-language policy: what a model backend reads.
    pub body: String,
    pub output_format: OutputFormat,
    pub reasoning_effort: Option<Effort>,
    pub candidate: bool,
    pub gate: bool,
    pub backends: Option<Vec<String>>,
    /// `[thresholds]` from front matter (all unset when absent).
    pub thresholds: Thresholds,
    /// `action = "redact"`: what it replaces.
    pub redact: Option<Redaction>,
    /// `[refusal]` from front matter: what a client reads when this policy blocks.
    pub refusal: Option<Refusal>,
    pub path: PathBuf,
}

impl Policy {
    pub fn code(&self, code: &str) -> Option<&CodeDef> {
        self.codes.iter().find(|c| c.code == code)
    }

    pub fn severity_of(&self, code: Option<&str>) -> Severity {
        code.and_then(|c| self.code(c))
            .map(|c| c.severity)
            .unwrap_or(Severity::High)
    }

    /// Whether the stage called `stage` (e.g. "rules", "remote:safeguard") may judge this policy.
    pub fn allows_stage(&self, stage: &str) -> bool {
        let short = stage.rsplit(':').next().unwrap_or(stage);
        self.backends
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == stage || n == short))
    }

    pub fn applies_to(&self, d: Direction) -> bool {
        self.directions.contains(&d)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {reason}")]
pub struct PolicyError {
    pub path: String,
    pub reason: String,
}

pub fn content_hash(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    hex::encode(&d[..8])
}

/// A policy file cut at its `+++` fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split<'a> {
    /// The TOML between the fences; its line n is the file's line n + 1.
    pub front_matter: &'a str,
    pub body: &'a str,
    /// 1-based line of the file on which `body` starts, so lint can point into the body.
    pub body_line: usize,
}

/// Splits `+++\n<toml>\n+++\n<body>`. The loader and lint both cut files here, so a file lint
/// accepts is one the gateway loads the same way. `None`: no front matter.
pub fn split_front_matter(text: &str) -> Option<Split<'_>> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let rest = text
        .strip_prefix("+++\n")
        .or_else(|| text.strip_prefix("+++\r\n"))?;
    let mut offset = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        if line.trim_end() == "+++" {
            return Some(Split {
                front_matter: &rest[..offset],
                body: &rest[offset + line.len()..],
                // The opening fence is line 1 and the closing one line i + 2.
                body_line: i + 3,
            });
        }
        offset += line.len();
    }
    None
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        })
}

/// How the loader's errors about `[refusal]` start: the `refusal` lint rule reports them, at
/// their line.
pub const REFUSAL_ERROR: &str = "refusal.";

pub fn parse_policy(path: &Path, bytes: &[u8]) -> Result<Policy, PolicyError> {
    let p = path.display().to_string();
    let err = |reason: String| PolicyError {
        path: p.clone(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
    let Split {
        front_matter: fm,
        body,
        ..
    } = split_front_matter(text).ok_or_else(|| {
        err("missing TOML front matter: the file must start with a '+++' line and close it with another".into())
    })?;
    let fm: FrontMatter = toml::from_str(fm).map_err(|e| {
        let line = e
            .span()
            // The front matter's own line n is the file's line n + 1 (after the `+++`).
            .map(|s| fm[..s.start.min(fm.len())].matches('\n').count() + 2)
            .unwrap_or(1);
        err(format!("front matter line {line}: {}", e.message().trim()))
    })?;
    if !valid_id(&fm.id) {
        return Err(err(format!(
            "id {:?}: use lowercase letters, digits, '-', '_' and '/' between parts",
            fm.id
        )));
    }
    if fm.version.trim().is_empty() {
        return Err(err("version: empty".into()));
    }
    let directions = fm
        .directions
        .clone()
        .unwrap_or_else(|| default_directions(fm.action));
    if directions.is_empty() {
        return Err(err("directions: name at least one of input, output".into()));
    }
    let redacts = fm.action == Action::Redact;
    if redacts && directions.contains(&Direction::Output) {
        return Err(err(
            "directions: a redact policy rewrites the request before it goes upstream; it \
             applies to input only (restore = true puts the originals back in the reply)"
                .into(),
        ));
    }
    // libphonenumber's own region list decides (a code it does not know would read every
    // national number wrongly).
    let region = match fm.redact.as_ref().and_then(|r| r.phone_region.as_deref()) {
        Some(code) if code.len() != 2 || !code.chars().all(|c| c.is_ascii_uppercase()) => {
            return Err(err(format!(
                "redact.phone_region {code:?}: a two-letter region code in upper case, e.g. \"US\""
            )));
        }
        Some(code) => code
            .parse::<crate::redact::detect::Region>()
            .map_err(|why| err(format!("redact.phone_region: {why}")))?,
        None => Default::default(),
    };
    if fm.redact.is_some() && !redacts {
        return Err(err("[redact] applies to action = \"redact\" only".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &fm.codes {
        if c.code.trim().is_empty() {
            return Err(err("codes: a code is empty".into()));
        }
        if !seen.insert(c.code.as_str()) {
            return Err(err(format!("codes: duplicate code {:?}", c.code)));
        }
    }
    let mut rules = Vec::with_capacity(fm.rules.len());
    let mut rule_ids = std::collections::HashSet::new();
    for r in &fm.rules {
        if !rule_ids.insert(r.id.as_str()) {
            return Err(err(format!("rules: duplicate rule id {:?}", r.id)));
        }
        if !redacts && !seen.contains(r.code.as_str()) {
            return Err(err(format!(
                "rules.{}: code {:?} is not declared in [[codes]]",
                r.id, r.code
            )));
        }
        let pattern = match (&r.regex, r.keywords.is_empty()) {
            (Some(re), true) => case_insensitive_where_needed(re.clone()),
            (None, false) => {
                // Keywords are compared with normalised text, so normalise them the same way:
                // each distinct reading of a keyword is an alternative (`zörble` is also `zorble`,
                // which the folded reading of the text spells).
                let mut alts: Vec<String> = Vec::new();
                for k in &r.keywords {
                    let forms = readings(k);
                    for reading in [Reading::Written, Reading::Folded] {
                        if let Some(p) = keyword_pattern(forms.get(reading), r.leet) {
                            if !alts.contains(&p) {
                                alts.push(p);
                            }
                        }
                    }
                }
                if alts.is_empty() {
                    return Err(err(format!("rules.{}: keywords are all empty", r.id)));
                }
                case_insensitive_where_needed(format!(r"{KW_EDGE}(?:{}){KW_EDGE}", alts.join("|")))
            }
            (Some(_), false) => {
                return Err(err(format!(
                    "rules.{}: give either regex or keywords, not both",
                    r.id
                )))
            }
            (None, true) => {
                return Err(err(format!(
                    "rules.{}: needs a regex or a keywords list",
                    r.id
                )))
            }
        };
        let regex = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 22)
            .build()
            .map_err(|e| err(format!("rules.{}: bad regex: {e}", r.id)))?;
        rules.push(Rule {
            id: r.id.clone(),
            code: r.code.clone(),
            leet: r.leet,
            regex,
            anchored: anchors_to_text_edges(&pattern),
        });
    }
    let redact = redacts.then(|| redaction(fm.redact.as_ref(), &rules, region));
    let rules = RuleSet::new(rules);
    if let Some(r) = &fm.refusal {
        r.validate()
            .map_err(|(key, reason)| err(format!("{REFUSAL_ERROR}{key}: {reason}")))?;
    }
    if fm.gate && fm.thresholds.is_empty() {
        return Err(err(
            "gate = true needs a [thresholds] table saying what the case file must meet".into(),
        ));
    }
    Ok(Policy {
        id: fm.id,
        title: fm.title,
        version: fm.version,
        content_hash: content_hash(bytes),
        directions,
        action: fm.action,
        severity_threshold: fm.severity_threshold,
        codes: fm.codes,
        rules,
        body: body.trim().to_string(),
        output_format: fm.output_format,
        reasoning_effort: fm.reasoning_effort,
        candidate: fm.candidate,
        gate: fm.gate,
        backends: fm.backends,
        thresholds: fm.thresholds,
        redact,
        refusal: fm.refusal,
        path: path.to_path_buf(),
    })
}

/// A redact policy's detectors: the kinds `[redact] detect` names (all when absent), and its
/// rules, searched in the request's text as written: rule patterns are written for normalised
/// (lower-cased) text, so they match here in any case.
// Other settings the detectors may grow keep their defaults.
#[allow(clippy::needless_update)]
fn redaction(
    def: Option<&RedactDef>,
    rules: &[Rule],
    region: crate::redact::detect::Region,
) -> Redaction {
    let kinds = def
        .and_then(|d| d.detect.clone())
        .unwrap_or_else(|| crate::redact::Kind::ALL.to_vec());
    let custom = rules
        .iter()
        .filter_map(|r| {
            let pattern = r.regex.as_str();
            let pattern = if pattern.starts_with("(?i)") {
                pattern.to_string()
            } else {
                format!("(?i){pattern}")
            };
            let label =
                r.id.chars()
                    .map(|c| match c {
                        'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
                        _ => '_',
                    })
                    .collect::<String>();
            Some((label, Regex::new(&pattern).ok()?))
        })
        .collect();
    Redaction {
        detectors: crate::redact::Detectors {
            kinds,
            custom,
            region,
        },
        restore: def.is_some_and(|d| d.restore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"+++
id = "test/weapons"
title = "Weapons"
version = "1.0.0"
[[codes]]
code = "W1"
title = "Instructions to build weapons"
severity = "high"
[[rules]]
id = "pipe-bomb"
code = "W1"
keywords = ["pipe bomb", "Nail Bomb"]
[[rules]]
id = "ghost-gun"
code = "W1"
regex = 'ghost\s+gun'
+++
# Weapons policy
Text for the model.
"#;

    #[test]
    fn parses_front_matter_and_body() {
        let p = parse_policy(Path::new("w.md"), GOOD.as_bytes()).unwrap();
        assert_eq!(p.id, "test/weapons");
        assert_eq!(p.rules.rules.len(), 2);
        assert!(p.body.starts_with("# Weapons policy"));
        assert_eq!(p.content_hash.len(), 16);
        assert_eq!(p.rules.matches("how to make a nail bomb", None), vec![0]);
        assert_eq!(p.rules.matches("a ghost   gun kit", None), vec![1]);
        assert!(p.rules.matches("bombastic pipes", None).is_empty());
    }

    /// Identifiers and hyphenated spellings separate a keyword's words just as spaces do; the
    /// keyword still has to be whole words.
    #[test]
    fn keywords_match_across_identifier_separators() {
        let p = parse_policy(Path::new("w.md"), GOOD.as_bytes()).unwrap();
        for hit in [
            "build_a_pipe_bomb",
            "nail-bomb howto",
            "pipe.bomb",
            "pipe__bomb_steps",
            "(pipe bomb)",
        ] {
            assert_eq!(p.rules.matches(hit, None), vec![0], "{hit}");
        }
        for miss in [
            "pipebomb",
            "apipe bomb",
            "pipe bombs",
            "pipe bomb2",
            "pipe/bomb",
        ] {
            assert!(p.rules.matches(miss, None).is_empty(), "{miss}");
        }
        assert_eq!(
            keyword_pattern("self-harm  kit", false).unwrap(),
            r"self[ _.\-]+harm[ _.\-]+kit"
        );
        assert_eq!(keyword_pattern(" _ ", false), None);
    }

    #[test]
    fn leet_rules_fold_their_keywords_and_try_the_text_both_ways() {
        use crate::classify::normalize::{fold_leet, normalize};
        let text = GOOD.replace(
            "+++\n# Weapons",
            "[[rules]]\nid = \"lk\"\ncode = \"W1\"\nleet = true\nkeywords = [\"c4 explosive\", \"kill switch\"]\n[[rules]]\nid = \"lr\"\ncode = \"W1\"\nleet = true\nregex = 'give me (?:a|the) gun[.!]'\n+++\n# Weapons",
        );
        let p = parse_policy(Path::new("w.md"), text.as_bytes()).unwrap();
        let hit = |t: &str| {
            let n = normalize(t);
            let f = fold_leet(&n);
            p.rules
                .matches(&n, Some(&f))
                .iter()
                .any(|&i| p.rules.rules[i].id.starts_with('l'))
        };
        // A keyword with a digit used to be compared, unfolded, with folded text: never a match.
        assert!(hit("how to make c4 explosive"));
        assert!(hit("how to make C4-EXPL0SIVE"));
        // 1 and | stand for l as well as i.
        assert!(hit("where is the ki11 switch"));
        assert!(hit("where is the k|ll sw1tch"));
        assert!(!hit("where is the kit switch"));
        // A regex that needs `!` (folded to i) still matches the text as written.
        assert!(hit("give me a gun!"));
        assert!(hit("g1ve me a gun."));
        assert!(!hit("give me a gunk"));
    }

    #[test]
    fn split_finds_the_body_and_its_line() {
        for text in [
            "+++\nid = 1\n\n+++\n# Body\n",
            "\u{FEFF}+++\r\nid = 1\r\n\r\n+++\r\n# Body\r\n",
        ] {
            let s = split_front_matter(text).unwrap();
            assert_eq!(s.front_matter.trim(), "id = 1");
            assert_eq!(s.body.trim(), "# Body");
            // `+++`, `id`, blank, `+++`: the body is line 5.
            assert_eq!(s.body_line, 5);
        }
        assert_eq!(split_front_matter("# Body\n"), None);
        assert_eq!(split_front_matter("+++\nid = 1\n"), None);
    }

    #[test]
    fn errors_are_specific() {
        let cases = [
            ("no front matter", "missing TOML front matter"),
            (
                &GOOD.replace("code = \"W1\"\nkeywords", "code = \"W9\"\nkeywords"),
                "not declared",
            ),
            (&GOOD.replace("ghost\\s+gun", "ghost(gun"), "bad regex"),
            (
                &GOOD.replace("id = \"test/weapons\"", "id = \"Test Weapons\""),
                "id \"Test Weapons\"",
            ),
            (
                &GOOD.replace("version = \"1.0.0\"", "versio = \"1\""),
                // The file's line 4 (after `+++`, id and title).
                "front matter line 4:",
            ),
        ];
        for (text, want) in cases {
            let e = parse_policy(Path::new("w.md"), text.as_bytes()).unwrap_err();
            assert!(e.reason.contains(want), "{} lacks {want}", e.reason);
        }
    }
}
