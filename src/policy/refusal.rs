//! What a blocked client reads: a refusal's text in one or more languages, the choice among them
//! by the request's `Accept-Language` (RFC 9110 §12.5.4, matched as RFC 4647 lookup, then basic
//! filtering), and which refusal applies when a policy, a profile and a route each may set one.
//!
//! The text is operator prose the client shows its user. It goes into JSON through serde, never
//! by formatting, and never carries the model's rationale: the policy id and code stay in the
//! `x-guardgate-*` headers.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest refusal text, in characters: a refusal is a sentence or two for a person, and the
/// limit keeps a mistaken paste (a whole policy) out of every blocked reply.
pub const MAX_CHARS: usize = 2_000;

/// At most this many `Accept-Language` ranges are read: browsers send a handful, and the work
/// per request stays bounded whatever a client sends.
const MAX_RANGES: usize = 32;

/// `[refusal]` of a policy's front matter or of a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The text in `language`: what a client gets when none of `messages` suits it.
    pub message: String,
    /// The BCP 47 tag of `message`.
    pub language: String,
    /// Translations by BCP 47 tag.
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
}

/// The refusal a blocked client reads: the policy that fired's, else the profile's (the request's
/// policy profile, where the gateway has profiles; `None` otherwise), else the route's. `None`
/// leaves the gateway's own message.
pub fn resolve<'a>(
    fired: Option<&'a Refusal>,
    profile: Option<&'a Refusal>,
    route: Option<&'a Refusal>,
) -> Option<&'a Refusal> {
    fired.or(profile).or(route)
}

impl Refusal {
    /// Checks the texts and tags; `Err((key, reason))` names the key under `[refusal]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        text_ok(&self.message).map_err(|r| ("message".to_string(), r))?;
        if !well_formed_tag(&self.language) {
            return Err((
                "language".into(),
                format!(
                    "{:?} is not a well-formed BCP 47 language tag (e.g. \"en\", \"de-CH\", \"zh-Hant\")",
                    self.language
                ),
            ));
        }
        let mut seen = vec![self.language.to_ascii_lowercase()];
        for (tag, text) in &self.messages {
            let key = format!("messages.{tag}");
            if !well_formed_tag(tag) {
                return Err((
                    key,
                    format!("{tag:?} is not a well-formed BCP 47 language tag"),
                ));
            }
            let folded = tag.to_ascii_lowercase();
            if seen.contains(&folded) {
                return Err((
                    key,
                    "a second text for one language (tags compare ignoring case; `message` is the text in `language`)".into(),
                ));
            }
            seen.push(folded);
            text_ok(text).map_err(|r| (key, r))?;
        }
        Ok(())
    }

    /// The text for a client whose `Accept-Language` is `accept`, and its language tag: the
    /// most preferred range that some text matches, `message` when none does.
    pub fn text_for(&self, accept: Option<&str>) -> (&str, &str) {
        let Some(accept) = accept else {
            return self.default_text();
        };
        let ranges = accept_language(accept);
        let tags = || {
            std::iter::once((self.language.as_str(), self.message.as_str()))
                .chain(self.messages.iter().map(|(t, m)| (t.as_str(), m.as_str())))
        };
        // q=0: "not acceptable" (RFC 9110 §12.4.2).
        let refused = |tag: &str| {
            ranges
                .iter()
                .any(|r| r.q == 0 && r.range != "*" && filters(&r.range, tag))
        };
        for r in ranges.iter().filter(|r| r.q > 0) {
            if r.range == "*" {
                if let Some((t, m)) = tags().find(|(t, _)| !refused(t)) {
                    return (m, t);
                }
                continue;
            }
            // Lookup (RFC 4647 §3.4): the range, then shorter and shorter prefixes of it, so that
            // `de-CH` is served by `de`.
            for prefix in truncations(&r.range) {
                if let Some((t, m)) = tags().find(|(t, _)| t.eq_ignore_ascii_case(prefix)) {
                    if !refused(t) {
                        return (m, t);
                    }
                }
            }
            // Basic filtering (RFC 4647 §3.3.1): `de` accepts `de-CH`.
            if let Some((t, m)) = tags().find(|(t, _)| filters(&r.range, t) && !refused(t)) {
                return (m, t);
            }
        }
        self.default_text()
    }

    fn default_text(&self) -> (&str, &str) {
        (&self.message, &self.language)
    }
}

