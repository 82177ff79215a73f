//! Text normalisation applied before deterministic rules: the cheapest defence against obfuscated
//! spellings (accents, look-alike letters, full-width letters, ligatures, invisible characters,
//! tag characters, case games).
//!
//! A text has up to three readings, and a rule fires when it matches any of them:
//!
//! - **written**: NFKC, tag characters decoded to the ASCII they encode, default-ignorable and
//!   control characters deleted, lower-cased, whitespace runs collapsed to one space. Accents and
//!   other scripts stay as written, so a regex written with them still matches.
//! - **folded**: the same, but NFKD with the combining marks of every character that ends up
//!   ASCII dropped (`zórble`, `İ`), and every other character replaced by the ASCII it passes for
//!   where there is one (UTS #39 confusable prototypes, the Latin small capitals, UCD `Dash` as
//!   `-`): Cyrillic `ріре`, Greek `ΡΙΡΕ`, `ᴘɪᴘᴇ`, `pipe–bomb` all read `pipe bomb`.
//! - **split**: the folded reading with a space where invisible characters stood between two
//!   letters or digits (`pipe\u{200B}bomb`), since they may separate words as well as hide
//!   them. Deleting them (the other two readings) catches `pi\u{200B}pe`.
//!
//! Readings that come out the same are kept once: ASCII text without control characters has
//! only the written one, at the cost of one pass over its bytes.

mod chars;
mod leet;
mod small_capitals;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use chars::{is_ascii_control, is_ignorable, push_ascii_lookalike, tag_ascii};
pub use leet::fold_leet;

/// One of the ways a text is read (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Written,
    Folded,
    Split,
}

impl Reading {
    pub const ALL: [Reading; 3] = [Reading::Written, Reading::Folded, Reading::Split];
}

/// A text's readings, normalised. A reading that equals the one before it is not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    written: String,
    folded: Option<String>,
    split: Option<String>,
}

impl Readings {
    pub fn get(&self, r: Reading) -> &str {
        match r {
            Reading::Written => &self.written,
            Reading::Folded => self.folded.as_deref().unwrap_or(&self.written),
            Reading::Split => self
                .split
                .as_deref()
                .or(self.folded.as_deref())
                .unwrap_or(&self.written),
        }
    }

    /// Whether reading `r` differs from the readings before it.
    pub fn has(&self, r: Reading) -> bool {
        match r {
            Reading::Written => true,
            Reading::Folded => self.folded.is_some(),
            Reading::Split => self.split.is_some(),
        }
    }

    /// The distinct readings, written first.
    pub fn distinct(&self) -> impl Iterator<Item = (Reading, &str)> {
        Reading::ALL
            .into_iter()
            .filter(|&r| self.has(r))
            .map(|r| (r, self.get(r)))
    }

    pub fn written(&self) -> &str {
        &self.written
    }
}

/// The written reading alone (keyword compilation, the case-folding analysis, tools).
pub fn normalize(text: &str) -> String {
    if text.is_ascii() {
        ascii(text).0
    } else {
        written(text)
    }
}

/// Whether `text` starts, and whether it ends, with a character that the written reading deletes.
/// Like one inside a text, it may stand between two words: see `joined`. Accents at the edge
/// belong to a letter, so they are looked past (`e` | `\u{300}\u{200B}bomb`).
pub fn hidden_edges(text: &str) -> (bool, bool) {
    let pick = |c: &char| is_ignorable(*c) || !is_combining_mark(*c);
    let hidden = |c: Option<char>| c.is_some_and(|c| is_ignorable(c) && tag_ascii(c).is_none());
    (
        hidden(text.chars().find(pick)),
        hidden(text.chars().rev().find(pick)),
    )
}

/// Every reading of `text`.
pub fn readings(text: &str) -> Readings {
    if text.is_ascii() {
        // Nothing to decompose, decode or fold: only control characters can make a split.
        let (written, splits) = ascii(text);
        let split = (!splits.is_empty()).then(|| with_spaces_at(&written, &splits));
        return Readings {
            written,
            folded: None,
            split,
        };
    }
    let written = written(text);
    let (folded, splits) = folded(text);
    let split = (!splits.is_empty()).then(|| with_spaces_at(&folded, &splits));
    let folded = (folded != written).then_some(folded);
    Readings {
        written,
        folded,
        split,
    }
}

