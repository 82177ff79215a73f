//! IP addresses: IPv4 dotted quads and IPv6 in any of its written forms (full, compressed,
//! with an embedded IPv4 part such as `::ffff:192.0.2.1`), each candidate validated by std's
//! parser. A quad that is part of a longer dotted run (`1.2.3.4.5`, `v1.2.3.4`) is a version
//! string, not an address.

use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

static V4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}").expect("ipv4 pattern"));
/// Runs of hex digits, colons and dots with two colons at least; std decides the rest.
static V6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f.:]*").expect("ipv6 pattern")
});

/// Words after which a dotted quad numbers a section or a release (`section 1.2.3.4`).
const NUMBERING_WORDS: &[&str] = &[
    "section",
    "chapter",
    "clause",
    "step",
    "version",
    "release",
    "build",
    "rule",
    "paragraph",
    "abschnitt",
    "kapitel",
    "ziffer",
    "article",
    "artikel",
    "art",
    "sec",
    "ver",
    "rev",
];

pub(super) fn find(text: &str, v4: bool, v6: bool, push: &mut impl FnMut(usize, usize)) {
    let mut v6_spans: Vec<(usize, usize)> = Vec::new();
    if v6 {
        for m in V6.find_iter(text) {
            // Sentence punctuation after an address (`… at 2001:db8::1.`) is not part of it.
            let s = m.as_str().trim_end_matches('.');
            let (start, end) = (m.start(), m.start() + s.len());
            let word = |c: char| c.is_alphanumeric() || c == '_';
            if super::char_before(text, start).is_some_and(word)
                || super::char_at(text, end).is_some_and(word)
            {
                continue;
            }
            // `::` alone and hex-only words (`ab::cd`, `dead::beef`) are scope operators of code
            // far more often than addresses.
            if !s.bytes().any(|b| b.is_ascii_digit()) || s.len() < 3 {
                continue;
            }
            if s.parse::<Ipv6Addr>().is_ok() {
                v6_spans.push((start, end));
            }
        }
    }
    if v4 {
        for m in V4.find_iter(text) {
            // The IPv4 tail of `::ffff:192.0.2.1` is part of that address.
            if v6_spans
                .iter()
                .any(|&(s, e)| s <= m.start() && m.end() <= e)
            {
                continue;
            }
            if m.as_str().parse::<Ipv4Addr>().is_ok()
                && !dotted_neighbour(text, m.start(), m.end())
                && !NUMBERING_WORDS.contains(&super::last_word(text, m.start()).as_str())
            {
                push(m.start(), m.end());
            }
        }
    }
    for (start, end) in v6_spans {
        push(start, end);
    }
}

/// Whether a quad is glued to more of a dotted or versioned token: a letter, digit or `_` next
/// to it, or a `.` with a digit beyond it.
fn dotted_neighbour(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let before = super::char_before(text, start);
    if before.is_some_and(word) {
        return true;
    }
    if before == Some('.')
        && super::char_before(text, start - 1).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return true;
    }
    let after = super::char_at(text, end);
    if after.is_some_and(word) {
        return true;
    }
    after == Some('.') && super::char_at(text, end + 1).is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    fn found(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        super::find(text, true, true, &mut |s, e| out.push(&text[s..e]));
        out
    }

    #[test]
    fn addresses_in_their_written_forms() {
        for (text, want) in [
            ("from 192.0.2.17.", "192.0.2.17"),
            ("host 198.51.100.255:8080", "198.51.100.255"),
            ("net 203.0.113.0/24", "203.0.113.0"),
            ("v6 2001:db8::1.", "2001:db8::1"),
            (
                "[2001:db8:85a3:0:0:8a2e:370:7334]:443",
                "2001:db8:85a3:0:0:8a2e:370:7334",
            ),
            ("mapped ::ffff:192.0.2.1 here", "::ffff:192.0.2.1"),
            ("loopback ::1", "::1"),
            ("link fe80::1%eth0", "fe80::1"),
        ] {
            assert_eq!(found(text), [want], "{text}");
        }
    }

    #[test]
    fn versions_times_and_code_are_not_addresses() {
        for text in [
            "version 1.2.3.4.5",
            "v1.2.3.4",
            "build 10.0.19045.3693",
            "256.1.1.1",
            "at 10:30:00",
            "mac 00:1a:2b:3c:4d:5e",
            "std::vector",
            "a::b and dead::beef",
            "1.2.3",
            "see section 1.2.3.4 of the spec",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
