//! Phone numbers, read by libphonenumber (the `phonenumber` crate): a cheap pattern finds runs
//! of digits joined by single spaces, dots, dashes or parentheses (with a leading `+`), and
//! each run, or a part of it between spaces, is kept only if libphonenumber parses it in the
//! configured region (or under its `+` country code) and its metadata calls it a valid number.
//!
//! libphonenumber accepts many digit strings that are something else in chat text, so a run is
//! refused before it is parsed when it has the shape of a date, an IPv4 address, a version, an
//! amount, an ISBN or a card number, when a word such as "order" or "invoice" or a `#` comes
//! right before it, and when it is an unbroken run of digits with neither a `+` nor a phone
//! word ("call", "tel", "Handy", …) before it.

use phonenumber::country::Id;
use regex::Regex;
use std::sync::LazyLock;

/// The shortest national numbers libphonenumber calls valid in most regions have 7 digits;
/// E.164 allows 15 at most.
pub(super) const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;
/// Space-separated groups a number is written in at most (`+33 1 99 00 12 34` has six); a
/// longer run of digit groups is tried in windows of this many, so it costs linear time.
const MAX_PARTS: usize = 6;

/// A run: an optional `+`, then digits with single separators; a parenthesised group may
/// have a space after it (`(201) 555-0123`).
static CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+ ?)?\(?[0-9]+(?:(?:[ .\-]|\) ?| ?\(|\)[.\-])[0-9]+)*\)?")
        .expect("phone pattern")
});

/// Words that say the digits after them are a phone number. A word of the context matches when it starts with one of these (`called`, `Telefonnummer`).
const PHONE_WORDS: &[&str] = &[
    "phone",
    "call",
    "tel",
    "mobile",
    "cell",
    "fax",
    "sms",
    "whatsapp",
    "ring",
    "dial",
    "contact",
    "handy",
    "anruf",
    "ruf",
    "téléphone",
    "portable",
    "appel",
    "joindre",
    "teléfono",
    "móvil",
    "movil",
    "llam",
    "cellulare",
    "chiam",
    "celular",
    "ligue",
    "bellen",
];

/// Phrases and words of scripts without spaces, matched anywhere in the context.
const PHONE_PHRASES: &[&str] = &[
    "text me", "reach me", "bel me", "電話", "电话", "手机", "携帯",
];

/// Words that say the digits after them are a reference of some other kind.
const OTHER_WORDS: &[&str] = &[
    "order",
    "invoice",
    "tracking",
    "ref",
    "reference",
    "ticket",
    "case",
    "account",
    "acct",
    "isbn",
    "serial",
    "sku",
    "policy",
    "claim",
    "customer",
    "id",
    "no",
    "nr",
    "version",
    "build",
    "bestellung",
    "bestellnummer",
    "rechnung",
    "sendung",
    "kundennummer",
    "commande",
    "facture",
    "colis",
    "pedido",
    "factura",
    "ordine",
    "fattura",
    "pratica",
    "zip",
    "postcode",
    "iban",
    "card",
    "karte",
    "carte",
    "tarjeta",
    "sn",
    "imei",
    "ean",
    "upc",
    "pin",
    "code",
    "transaction",
    "txn",
    "batch",
    "lot",
    "model",
    "part",
    "seed",
    "n",
    "nº",
];

fn lower_context(text: &str, start: usize, bytes: usize) -> String {
    let mut from = start.saturating_sub(bytes);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..start].to_lowercase()
}

fn is_date(groups: &[&str], seps: &[char]) -> bool {
    if groups.len() != 3 || (seps.contains(&' ') && seps.iter().any(|c| *c != ' ')) {
        return false;
    }
    let n: Vec<u32> = groups
        .iter()
        .map(|g| g.parse().unwrap_or(u32::MAX))
        .collect();
    let day_month = |a: u32, b: u32| {
        (1..=31).contains(&a) && (1..=12).contains(&b)
            || (1..=12).contains(&a) && (1..=31).contains(&b)
    };
    let year = |g: &str, v: u32| g.len() == 4 && (1900..=2100).contains(&v) || g.len() == 2;
    (groups[0].len() == 4 && year(groups[0], n[0]) && day_month(n[2], n[1]))
        || (groups[2].len() == 4 || groups[2].len() == 2)
            && year(groups[2], n[2])
            && groups[0].len() <= 2
            && groups[1].len() <= 2
            && day_month(n[0], n[1])
}

