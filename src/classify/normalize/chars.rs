//! What the Unicode standards say about one character, as far as the rules' readings need it:
//! whether it renders as nothing (UCD `Default_Ignorable_Code_Point`, and control characters),
//! whether it is a dash (UCD `Dash`), what a tag character spells, and which ASCII text it passes
//! for (UTS #39 confusable prototypes, and the Latin small capitals).

use icu_properties::props::{Dash, DefaultIgnorableCodePoint};
use icu_properties::CodePointSetData;

use super::small_capitals::SMALL_CAPITALS;

/// Renders as nothing: default-ignorable code points (zero-width space and joiners, soft hyphen,
/// bidi controls, variation selectors, Hangul fillers, tags, ...) and control characters other
/// than whitespace. Inserted into a word, they hide it from a keyword; between two words, they
/// are all that separates them.
pub(super) fn is_ignorable(c: char) -> bool {
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || (c.is_control() && !c.is_whitespace())
}

/// ASCII control bytes other than whitespace: [`is_ignorable`] for ASCII.
pub(super) fn is_ascii_control(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t'..=b'\r')) || b == 0x7F
}

pub(super) fn is_dash(c: char) -> bool {
    CodePointSetData::new::<Dash>().contains(c)
}

/// The tag characters U+E0020..U+E007E mirror printable ASCII. They render as nothing, but a
/// model reads them as the ASCII they encode, so a rule must too.
pub(super) fn tag_ascii(c: char) -> Option<char> {
    match c {
        '\u{E0020}'..='\u{E007E}' => char::from_u32(c as u32 - 0xE0000),
        _ => None,
    }
}

fn small_capital(c: char) -> Option<char> {
    SMALL_CAPITALS
        .binary_search_by_key(&c, |&(s, _)| s)
        .ok()
        .map(|i| SMALL_CAPITALS[i].1)
}

/// Appends to `out` the lower-case ASCII text that `c` (a base character, not ASCII, already
/// compatibility-decomposed) passes for, and says whether there was one; `out` is left as it was
/// otherwise.
///
/// The character is tried as written first, then in its other case: a lower-case letter also
/// stands for its capital once text is lower-cased (Cyrillic `в` looks like a small capital `ʙ`
/// only, but its capital `В` is a `B`).
pub(super) fn push_ascii_lookalike(c: char, out: &mut String) -> bool {
    if let Some(l) = small_capital(c) {
        out.push(l);
        return true;
    }
    if is_dash(c) {
        out.push('-');
        return true;
    }
    let upper = single(c.to_uppercase());
    let lower = single(c.to_lowercase());
    for form in [Some(c), upper, lower].into_iter().flatten() {
        if push_prototype(form, out) {
            return true;
        }
    }
    false
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// Appends the UTS #39 prototype of `c`, lower-cased, when it is ASCII once its combining marks
/// are dropped and its small capitals read as letters (`Б` -> `b̄` -> `b`, `в` -> `ʙ` -> `b`).
/// Prototypes are case-sensitive and the one for capital `I` is `l`: a capital whose prototype is
/// exactly `l` is read as `i`.
fn push_prototype(c: char, out: &mut String) -> bool {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return true;
    }
    let start = out.len();
    let mut buf = [0u8; 4];
    let mut prototype = unicode_security::skeleton(c.encode_utf8(&mut buf)).peekable();
    if c.is_uppercase() && prototype.next_if_eq(&'l').is_some() && prototype.peek().is_none() {
        // The capital-I class: read as capital I lower-cases.
        out.push('i');
        return true;
    }
    for p in prototype {
        if unicode_normalization::char::is_combining_mark(p) {
            continue;
        }
        if p.is_ascii() {
            out.push(p.to_ascii_lowercase());
        } else if let Some(l) = small_capital(p) {
            out.push(l);
        } else {
            out.truncate(start);
            return false;
        }
    }
    if out.len() == start {
        // A prototype of marks only passes for nothing.
        return false;
    }
    // ASCII text is not folded, so a prototype that is the prototype of an ASCII letter (`rn`,
    // the prototype of `m`) means that letter.
    if let Some(&(_, letter)) = ascii_letter_prototypes()
        .iter()
        .find(|(p, _)| *p == out[start..])
    {
        out.truncate(start);
        out.push(letter);
    }
    true
}

/// The lower-case ASCII letters whose UTS #39 prototype is not the letter itself, by prototype.
fn ascii_letter_prototypes() -> &'static [(String, char)] {
    static TABLE: std::sync::OnceLock<Vec<(String, char)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        ('a'..='z')
            .filter_map(|c| {
                let p: String = unicode_security::skeleton(c.encode_utf8(&mut [0; 4]))
                    .map(|p| p.to_ascii_lowercase())
                    .collect();
                (p != c.to_string()).then_some((p, c))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookalike(c: char) -> Option<String> {
        let mut s = String::new();
        push_ascii_lookalike(c, &mut s).then_some(s)
    }

    #[test]
    fn standard_properties() {
        for c in [
            '\u{200B}',
            '\u{00AD}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{E0001}',
            '\u{115F}',
            '\u{0007}',
            '\u{180E}',
            '\u{2064}',
        ] {
            assert!(is_ignorable(c), "{c:?}");
        }
        for c in ['a', ' ', '\n', '\u{2800}', '\u{00A0}', 'é'] {
            assert!(!is_ignorable(c), "{c:?}");
        }
        assert!(is_dash('\u{2013}') && is_dash('\u{2014}') && is_dash('-'));
        assert_eq!(ascii_letter_prototypes(), [("rn".to_string(), 'm')]);
        assert_eq!(tag_ascii('\u{E0070}'), Some('p'));
        assert_eq!(tag_ascii('\u{E007F}'), None); // cancel tag: ignorable, spells nothing
    }

    #[test]
    fn lookalikes() {
        let cases = [
            ('р', "p"),        // Cyrillic er
            ('Р', "p"),        // its capital
            ('і', "i"),        // Ukrainian i
            ('І', "i"),        // its capital, whose prototype is `l`
            ('Ι', "i"),        // Greek capital iota, likewise
            ('ⅼ', "l"),        // already NFKC'd in practice; the prototype agrees
            ('в', "b"),        // via its capital (its own prototype is a small capital)
            ('ᴘ', "p"),        // small capital
            ('ɪ', "i"),        // small capital, also a confusable
            ('ο', "o"),        // Greek omicron
            ('ν', "v"),        // Greek nu as written
            ('κ', "k"),        // kra as written, K as its capital
            ('ı', "i"),        // dotless i
            ('\u{2013}', "-"), // en dash
            ('\u{2800}', " "), // Braille blank
            ('’', "'"),
            ('ՠ', "m"), // Armenian, prototype `rn` like `m`'s
        ];
        for (c, want) in cases {
            assert_eq!(lookalike(c).as_deref(), Some(want), "{c:?}");
        }
        // Letters of other scripts that pass for no ASCII keep their spelling.
        for c in ['ж', 'ф', 'λ', 'क', '中'] {
            assert_eq!(lookalike(c), None, "{c:?}");
        }
    }
}
