//! Deterministic detectors of personal and secret data. Each finds spans of one [`Kind`] in a
//! text; [`Detectors::find`] runs the configured set and returns non-overlapping spans in order.
//!
//! One module per detector (`email`, `phone`, `card`, `iban`, `ssn`, `ip`, `credential`). Each
//! checks a candidate the way the format defines it (Luhn, mod-97, libphonenumber's metadata,
//! std's address parsers) rather than by shape alone, because near misses (order numbers,
//! dates, version strings) are far more common in chat text than the data itself. A text is
//! first scanned once for the bytes each detector needs (`@`, digits, colons, key prefixes), so
//! text without candidates costs one pass.

mod card;
pub mod credential;
mod email;
pub mod eval;
mod iban;
mod ip;
mod phone;
mod ssn;

use regex::Regex;
use std::str::FromStr;

/// What a span is. The placeholder names it (`[EMAIL_1]`), the audit counts it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Credential,
    /// A policy's own pattern.
    Custom,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Email,
        Kind::Phone,
        Kind::Card,
        Kind::Iban,
        Kind::Ssn,
        Kind::Ip,
        Kind::Credential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Ssn => "ssn",
            Kind::Ip => "ip",
            Kind::Credential => "credential",
            Kind::Custom => "custom",
        }
    }

    /// The placeholder's name for a span of this kind (a custom pattern names its own).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Card => "CARD",
            Kind::Iban => "IBAN",
            Kind::Ssn => "SSN",
            Kind::Ip => "IP",
            Kind::Credential => "CREDENTIAL",
            Kind::Custom => "CUSTOM",
        }
    }

    /// Which of two spans with the same start and end is kept. A phone number is the weakest
    /// claim (libphonenumber accepts many digit strings that are also something more specific),
    /// a policy's own pattern the last resort.
    fn precedence(self) -> u8 {
        match self {
            Kind::Credential => 0,
            Kind::Card => 1,
            Kind::Iban => 2,
            Kind::Ssn => 3,
            Kind::Ip => 4,
            Kind::Email => 5,
            Kind::Phone => 6,
            Kind::Custom => 7,
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .chain([Kind::Custom])
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// One span found: byte offsets into the text, and what it is. `label` is the placeholder's
/// name: the kind's in upper case, or a custom pattern's own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub label: String,
}

/// The region whose national format numbers without a `+` are read in (CLDR id such as `US`,
/// `GB`, `DE`). Numbers written with `+` and a country code are read the same in every region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(pub(crate) phonenumber::country::Id);

impl Default for Region {
    fn default() -> Region {
        Region(phonenumber::country::Id::US)
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Region, String> {
        phonenumber::country::Id::from_str(&s.to_ascii_uppercase())
            .map(Region)
            .map_err(|_| {
                format!("{s:?} is not a region libphonenumber knows (CLDR id such as \"US\")")
            })
    }
}

impl Region {
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// The detectors a policy turns on, plus its own named patterns.
#[derive(Debug, Clone, Default)]
pub struct Detectors {
    pub kinds: Vec<Kind>,
    /// (placeholder label such as `ORDER_ID`, pattern).
    pub custom: Vec<(String, Regex)>,
    /// Phone numbers without `+` are read as this region's national numbers (default `US`).
    pub region: Region,
}

/// What one pass over the bytes says about a text: which detectors can have anything to find.
struct Scan {
    digits: usize,
    at: bool,
    colons: usize,
}

impl Scan {
    fn of(text: &str) -> Scan {
        let (mut digits, mut at, mut colons) = (0usize, false, 0usize);
        for &b in text.as_bytes() {
            digits += b.is_ascii_digit() as usize;
            at |= b == b'@';
            colons += (b == b':') as usize;
        }
        Scan { digits, at, colons }
    }
}

impl Detectors {
    /// Every built-in kind, phone numbers read in the default region.
    pub fn all() -> Detectors {
        Detectors {
            kinds: Kind::ALL.to_vec(),
            ..Detectors::default()
        }
    }

    /// Every span in `text`, sorted by start, non-overlapping (where two overlap, the earlier and
    /// then the longer wins; where both are the same span, the more specific kind: credential,
    /// card, IBAN, SSN, IP, e-mail, phone, then a custom pattern).
    pub fn find(&self, text: &str) -> Vec<Found> {
        let mut all: Vec<Found> = Vec::new();
        let scan = Scan::of(text);
        // Phone numbers last: they are parsed only where no other kind already claims the digits.
        let phone_last = self
            .kinds
            .iter()
            .filter(|k| **k != Kind::Phone)
            .chain(self.kinds.iter().filter(|k| **k == Kind::Phone));
        for &kind in phone_last {
            let taken: Vec<(usize, usize)> = if kind == Kind::Phone {
                all.iter().map(|f| (f.start, f.end)).collect()
            } else {
                Vec::new()
            };
            let before = all.len();
            let mut push = |start: usize, end: usize| {
                all.push(Found {
                    start,
                    end,
                    kind,
                    label: kind.label().into(),
                })
            };
            match kind {
                Kind::Email if scan.at => email::find(text, &mut push),
                Kind::Phone if scan.digits >= phone::MIN_DIGITS => {
                    phone::find(text, self.region.0, &taken, &mut push)
                }
                Kind::Card if scan.digits >= card::MIN_DIGITS => card::find(text, &mut push),
                Kind::Iban if scan.digits >= iban::MIN_DIGITS => iban::find(text, &mut push),
                Kind::Ssn if scan.digits >= ssn::DIGITS => ssn::find(text, &mut push),
                Kind::Ip if scan.digits >= 4 || scan.colons >= 2 => {
                    ip::find(text, scan.digits >= 4, scan.colons >= 2, &mut push)
                }
                Kind::Credential => credential::find(text, &mut push),
                _ => {}
            }
            debug_assert!(all[before..].iter().all(|f| f.start < f.end));
        }
        for (label, re) in &self.custom {
            all.extend(re.find_iter(text).filter(|m| !m.is_empty()).map(|m| Found {
                start: m.start(),
                end: m.end(),
                kind: Kind::Custom,
                label: label.clone(),
            }));
        }
        all.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(a.kind.precedence().cmp(&b.kind.precedence()))
        });
        let mut kept: Vec<Found> = Vec::with_capacity(all.len());
        for f in all {
            if kept.last().is_none_or(|k| f.start >= k.end) {
                kept.push(f);
            }
        }
        kept
    }
}

/// The character before byte `i` of `text`, if any.
fn char_before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

/// The character at byte `i` of `text`, if any.
fn char_at(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

/// Whether the span `start..end` sits inside a longer token (`v1.2.3.4`, `x4111…`,
/// `SN-2015-5501-23`, `1.2.3.4.5`): a letter, digit or underscore touches it, a `.`, `-` or `/`
/// joins it to a letter or digit, or a `:` or `,` joins it to a digit (`10:30`, `1,299`; a
/// label such as `Card:` may precede the value).
fn glued(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| (c.is_alphanumeric() && !unspaced(c)) || c == '_';
    let joins = |joiner: char, beyond: Option<char>| match joiner {
        '.' | '-' | '/' => beyond.is_some_and(|c| c.is_alphanumeric()),
        ':' | ',' => beyond.is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    };
    if let Some(c) = char_before(text, start) {
        if word(c) || joins(c, char_before(text, start - c.len_utf8())) {
            return true;
        }
    }
    if let Some(c) = char_at(text, end) {
        if word(c) || joins(c, char_at(text, end + c.len_utf8())) {
            return true;
        }
    }
    false
}

/// The last `n` words before byte `start`, nearest first, lower-cased, skipping punctuation,
/// spaces and digits (`Order #: ` gives `order`; `Pedido nº ` gives `nº`, `pedido`).
fn last_words(text: &str, start: usize, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = &text[..start];
    while out.len() < n {
        rest = rest.trim_end_matches(|c: char| !c.is_alphabetic());
        if rest.is_empty() {
            break;
        }
        let word_start = rest
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphabetic())
            .last()
            .map_or(0, |(i, _)| i);
        out.push(rest[word_start..].to_lowercase());
        rest = &rest[..word_start];
    }
    out
}

/// The last word before byte `start` (see [`last_words`]).
fn last_word(text: &str, start: usize) -> String {
    last_words(text, start, 1).pop().unwrap_or_default()
}

/// Whether `c` belongs to a script written without spaces between words (Han, kana, Hangul,
/// Thai, full-width forms): next to such a letter a value still stands alone
/// (`電話番号は+1 213 555 0123です`).
fn unspaced(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0E7F}'
        | '\u{3000}'..='\u{30FF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7AF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{FF00}'..='\u{FFEF}')
}