fn text_ok(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("empty: write the sentence the client reads".into());
    }
    let n = text.chars().count();
    if n > MAX_CHARS {
        return Err(format!(
            "{n} characters: at most {MAX_CHARS} (a sentence or two for the reader)"
        ));
    }
    Ok(())
}

/// One language range of `Accept-Language` with its weight in thousandths.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    range: String,
    q: u16,
}

/// The ranges of an `Accept-Language` value, most preferred first (ties keep their order).
/// Elements that do not parse are skipped, as a recipient may (RFC 9110 §5.6.1).
fn accept_language(value: &str) -> Vec<Range> {
    let mut out: Vec<Range> = value
        .split(',')
        .filter_map(|element| {
            let mut parts = element.split(';');
            let range = parts.next()?.trim();
            if range.is_empty() || !(range == "*" || well_formed_range(range)) {
                return None;
            }
            let mut q = 1000;
            for p in parts {
                let (name, v) = p.trim().split_once('=')?;
                // The weight is the only parameter Accept-Language defines.
                if !name.trim_end().eq_ignore_ascii_case("q") {
                    return None;
                }
                q = qvalue(v.trim_start())?;
            }
            Some(Range {
                range: range.to_string(),
                q,
            })
        })
        .take(MAX_RANGES)
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.q));
    out
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `1*8ALPHA *("-" 1*8alphanum)` (RFC 4647 §2.1).
fn well_formed_range(r: &str) -> bool {
    let mut subtags = r.split('-');
    let first = subtags.next().unwrap_or("");
    (1..=8).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `range` matches `tag` by basic filtering: equal, or a prefix of it that ends where a
/// subtag does, ignoring case.
fn filters(range: &str, tag: &str) -> bool {
    tag.len() >= range.len()
        && tag.is_char_boundary(range.len())
        && tag[..range.len()].eq_ignore_ascii_case(range)
        && (tag.len() == range.len() || tag.as_bytes()[range.len()] == b'-')
}

/// `range` and its lookup fallbacks: subtags removed from the end, a single-letter subtag (an
/// extension's singleton) together with the one after it.
fn truncations(range: &str) -> Vec<&str> {
    let mut out = vec![range];
    let mut cur = range;
    while let Some(i) = cur.rfind('-') {
        cur = &cur[..i];
        if let Some(j) = cur.rfind('-') {
            if cur.len() - j == 2 {
                cur = &cur[..j];
            }
        }
        out.push(cur);
    }
    out
}

/// Whether `tag` is a well-formed BCP 47 language tag (RFC 5646 §2.1: `langtag` or a private-use
/// tag; the irregular grandfathered tags and the reserved 4-8 letter languages are not accepted).
/// Syntax only: `xx` is well-formed.
pub fn well_formed_tag(tag: &str) -> bool {
    let subtags: Vec<&str> = tag.split('-').collect();
    let alpha = |s: &str, lo: usize, hi: usize| {
        (lo..=hi).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
    };
    let alnum = |s: &str, lo: usize, hi: usize| {
        (lo..=hi).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let private_use = |rest: &[&str]| !rest.is_empty() && rest.iter().all(|s| alnum(s, 1, 8));
    let Some((&first, mut rest)) = subtags.split_first() else {
        return false;
    };
    if first.eq_ignore_ascii_case("x") {
        return private_use(rest);
    }
    // ISO 639 codes only: the 4-letter and 5-8-letter forms are reserved, and no language has
    // one, so `english` is a mistake rather than a tag.
    if !alpha(first, 2, 3) {
        return false;
    }
    // extlang: up to three 3-letter subtags.
    let mut n = 0;
    while n < 3 && rest.first().is_some_and(|s| alpha(s, 3, 3)) {
        rest = &rest[1..];
        n += 1;
    }
    if rest.first().is_some_and(|s| alpha(s, 4, 4)) {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|s| alpha(s, 2, 2) || digits(s, 3)) {
        rest = &rest[1..];
    }
    while let Some(s) = rest.first() {
        let variant =
            alnum(s, 5, 8) || (s.len() == 4 && s.as_bytes()[0].is_ascii_digit() && alnum(s, 4, 4));
        if !variant {
            break;
        }
        rest = &rest[1..];
    }
    while let Some(s) = rest.first() {
        if s.len() != 1 || s.eq_ignore_ascii_case("x") || !alnum(s, 1, 1) {
            break;
        }
        let n = rest[1..].iter().take_while(|s| alnum(s, 2, 8)).count();
        if n == 0 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest.split_first() {
        None => true,
        Some((x, tail)) if x.eq_ignore_ascii_case("x") => private_use(tail),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal() -> Refusal {
        Refusal {
            message: "Blocked.".into(),
            language: "en".into(),
            messages: [
                ("de", "Blockiert."),
                ("fr", "Bloqué."),
                ("zh-Hant", "已封鎖。"),
                ("pt-BR", "Bloqueado."),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    fn pick(accept: Option<&str>) -> (String, String) {
        let r = refusal();
        let (m, l) = r.text_for(accept);
        (m.to_string(), l.to_string())
    }

    fn lang(accept: &str) -> String {
        pick(Some(accept)).1
    }

    #[test]
    fn no_header_or_no_match_is_the_default() {
        assert_eq!(pick(None), ("Blocked.".into(), "en".into()));
        assert_eq!(lang(""), "en");
        assert_eq!(lang("ja, ko;q=0.5"), "en");
        assert_eq!(lang("garbage;;;,,,"), "en");
    }

    #[test]
    fn the_most_preferred_match_wins() {
        assert_eq!(pick(Some("de")), ("Blockiert.".into(), "de".into()));
        assert_eq!(lang("fr;q=0.4, de;q=0.9"), "de");
        assert_eq!(lang("ja, fr;q=0.1, de;q=0.05"), "fr");
        // Equal weights keep the client's order.
        assert_eq!(lang("fr;q=0.5, de;q=0.5"), "fr");
        assert_eq!(lang("de;q=0.5, fr;q=0.5"), "de");
        assert_eq!(lang("en-GB, de;q=0.9"), "en");
    }

    #[test]
    fn a_longer_range_is_served_by_its_prefix() {
        assert_eq!(lang("de-CH"), "de");
        assert_eq!(lang("DE-ch-1996"), "de");
        assert_eq!(lang("zh-Hant-TW"), "zh-Hant");
        // An extension's singleton goes with its subtag.
        assert_eq!(lang("fr-a-bcd"), "fr");
    }

    #[test]
    fn a_shorter_range_accepts_a_longer_tag() {
        assert_eq!(lang("pt"), "pt-BR");
        assert_eq!(lang("zh"), "zh-Hant");
        // A prefix only where a subtag ends.
        assert_eq!(lang("p"), "en");
    }

    #[test]
    fn q_zero_refuses_and_star_takes_anything_else() {
        assert_eq!(lang("de;q=0, *"), "en");
        assert_eq!(lang("en;q=0, *;q=0.5"), "de");
        assert_eq!(lang("de-CH;q=1, de;q=0"), "en");
        assert_eq!(lang("*"), "en");
        // A refused default is still what is sent when nothing else is acceptable.
        assert_eq!(lang("en;q=0"), "en");
    }

    #[test]
    fn weights_are_read_strictly() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0."), Some(0));
        for bad in ["1.5", "2", "0.1234", "-0.1", ".5", "0.5x", "", "1.001"] {
            assert_eq!(qvalue(bad), None, "{bad}");
        }
        // An element with a bad weight is skipped, not read as q=1.
        assert_eq!(lang("de;q=2, fr;q=0.1"), "fr");
        assert_eq!(lang("de ; Q=0.9 , fr;q=0.1"), "de");
        assert_eq!(lang("de;level=1, fr;q=0.1"), "fr");
    }

    #[test]
    fn many_ranges_are_cut_off() {
        let mut accept = "ja,".repeat(MAX_RANGES);
        accept.push_str("de");
        assert_eq!(lang(&accept), "en");
        assert_eq!(accept_language(&"ja,".repeat(1000)).len(), MAX_RANGES);
    }

    #[test]
    fn tags() {
        for good in [
            "en",
            "de-CH",
            "zh-Hant-TW",
            "sr-Latn-RS",
            "es-419",
            "sl-rozaj-biske",
            "de-CH-1901",
            "en-US-u-islamcal",
            "zh-yue-HK",
            "x-whatever",
            "en-x-private",
            "art-lojban",
            "EN-gb",
        ] {
            assert!(well_formed_tag(good), "{good}");
        }
        for bad in [
            "",
            "e",
            "english",
            "engl-US",
            "en_US",
            "en-",
            "-en",
            "en--US",
            "de-CH-x",
            "en-a",
            "1en",
            "en-US-u",
            "i-klingon",
            "en-ÜS",
            "en US",
        ] {
            assert!(!well_formed_tag(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert_eq!(refusal().validate(), Ok(()));
        let key = |r: Refusal| r.validate().unwrap_err().0;
        assert_eq!(
            key(Refusal {
                message: " \n".into(),
                ..refusal()
            }),
            "message"
        );
        assert_eq!(
            key(Refusal {
                message: "x".repeat(MAX_CHARS + 1),
                ..refusal()
            }),
            "message"
        );
        // Characters, not bytes.
        let long_cjk = Refusal {
            message: "封".repeat(MAX_CHARS),
            ..refusal()
        };
        assert_eq!(long_cjk.validate(), Ok(()));
        assert_eq!(
            key(Refusal {
                language: "english".into(),
                ..refusal()
            }),
            "language"
        );
        let mut r = refusal();
        r.messages.insert("de_DE".into(), "x".into());
        assert_eq!(key(r), "messages.de_DE");
        let mut r = refusal();
        r.messages.insert("EN".into(), "x".into());
        assert_eq!(key(r), "messages.EN");
        let mut r = refusal();
        r.messages.insert("it".into(), "".into());
        assert_eq!(key(r), "messages.it");
    }

    #[test]
    fn resolution_order() {
        let (a, b, c) = (refusal(), refusal(), refusal());
        let at = |r: Option<&Refusal>| r.map(|r| r as *const Refusal);
        assert_eq!(at(resolve(Some(&a), Some(&b), Some(&c))), at(Some(&a)));
        assert_eq!(at(resolve(None, Some(&b), Some(&c))), at(Some(&b)));
        assert_eq!(at(resolve(None, None, Some(&c))), at(Some(&c)));
        assert_eq!(resolve(None, None, None), None);
    }

    #[test]
    fn reads_from_toml() {
        let r: Refusal =
            toml::from_str("message = \"No.\"\nlanguage = \"en\"\n[messages]\nde = \"Nein.\"\n")
                .unwrap();
        assert_eq!(r.messages["de"], "Nein.");
        assert!(
            toml::from_str::<Refusal>("message = \"No.\"\nlanguage = \"en\"\ntext = \"x\"")
                .is_err()
        );
        assert!(toml::from_str::<Refusal>("message = \"No.\"").is_err());
    }
}
