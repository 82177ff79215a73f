//! What a stream has put in each text field so far, for APIs whose streams fill a field with
//! deltas and then send it whole (Responses' `.done` events, `output_item.done`, the final
//! `response.completed`). The SDKs rebuild the reply from those whole values, so they are read;
//! what the deltas already carried is not judged twice. A field is kept as its length and a
//! running digest, not its text, so that the stream's state stays small to copy.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub(super) struct Filled {
    /// By (output index, path of the field in its item).
    fields: BTreeMap<(u64, String), Field>,
}

#[derive(Debug, Clone, Default)]
struct Field {
    len: usize,
    digest: Sha256,
}

/// What a whole value adds to what the field held.
#[derive(Debug, PartialEq)]
pub(super) enum Whole<'a> {
    /// Nothing: the deltas carried it all.
    Same,
    /// Text the client sees after what it already has (all of it when no delta came).
    More(&'a str),
    /// The field now reads differently from what was streamed: this text replaces it.
    Other(&'a str),
}

impl Filled {
    /// `delta` was appended to the field.
    pub(super) fn append(&mut self, at: (u64, &str), delta: &str) {
        let f = self.field(at);
        f.len += delta.len();
        f.digest.update(delta.as_bytes());
    }

    /// The field is sent whole as `value`; it holds `value` from now on.
    pub(super) fn whole<'a>(&mut self, at: (u64, &str), value: &'a str) -> Whole<'a> {
        let f = self.field(at);
        if value.len() >= f.len && value.is_char_boundary(f.len) {
            let (head, rest) = value.split_at(f.len);
            if Sha256::digest(head.as_bytes()) == f.digest.clone().finalize() {
                f.len = value.len();
                f.digest.update(rest.as_bytes());
                return if rest.is_empty() {
                    Whole::Same
                } else {
                    Whole::More(rest)
                };
            }
        }
        *f = Field {
            len: value.len(),
            digest: Sha256::new_with_prefix(value.as_bytes()),
        };
        Whole::Other(value)
    }

    fn field(&mut self, (index, path): (u64, &str)) -> &mut Field {
        self.fields.entry((index, path.to_string())).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_values_add_only_what_the_deltas_did_not_carry() {
        let mut f = Filled::default();
        assert_eq!(
            f.whole((0, "text"), "all at once"),
            Whole::More("all at once")
        );
        assert_eq!(f.whole((0, "text"), "all at once"), Whole::Same);
        f.append((1, "text"), "Grü");
        f.append((1, "text"), "ße");
        assert_eq!(f.whole((1, "text"), "Grüße"), Whole::Same);
        assert_eq!(f.whole((1, "text"), "Grüße!"), Whole::More("!"));
        assert_eq!(f.whole((1, "text"), "Grüße!"), Whole::Same);
        assert_eq!(f.whole((1, "text"), "Hello"), Whole::Other("Hello"));
        assert_eq!(f.whole((1, "text"), "Hello"), Whole::Same);
        // A shorter value, or one cut inside a character, is a different text.
        f.append((2, "text"), "ab");
        assert_eq!(f.whole((2, "text"), "a"), Whole::Other("a"));
        f.append((3, "t"), "\u{e9}");
        assert_eq!(f.whole((3, "t"), "e"), Whole::Other("e"));
        assert_eq!(f.whole((4, "t"), ""), Whole::Same);
    }
}
