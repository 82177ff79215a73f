//! `guardgate policy lint`: checks a policy file for what makes it hard for a model to follow or
//! for the gateway to use. Each finding has a rule name, a level and a line:
//!
//! | rule | level | what |
//! |---|---|---|
//! | `front-matter` | error | the file does not parse (TOML, ids, rules, regexes) |
//! | `missing-section` | error | a required `##` section is missing: Instructions, Definitions, Allowed…, Violations…, Ambiguity, Examples |
//! | `section-order` | warning | `## Instructions` is not the first section (the output format belongs near the top) |
//! | `output-format` | error | the body does not tell the model the answer format the backend parses (`violation` and `policy_category` for `json`, `0`/`1` for `binary`); warning when it is only given outside Instructions |
//! | `unknown-code` | error | a code used in the body, an example or a case is not declared in `[[codes]]` |
//! | `undescribed-code` | error | a declared code is never described in the body |
//! | `duplicate-code` | error | a code is declared twice (conflicting when titles or severities differ); warning when two codes share a title or the body defines a code twice |
//! | `conflicting-rules` | error | two rules with the same pattern map to different codes (warning for an exact duplicate) |
//! | `length` | warning/error | body length in approximate tokens (characters / 4): warning outside 400-700, error above 10,000 |
//! | `vague-wording` | warning | "generally", "usually", "might", "may be", "often", "sometimes", "etc." outside quotes |
//! | `rule-never-fires` | warning | a deterministic rule matches none of the policy's own violating examples (body examples and case file) |
//! | `rule-fires-on-allowed` | warning | a deterministic rule matches an example labelled allowed (a certain false positive) |
//! | `examples` | warning | the examples do not show both outcomes, or an example has no parseable label |
//! | `thresholds` | error | a `[thresholds]` value is outside 0..=1 |
//! | `id-path` | warning | the id's last part differs from the file name |
//! | `cases` | error | the case file next to the policy does not parse |

use regex::Regex;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::classify::normalize::{fold_leet, normalize};
use crate::classify::verdict::OutputFormat;
use crate::eval::cases::{find_cases_for, load_cases};
use crate::policy::file::{parse_policy, split_front_matter, Split};

// The command line's path arguments (`policy test`, `classify` too) mean what they mean to lint.
pub use crate::policy::discover::policy_files;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Error,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: String,
    pub line: usize,
    pub level: Level,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {} [{}]",
            self.path,
            self.line,
            self.level.as_str(),
            self.message,
            self.rule
        )
    }
}

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

/// Required `##` sections, matched case-insensitively on the heading's start.
pub const REQUIRED_SECTIONS: &[&str] = &[
    "Instructions",
    "Definitions",
    "Allowed",
    "Violations",
    "Ambiguity",
    "Examples",
];

pub const MIN_TOKENS: usize = 400;
pub const MAX_TOKENS: usize = 700;
pub const HARD_MAX_TOKENS: usize = 10_000;

/// Approximate token count used by the `length` rule: characters / 4, rounded up.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("lint regex"))
}

fn code_token_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"\b([A-Z]{1,6}[0-9]+(?:\.[a-z])?)\b")
}

fn category_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r#""?policy_category"?\s*:\s*(?:"([^"]*)"|(null))"#)
}

fn violation_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r#""?violation"?\s*:\s*([01])"#)
}

fn vague_res() -> &'static [Regex] {
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

fn quoted_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r#""[^"]*"|“[^”]*”|`[^`]*`"#)
}

struct Lint<'a> {
    path: &'a str,
    out: Vec<Diagnostic>,
}

impl Lint<'_> {
    fn push(&mut self, line: usize, level: Level, rule: &'static str, message: String) {
        self.out.push(Diagnostic {
            path: self.path.to_string(),
            line,
            level,
            rule,
            message,
        });
    }
}

/// One example line of `## Examples`: its quoted text, label and code (when it can be read).
struct Example {
    line: usize,
    text: Option<String>,
    violation: Option<bool>,
}

/// Lints one policy file. The case file next to it (`<stem>.cases.jsonl`), when present, is
/// read too: its violating cases count as the policy's own examples.
pub fn lint_file(path: &Path) -> Vec<Diagnostic> {
    let p = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            let cases = find_cases_for(path).map(|c| (c.clone(), load_cases(&c)));
            lint_bytes(path, &bytes, cases)
        }
        Err(e) => vec![Diagnostic {
            path: p,
            line: 1,
            level: Level::Error,
            rule: "front-matter",
            message: format!("cannot read: {e}"),
        }],
    }
}

