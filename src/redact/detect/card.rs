//! Payment card numbers: 13 to 19 digits, written whole or in the usual groups (4-4-4-4,
//! 4-4-4-4-3, Amex's 4-6-5, Diners' 4-6-4) with single spaces or dashes, that pass the Luhn check
//! and start with an issuer prefix of a known network at a length that network issues. A
//! Luhn-valid number without such a prefix (one in ten random numbers passes Luhn) is an order,
//! invoice or tracking number far more often than a card.

use regex::Regex;
use std::sync::LazyLock;

pub(super) const MIN_DIGITS: usize = 13;

/// Digit groups joined by single spaces or dashes; the grouping is checked after.
static CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d+(?:[ -]\d+)*").expect("card pattern"));

/// (prefix range low, high, shortest length, longest length), prefixes compared on as many
/// leading digits as the bounds have.
const NETWORKS: &[(u32, u32, usize, usize)] = &[
    (4, 4, 13, 19),           // Visa (13, 16, 19; the lengths between are not issued)
    (51, 55, 16, 16),         // Mastercard
    (2221, 2720, 16, 16),     // Mastercard 2-series
    (34, 34, 15, 15),         // American Express
    (37, 37, 15, 15),         // American Express
    (6011, 6011, 16, 19),     // Discover
    (644, 649, 16, 19),       // Discover
    (65, 65, 16, 19),         // Discover
    (622126, 622925, 16, 19), // Discover co-branded UnionPay
    (3528, 3589, 16, 19),     // JCB
    (36, 36, 14, 19),         // Diners Club International
    (38, 38, 14, 19),         // Diners Club
    (300, 305, 14, 19),       // Diners Club Carte Blanche
    (3095, 3095, 14, 19),     // Diners Club
    (39, 39, 14, 19),         // Diners Club
    (62, 62, 16, 19),         // UnionPay
    (5018, 5018, 16, 19),     // Maestro
    (5020, 5020, 16, 19),     // Maestro
    (5038, 5038, 16, 19),     // Maestro
    (5893, 5893, 16, 19),     // Maestro
    (6304, 6304, 16, 19),     // Maestro
    (6759, 6759, 16, 19),     // Maestro
    (6761, 6763, 16, 19),     // Maestro
];

/// Whether these digits are a card number: a known network's prefix at one of its lengths, and
/// Luhn-valid.
pub(super) fn is_card(digits: &[u8]) -> bool {
    let n = digits.len();
    if !(13..=19).contains(&n) {
        return false;
    }
    if digits[0] == b'4' && ![13, 16, 19].contains(&n) {
        return false;
    }
    let known = NETWORKS.iter().any(|&(lo, hi, min, max)| {
        let width = lo.to_string().len();
        let prefix: u32 = std::str::from_utf8(&digits[..width])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u32::MAX);
        (lo..=hi).contains(&prefix) && (min..=max).contains(&n)
    });
    known && super::luhn(digits)
}

/// Whether the group lengths are a way cards are printed: no groups, groups of four (the last
/// one shorter for 13-, 17- to 19-digit numbers), or 4-6-5 / 4-6-4.
fn grouping_ok(groups: &[usize]) -> bool {
    match groups {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [init @ .., last] => init.iter().all(|&g| g == 4) && (1..=4).contains(last),
        [] => false,
    }
}

pub(super) fn find(text: &str, push: &mut impl FnMut(usize, usize)) {
    for m in CANDIDATE.find_iter(text) {
        let s = m.as_str();
        if s.len() < MIN_DIGITS {
            continue;
        }
        // Groups with their byte offsets; one separator kind throughout a number.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        for part in s.split([' ', '-']) {
            groups.push((m.start() + at, m.start() + at + part.len()));
            at += part.len() + 1;
        }
        // A card can sit among other digit groups (`ref 12 4111 1111 1111 1111`): try the
        // runs of groups from the earliest start, longest first.
        let mut i = 0;
        while i < groups.len() {
            let mut hit = None;
            // At most five groups (4-4-4-4-3), so a long run of numbers costs linear time.
            for j in (i + 1..=groups.len().min(i + 5)).rev() {
                let (start, end) = (groups[i].0, groups[j - 1].1);
                let span = &text[start..end];
                let seps: Vec<char> = span.chars().filter(|c| !c.is_ascii_digit()).collect();
                if seps.windows(2).any(|w| w[0] != w[1]) {
                    continue;
                }
                let lens: Vec<usize> = groups[i..j].iter().map(|(a, b)| b - a).collect();
                let digits: Vec<u8> = span.bytes().filter(u8::is_ascii_digit).collect();
                if grouping_ok(&lens) && is_card(&digits) && !super::glued(text, start, end) {
                    hit = Some((start, end, j));
                    break;
                }
            }
            match hit {
                Some((start, end, j)) => {
                    push(start, end);
                    i = j;
                }
                None => i += 1,
            }
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
    fn test_numbers_of_every_network() {
        for n in [
            "4111 1111 1111 1111",
            "4222222222222",
            "5555-5555-5555-4444",
            "2223003122003222",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "3530 1113 3330 0000",
            "3056 930902 5904",
            "6200 0000 0000 0005",
            "6759 6498 2643 8453",
        ] {
            let text = format!("card: {n}.");
            assert_eq!(found(&text), [n], "{n}");
        }
    }

    #[test]
    fn a_card_among_other_digit_groups() {
        assert_eq!(
            found("ref 12 4111 1111 1111 1111 exp 12 28"),
            ["4111 1111 1111 1111"]
        );
    }

    #[test]
    fn near_misses() {
        for text in [
            // Luhn-valid but no network's prefix.
            "order 1234 5678 9012 3452",
            "tracking 9400 1000 0000 0000 0000 00",
            // Visa prefix and Luhn-valid, but 15 digits.
            "4111 1111 1111 118",
            // A test card number with one digit changed.
            "4111 1111 1111 1112",
            // Mixed separators, odd grouping.
            "4111-1111 1111-1111",
            "41 11 11 11 11 11 11 11",
            // Inside a longer token.
            "id=x4111111111111111",
            "4111111111111111.5",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
