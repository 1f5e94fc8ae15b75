//! Streaming detokenization on the default model's tokenizer: text comes out as soon as it
//! is whole, and bytes of a character split over byte-fallback tokens are held back until
//! the character is complete.

mod common;

use common::default_model;
use gembatch::model::text_stream::TextStream;

#[test]
fn streamed_pieces_concatenate_to_the_decoded_text() {
    let tokenizer = &default_model().tokenizer;
    let text = "Émile a mangé une crème brûlée à Paris. 日本語のテキスト";
    let ids = tokenizer.encode(text, false, false).unwrap();
    let mut stream = TextStream::default();
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&stream.push(tokenizer, id).unwrap().unwrap_or_default());
    }
    assert_eq!(streamed, tokenizer.decode(&ids).unwrap());
    assert_eq!(streamed, text);
}

#[test]
fn a_character_split_over_byte_tokens_is_held_back_until_complete() {
    let tokenizer = &default_model().tokenizer;
    // U+1F680 is F0 9F 9A 80 in UTF-8; byte-fallback token <0xNN> has id 238 + NN.
    let bytes = [0xF0u32, 0x9F, 0x9A, 0x80];
    let mut stream = TextStream::default();
    let mut pieces = Vec::new();
    for byte in bytes {
        pieces.push(stream.push(tokenizer, 238 + byte).unwrap());
    }
    assert_eq!(
        pieces,
        vec![None, None, None, Some("\u{1F680}".to_string())]
    );
}