/// The Luhn checksum over ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        Detectors::all()
            .find(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn spans_come_back_in_order_and_without_overlap() {
        let text = "mail jane.doe@example.com or call +1 201-555-0123; card 4111 1111 1111 1111, \
                    from 192.0.2.17";
        assert_eq!(
            kinds(text),
            vec![
                (Kind::Email, "jane.doe@example.com"),
                (Kind::Phone, "+1 201-555-0123"),
                (Kind::Card, "4111 1111 1111 1111"),
                (Kind::Ip, "192.0.2.17"),
            ]
        );
    }

    #[test]
    fn a_card_number_is_not_also_a_phone() {
        let d = Detectors {
            kinds: vec![Kind::Phone, Kind::Card],
            ..Detectors::default()
        };
        let found = d.find("pay with 4111111111111111 today");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Card);
        let phone_only = Detectors {
            kinds: vec![Kind::Phone],
            ..Detectors::default()
        };
        assert!(phone_only
            .find("pay with 4111 1111 1111 1111 today")
            .is_empty());
    }

    #[test]
    fn a_custom_pattern_loses_a_tie_and_wins_when_earlier() {
        let mut d = Detectors::all();
        d.custom = vec![
            ("ORDER".into(), Regex::new(r"ORD-\d+").unwrap()),
            (
                "TEST_CARD".into(),
                Regex::new(r"4242 4242 4242 4242").unwrap(),
            ),
        ];
        let text = "ORD-4111111111111111 and 4242 4242 4242 4242";
        let got: Vec<_> = d
            .find(text)
            .into_iter()
            .map(|f| (f.label, &text[f.start..f.end]))
            .collect();
        assert_eq!(
            got,
            [
                ("ORDER".to_string(), "ORD-4111111111111111"),
                ("CARD".to_string(), "4242 4242 4242 4242")
            ]
        );
    }

    #[test]
    fn kinds_not_turned_on_find_nothing() {
        let d = Detectors {
            kinds: vec![Kind::Email],
            ..Detectors::default()
        };
        assert!(d.find("4111 1111 1111 1111 and 192.0.2.1").is_empty());
    }

    #[test]
    fn regions_parse_and_unknown_ones_are_refused() {
        assert_eq!("gb".parse::<Region>().unwrap().as_str(), "GB");
        assert!("XX".parse::<Region>().is_err());
        assert_eq!(Region::default().as_str(), "US");
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
    }
}
