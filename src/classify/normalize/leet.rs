//! Digit- and symbol-for-letter spellings ("k1ll", "$ex"), folded for the rules that opt in
//! (`leet = true`). Look-alike letters of other scripts need no opting in: the folded reading
//! maps them for every rule (see `chars::push_ascii_lookalike`).

/// `norm` (a normalised reading) with each ASCII substitution folded to the letter it stands for.
pub fn fold_leet(norm: &str) -> String {
    // Every substitution maps an ASCII byte to an ASCII byte, and UTF-8 never uses ASCII bytes
    // inside a multi-byte character, so a byte-wise map keeps the text valid UTF-8 and every
    // offset where it was: a match found in the folding is at the same place in `norm`.
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

#[cfg(test)]
mod tests {
    use super::fold_leet;

    #[test]
    fn folds_ascii_substitutions_only() {
        assert_eq!(fold_leet("k1ll 4ll th3m"), "kill all them");
        assert_eq!(fold_leet("ünï c0dé $€"), "ünï codé s€");
        assert_eq!(fold_leet("привет"), "привет");
        assert_eq!(fold_leet(""), "");
    }
}
