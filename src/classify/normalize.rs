//! Text normalisation applied before deterministic rules: the cheapest defence against obfuscated
//! spellings (full-width letters, ligatures, zero-width joiners, bidi overrides, case games).

use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing (or reorder text) and are used to split words so that a
/// keyword no longer matches: zero-width space/joiners, word joiner, BOM, soft hyphen, bidi
/// controls, variation selectors, tags (Unicode's Default_Ignorable_Code_Point), and control
/// characters other than whitespace.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
        || (c.is_control() && !c.is_whitespace())
}

/// ASCII control bytes other than whitespace: they render as nothing.
fn is_ascii_control(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t'..=b'\r')) || b == 0x7F
}

/// NFKC, invisible characters removed, lower-cased, whitespace runs collapsed to one space.
pub fn normalize(text: &str) -> String {
    // Most traffic is ASCII, which NFKC leaves unchanged and which has no invisible characters.
    if text.is_ascii() {
        let mut out = Vec::with_capacity(text.len());
        let mut last_space = false;
        for &b in text.as_bytes() {
            if is_ascii_control(b) {
                continue;
            }
            // char::is_whitespace on ASCII: space, \t, \n, \x0B, \x0C, \r.
            if matches!(b, b' ' | b'\t'..=b'\r') {
                if !last_space {
                    out.push(b' ');
                }
                last_space = true;
            } else {
                last_space = false;
                out.push(b.to_ascii_lowercase());
            }
        }
        return String::from_utf8(out).expect("ASCII in, ASCII out");
    }
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.nfkc().filter(|c| !is_invisible(*c)) {
        // A combining mark NFKC could not fold into an ASCII letter before it (strike-through
        // U+0336 over `p`) leaves the word readable but no longer spelled as a keyword. Marks
        // after other letters are kept: they belong to their scripts' spelling.
        if unicode_normalization::char::is_combining_mark(c)
            && out
                .chars()
                .next_back()
                .is_some_and(|p| p.is_ascii_alphanumeric())
        {
            continue;
        }
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = false;
        // to_lowercase can expand (e.g. 'İ'); push every char it yields.
        for l in c.to_lowercase() {
            out.push(l);
        }
    }
    out
}

/// Folds common digit/symbol-for-letter substitutions ("k1ll", "$ex") and Cyrillic or Greek
/// letters that look like Latin ones ("ріре" in Cyrillic), for keyword rules that opt in. NFKC
/// leaves such homoglyphs alone: they are letters of their own scripts.
pub fn fold_leet(norm: &str) -> String {
    if !norm.is_ascii() {
        return norm.chars().map(fold_char).collect();
    }
    // Every substitution maps an ASCII byte to an ASCII byte, and UTF-8 never uses ASCII bytes
    // inside a multi-byte character, so a byte-wise map keeps the text valid UTF-8.
    let folded = norm.bytes().map(fold_ascii).collect();
    String::from_utf8(folded).expect("ASCII-for-ASCII substitutions keep UTF-8 valid")
}

fn fold_ascii(b: u8) -> u8 {
    match b {
        b'0' => b'o',
        b'1' | b'!' | b'|' => b'i',
        b'3' => b'e',
        b'4' | b'@' => b'a',
        b'5' | b'$' => b's',
        b'7' => b't',
        b'8' => b'b',
        b => b,
    }
}

/// One character of lower-cased text folded: ASCII as `fold_ascii`, homoglyphs to the Latin
/// letter they pass for. The text is already lower-cased, so a lower-case letter stands for both
/// its cases here: Cyrillic `в` is folded to `b` because `В` looks like `B`. Letters whose two
/// cases look like different Latin letters (Greek `ν`/`Ν`, `υ`/`Υ`) are left alone.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return fold_ascii(c as u8) as char;
    }
    match c {
        // Cyrillic
        'а' => 'a',
        'в' => 'b',
        'е' | 'ё' => 'e',
        'һ' | 'н' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'м' => 'm',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'с' => 'c',
        'ѕ' => 's',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'ԁ' => 'd',
        'ԝ' => 'w',
        // Greek
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'ζ' => 'z',
        'η' => 'h',
        'ι' => 'i',
        'κ' => 'k',
        'μ' => 'm',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'χ' => 'x',
        // Latin letters outside ASCII that NFKC keeps
        'ɡ' => 'g',
        'ı' => 'i',
        'ɑ' => 'a',
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defeats_common_obfuscation() {
        assert_eq!(normalize("ＫＩＬＬ"), "kill"); // full-width
        assert_eq!(normalize("ki\u{200B}ll"), "kill"); // zero-width space
        assert_eq!(normalize("k\u{202E}ill"), "kill"); // bidi override
        assert_eq!(normalize("ﬁre"), "fire"); // ligature
        assert_eq!(normalize("a \t\n b"), "a b");
        assert_eq!(normalize("K\u{00AD}ILL"), "kill"); // soft hyphen
        assert_eq!(normalize("pi\u{0007}pe bomb"), "pipe bomb"); // control character
        assert_eq!(normalize("pi\u{E0100}pe bomb"), "pipe bomb"); // variation selector 17
        assert_eq!(normalize("pi\u{1D173}pe"), "pipe"); // musical symbol begin beam
        assert_eq!(normalize("p\u{0336}ipe b\u{0336}omb"), "pipe bomb"); // strike-through
                                                                         // Marks that belong to a script's spelling stay; precomposed accents are letters.
        assert_eq!(normalize("क्ष"), "क्ष");
        assert_eq!(normalize("cafe\u{0301}"), "café");
        assert_eq!(normalize("a\u{0085}b"), "a b"); // NEL is whitespace, not dropped
    }

    #[test]
    fn ascii_fast_path_matches_the_general_path() {
        for t in [
            "Hello  World\t\nAgain",
            "MiXeD 123 !?",
            "",
            "   ",
            "a\x0B\x0C\rb\x1Fc\x00d\x7F",
        ] {
            let slow: String = {
                let mut s = String::new();
                let mut last = false;
                for c in t.chars() {
                    if c.is_control() && !c.is_whitespace() {
                        continue;
                    }
                    if c.is_whitespace() {
                        if !last {
                            s.push(' ');
                        }
                        last = true;
                    } else {
                        last = false;
                        s.extend(c.to_lowercase());
                    }
                }
                s
            };
            assert_eq!(normalize(t), slow);
        }
    }

    #[test]
    fn leet_folding() {
        assert_eq!(fold_leet("k1ll 4ll th3m"), "kill all them");
        assert_eq!(fold_leet("ünï c0dé $€"), "ünï codé s€");
        // Homoglyphs: Cyrillic "ріре вомв" (lower-cased from "ВОМВ"), Greek "ρίρε" keeps its accent.
        assert_eq!(fold_leet(&normalize("ріре ВОМВ")), "pipe bomb");
        assert_eq!(fold_leet("κιll"), "kill");
        assert_eq!(fold_leet("привет"), "пpиbet"); // mangled, but only leet rules read it
        for t in ["k1ll 4ll th3m", "plain", ""] {
            assert_eq!(fold_leet(t), t.chars().map(fold_char).collect::<String>());
        }
    }
}
