//! The tokenizer's cheap lower bound of a text's tokens (`fewest_tokens`, what lets the
//! server refuse a prompt that cannot fit before tokenizing it) never exceeds the real
//! count, on the default model's vocabulary, for text of every kind; and on runs of one
//! character, the cheapest costly prompts to send, it is the real count.

mod common;

use common::default_model;

#[test]
fn the_lower_bound_never_exceeds_the_real_count() {
    let tokenizer = &default_model().tokenizer;
    let texts = [
        String::new(),
        "The capital of France is Paris.".into(),
        " ".repeat(5_000),
        "\t\n".repeat(2_000),
        "=".repeat(10_000),
        "<".repeat(50_000),
        "<start_of_turn>user\nhi<end_of_turn>\n".repeat(500),
        "日本語のテキスト、絵文字 🚀🚀 と記号".repeat(300),
        (0u8..=255)
            .filter_map(|b| char::from_u32(u32::from(b) + 0x2500))
            .collect(),
        "https://example.com/a/b?c=d&e=f ".repeat(1_000),
        "internationalization quantitatively ".repeat(2_000),
        "─…—~=".repeat(3_000),
        "<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<x".repeat(1_000),
        "\u{2581}the\u{2581}\u{2581}cat  sat".repeat(1_000),
        mixed_text(50_000),
    ];
    for text in &texts {
        let real = tokenizer.encode(text, false, true).unwrap().len();
        let bound = tokenizer.fewest_tokens(text);
        assert!(
            bound <= real,
            "{bound} > {real} for {:?}...",
            &text[..text.len().min(40)]
        );
        if text.len() > 1_000 {
            assert!(bound > 0, "a long text has a useful bound");
        }
    }
}

#[test]
fn on_runs_of_one_character_the_lower_bound_is_the_real_count() {
    let tokenizer = &default_model().tokenizer;
    for unit in ["<", "=", "a", "\t", " ", "─", "日"] {
        let text = unit.repeat(100_000);
        let real = tokenizer.encode(&text, false, true).unwrap().len();
        let bound = tokenizer.fewest_tokens(&text);
        // Before the bound looked at which characters follow which, 100,000 `<` were
        // allowed down to 2,084 tokens (48 bytes each, the vocabulary's longest piece).
        assert!(
            bound <= real && real - bound <= 1,
            "{unit:?} x 100,000: bound {bound}, real {real}"
        );
    }
}

/// Text from a fixed pseudo-random mix of pieces that merge across each other.
fn mixed_text(pieces: usize) -> String {
    const PARTS: [&str; 12] = [
        "<",
        "<<",
        "=",
        " ",
        "  ",
        "\n",
        "the",
        "ation",
        "─",
        "日本",
        "<start_of_turn>",
        "x",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..pieces)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            PARTS[(state % PARTS.len() as u64) as usize]
        })
        .collect()
}
