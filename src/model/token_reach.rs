//! A lower bound of the tokens a text encodes to, computed without encoding it: what lets
//! a server refuse a prompt that cannot fit its context before spending CPU on it.
//!
//! Two bounds, the larger wins:
//! - bytes: no token stands for more input bytes than the vocabulary's longest piece;
//! - reach: a token that starts with characters `a b` is a piece that starts with `a b`, so
//!   it covers at most as many characters as the longest such piece (one character when no
//!   piece starts so). The fewest tokens under that rule is the fewest jumps across the text
//!   when a jump from a character may go as far as that reach: one greedy pass.
//!
//! The reach bound is what makes repeats of one character cheap to refuse: the longest
//! piece of Gemma's vocabulary is 48 bytes, but the longest that starts with `<<` is 4
//! characters, so a million `<` need at least 250,000 tokens and the BPE never runs (it
//! would take about 0.35 s per million characters).

use std::collections::HashMap;

/// The normalizer's stand-in for a space (SentencePiece's U+2581).
const SPACE_MARK: char = '\u{2581}';
/// Pairs of ASCII characters, looked up in a table; other pairs in a map.
const ASCII: usize = 128;

/// How far one token can reach from each pair of characters.
pub struct TokenReach {
    /// The most input bytes one piece stands for.
    most_bytes: usize,
    /// Longest piece (characters) starting with an ASCII pair, `ascii[a * 128 + b]`.
    ascii: Vec<u8>,
    /// The same for the other pairs that start a piece.
    other: HashMap<(char, char), u8>,
}

impl TokenReach {
    /// The reach of a vocabulary: its pieces as the tokenizer stores them (spaces as U+2581,
    /// byte-fallback pieces as `<0x41>`).
    pub fn new<'p>(pieces: impl IntoIterator<Item = &'p str>) -> Self {
        let mut reach = Self {
            most_bytes: 1,
            ascii: vec![1; ASCII * ASCII],
            other: HashMap::new(),
        };
        for piece in pieces {
            if is_byte_fallback(piece) {
                continue;
            }
            let bytes = piece.len() - 2 * piece.matches(SPACE_MARK).count();
            reach.most_bytes = reach.most_bytes.max(bytes);
            let mut chars = piece.chars().map(as_normalized);
            let (Some(first), Some(second)) = (chars.next(), chars.next()) else {
                continue;
            };
            let length = u8::try_from(piece.chars().count()).unwrap_or(u8::MAX);
            let slot = match ascii_slot(first, second) {
                Some(slot) => &mut reach.ascii[slot],
                None => reach.other.entry((first, second)).or_insert(1),
            };
            *slot = (*slot).max(length);
        }
        reach
    }

    /// At least this many tokens encode `text`, however it is tokenized.
    pub fn fewest_tokens(&self, text: &str) -> usize {
        let by_bytes = text.len().div_ceil(self.most_bytes);
        by_bytes.max(self.fewest_jumps(text))
    }

    /// The most input bytes one token stands for.
    pub fn most_bytes_per_token(&self) -> usize {
        self.most_bytes
    }

    /// The fewest tokens to cover `text` if a token starting at a character may cover up
    /// to its pair's reach (the classic greedy for the fewest jumps).
    fn fewest_jumps(&self, text: &str) -> usize {
        let mut chars = text.chars().map(as_normalized).peekable();
        let (mut tokens, mut covered, mut farthest) = (0, 0, 0);
        let mut at = 0;
        while let Some(c) = chars.next() {
            let reach = chars.peek().map_or(1, |&next| self.reach(c, next));
            farthest = farthest.max(at + reach);
            if at == covered {
                tokens += 1;
                covered = farthest;
            }
            at += 1;
        }
        tokens
    }

    /// The most characters a token starting with `first second` covers.
    fn reach(&self, first: char, second: char) -> usize {
        let length = match ascii_slot(first, second) {
            Some(slot) => self.ascii[slot],
            None => self.other.get(&(first, second)).copied().unwrap_or(1),
        };
        usize::from(length)
    }
}

fn ascii_slot(first: char, second: char) -> Option<usize> {
    let (first, second) = (first as usize, second as usize);
    (first < ASCII && second < ASCII).then_some(first * ASCII + second)
}

/// Text and pieces compared as the normalizer leaves text: a space is U+2581.
fn as_normalized(c: char) -> char {
    if c == SPACE_MARK { ' ' } else { c }
}

/// `<0x41>`: a piece that stands for one byte, not for its own text.
fn is_byte_fallback(piece: &str) -> bool {
    piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> TokenReach {
        TokenReach::new([
            "<",
            "<<",
            "<<<<",
            "=",
            "==========",
            "\u{2581}the",
            "<0x3C>",
            "日本",
        ])
    }

    #[test]
    fn a_run_of_one_character_needs_a_token_per_longest_piece_of_it() {
        let reach = vocab();
        assert_eq!(reach.fewest_tokens(&"<".repeat(1_000)), 250);
        assert_eq!(reach.fewest_tokens(&"=".repeat(1_000)), 100);
        assert_eq!(reach.fewest_tokens(&"<".repeat(1_001)), 251);
    }

    #[test]
    fn a_space_reaches_as_far_as_the_pieces_spelled_with_its_mark() {
        let reach = vocab();
        assert_eq!(reach.fewest_tokens(" the the"), 2);
        assert_eq!(reach.fewest_tokens("\u{2581}the"), 1);
        assert_eq!(reach.fewest_tokens("xyz"), 3, "no piece starts with x");
    }

    #[test]
    fn byte_fallback_pieces_reach_nothing_and_bytes_bound_the_rest() {
        let reach = vocab();
        assert_eq!(reach.most_bytes_per_token(), 10);
        assert_eq!(
            reach.fewest_tokens("<0x3C><0x3C>"),
            12,
            "`<0` starts no piece"
        );
        assert_eq!(reach.fewest_tokens("日本日本"), 2);
        assert_eq!(reach.fewest_tokens(""), 0);
    }
}
