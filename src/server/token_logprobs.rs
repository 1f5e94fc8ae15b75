//! The `logprobs` of a choice in the OpenAI shapes: for completions the legacy lists
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), for chat `content` entries
//! with each token's bytes, whole or streamed a few tokens per chunk.

use serde_json::{Map, Value, json};

use super::responses::Endpoint;

/// A token as a client sees it: the bytes it stands for, and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenText {
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

impl TokenText {
    /// The token's text; a token that is part of a character is written `bytes:\xe6` (as
    /// OpenAI writes it), its `bytes` in chat still exact.
    pub fn text(&self) -> String {
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => text.to_string(),
            Err(_) => self
                .bytes
                .iter()
                .fold("bytes:".to_string(), |mut out, byte| {
                    out.push_str(&format!("\\x{byte:02x}"));
                    out
                }),
        }
    }
}

/// One generated token's log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub sampled: TokenText,
    /// The most likely tokens, most likely first (as many as the request asked for).
    pub top: Vec<TokenText>,
    /// Characters of the choice's text before this token.
    pub text_offset: usize,
}

/// The `logprobs` value of a choice or chunk covering `tokens`.
pub fn logprobs_json(endpoint: Endpoint, tokens: &[GeneratedToken]) -> Value {
    match endpoint {
        Endpoint::Completions => completion_logprobs(tokens),
        Endpoint::Chat => json!({"content": tokens.iter().map(chat_entry).collect::<Vec<_>>()}),
    }
}

/// The legacy completions shape: parallel lists; each `top_logprobs` entry maps a token's
/// text to its log-probability, the sampled token among them (as vLLM does), so a token
/// text shared by two ids appears once.
fn completion_logprobs(tokens: &[GeneratedToken]) -> Value {
    let top = |token: &GeneratedToken| {
        let mut entries = Map::new();
        for candidate in token.top.iter().chain([&token.sampled]) {
            entries
                .entry(candidate.text())
                .or_insert_with(|| json!(candidate.logprob));
        }
        Value::Object(entries)
    };
    json!({
        "tokens": tokens.iter().map(|t| t.sampled.text()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.sampled.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(top).collect::<Vec<_>>(),
        "text_offset": tokens.iter().map(|t| t.text_offset).collect::<Vec<_>>(),
    })
}

/// One entry of chat's `logprobs.content`.
fn chat_entry(token: &GeneratedToken) -> Value {
    let mut entry = chat_token(&token.sampled);
    entry["top_logprobs"] = token.top.iter().map(chat_token).collect();
    entry
}

fn chat_token(token: &TokenText) -> Value {
    json!({"token": token.text(), "logprob": token.logprob, "bytes": token.bytes})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &[u8], logprob: f32) -> TokenText {
        TokenText {
            bytes: text.to_vec(),
            logprob,
        }
    }

    fn generated() -> Vec<GeneratedToken> {
        vec![
            GeneratedToken {
                sampled: token(b" Paris", -0.25),
                top: vec![token(b" Paris", -0.25), token(b" the", -2.0)],
                text_offset: 0,
            },
            GeneratedToken {
                sampled: token(&[0xe6], -1.5),
                top: vec![token(b".", -0.5)],
                text_offset: 6,
            },
        ]
    }

    #[test]
    fn completions_take_parallel_lists_with_the_sampled_token_among_the_top() {
        let value = logprobs_json(Endpoint::Completions, &generated());
        assert_eq!(value["tokens"], json!([" Paris", "bytes:\\xe6"]));
        assert_eq!(value["token_logprobs"], json!([-0.25, -1.5]));
        assert_eq!(value["text_offset"], json!([0, 6]));
        assert_eq!(
            value["top_logprobs"],
            json!([{" Paris": -0.25, " the": -2.0}, {".": -0.5, "bytes:\\xe6": -1.5}])
        );
    }

    #[test]
    fn chat_takes_entries_with_bytes_and_exactly_the_top_asked_for() {
        let value = logprobs_json(Endpoint::Chat, &generated());
        let content = value["content"].as_array().unwrap();
        assert_eq!(content[0]["token"], " Paris");
        assert_eq!(content[0]["bytes"], json!([32, 80, 97, 114, 105, 115]));
        assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(content[1]["bytes"], json!([0xe6]));
        assert_eq!(
            content[1]["top_logprobs"],
            json!([{"token": ".", "logprob": -0.5, "bytes": [46]}])
        );
        assert_eq!(logprobs_json(Endpoint::Chat, &[]), json!({"content": []}));
    }
}
