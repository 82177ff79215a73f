//! The text a model reads across items. A chat template renders the whole conversation as one
//! stream: the text parts of a message one after another, then the next message. A phrase split
//! over two items is still one phrase to the model, so the rules also read the items joined.
//!
//! Per reading (see `normalize`), two joins of every item in document order:
//!
//! - **spaced**: one space between two items, the way templates put a newline or a turn marker
//!   between messages and some join text parts with a newline (`pipe` | `bomb`).
//! - **glued**: nothing between two items of one turn, the way templates that concatenate text
//!   parts render them (`pi` | `pe bomb`); a space between turns. It is only built when it
//!   differs from the spaced join.
//!
//! A turn is a run of consecutive items that the template renders as one speaker's text: the
//! same role (`Source`), conversational (instructions, user, assistant, tool results), and the
//! same top-level field of the request (`messages`, `input`, `system`, `prompt`), so the text
//! parts of one message, consecutive messages of one role (which Anthropic merges into one turn)
//! and the blocks of a system prompt. Tool definitions and calls are JSON to the model: they
//! are only spaced.

use std::ops::Range;
use std::sync::OnceLock;

use super::normalize::{fold_leet, hidden_edges, Reading};
use super::Item;
use crate::wire::Source;

/// The items joined in one reading, and where each item starts in the result.
#[derive(Debug)]
pub struct Joined {
    text: String,
    leet: OnceLock<String>,
    /// Byte offset of each item's text, by item index (ascending).
    starts: Vec<usize>,
}

impl Joined {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn leet(&self) -> &str {
        self.leet.get_or_init(|| fold_leet(&self.text))
    }

    /// The first and last items that the byte range `range` of the text overlaps.
    pub fn items_in(&self, range: Range<usize>) -> (usize, usize) {
        let at = |offset: usize| {
            self.starts
                .partition_point(|&s| s <= offset)
                .saturating_sub(1)
        };
        let first = at(range.start);
        (first, at(range.end.saturating_sub(1)).max(first))
    }
}

/// Every distinct join of `items`: per reading that some item has, the spaced join and, where it
/// differs, the glued one.
pub(super) fn joins(items: &[Item]) -> Vec<Joined> {
    let glue: Vec<bool> = items.windows(2).map(|w| same_turn(&w[0], &w[1])).collect();
    // In the split reading an invisible character at the edge of an item separates it from the
    // next item of its turn, as one between two words of an item does (`pipe` | `\u{200B}bomb`).
    let split_glue: Vec<bool> = glue
        .iter()
        .zip(items.windows(2))
        .map(|(&g, w)| g && !hidden_edges(&w[0].raw).1 && !hidden_edges(&w[1].raw).0)
        .collect();
    let hidden_glue = split_glue != glue;
    let mut out = Vec::with_capacity(1);
    for r in Reading::ALL {
        let has = r == Reading::Written || items.iter().any(|i| i.readings.has(r));
        if !has && (r != Reading::Split || !hidden_glue) {
            continue;
        }
        let g = if r == Reading::Split {
            &split_glue
        } else {
            &glue
        };
        let spaced = join(items, r, None);
        let glued = g
            .contains(&true)
            .then(|| join(items, r, Some(g)))
            .filter(|g| g.text != spaced.text);
        if has {
            out.push(spaced);
        }
        // Without a split reading of any item, the split spaced join is the folded one.
        out.extend(glued);
    }
    out
}

fn join(items: &[Item], r: Reading, glue: Option<&[bool]>) -> Joined {
    let len = items.iter().map(|i| i.reading(r).len() + 1).sum();
    let mut text = String::with_capacity(len);
    let mut starts = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let mut t = item.reading(r);
        let glued = k > 0 && glue.is_some_and(|g| g[k - 1]);
        if !glued
            && !t.is_empty()
            && !text.is_empty()
            && !text.ends_with(' ')
            && !t.starts_with(' ')
        {
            text.push(' ');
        }
        if text.ends_with(' ') {
            // Normalised text never has two spaces in a row; a regex written with one space
            // must match across the join as it does within an item.
            t = t.strip_prefix(' ').unwrap_or(t);
        }
        starts.push(text.len());
        text.push_str(t);
    }
    Joined {
        text,
        leet: OnceLock::new(),
        starts,
    }
}