/// The written reading of ASCII text, and the offsets in it where control characters stood
/// between two letters or digits.
fn ascii(text: &str) -> (String, Vec<usize>) {
    let mut out = Vec::with_capacity(text.len());
    let mut splits = Vec::new();
    let mut last_space = false;
    let mut hidden = false;
    for &b in text.as_bytes() {
        if is_ascii_control(b) {
            hidden = true;
            continue;
        }
        // char::is_whitespace on ASCII: space, \t, \n, \x0B, \x0C, \r.
        if matches!(b, b' ' | b'\t'..=b'\r') {
            if !last_space {
                out.push(b' ');
            }
            last_space = true;
        } else {
            if hidden
                && b.is_ascii_alphanumeric()
                && out.last().is_some_and(u8::is_ascii_alphanumeric)
            {
                splits.push(out.len());
            }
            last_space = false;
            out.push(b.to_ascii_lowercase());
        }
        hidden = false;
    }
    (String::from_utf8(out).expect("ASCII in, ASCII out"), splits)
}

/// Tag characters decoded to the ASCII they encode, with a zero-width space (ignorable) where a
/// run of them starts and ends: hidden text is a text of its own, so in the split reading it
/// does not run into the visible word next to it.
fn decode_tags(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut in_tags = false;
    text.chars().flat_map(move |c| {
        let is_tag = matches!(c, '\u{E0000}'..='\u{E007F}');
        let c = tag_ascii(c).unwrap_or(c);
        let edge = (is_tag != in_tags).then_some('\u{200B}');
        in_tags = is_tag;
        edge.into_iter().chain(std::iter::once(c))
    })
}

/// The written reading of non-ASCII text.
fn written(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in decode_tags(text).filter(|c| !is_ignorable(*c)).nfkc() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = false;
        // to_lowercase can expand, with a mark (`İ` -> `i` + U+0307).
        for l in c.to_lowercase() {
            // A combining mark NFKC could not fold into an ASCII letter before it (strike-through
            // U+0336 over `p`) leaves the word readable but no longer spelled as a keyword. Marks
            // after other letters are kept: they belong to their scripts' spelling.
            if is_combining_mark(l)
                && out
                    .chars()
                    .next_back()
                    .is_some_and(|p| p.is_ascii_alphanumeric())
            {
                continue;
            }
            out.push(l);
        }
    }
    out
}

/// The folded reading of non-ASCII text, and the offsets in it where ignorable characters stood
/// between two letters or digits.
fn folded(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut splits = Vec::new();
    let mut piece = String::new();
    let mut last_space = false;
    // The last base character came out as ASCII: its combining marks are accents, dropped. So
    // are marks with no base before them, which belong to the end of the text before this one
    // (a text part cut between a letter and its accent).
    let mut base_ascii = true;
    // Ignorable characters since the last base character.
    let mut hidden = false;
    for c in decode_tags(text).nfkd() {
        if is_ignorable(c) {
            hidden = true;
            continue;
        }
        piece.clear();
        if is_combining_mark(c) {
            // A few spacing marks pass for a letter of their own (Kannada `ಂ` for `o`, so
            // `bಂmb`): their prototype is that letter. Every other mark is an accent, even one
            // whose prototype is a letter that passes for ASCII in turn (U+0345 is `ι`).
            let mut buf = [0u8; 4];
            piece.extend(unicode_security::skeleton(c.encode_utf8(&mut buf)));
            let letter = !piece.is_empty() && piece.chars().all(|p| p.is_ascii_alphanumeric());
            piece.make_ascii_lowercase();
            if !letter {
                piece.clear();
                if !base_ascii {
                    out.push(c);
                }
                continue;
            }
        } else if c.is_ascii() {
            piece.push(c.to_ascii_lowercase());
        } else if !push_ascii_lookalike(c, &mut piece) {
            piece.extend(c.to_lowercase());
        }
        base_ascii = piece.is_ascii();
        for p in piece.chars() {
            if p.is_whitespace() {
                if !last_space {
                    out.push(' ');
                }
                last_space = true;
            } else {
                if hidden
                    && p.is_alphanumeric()
                    && out.chars().next_back().is_some_and(char::is_alphanumeric)
                {
                    splits.push(out.len());
                }
                last_space = false;
                out.push(p);
            }
            hidden = false;
        }
    }
    (out, splits)
}

