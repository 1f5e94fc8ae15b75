//! The OpenAI response bodies: whole completions, and the chunks of a stream, for the
//! completions and the chat endpoint alike.

use serde_json::{Value, json};

use super::engine::Usage;
use crate::model::generate::FinishReason;

/// Which endpoint a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// What every body of one response shares.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    /// A new response id and timestamp for `endpoint`.
    pub fn new(endpoint: Endpoint, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Completions => "cmpl",
            Endpoint::Chat => "chatcmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{:016x}", crate::model::sampling::random_seed()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_string(),
        }
    }

    /// The whole response of a non-streaming request.
    pub fn complete(&self, text: &str, usage: &Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": usage.finish.as_str(),
            }),
            Endpoint::Chat => json!({
                "index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": null, "finish_reason": usage.finish.as_str(),
            }),
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": [choice], "usage": usage_json(usage),
        })
    }

    /// The opening chunk of a chat stream (the assistant role); none for completions.
    pub fn opening_chunk(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat)
            .then(|| self.chunk(json!({"role": "assistant", "content": ""}), None))
    }

    /// A chunk carrying newly generated text.
    pub fn text_chunk(&self, text: &str) -> Value {
        match self.endpoint {
            Endpoint::Completions => self.chunk(json!(text), None),
            Endpoint::Chat => self.chunk(json!({"content": text}), None),
        }
    }

    /// The chunk that carries the finish reason.
    pub fn finish_chunk(&self, finish: FinishReason) -> Value {
        match self.endpoint {
            Endpoint::Completions => self.chunk(json!(""), Some(finish)),
            Endpoint::Chat => self.chunk(json!({}), Some(finish)),
        }
    }

    /// The final chunk of `stream_options.include_usage`: no choices, only usage.
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": usage_json(usage),
        })
    }

    fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Value {
        let finish_reason = finish.map(FinishReason::as_str);
        let choice = match self.endpoint {
            Endpoint::Completions => json!({
                "index": 0, "text": delta, "logprobs": null, "finish_reason": finish_reason,
            }),
            Endpoint::Chat => json!({
                "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason,
            }),
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_completion_shapes() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            finish: FinishReason::Length,
        };
        let chat = ResponseMeta::new(Endpoint::Chat, "gemma");
        let body = chat.complete("hi", &usage);
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["total_tokens"], 5);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(chat.text_chunk("x")["choices"][0]["delta"]["content"], "x");
        assert_eq!(
            chat.opening_chunk().unwrap()["choices"][0]["delta"]["role"],
            "assistant"
        );
        let completion = ResponseMeta::new(Endpoint::Completions, "gemma");
        assert!(completion.opening_chunk().is_none());
        let last = completion.finish_chunk(FinishReason::Stop);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["object"], "text_completion");
        assert_eq!(completion.usage_chunk(&usage)["choices"], json!([]));
    }
}
