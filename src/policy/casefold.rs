//! Whether a rule pattern needs regex's case-insensitive flag.
//!
//! Rules run on normalised text, which is lower-cased, so `(?i)` changes a match only where a
//! pattern is written with upper-case letters or with a letter whose other case forms still occur
//! in lower-cased text (the Greek final sigma). Leaving the flag on everywhere is costly: regex
//! turns every literal into case classes, and its literal prefilter falls back from SIMD search to
//! a general automaton. On the 20 benchmark rules that was 13 µs per request against 2 µs.
//!
//! The test is exact with respect to what regex compiles: both forms of the pattern are parsed by
//! regex-syntax and compared node by node; the flag is dropped only when every character class
//! differs, if at all, in characters that normalised text cannot contain. Anything the comparison
//! does not understand keeps the flag.

use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look};

use crate::classify::normalize::readings;

/// Whether `pattern` can match some normalised text with `(?i)` that it does not match without.
pub fn needs_case_folding(pattern: &str) -> bool {
    let parse = |ci: bool| {
        regex_syntax::ParserBuilder::new()
            .case_insensitive(ci)
            .build()
            .parse(pattern)
            .ok()
            .and_then(|h| lower(&h))
    };
    match (parse(false), parse(true)) {
        (Some(plain), Some(folded)) => !same_on_normalised(&plain, &folded),
        _ => true,
    }
}

/// The parts of a HIR that matter for what it matches, with every literal spelled out as
/// one-character classes so that a literal and its case-folded classes compare.
#[derive(Debug, PartialEq)]
enum Node {
    Class(ClassUnicode),
    Look(Look),
    Repeat {
        min: u32,
        max: Option<u32>,
        greedy: bool,
        sub: Box<Node>,
    },
    Seq(Vec<Node>),
    Alt(Vec<Node>),
}

fn lower(hir: &Hir) -> Option<Node> {
    Some(match hir.kind() {
        HirKind::Empty => Node::Seq(vec![]),
        HirKind::Literal(lit) => seq(std::str::from_utf8(&lit.0)
            .ok()?
            .chars()
            .map(|c| Node::Class(ClassUnicode::new([ClassUnicodeRange::new(c, c)])))
            .collect()),
        HirKind::Class(Class::Unicode(c)) => Node::Class(c.clone()),
        // Byte classes only come from (?-u); nothing to gain from analysing them.
        HirKind::Class(Class::Bytes(_)) => return None,
        HirKind::Look(l) => Node::Look(*l),
        HirKind::Repetition(r) => Node::Repeat {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(lower(&r.sub)?),
        },
        // Capture groups do not change whether a pattern matches.
        HirKind::Capture(c) => lower(&c.sub)?,
        HirKind::Concat(hs) => {
            let mut items = Vec::with_capacity(hs.len());
            for h in hs {
                match lower(h)? {
                    Node::Seq(inner) => items.extend(inner),
                    n => items.push(n),
                }
            }
            seq(items)
        }
        HirKind::Alternation(hs) => {
            let branches = hs
                .iter()
                .map(|h| lower(h).map(items))
                .collect::<Option<Vec<_>>>()?;
            alt(branches)
        }
    })
}

fn items(n: Node) -> Vec<Node> {
    match n {
        Node::Seq(v) => v,
        n => vec![n],
    }
}

/// An alternation with the prefix common to all its branches lifted out in front. regex-syntax
/// does this itself when the branches start with equal case-folded classes, but not when they
/// are plain literals (`saint|st` stays whole, `(?i)saint|st` becomes `s(?:aint|t)`), so both
/// sides are put in the same form before they are compared.
fn alt(mut branches: Vec<Vec<Node>>) -> Node {
    let mut prefix = Vec::new();
    while branches.len() > 1 {
        let Some(first) = branches[0].first() else {
            break;
        };
        if !branches.iter().all(|b| b.first() == Some(first)) {
            break;
        }
        let lifted = branches[0].remove(0);
        for b in &mut branches[1..] {
            b.remove(0);
        }
        prefix.push(lifted);
    }
    let alt = Node::Alt(branches.into_iter().map(seq).collect());
    if prefix.is_empty() {
        alt
    } else {
        prefix.push(alt);
        Node::Seq(prefix)
    }
}

/// A sequence, or its only item: a one-character literal and its folded class must compare.
fn seq(mut items: Vec<Node>) -> Node {
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        Node::Seq(items)
    }
}

fn same_on_normalised(a: &Node, b: &Node) -> bool {
    let all = |x: &[Node], y: &[Node]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_on_normalised(p, q))
    };
    match (a, b) {
        (Node::Class(x), Node::Class(y)) => {
            let mut diff = x.clone();
            diff.symmetric_difference(y);
            !any_can_occur(&diff)
        }
        (Node::Look(x), Node::Look(y)) => x == y,
        (
            Node::Repeat {
                min,
                max,
                greedy,
                sub,
            },
            Node::Repeat {
                min: min2,
                max: max2,
                greedy: greedy2,
                sub: sub2,
            },
        ) => min == min2 && max == max2 && greedy == greedy2 && same_on_normalised(sub, sub2),
        (Node::Seq(x), Node::Seq(y)) | (Node::Alt(x), Node::Alt(y)) => all(x, y),
        _ => false,
    }
}

