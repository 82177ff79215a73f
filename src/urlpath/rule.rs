//! The one-meaning rule: a path is accepted only when every standard resolver reads it as the
//! same sequence of segments that the gateway reads.
//!
//! What the rule refuses, and the resolvers that read it differently:
//! - dot segments (`.`, `..`): RFC 3986 section 5.2.4 and WHATWG remove them, and where an empty
//!   segment precedes `..` they remove that one, while servers that merge slashes first remove
//!   the segment before it (`/v1/chat//../completions`);
//! - empty segments (`//`, a trailing `/`): merged by some servers (nginx's `merge_slashes`),
//!   kept by others, and counted by dot-segment removal;
//! - backslashes: WHATWG reads `\` as `/` in http(s) URLs;
//! - `;`: servlet containers and others strip `;parameters` from each segment;
//! - percent-encodings other than those of `! $ & ' ( ) * + , = : @`: an encoded `/`, `\`, `.`,
//!   `;` or `%` is a delimiter, a dot or an escape to a server that decodes before routing and
//!   plain data to one that does not; an encoded letter or digit is the letter to RFC 3986's
//!   normalisation (section 6.2.2.2) and to decoding servers, and not to WHATWG; encoded
//!   controls and non-ASCII bytes are truncated or folded by some servers (NUL, overlong UTF-8,
//!   Unicode compatibility forms);
//! - any other character outside RFC 3986's `pchar` (space, quotes, `<>{}|^\``, controls,
//!   non-ASCII), which parsers encode, reject or fold differently.
//!
//! What is left has one reading everywhere: `url::Url` leaves it unchanged, dot-segment removal
//! has nothing to remove, merging slashes has nothing to merge, and decoding it changes no
//! segment boundary. Letter case is not part of the rule: routes match ignoring ASCII case, so a
//! case-insensitive upstream reaches the same endpoint (see `Pattern`).

use std::borrow::Cow;
use std::fmt;

/// Why a path is refused: a way standard resolvers may read it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    Backslash,
    Semicolon,
    Encoding,
    Character,
}

