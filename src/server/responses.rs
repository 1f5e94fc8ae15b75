//! The OpenAI response bodies: whole completions, and the chunks of a stream, for the
//! completions and the chat endpoint alike.

use serde_json::{Value, json};

use super::engine::Usage;
use super::token_logprobs::{GeneratedToken, logprobs_json};
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
    /// Whether choices carry log-probabilities.
    pub logprobs: bool,
}

/// One choice's whole answer, for a response that is not streamed.
#[derive(Debug)]
pub struct ChoiceAnswer {
    pub text: String,
    /// Every generated token's log-probabilities, when the request asked for them.
    pub logprobs: Option<Vec<GeneratedToken>>,
    pub usage: Usage,
}

impl ResponseMeta {
    /// A new response id and timestamp for `endpoint`; `logprobs` says whether choices
    /// carry log-probabilities (else `logprobs` is `null`).
    pub fn new(endpoint: Endpoint, model: &str, logprobs: bool) -> Self {
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
            logprobs,
        }
    }

    /// The whole response of a non-streaming request: every choice, and usage with the
    /// prompt counted once and the completion tokens of all choices.
    pub fn complete(&self, choices: &[ChoiceAnswer]) -> Value {
        let bodies: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, choice)| {
                let logprobs = choice
                    .logprobs
                    .as_deref()
                    .map_or(Value::Null, |tokens| logprobs_json(self.endpoint, tokens));
                let mut body = match self.endpoint {
                    Endpoint::Completions => json!({"text": choice.text}),
                    Endpoint::Chat => {
                        json!({"message": {"role": "assistant", "content": choice.text}})
                    }
                };
                body["index"] = json!(index);
                body["logprobs"] = logprobs;
                body["finish_reason"] = json!(choice.usage.finish.as_str());
                body
            })
            .collect();
        let prompt_tokens = choices.first().map_or(0, |c| c.usage.prompt_tokens);
        let completion_tokens = choices.iter().map(|c| c.usage.completion_tokens).sum();
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": bodies,
            "usage": usage_json(prompt_tokens, completion_tokens),
        })
    }

    /// The opening chunk of a chat stream's choice (the assistant role); none for
    /// completions.
    pub fn opening_chunk(&self, index: usize) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chunk(
                index,
                json!({"role": "assistant", "content": ""}),
                None,
                None,
            )
        })
    }

    /// A chunk carrying a choice's newly generated text and the log-probabilities of the
    /// tokens behind it.
    pub fn text_chunk(&self, index: usize, text: &str, logprobs: &[GeneratedToken]) -> Value {
        let delta = match self.endpoint {
            Endpoint::Completions => json!(text),
            Endpoint::Chat => json!({"content": text}),
        };
        self.chunk(index, delta, Some(logprobs), None)
    }

    /// The chunk that carries a choice's finish reason.
    pub fn finish_chunk(&self, index: usize, finish: FinishReason) -> Value {
        let delta = match self.endpoint {
            Endpoint::Completions => json!(""),
            Endpoint::Chat => json!({}),
        };
        self.chunk(index, delta, None, Some(finish))
    }

    /// The final chunk of `stream_options.include_usage`: no choices, only usage.
    pub fn usage_chunk(&self, prompt_tokens: usize, completion_tokens: usize) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [],
            "usage": usage_json(prompt_tokens, completion_tokens),
        })
    }

    fn chunk(
        &self,
        index: usize,
        delta: Value,
        logprobs: Option<&[GeneratedToken]>,
        finish: Option<FinishReason>,
    ) -> Value {
        let finish_reason = finish.map(FinishReason::as_str);
        let logprobs = match logprobs {
            Some(tokens) if self.logprobs => logprobs_json(self.endpoint, tokens),
            _ => Value::Null,
        };
        let mut choice = match self.endpoint {
            Endpoint::Completions => json!({"text": delta}),
            Endpoint::Chat => json!({"delta": delta}),
        };
        choice["index"] = json!(index);
        choice["logprobs"] = logprobs;
        choice["finish_reason"] = json!(finish_reason);
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

fn usage_json(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str, completion_tokens: usize, finish: FinishReason) -> ChoiceAnswer {
        ChoiceAnswer {
            text: text.into(),
            logprobs: None,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens,
                finish,
            },
        }
    }

    #[test]
    fn chat_and_completion_shapes() {
        let chat = ResponseMeta::new(Endpoint::Chat, "gemma", false);
        let body = chat.complete(&[answer("hi", 2, FinishReason::Length)]);
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][0]["logprobs"], Value::Null);
        assert_eq!(body["usage"]["total_tokens"], 5);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        let chunk = chat.text_chunk(0, "x", &[]);
        assert_eq!(chunk["choices"][0]["delta"]["content"], "x");
        assert_eq!(chunk["choices"][0]["logprobs"], Value::Null);
        assert_eq!(
            chat.opening_chunk(1).unwrap()["choices"][0],
            json!({"index": 1, "delta": {"role": "assistant", "content": ""},
                   "logprobs": null, "finish_reason": null})
        );
        let completion = ResponseMeta::new(Endpoint::Completions, "gemma", false);
        assert!(completion.opening_chunk(0).is_none());
        let last = completion.finish_chunk(0, FinishReason::Stop);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["object"], "text_completion");
        assert_eq!(completion.usage_chunk(3, 2)["choices"], json!([]));
    }

    #[test]
    fn several_choices_are_indexed_and_share_the_prompt_in_usage() {
        let completion = ResponseMeta::new(Endpoint::Completions, "gemma", true);
        let mut first = answer("a", 4, FinishReason::Length);
        first.logprobs = Some(Vec::new());
        let body = completion.complete(&[first, answer("b", 1, FinishReason::Stop)]);
        let choices = body["choices"].as_array().unwrap();
        assert_eq!(
            (choices[0]["index"].clone(), choices[1]["index"].clone()),
            (json!(0), json!(1))
        );
        assert_eq!(choices[1]["finish_reason"], "stop");
        assert_eq!(choices[0]["logprobs"]["tokens"], json!([]));
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
        );
        assert_eq!(completion.text_chunk(2, "x", &[])["choices"][0]["index"], 2);
        assert_eq!(
            completion.text_chunk(2, "x", &[])["choices"][0]["logprobs"]["tokens"],
            json!([])
        );
    }
}
