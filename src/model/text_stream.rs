//! Incremental detokenization: turns a growing list of ids into text deltas, holding back
//! bytes until they form whole UTF-8 characters.

use super::error::Result;
use super::tokenizer::GemmaTokenizer;

/// The text decoded so far of one generated sequence.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TextStream {
    /// Adds `id` and returns the text it completes, if any.
    pub fn push(&mut self, tokenizer: &GemmaTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if after.len() <= before.len()
            || after.ends_with('\u{FFFD}')
            || !after.is_char_boundary(before.len())
        {
            return Ok(None);
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(Some(after[before.len()..].to_string()))
    }
}