/// Whether any character of `class` can occur in normalised text. Gives up (answers yes) past a
/// few thousand characters: case folding adds letters, not whole planes, so a difference that
/// large means the pattern is doing something this analysis should not second-guess.
fn any_can_occur(class: &ClassUnicode) -> bool {
    let mut budget = 4096u32;
    for r in class.ranges() {
        for c in r.start()..=r.end() {
            if budget == 0 {
                return true;
            }
            budget -= 1;
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            if readings(s).distinct().any(|(_, t)| t == s) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::needs_case_folding as needs;

    #[test]
    fn lower_case_patterns_do_not_need_the_flag() {
        for p in [
            r"\bpipe bomb\b",
            r"\b(?:synthesi[sz]e|cook|make)(?:ing)? (?:meth(?:amphetamine)?|fentanyl)\b",
            r"\bphishing (?:page|kit)s? [\w .-]{0,40}?\b(?:bank|paypal|office 365)\b",
            r"\b(?:hack|break) into (?:my )?(?:neighbou?rs?|ex)s? (?:wifi|email)\b",
            r"\d{3}-\d{4}",
            r"[^\s]+@[^\s]+",
            r"(?i)Pipe Bomb",
        ] {
            assert!(!needs(p), "{p} should not need (?i)");
        }
    }

    #[test]
    fn patterns_that_rely_on_folding_keep_the_flag() {
        for p in [
            r"\bPipe bomb\b", // only matches lower-cased text through folding
            r"[A-Z]{3}",
            r"[^A-Z]", // (?i) also excludes the lower-case letters
            r"\p{Lu}",
            r"[[:upper:]]",
            r"σ", // folds with the final sigma, which normalised text keeps
            r"(?-u:\w)+",
            r"(", // does not parse: regex reports it, the flag stays
        ] {
            assert!(needs(p), "{p} should keep (?i)");
        }
    }

    /// Every rule this repository ships is written in lower case, so none pays for the flag.
    #[test]
    fn shipped_rules_compile_without_the_flag() {
        use crate::classify::normalize::{fold_leet, readings};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for dir in ["policies", "bench/proxy/policies"] {
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let path = e.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "md")
                        && path.file_name().is_some_and(|n| n != "README.md")
                    {
                        let bytes = std::fs::read(&path).unwrap();
                        let p = crate::policy::parse_policy(&path, &bytes).unwrap();
                        // The policy's own cases, every reading the gateway would match.
                        let cases = std::fs::read_to_string(path.with_extension("cases.jsonl"))
                            .unwrap_or_default();
                        let texts: Vec<(String, String)> = cases
                            .lines()
                            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                            .filter_map(|v| Some(readings(v["text"].as_str()?)))
                            .flat_map(|r| {
                                r.distinct()
                                    .map(|(_, t)| (fold_leet(t), t.to_string()))
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        for r in &p.rules.rules {
                            let pattern = r.regex.as_str();
                            assert!(
                                !pattern.starts_with("(?i)"),
                                "{}: rule {} kept (?i)",
                                path.display(),
                                r.id
                            );
                            let folded = regex::Regex::new(&format!("(?i){pattern}")).unwrap();
                            for (leet, norm) in &texts {
                                let t = if r.leet { leet } else { norm };
                                assert_eq!(
                                    folded.is_match(t),
                                    r.regex.is_match(t),
                                    "rule {} on {t:?}",
                                    r.id
                                );
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked >= 20, "only {checked} rules found");
    }

    /// The flag only goes where it changes nothing: same answers on normalised text.
    #[test]
    fn dropping_the_flag_changes_no_match_on_normalised_text() {
        use crate::classify::normalize::normalize;
        let patterns = [
            r"\b(?:make|cook)(?:ing)? meth\b",
            r"\bk[a-z]ll\b",
            r"stra(?:ss|ß)e",
            r"[^a-z ]+",
        ];
        let texts = [
            "COOKING METH",
            "Kill",
            "KILL",
            "ſtraße",
            "STRASSE",
            "K\u{212A}LL",
            "Ünïcödé TEXT",
            "a 1 b",
            "ΣΊΣΥΦΟΣ",
        ];
        for p in patterns {
            assert!(!needs(p), "{p}");
            let with = regex::Regex::new(&format!("(?i){p}")).unwrap();
            let without = regex::Regex::new(p).unwrap();
            for t in texts {
                let n = normalize(t);
                assert_eq!(with.is_match(&n), without.is_match(&n), "{p} on {n:?}");
            }
        }
    }
}