impl Ambiguity {
    /// Says why, for the client's error message.
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::NotAbsolute => "it does not start with '/'",
            Ambiguity::EmptySegment => {
                "it has an empty segment ('//' or a trailing '/'), which some servers merge and others keep"
            }
            Ambiguity::DotSegment => {
                "it has a '.' or '..' segment, which resolvers remove in different ways"
            }
            Ambiguity::Backslash => "it has a '\\', which WHATWG URL parsers read as '/'",
            Ambiguity::Semicolon => {
                "it has a ';', which some servers strip with what follows it (matrix parameters)"
            }
            Ambiguity::Encoding => {
                "it has a percent-encoding other than of ! $ & ' ( ) * + , = : @ (an encoded '/', '\\', '.', ';' or '%', letter or digit, a control or non-ASCII byte, or a malformed '%'), which servers that decode paths read differently from those that do not"
            }
            Ambiguity::Character => {
                "it has a character outside RFC 3986's path characters (a space, quote, control or non-ASCII character, or one of < > { } | ^ `)"
            }
        }
    }
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Octets a path may hold as they are: RFC 3986's `pchar` (unreserved, sub-delims, `:`, `@`) and
/// `/`, less `;` and `%`, which have rules of their own.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Octets that may come percent-encoded: they need no encoding in a segment and delimit nothing
/// to any resolver, so a server that decodes them reads the same segments as one that does not
/// (`encodeURIComponent` encodes the `:` of a fine-tuned model's id, for one).
fn encodable(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The octet `%XY` at `i` encodes, if `b[i..]` starts with a well-formed one.
fn encoded_at(b: &[u8], i: usize) -> Option<u8> {
    match (
        b.get(i + 1).copied().and_then(hex),
        b.get(i + 2).copied().and_then(hex),
    ) {
        (Some(h), Some(l)) => Some(h * 16 + l),
        _ => None,
    }
}

/// Accepts `path` (the request target's path, without its query) when it has one meaning; see
/// the module documentation for what is refused and why.
pub fn check(path: &str) -> Result<(), Ambiguity> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(Ambiguity::NotAbsolute);
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match encoded_at(b, i) {
                Some(o) if encodable(o) => i += 3,
                _ => return Err(Ambiguity::Encoding),
            },
            b'\\' => return Err(Ambiguity::Backslash),
            b';' => return Err(Ambiguity::Semicolon),
            c if plain(c) => i += 1,
            _ => return Err(Ambiguity::Character),
        }
    }
    if path == "/" {
        return Ok(());
    }
    for seg in path[1..].split('/') {
        match seg {
            "" => return Err(Ambiguity::EmptySegment),
            "." | ".." => return Err(Ambiguity::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// The form an accepted path is compared in: ASCII lowercase, with the encodings the rule
/// accepts decoded (none decodes to a delimiter, so every segment stays where it was). Borrowed
/// for the common spelling: lowercase, nothing encoded.
pub fn comparable(path: &str) -> Cow<'_, str> {
    if !path.bytes().any(|b| b == b'%' || b.is_ascii_uppercase()) {
        return Cow::Borrowed(path);
    }
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b[i] {
            b'%' => encoded_at(b, i).filter(|&o| encodable(o)),
            _ => None,
        };
        match decoded {
            Some(o) => {
                out.push(o as char);
                i += 3;
            }
            None => {
                out.push(b[i].to_ascii_lowercase() as char);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{check, comparable, Ambiguity};
    use proptest::prelude::*;

    /// Paths made of route words and every kind of ambiguity.
    fn any_path() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "v1",
            "Chat",
            "completions",
            "a:b",
            "~x",
            "",
            ".",
            "..",
            "%2e",
            ".%2E",
            "%2F",
            "%5c",
            "\\",
            ";p",
            "%3B",
            "%63",
            "%25",
            "%3A",
            "%40",
            "%00",
            "%c0%af",
            "%zz",
            "%",
            "\u{e9}",
        ]);
        prop::collection::vec(piece, 1..8).prop_map(|p| format!("/{}", p.join("/")))
    }

    /// `path` with every percent-encoding decoded, as a server that decodes before routing has it.
    fn decoded(path: &str) -> Vec<u8> {
        let b = path.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            match super::encoded_at(b, i).filter(|_| b[i] == b'%') {
                Some(o) => {
                    out.push(o);
                    i += 3;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        /// The reference resolver (WHATWG, as the `url` crate implements it: dot segments
        /// including encoded ones, backslashes) leaves an accepted path as it is; decoding it
        /// moves no segment boundary and makes no dot segment; the compared form has the same
        /// segments.
        #[test]
        fn accepted_paths_have_one_reading(path in any_path()) {
            if check(&path).is_ok() {
                let u = url::Url::parse(&format!("http://upstream.test{path}")).unwrap();
                prop_assert_eq!(u.path(), path.as_str());
                let joined = url::Url::parse("http://upstream.test/").unwrap().join(&path).unwrap();
                prop_assert_eq!(joined.path(), path.as_str());
                let d = decoded(&path);
                let segs: Vec<&[u8]> = d.split(|&c| c == b'/').collect();
                prop_assert_eq!(segs.len(), path.split('/').count());
                prop_assert!(!segs.iter().any(|s| *s == b"." || *s == b".." || s.contains(&b'\\') || s.contains(&b';')));
                prop_assert_eq!(comparable(&path).split('/').count(), segs.len());
            }
        }
    }

    #[test]
    fn plain_paths_are_accepted() {
        for p in [
            "/",
            "/v1/chat/completions",
            "/V1/Chat/Completions",
            "/v1/models/ft:gpt-4o-mini:org:custom:abc",
            "/v1/models/ft%3Agpt-4o-mini%3aorg",
            "/openai/deployments/gpt-4o.prod_2/chat/completions",
            "/v1/a!$&'()*+,=:@~b",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn every_ambiguity_is_refused_with_its_reason() {
        for (p, why) in [
            ("", Ambiguity::NotAbsolute),
            ("v1/chat", Ambiguity::NotAbsolute),
            ("*", Ambiguity::NotAbsolute),
            ("//v1/chat/completions", Ambiguity::EmptySegment),
            ("/v1/chat//../completions", Ambiguity::EmptySegment),
            ("/v1/chat/completions/", Ambiguity::EmptySegment),
            ("/v1/./chat/completions", Ambiguity::DotSegment),
            ("/v1/chat/..", Ambiguity::DotSegment),
            ("/.", Ambiguity::DotSegment),
            ("/v1/chat\\completions", Ambiguity::Backslash),
            ("/v1/chat;x=1/completions", Ambiguity::Semicolon),
            ("/v1/chat/completions;", Ambiguity::Semicolon),
            ("/v1/chat%2Fcompletions", Ambiguity::Encoding),
            ("/v1/chat%2fcompletions", Ambiguity::Encoding),
            ("/v1/%2e%2e/chat", Ambiguity::Encoding),
            ("/v1/.%2E/chat", Ambiguity::Encoding),
            ("/v1/%63hat/completions", Ambiguity::Encoding),
            ("/v1/chat%5Ccompletions", Ambiguity::Encoding),
            ("/v1/chat%3Bx", Ambiguity::Encoding),
            ("/v1/chat%252F", Ambiguity::Encoding),
            ("/v1/chat%00", Ambiguity::Encoding),
            ("/v1/chat%c0%af", Ambiguity::Encoding),
            ("/v1/chat%", Ambiguity::Encoding),
            ("/v1/chat%3", Ambiguity::Encoding),
            ("/v1/chat%zz", Ambiguity::Encoding),
            ("/v1/chat completions", Ambiguity::Character),
            ("/v1/chat\u{ff0f}completions", Ambiguity::Character),
            ("/v1/chat\u{fffd}", Ambiguity::Character),
            ("/v1/chat\tcompletions", Ambiguity::Character),
            ("/v1/{x}", Ambiguity::Character),
            ("/v1/a|b", Ambiguity::Character),
        ] {
            assert_eq!(check(p), Err(why), "{p:?}");
        }
    }

    #[test]
    fn the_compared_form_folds_case_and_decodes_only_inert_octets() {
        assert_eq!(comparable("/v1/chat"), "/v1/chat");
        assert!(matches!(
            comparable("/v1/chat"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(comparable("/V1/Models/FT%3Ax"), "/v1/models/ft:x");
        assert_eq!(comparable("/v1/a%40b%2Cc"), "/v1/a@b,c");
    }
}