/// Whether the run's own shape says it is something other than a phone number.
fn other_shape(run: &str) -> bool {
    let body = run.trim_start_matches(['+', ' ']);
    let groups: Vec<&str> = body
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let seps: Vec<char> = body
        .chars()
        .filter(|c| matches!(c, ' ' | '.' | '-'))
        .collect();
    let digits: Vec<u8> = body.bytes().filter(u8::is_ascii_digit).collect();
    if is_date(&groups, &seps) {
        return true;
    }
    // A one-digit group anywhere but first: ISBNs (`0-306-40615-2`), versions, lists. After
    // a country code it is an area code (`+33 1 99 00 12 34`).
    if !run.starts_with('+') && groups.iter().skip(1).any(|g| g.len() == 1) {
        return true;
    }
    // Dots and dashes mixed: `1.2.3-4`, `2024-03.15`.
    if seps.contains(&'.') && seps.contains(&'-') {
        return true;
    }
    if body.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    super::card::is_card(&digits)
}

/// `taken`: spans other detectors found; a number that would lose to one of them in
/// `Detectors::find` (it starts inside it) is not parsed at all, which saves libphonenumber's
/// work on the digit groups of cards and IBANs.
pub(super) fn find(
    text: &str,
    region: Id,
    taken: &[(usize, usize)],
    push: &mut impl FnMut(usize, usize),
) {
    let loses = |start: usize, end: usize| {
        taken
            .iter()
            .any(|&(s, e)| s <= start && start < e && (s < start || e >= end))
    };
    for m in CANDIDATE.find_iter(text) {
        let run = m.as_str();
        let digit_count = run.bytes().filter(u8::is_ascii_digit).count();
        if digit_count < MIN_DIGITS {
            continue;
        }
        // Parts between spaces, so that a number among other digits (`2 x 201-555-0123`,
        // `on 15.03.2024 201 555 0123`) is still found: earliest start first, longest first.
        let mut parts: Vec<(usize, usize)> = Vec::new();
        let mut at = m.start();
        for piece in run.split(' ') {
            if !piece.is_empty() {
                parts.push((at, at + piece.len()));
            }
            at += piece.len() + 1;
        }
        let mut i = 0;
        while i < parts.len() {
            let mut hit = None;
            for j in (i + 1..=parts.len().min(i + MAX_PARTS)).rev() {
                let (start, end) = (parts[i].0, parts[j - 1].1);
                if !loses(start, end) && accept(text, start, end, region) {
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

fn accept(text: &str, mut start: usize, mut end: usize, region: Id) -> bool {
    // An unmatched parenthesis belongs to the prose around the number.
    let span = &text[start..end];
    let (open, close) = (span.matches('(').count(), span.matches(')').count());
    if open != close {
        if span.starts_with('(') && open > close {
            start += 1;
        } else if span.ends_with(')') && close > open {
            end -= 1;
        } else {
            return false;
        }
    }
    let run = &text[start..end];
    if run.starts_with('+') && run[1..].starts_with(' ') {
        return false;
    }
    let digits = run.bytes().filter(u8::is_ascii_digit).count();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) || other_shape(run) {
        return false;
    }
    let plus = run.starts_with('+');
    if super::glued(text, start, end) {
        return false;
    }
    // What a currency sign or a decimal mark says: `$ 2015550123`, `2 015 550,12`.
    let money = ['$', '€', '£', '¥', '₹', '#', '№'];
    if text[..start].trim_end_matches(' ').ends_with(money)
        || text[end..].trim_start_matches(' ').starts_with(money)
    {
        return false;
    }
    let after = text[end..].trim_start_matches(' ');
    if [
        "EUR", "USD", "GBP", "CHF", "JPY", "dollars", "euros", "Euro",
    ]
    .iter()
    .any(|w| after.starts_with(w))
    {
        return false;
    }
    if !plus {
        let context = lower_context(text, start, 32);
        let phone_word = context
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| PHONE_WORDS.iter().any(|w| word.starts_with(w)))
            || PHONE_PHRASES.iter().any(|p| context.contains(p));
        if !phone_word {
            if super::last_words(text, start, 2)
                .iter()
                .any(|w| OTHER_WORDS.contains(&w.as_str()))
            {
                return false;
            }
            // Thousands grouping (`2 015 550 123`, `2.015.550.123`) is an amount or a count.
            let groups: Vec<&str> = run
                .split(|c: char| !c.is_ascii_digit())
                .filter(|g| !g.is_empty())
                .collect();
            if groups.len() >= 3 && groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3)
            {
                return false;
            }
            let separated = run.bytes().any(|b| !b.is_ascii_digit());
            if !separated {
                return false;
            }
        }
    }
    // A number with its country code is parsed without a region: phonenumber 0.3 strips the
    // given region's national prefix from it (the `1` of `+44 161 …` under `US`).
    let region = if plus { None } else { Some(region) };
    match phonenumber::parse(region, run) {
        Ok(number) => phonenumber::is_valid(&number),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use phonenumber::country::Id;

    fn found_in(text: &str, region: Id) -> Vec<&str> {
        let mut out = Vec::new();
        super::find(text, region, &[], &mut |s, e| out.push(&text[s..e]));
        out
    }

    fn found(text: &str) -> Vec<&str> {
        found_in(text, Id::US)
    }

    #[test]
    fn numbers_as_people_write_them() {
        for (text, want) in [
            ("call me at (201) 555-0123 after five", "(201) 555-0123"),
            ("my cell is 201-555-0147.", "201-555-0147"),
            ("tel. 201.555.0199", "201.555.0199"),
            ("+1 415 555 0132", "+1 415 555 0132"),
            ("toll free 1-800-555-0199", "1-800-555-0199"),
            ("London office: +44 20 7946 0958", "+44 20 7946 0958"),
            ("Manchester +44 161 496 0753", "+44 161 496 0753"),
            ("mobile +44 20 7946 0018", "+44 20 7946 0018"),
            ("appelez le +33 1 99 00 12 34", "+33 1 99 00 12 34"),
            ("ring +61 491 570 156 tomorrow", "+61 491 570 156"),
            ("call 2015550123", "2015550123"),
            ("2 x 201-555-0123", "201-555-0123"),
        ] {
            assert_eq!(found(text), [want], "{text}");
        }
    }

    #[test]
    fn the_region_reads_national_numbers() {
        assert_eq!(found_in("Tel. 020 7946 0321", Id::GB), ["020 7946 0321"]);
        assert!(found_in("Tel. 020 7946 0321", Id::US).is_empty());
        assert_eq!(found_in("tél 01 99 00 45 67", Id::FR), ["01 99 00 45 67"]);
    }

    #[test]
    fn a_long_run_of_digit_groups_is_read_in_windows() {
        let text = "12 ".repeat(5_000) + "call 201-555-0123";
        let start = std::time::Instant::now();
        assert_eq!(found(&text), ["201-555-0123"]);
        // Every start against every end would be 12.5 million parses here.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn near_misses() {
        for text in [
            "due 2024-03-15",
            "am 15.03.2024 um 10:30",
            "on 03/15/2024",
            "at 10:30:15",
            "order 2015550123",
            "Order #201-555-0123",
            "invoice no. 2015550147",
            "release 2.14.3",
            "build 10.0.19045.3693",
            "total $2,015,550.12",
            "€ 1.234.567,89",
            "card 4111 1111 1111 1111",
            "server 192.0.2.10",
            "ISBN 978-3-16-148410-0",
            "ISBN 0-306-40615-2",
            "run 1234567890123456789",
            "id 20155501234567",
            "tracking 1Z999AA10123456784",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
