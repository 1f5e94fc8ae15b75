//! The tokenizer's cheap lower bound of a text's tokens (`fewest_tokens`, what lets the
//! server refuse a prompt that cannot fit before tokenizing it) never exceeds the real
//! count, on the default model's vocabulary, for text of every kind.

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