/// `text` with a space inserted at each of the (ascending) byte offsets.
fn with_spaces_at(text: &str, offsets: &[usize]) -> String {
    let mut out = String::with_capacity(text.len() + offsets.len());
    let mut from = 0;
    for &at in offsets {
        out.push_str(&text[from..at]);
        out.push(' ');
        from = at;
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<&'static str> {
        let r = readings(text);
        Reading::ALL
            .iter()
            .map(|&x| &*r.get(x).to_string().leak())
            .collect()
    }

    #[test]
    fn written_reading_defeats_common_obfuscation() {
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
        assert_eq!(normalize("a\u{0085}b"), "a b"); // NEL is whitespace, not dropped
                                                    // The written reading keeps accents and other scripts as written.
        assert_eq!(normalize("क्ष"), "क्ष");
        assert_eq!(normalize("cafe\u{0301}"), "café");
        assert_eq!(normalize("ріре"), "ріре");
    }

    #[test]
    fn folded_reading_strips_accents_and_look_alikes() {
        for (text, want) in [
            ("zórble", "zorble"),                 // precomposed accent
            ("zo\u{0301}rble", "zorble"),         // combining accent
            ("PİPE BOMB", "pipe bomb"),           // dotted capital I
            ("ᴘɪᴘᴇ ʙᴏᴍʙ", "pipe bomb"),           // small capitals
            ("ріре вомв", "pipe bomb"),           // Cyrillic
            ("РІРЕ ВОМВ", "pipe bomb"),           // Cyrillic capitals
            ("ΡΙΡΕ", "pipe"),                     // Greek capitals
            ("pipe\u{2013}bomb", "pipe-bomb"),    // en dash
            ("pipe\u{2014}bomb", "pipe-bomb"),    // em dash
            ("pipe\u{2800}bomb", "pipe bomb"),    // Braille blank
            ("p̶i̶p̶e̶ ̶b̶o̶m̶b̶", "pipe bomb"),           // strike-through everywhere
            ("don’t", "don't"),                   // typographic apostrophe
            ("ｐｉｐｅ ｂｏｍｂ", "pipe bomb"),   // full-width
            ("\u{0300}e bomb", "e bomb"),         // an accent cut from its letter
            ("b\u{0C82}mb", "bomb"),              // a spacing mark that passes for a letter
            ("zo\u{0301}\u{0366}rble", "zorble"), // a combining letter is an accent
            ("p\u{0345}ipe", "pipe"), // a mark whose prototype is Greek iota is an accent
        ] {
            assert_eq!(readings(text).get(Reading::Folded), want, "{text:?}");
        }
        // Letters with no ASCII look-alike keep their spelling, marks included; the others are
        // folded even in a word of their own script (the written reading keeps that word whole).
        assert_eq!(readings("क्ष").get(Reading::Folded), "क्ष");
        assert_eq!(readings("жизнь").get(Reading::Folded), "жи3hb");
        assert_eq!(readings("жизнь").get(Reading::Written), "жизнь");
    }

    #[test]
    fn tag_characters_read_as_the_ascii_they_encode() {
        let tags: String = "pipe bomb"
            .chars()
            .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
            .collect();
        let r = readings(&format!("hello{tags}\u{E007F}"));
        assert_eq!(r.get(Reading::Written), "hellopipe bomb");
        assert_eq!(r.get(Reading::Split), "hello pipe bomb");
    }

    #[test]
    fn invisible_characters_both_hide_and_separate() {
        for sep in [
            '\u{200B}', '\u{00AD}', '\u{3164}', '\u{0007}', '\u{2060}', '\u{FEFF}',
        ] {
            let r = readings(&format!("pi{sep}pe{sep}bomb"));
            assert_eq!(r.get(Reading::Written), "pipebomb", "{sep:?}");
            assert_eq!(r.get(Reading::Split), "pi pe bomb", "{sep:?}");
        }
        // Next to a space or a symbol an invisible character separates nothing new.
        assert!(!readings("a \u{200B}b ❤\u{FE0F} x").has(Reading::Split));
        assert_eq!(all("a\u{0}b"), ["ab", "ab", "a b"]);
    }

    #[test]
    fn plain_ascii_has_one_reading() {
        let r = readings("Hello  World\t\nAgain 123 !?");
        assert_eq!(r.distinct().count(), 1);
        assert_eq!(r.written(), "hello world again 123 !?");
    }

    #[test]
    fn ascii_fast_path_matches_the_general_path() {
        for t in [
            "Hello  World\t\nAgain",
            "MiXeD 123 !?",
            "",
            "   ",
            "a\x0B\x0C\rb\x1Fc\x00d\x7F",
            "x\x00y z",
        ] {
            let fast = readings(t);
            assert_eq!(fast.written(), written(t), "{t:?}");
            let (f, s) = folded(t);
            assert_eq!(fast.get(Reading::Folded), f, "{t:?}");
            assert_eq!(fast.get(Reading::Split), with_spaces_at(&f, &s), "{t:?}");
        }
    }

    #[test]
    fn readings_are_idempotent() {
        for t in [
            "zórble",
            "ріре вомв",
            "pi\u{200B}pe",
            "ᴘɪᴘᴇ",
            "İstanbul",
            "ǅemal",
            "ß ﬀ ½",
        ] {
            let r = readings(t);
            for (k, text) in r.distinct() {
                assert_eq!(readings(text).get(k), text, "{t:?} {k:?}");
            }
        }
    }
}
