//! E-mail addresses as people write them: an RFC 5322 dot-atom local part and a domain of
//! dot-separated labels ending in a top-level domain of letters (Unicode letters for IDNs, or
//! its `xn--` form).
//!
//! The local part takes letters, digits and `_ % + ~ -` (and `.` between them). RFC 5322 also
//! allows `! # $ & ' * / = ? ^ { | }` and backquotes, but in chat text those are delimiters of the
//! surrounding code or prose (`?email=`, `'…'`, `a|b`) far more often than parts of an address,
//! and taking them would widen the span into its neighbours. Quoted local parts and
//! address literals (`user@[192.0.2.1]`) are rare enough to leave out.
//!
//! A domain needs at least one dot: `user@localhost`, `git@host` and `pkg@1.2` are shapes of
//! code (ssh remotes, npm specifiers, decorators), not of addresses someone is sharing.

use regex::Regex;
use std::sync::LazyLock;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        [\p{L}\p{N}_%+~-]+ (?: \. [\p{L}\p{N}_%+~-]+ )*
        @
        (?: [\p{L}\p{N}] (?: [\p{L}\p{N}-]{0,61} [\p{L}\p{N}] )? \. )+
        (?: \p{L}{2,63} | xn--[a-zA-Z0-9-]{2,59} )
        ",
    )
    .expect("email pattern")
});

fn local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '%' | '+' | '~' | '-' | '.')
}

fn domain_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '.')
}

/// Only the stretch of text around each `@` is handed to the pattern: its Unicode classes
/// would otherwise cost a DFA walk over every letter of the text.
pub(super) fn find(text: &str, push: &mut impl FnMut(usize, usize)) {
    let mut done = 0;
    for (at, _) in text.match_indices('@') {
        if at < done {
            continue;
        }
        let mut left = text[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| local_char(c))
            .last()
            .map_or(at, |(i, _)| i);
        let mut right = text[at + 1..]
            .char_indices()
            .take_while(|&(_, c)| domain_char(c))
            .last()
            .map_or(at + 1, |(i, c)| at + 1 + i + c.len_utf8());
        // In scripts written without spaces the address starts and ends where the script
        // changes (`メールはtanaka@rei.exampleです`).
        if let Some((i, c)) = text[left..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| super::unspaced(c))
        {
            if text[left + i + c.len_utf8()..at]
                .chars()
                .any(|c| c.is_ascii_alphanumeric())
            {
                left += i + c.len_utf8();
            }
        }
        if let Some(i) = text[at + 1..right].find(|c: char| c.is_ascii_alphanumeric()) {
            if let Some((j, _)) = text[at + 1 + i..right]
                .char_indices()
                .find(|&(_, c)| super::unspaced(c))
            {
                right = at + 1 + i + j;
            }
        }
        let Some(m) = EMAIL.find(&text[left..right]) else {
            continue;
        };
        let (start, end) = (left + m.start(), left + m.end());
        done = end;
        // The pattern cannot see what precedes its start: an address glued to a word by `.` or
        // `@` (`a.@b`, `x@y@example.com`) is part of something else.
        if super::char_before(text, start).is_some_and(|c| c == '@' || c == '.') {
            continue;
        }
        // The password of a URL's userinfo (`postgres://app:s3cret@db.example.com`) is a
        // credential, not an address.
        if super::char_before(text, start) == Some(':') {
            let token_start = text[..start]
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
                .map_or(0, |(i, c)| i + c.len_utf8());
            if text[token_start..start].contains("://") {
                continue;
            }
        }
        // Nor what follows: `bob@example.com2` or `bob@example.co_uk` is a longer token.
        if super::char_at(text, end)
            .is_some_and(|c| (c.is_alphanumeric() && !super::unspaced(c)) || c == '_' || c == '@')
        {
            continue;
        }
        push(start, end);
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
    fn addresses_as_people_write_them() {
        for (text, want) in [
            ("mail me at jane.doe@example.com.", "jane.doe@example.com"),
            (
                "<j_doe+news@mail.example.org>",
                "j_doe+news@mail.example.org",
            ),
            ("(ops-team@sub.example.net)", "ops-team@sub.example.net"),
            ("écrivez à élodie@exemple.example", "élodie@exemple.example"),
            ("邮件 用户@例子.测试 谢谢", "用户@例子.测试"),
            (
                "田中さんのメールはtanaka.h@rei.exampleです。",
                "tanaka.h@rei.example",
            ),
            (
                "mailto:first.last@xn--bcher-kva.example",
                "first.last@xn--bcher-kva.example",
            ),
        ] {
            assert_eq!(found(text), [want], "{text}");
        }
    }

    #[test]
    fn code_and_handles_are_not_addresses() {
        for text in [
            "ssh git@localhost",
            "npm i left-pad@1.3.0",
            "@decorator on a method",
            "twitter @example_user",
            "x@y@example.com",
            "a.@example.com",
            "bob@example.com2",
            "version@2.0",
            "postgres://app:s3cret-pass@db.example.com/x",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