fn same_turn(a: &Item, b: &Item) -> bool {
    let conversational = matches!(
        a.source,
        Source::Instructions | Source::User | Source::Assistant | Source::ToolResult
    );
    conversational && a.source == b.source && field(&a.location) == field(&b.location)
}

/// The top-level request field a location is in: `messages[2].content[0].text` -> `messages`.
fn field(location: &str) -> &str {
    location.split(['.', '[']).next().unwrap_or(location)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Content;
    use crate::wire::Segment;

    fn content(items: &[(Source, &str, &str)]) -> Content {
        Content::from_segments(
            items
                .iter()
                .map(|&(source, location, text)| Segment {
                    source,
                    text: text.into(),
                    location: location.into(),
                })
                .collect(),
        )
    }

    fn texts(c: &Content) -> Vec<&str> {
        c.joined().iter().map(Joined::text).collect()
    }

    #[test]
    fn parts_of_a_turn_are_glued_and_everything_is_spaced() {
        let c = content(&[
            (Source::Instructions, "system[0].text", "Be "),
            (Source::Instructions, "system[1].text", "brief"),
            (Source::User, "messages[0].content[0].text", "pi"),
            (Source::User, "messages[0].content[1].text", "pe"),
            (Source::User, "messages[1].content", "bomb"),
            (Source::Assistant, "messages[2].content", "no"),
            (Source::ToolDefinition, "tools[0].name", "get"),
            (Source::ToolDefinition, "tools[0].description", "weather"),
        ]);
        assert_eq!(
            texts(&c),
            [
                "be brief pi pe bomb no get weather",
                "be brief pipebomb no get weather"
            ]
        );
        let j = &c.joined()[1];
        let at = j.text().find("pipebomb").unwrap();
        assert_eq!(j.items_in(at..at + 8), (2, 4));
        assert_eq!(j.items_in(0..2), (0, 0));
    }

    #[test]
    fn one_join_when_gluing_changes_nothing() {
        let c = content(&[
            (
                Source::Instructions,
                "messages[0].content",
                "You are helpful.",
            ),
            (Source::User, "messages[1].content", "Hi"),
            (Source::User, "messages[1].name", ""),
            (Source::Assistant, "messages[2].content", "Hello!"),
        ]);
        assert_eq!(texts(&c), ["you are helpful. hi hello!"]);
    }

    #[test]
    fn an_invisible_character_at_an_item_edge_separates_in_the_split_reading() {
        let c = content(&[
            (Source::User, "messages[0].content", "a p"),
            (Source::User, "messages[1].content", "ipe"),
            (Source::User, "messages[2].content", "\u{200B}bomb"),
        ]);
        assert_eq!(texts(&c), ["a p ipe bomb", "a pipebomb", "a pipe bomb"]);
        assert_eq!(hidden_edges("\u{300}\u{200B}b"), (true, false));
        assert_eq!(hidden_edges("b\u{200B}\u{300}"), (false, true));
        assert_eq!(hidden_edges("\u{E0062}b"), (false, false)); // a tag character spells `b`
    }

    #[test]
    fn each_reading_is_joined() {
        let c = content(&[
            (Source::User, "messages[0].content", "ріре"),
            (Source::User, "messages[1].content", "b\u{200B}omb"),
        ]);
        // Written, folded and split, each spaced and glued.
        assert_eq!(
            texts(&c),
            [
                "ріре bomb",
                "ріреbomb",
                "pipe bomb",
                "pipebomb",
                "pipe b omb",
                "pipeb omb"
            ]
        );
    }
}
