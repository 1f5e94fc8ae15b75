//! Finding the control tokens written in a text (`<start_of_turn>`, `<end_of_turn>`, ...)
//! in one pass over it: an Aho-Corasick automaton over the token strings, so a prompt of
//! a million `<` costs what any other million bytes cost. (Looking for the `>` after every
//! `<` made such a prompt quadratic: 20 s of CPU for 1 MB before the request was refused.)

use std::collections::HashMap;

use aho_corasick::AhoCorasick;

/// The control tokens of a vocabulary that a text can spell: `<`, then no `>`, then `>`.
/// (Those are all of Gemma's; a token of another shape is never matched in text, as
/// before.) At any position at most one of them can start, as each ends at the first `>`.
pub struct ControlTokens {
    matcher: Option<AhoCorasick>,
    ids: Vec<u32>,
}

/// A control token found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Byte offset where it starts.
    pub start: usize,
    /// Its byte length.
    pub len: usize,
    /// Its token id.
    pub id: u32,
}

impl ControlTokens {
    /// The matcher of `control` (token text to id).
    pub fn new(control: &HashMap<String, u32>) -> Self {
        let (texts, ids): (Vec<&str>, Vec<u32>) = control
            .iter()
            .filter(|(text, _)| spellable(text))
            .map(|(text, &id)| (text.as_str(), id))
            .unzip();
        let matcher = (!texts.is_empty()).then(|| {
            AhoCorasick::new(&texts).expect("a few hundred short patterns fit the automaton")
        });
        Self { matcher, ids }
    }

    /// The first control token in `text`.
    pub fn first(&self, text: &str) -> Option<Found> {
        let found = self.matcher.as_ref()?.find(text)?;
        Some(Found {
            start: found.start(),
            len: found.len(),
            id: self.ids[found.pattern().as_usize()],
        })
    }
}

/// `<`, at least one character that is not `>`, then `>`.
fn spellable(text: &str) -> bool {
    text.len() > 2
        && text.starts_with('<')
        && text.ends_with('>')
        && !text[1..text.len() - 1].contains('>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gemma_like() -> HashMap<String, u32> {
        [
            ("<bos>", 2),
            ("<eos>", 1),
            ("<start_of_turn>", 105),
            ("<end_of_turn>", 106),
            ("<unused0>", 7),
            ("[@BOS@]", 8),
            ("<a>b>", 9),
        ]
        .into_iter()
        .map(|(t, id)| (t.to_string(), id))
        .collect()
    }

    /// The scan this replaces: the first `<` whose text up to the next `>` is a token.
    fn reference(control: &HashMap<String, u32>, text: &str) -> Option<Found> {
        let mut from = 0;
        while let Some(open) = text[from..].find('<').map(|i| i + from) {
            if let Some(close) = text[open..].find('>')
                && let Some(&id) = control.get(&text[open..=open + close])
            {
                return Some(Found {
                    start: open,
                    len: close + 1,
                    id,
                });
            }
            from = open + 1;
        }
        None
    }

    #[test]
    fn finds_the_first_token_and_only_the_spellable_ones() {
        let control = gemma_like();
        let tokens = ControlTokens::new(&control);
        let text = "a<b <start_of_turn>user\nhi<end_of_turn>";
        assert_eq!(
            tokens.first(text),
            Some(Found {
                start: 4,
                len: 15,
                id: 105
            })
        );
        assert_eq!(tokens.first("[@BOS@] <a>b>"), None, "odd shapes stay text");
        assert_eq!(tokens.first("<<<<eos>"), reference(&control, "<<<<eos>"));
        assert_eq!(ControlTokens::new(&HashMap::new()).first("<bos>"), None);
    }

    #[test]
    fn a_million_open_brackets_take_one_pass() {
        let tokens = ControlTokens::new(&gemma_like());
        let text = "<".repeat(1 << 20);
        let started = std::time::Instant::now();
        assert_eq!(tokens.first(&text), None);
        // Linear: milliseconds; the quadratic scan took ~20 s here.
        assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
    }

    proptest! {
        #[test]
        fn agrees_with_the_scan_it_replaces(text in "[<>a-z_ ]{0,40}(<(bos|eos|start_of_turn|end_of_turn|unused0|a)>)?[<>a-z_ ]{0,20}") {
            let control = gemma_like();
            prop_assert_eq!(ControlTokens::new(&control).first(&text), reference(&control, &text));
        }
    }
}