type CasesArg = Option<(PathBuf, Result<Vec<crate::eval::Case>, String>)>;

pub fn lint_bytes(path: &Path, bytes: &[u8], cases: CasesArg) -> Vec<Diagnostic> {
    let ps = path.display().to_string();
    let mut l = Lint {
        path: &ps,
        out: Vec::new(),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        l.push(1, Level::Error, "front-matter", "not UTF-8".into());
        return l.out;
    };
    let Some(Split {
        front_matter: fm_text,
        body,
        body_line,
    }) = split_front_matter(text)
    else {
        l.push(
            1,
            Level::Error,
            "front-matter",
            "missing TOML front matter: start the file with a '+++' line and close it with another"
                .into(),
        );
        return l.out;
    };

    // ---- front matter, read loosely so that code problems are reported by name.
    let fm: Option<toml::Table> = fm_text.parse::<toml::Table>().ok();
    let fm_lines: Vec<&str> = fm_text.lines().collect();
    let line_of = |needle: &str| -> usize {
        fm_lines
            .iter()
            .position(|x| x.contains(needle))
            .map(|i| i + 2)
            .unwrap_or(1)
    };
    let mut declared: Vec<String> = Vec::new();
    let mut output_format = OutputFormat::Json;
    if let Some(fm) = &fm {
        if let Some(f) = fm.get("output_format").and_then(|v| v.as_str()) {
            if f == "binary" {
                output_format = OutputFormat::Binary;
            }
        }
        let codes = fm
            .get("codes")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut seen: Vec<(String, String, String)> = Vec::new();
        for c in &codes {
            let code = c
                .get("code")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            let title = c
                .get("title")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            let sev = c
                .get("severity")
                .and_then(|v| v.as_str())
                .unwrap_or("high")
                .to_string();
            if let Some((_, t, s)) = seen.iter().find(|(k, _, _)| *k == code) {
                let line = line_of(&format!("\"{code}\""));
                if *t != title || *s != sev {
                    l.push(line, Level::Error, "duplicate-code", format!(
                        "code {code} is declared twice with conflicting definitions ({t:?}/{s} vs {title:?}/{sev})"
                    ));
                } else {
                    l.push(
                        line,
                        Level::Error,
                        "duplicate-code",
                        format!("code {code} is declared twice"),
                    );
                }
            } else if let Some((k, _, _)) = seen
                .iter()
                .find(|(_, t, _)| !title.is_empty() && t.eq_ignore_ascii_case(&title))
            {
                l.push(
                    line_of(&format!("\"{code}\"")),
                    Level::Warning,
                    "duplicate-code",
                    format!("codes {k} and {code} have the same title {title:?}: merge them or tell them apart"),
                );
            }
            seen.push((code.clone(), title, sev));
            declared.push(code);
        }
        // Rules with the same pattern.
        let rules = fm
            .get("rules")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut pats: Vec<(String, String, String)> = Vec::new();
        for r in &rules {
            let id = r
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            let code = r
                .get("code")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            let pat = match (r.get("regex").and_then(|v| v.as_str()), r.get("keywords")) {
                (Some(re), _) => format!("re:{re}"),
                (None, Some(k)) => {
                    let mut ks: Vec<String> = k
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).map(normalize).collect())
                        .unwrap_or_default();
                    ks.sort();
                    format!("kw:{}", ks.join("|"))
                }
                _ => continue,
            };
            if let Some((oid, ocode, _)) = pats.iter().find(|(_, _, p)| *p == pat) {
                let line = line_of(&format!("\"{id}\""));
                if *ocode != code {
                    l.push(line, Level::Error, "conflicting-rules", format!(
                        "rules {oid} ({ocode}) and {id} ({code}) have the same pattern but different codes"
                    ));
                } else {
                    l.push(
                        line,
                        Level::Warning,
                        "conflicting-rules",
                        format!("rule {id} duplicates rule {oid}"),
                    );
                }
            }
            pats.push((id, code, pat));
        }
        if let Some(t) = fm.get("thresholds").and_then(|v| v.as_table()) {
            for (k, v) in t {
                let x = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                if let Some(x) = x {
                    if !(0.0..=1.0).contains(&x) {
                        l.push(
                            line_of(k),
                            Level::Error,
                            "thresholds",
                            format!("thresholds.{k} = {x}: use a fraction between 0 and 1"),
                        );
                    }
                }
            }
        }
    }
    let policy = match parse_policy(path, bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            if !e.reason.starts_with("codes: duplicate code") {
                let line = e
                    .reason
                    .strip_prefix("front matter line ")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                l.push(line, Level::Error, "front-matter", e.reason);
            }
            None
        }
    };
    if let Some(p) = &policy {
        if let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) {
            let last = p.id.rsplit('/').next().unwrap_or(&p.id);
            // `name.md`, or a candidate version `name.<suffix>.md`.
            if last != stem && !stem.starts_with(&format!("{last}.")) {
                l.push(
                    line_of("id"),
                    Level::Warning,
                    "id-path",
                    format!("id {:?} does not end in the file name {stem:?}", p.id),
                );
            }
        }
    }

    // ---- body structure.
    let lines: Vec<&str> = body.lines().collect();
    let at = |i: usize| body_line + i;
    let mut sections: Vec<(usize, String)> = Vec::new();
    let mut has_h1 = false;
    for (i, ln) in lines.iter().enumerate() {
        if let Some(h) = ln.strip_prefix("## ") {
            sections.push((i, h.trim().to_string()));
        } else if ln.starts_with("# ") {
            has_h1 = true;
        }
    }
    if !has_h1 {
        l.push(
            body_line,
            Level::Warning,
            "missing-section",
            "no '# Title' heading".into(),
        );
    }
    let find = |name: &str| {
        sections.iter().position(|(_, h)| {
            h.to_ascii_lowercase()
                .starts_with(&name.to_ascii_lowercase())
        })
    };
    for name in REQUIRED_SECTIONS {
        if find(name).is_none() {
            l.push(
                body_line,
                Level::Error,
                "missing-section",
                format!("no '## {name}' section"),
            );
        }
    }
    let section_range = |idx: usize| -> (usize, usize) {
        let start = sections[idx].0 + 1;
        let end = sections.get(idx + 1).map(|s| s.0).unwrap_or(lines.len());
        (start, end)
    };
    let instr = find("Instructions");
    if let Some(ix) = instr {
        if ix != 0 {
            l.push(
                at(sections[ix].0),
                Level::Warning,
                "section-order",
                format!(
                    "'## Instructions' should be the first section (it comes after '## {}'): the output format belongs near the top",
                    sections[0].1
                ),
            );
        }
    }

    // ---- output format.
    let mentions = |t: &str| -> bool {
        match output_format {
            OutputFormat::Json => t.contains("violation") && t.contains("policy_category"),
            OutputFormat::Binary => {
                static R0: OnceLock<Regex> = OnceLock::new();
                static R1: OnceLock<Regex> = OnceLock::new();
                re(&R0, r"\b0\b").is_match(t) && re(&R1, r"\b1\b").is_match(t)
            }
        }
    };
    let what = match output_format {
        OutputFormat::Json => {
            "the JSON keys `violation` and `policy_category` (output_format = json)"
        }
        OutputFormat::Binary => "the answers 0 and 1 (output_format = binary)",
    };
    let instr_text = instr
        .map(|ix| {
            let (s, e) = section_range(ix);
            lines[s..e].join("\n")
        })
        .unwrap_or_default();
    if !mentions(&instr_text) {
        if mentions(body) {
            l.push(
                instr.map(|ix| at(sections[ix].0)).unwrap_or(body_line),
                Level::Warning,
                "output-format",
                format!(
                    "state the output format in '## Instructions' (near the top): mention {what}"
                ),
            );
        } else {
            l.push(
                instr.map(|ix| at(sections[ix].0)).unwrap_or(body_line),
                Level::Error,
                "output-format",
                format!(
                    "the body never states an output format the backend can parse: mention {what}"
                ),
            );
        }
    }

    // ---- codes referenced and described.
    let prefixes: Vec<String> = declared
        .iter()
        .map(|c| c.chars().take_while(|ch| ch.is_ascii_uppercase()).collect())
        .collect();
    let is_declared = |tok: &str| {
        declared.iter().any(|c| c == tok)
            || (!tok.contains('.') && declared.iter().any(|c| c.starts_with(&format!("{tok}."))))
    };
    for (i, ln) in lines.iter().enumerate() {
        for cap in category_re().captures_iter(ln) {
            if let Some(c) = cap.get(1) {
                let c = c.as_str();
                if !c.is_empty() && !c.contains('<') && !c.contains('|') && !is_declared(c) {
                    l.push(
                        at(i),
                        Level::Error,
                        "unknown-code",
                        format!("policy_category {c:?} is not declared in [[codes]]"),
                    );
                }
            }
        }
        for cap in code_token_re().captures_iter(ln) {
            let tok = cap.get(1).map(|m| m.as_str()).unwrap_or("");
            let prefix: String = tok
                .chars()
                .take_while(|ch| ch.is_ascii_uppercase())
                .collect();
            if prefixes.contains(&prefix) && !is_declared(tok) {
                l.push(
                    at(i),
                    Level::Error,
                    "unknown-code",
                    format!("code {tok} is not declared in [[codes]]"),
                );
            }
        }
    }
    let body_has = |code: &str| {
        let r = Regex::new(&format!(
            r"(?:^|[^\w.]){}(?:$|[^\w]|\.(?:$|\s))",
            regex::escape(code)
        ))
        .expect("escaped");
        r.is_match(body)
    };
    for c in &declared {
        if !c.is_empty() && !body_has(c) {
            l.push(line_of(&format!("\"{c}\"")), Level::Error, "undescribed-code", format!(
                "code {c} is declared but the body never describes it (the model cannot answer with it)"
            ));
        }
    }
    // The same code defined twice in the body (`**X1.a**` twice).
    if let Some(ix) = find("Violations") {
        let (s, e) = section_range(ix);
        let mut defined: Vec<(String, usize)> = Vec::new();
        static BOLD: OnceLock<Regex> = OnceLock::new();
        let bold = re(&BOLD, r"\*\*([A-Z]{1,6}[0-9]+(?:\.[a-z])?)\*\*");
        for (i, ln) in lines.iter().enumerate().take(e).skip(s) {
            for cap in bold.captures_iter(ln) {
                let c = cap[1].to_string();
                if let Some((_, first)) = defined.iter().find(|(k, _)| *k == c) {
                    l.push(
                        at(i),
                        Level::Warning,
                        "duplicate-code",
                        format!(
                            "code {c} is defined twice in the body (first on line {})",
                            at(*first)
                        ),
                    );
                } else {
                    defined.push((c, i));
                }
            }
        }
    }

    // ---- length.
    let tokens = approx_tokens(body);
    if tokens > HARD_MAX_TOKENS {
        l.push(
            body_line,
            Level::Error,
            "length",
            format!("body is about {tokens} tokens (characters/4); the limit is {HARD_MAX_TOKENS}"),
        );
    } else if !(MIN_TOKENS..=MAX_TOKENS).contains(&tokens) {
        l.push(
            body_line,
            Level::Warning,
            "length",
            format!(
                "body is about {tokens} tokens (characters/4); aim for {MIN_TOKENS}-{MAX_TOKENS}"
            ),
        );
    }

    // ---- vague wording (quoted text is the content being judged, not the policy's wording).
    for (i, ln) in lines.iter().enumerate() {
        let unq = quoted_re().replace_all(ln, " ").to_ascii_lowercase();
        for (w, r) in VAGUE_WORDS.iter().zip(vague_res()) {
            let hit = r.is_match(&unq);
            if hit {
                l.push(
                    at(i),
                    Level::Warning,
                    "vague-wording",
                    format!("vague wording {w:?}: say exactly when it applies"),
                );
            }
        }
    }

    // ---- examples.
    let mut examples: Vec<Example> = Vec::new();
    if let Some(ix) = find("Examples") {
        let (s, e) = section_range(ix);
        for (i, ln) in lines.iter().enumerate().take(e).skip(s) {
            let t = ln.trim_start();
            if !(t.starts_with("- ") || t.starts_with("* ")) {
                continue;
            }
            let violation = violation_re()
                .captures(t)
                .map(|c| &c[1] == "1")
                .or_else(|| {
                    // binary format: "-> 1" / "-> 0"
                    static B: OnceLock<Regex> = OnceLock::new();
                    re(&B, r"(?:->|→|=>|:)\s*`?([01])`?\s*$")
                        .captures(t)
                        .map(|c| &c[1] == "1")
                });
            static Q: OnceLock<Regex> = OnceLock::new();
            let text = re(&Q, r#"^[-*]\s+(?:[^"“]*?)["“]([^"”]+)["”]"#)
                .captures(t)
                .map(|c| c[1].to_string());
            if violation.is_none() {
                l.push(
                    at(i),
                    Level::Warning,
                    "examples",
                    "example has no readable label (e.g. `{\"violation\": 1, ...}`)".into(),
                );
            }
            examples.push(Example {
                line: at(i),
                text,
                violation,
            });
        }
        let pos = examples
            .iter()
            .filter(|x| x.violation == Some(true))
            .count();
        let neg = examples
            .iter()
            .filter(|x| x.violation == Some(false))
            .count();
        if pos == 0 || neg == 0 {
            l.push(
                at(sections[ix].0),
                Level::Warning,
                "examples",
                format!("examples should show both outcomes ({pos} violating, {neg} allowed)"),
            );
        }
    }

    // ---- case file.
    let mut case_texts: Vec<(String, bool)> = Vec::new();
    if let Some((cpath, res)) = cases {
        match res {
            Ok(cs) => {
                for c in &cs {
                    if let Some(code) = &c.code {
                        if !is_declared(code) {
                            l.push(1, Level::Error, "unknown-code", format!(
                                "case {} in {} expects code {code:?}, which is not declared in [[codes]]",
                                c.id,
                                cpath.display()
                            ));
                        }
                    }
                    let t = match (&c.text, &c.messages) {
                        (Some(t), _) => t.clone(),
                        (None, Some(ms)) => ms
                            .iter()
                            .map(|m| m.content.as_str())
                            .collect::<Vec<_>>()
                            .join("\n\n"),
                        _ => continue,
                    };
                    case_texts.push((t, c.is_violation()));
                }
            }
            Err(e) => l.push(1, Level::Error, "cases", e),
        }
    }

    // ---- rules against the policy's own examples.
    if let Some(p) = &policy {
        let mut own: Vec<(String, bool, String)> = examples
            .iter()
            .filter_map(|x| {
                Some((
                    x.text.clone()?,
                    x.violation?,
                    format!("example on line {}", x.line),
                ))
            })
            .collect();
        own.extend(
            case_texts
                .iter()
                .map(|(t, v)| (t.clone(), *v, "a case".to_string())),
        );
        let prepared: Vec<(String, String, bool, String)> = own
            .into_iter()
            .map(|(t, v, w)| {
                let n = normalize(&t);
                let f = fold_leet(&n);
                (n, f, v, w)
            })
            .collect();
        let any_violating = prepared.iter().any(|x| x.2);
        for r in &p.rules.rules {
            let hits = |n: &str, f: &str| r.is_match(n, Some(f));
            let line = line_of(&format!("\"{}\"", r.id));
            if any_violating && !prepared.iter().any(|(n, f, v, _)| *v && hits(n, f)) {
                l.push(line, Level::Warning, "rule-never-fires", format!(
                    "rule {} matches none of the policy's violating examples or cases: add one it catches, or drop the rule",
                    r.id
                ));
            }
            if let Some((_, _, _, w)) = prepared.iter().find(|(n, f, v, _)| !*v && hits(n, f)) {
                l.push(
                    line,
                    Level::Warning,
                    "rule-fires-on-allowed",
                    format!(
                        "rule {} matches {w}, which is labelled allowed: a certain false positive",
                        r.id
                    ),
                );
            }
        }
    }

    l.out.sort_by_key(|d| (d.line, std::cmp::Reverse(d.level)));
    l.out
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub files: usize,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Lints every policy file under `paths`.
pub fn lint_paths(paths: &[PathBuf]) -> Result<Summary, String> {
    let files = policy_files(paths)?;
    let mut s = Summary {
        files: files.len(),
        ..Default::default()
    };
    for f in &files {
        s.diagnostics.extend(lint_file(f));
    }
    s.errors = s
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .count();
    s.warnings = s.diagnostics.len() - s.errors;
    Ok(s)
}
