//! US Social Security numbers: AAA-GG-SSSS with dashes or spaces, or nine bare digits when the
//! words "SSN" or "social security" come shortly before. Numbers the SSA never issues are left:
//! area 000, 666 or 900-999, group 00, serial 0000, and the two that were printed in
//! advertising and wallets (078-05-1120, 219-09-9999).

use regex::Regex;
use std::sync::LazyLock;

pub(super) const DIGITS: usize = 9;

static SHAPED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[0-9]{3}(?:-[0-9]{2}-|[ ][0-9]{2}[ ])[0-9]{4}(?-u:\b)")
        .expect("ssn pattern")
});
static BARE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)[0-9]{9}(?-u:\b)").expect("ssn pattern"));
static CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)(?:ssn|ss#|social[ -]security(?:[ -]n(?:o|umber))?)(?-u:\b)")
        .expect("ssn word")
});

/// How far before bare digits the word SSN may be (`SSN (on file): 123456789`).
const CONTEXT_BYTES: usize = 40;

fn issued(d: &[u8]) -> bool {
    let n = |r: std::ops::Range<usize>| -> u32 {
        d[r].iter().fold(0, |a, &b| a * 10 + u32::from(b - b'0'))
    };
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    let never = area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0;
    let advertised = matches!((area, group, serial), (78, 5, 1120) | (219, 9, 9999));
    !never && !advertised
}

pub(super) fn find(text: &str, push: &mut impl FnMut(usize, usize)) {
    let mut check = |start: usize, end: usize| {
        let digits: Vec<u8> = text[start..end]
            .bytes()
            .filter(u8::is_ascii_digit)
            .collect();
        if issued(&digits) && !super::glued(text, start, end) {
            push(start, end);
        }
    };
    for m in SHAPED.find_iter(text) {
        check(m.start(), m.end());
    }
    for m in BARE.find_iter(text) {
        let mut from = m.start().saturating_sub(CONTEXT_BYTES);
        while !text.is_char_boundary(from) {
            from += 1;
        }
        if CONTEXT.is_match(&text[from..m.start()]) {
            check(m.start(), m.end());
        }
    }
}

#[cfg(test)]
mod tests {
    fn found(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        super::find(text, &mut |s, e| out.push(&text[s..e]));
        out
    }

    #[test]
    fn dashed_spaced_and_bare_after_the_word() {
        assert_eq!(found("my SSN is 512-48-3907."), ["512-48-3907"]);
        assert_eq!(found("ssn 512 48 3907"), ["512 48 3907"]);
        assert_eq!(found("Social Security number: 512483907"), ["512483907"]);
    }

    #[test]
    fn never_issued_numbers_and_bare_digits_without_the_word() {
        for text in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "512-00-3907",
            "512-48-0000",
            "078-05-1120",
            "219-09-9999",
            "order 512483907",
            "call 1-512-48-3907-2",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
