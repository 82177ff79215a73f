//! IBANs (ISO 13616): a country code, two check digits and the country's BBAN, written as one
//! run or in groups of four separated by single spaces. The length must be the one the SWIFT IBAN
//! registry gives for the country and the mod-97 check must hold, so a reference number that
//! merely starts with two letters and two digits is not taken. Lower case is read too
//! (`de89…`, as people paste it into forms).

use regex::Regex;
use std::sync::LazyLock;

/// The check digits; a text with fewer digits cannot hold an IBAN.
pub(super) const MIN_DIGITS: usize = 2;

/// Every country in the SWIFT IBAN registry with its IBAN length.
const LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// Either one run of 15-34 characters, or the printed form: groups of four after the first,
/// the last group shorter.
static CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?-u:\b)")
        .expect("iban pattern")
});

fn length_of(country: &str) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| *c == country).map(|&(_, n)| n)
}

/// Whether `compact` (no spaces, upper case) is an IBAN: known country, its length, mod 97 = 1.
pub(super) fn is_iban(compact: &[u8]) -> bool {
    if compact.len() < 15 || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let Ok(country) = std::str::from_utf8(&compact[..2]) else {
        return false;
    };
    if length_of(country) != Some(compact.len()) {
        return false;
    }
    // The first four characters move to the end; letters count as 10..35.
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = (if v < 10 { rem * 10 + v } else { rem * 100 + v }) % 97;
    }
    rem == 1
}

pub(super) fn find(text: &str, push: &mut impl FnMut(usize, usize)) {
    for m in CANDIDATE.find_iter(text) {
        // The printed form can run into a following word of capitals or digits
        // (`BE68 5390 0754 7034 THEN`): drop groups from the end until one reads.
        let mut end = m.end();
        loop {
            let span = &text[m.start()..end];
            let compact: Vec<u8> = span
                .bytes()
                .filter(|b| *b != b' ')
                .map(|b| b.to_ascii_uppercase())
                .collect();
            if is_iban(&compact) {
                push(m.start(), end);
                break;
            }
            match span.rfind(' ') {
                Some(i) if compact.len() > 15 => end = m.start() + i,
                _ => break,
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
    fn registry_examples_printed_and_compact() {
        for iban in [
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB29 NWBK 6016 1331 9268 19",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NO93 8601 1117 947",
            "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
            "BE68 5390 0754 7034",
            "de89370400440532013000",
        ] {
            let text = format!("IBAN: {iban}, thanks");
            assert_eq!(found(&text), [iban], "{iban}");
        }
    }

    #[test]
    fn a_following_word_in_capitals_is_not_taken() {
        assert_eq!(found("BE68 5390 0754 7034 ASAP"), ["BE68 5390 0754 7034"]);
    }

    #[test]
    fn wrong_checksum_length_or_country() {
        for text in [
            "DE89 3704 0044 0532 0130 01",
            "DE89 3704 0044 0532 0130",
            "GB29 NWBK 6016 1331 9268 1",
            "XX89 3704 0044 0532 0130 00",
            "AB12CD34EF56GH78",
        ] {
            assert!(found(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn every_country_has_a_plausible_length() {
        for (c, n) in super::LENGTHS {
            assert!((15..=34).contains(n), "{c}");
        }
        let mut seen: Vec<&str> = super::LENGTHS.iter().map(|(c, _)| *c).collect();
        seen.dedup();
        assert_eq!(seen.len(), super::LENGTHS.len());
    }
}
