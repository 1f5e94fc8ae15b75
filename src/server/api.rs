//! The OpenAI request bodies this server accepts, parsed strictly (a wrong type names its
//! field) and validated against the model into a [`GenerationSpec`] for the engine.
//! Fields of the OpenAI API that this server does not implement are ignored.

use serde::Deserialize;

use super::error::ApiError;
use super::responses::Endpoint;
use crate::model::sampling::{SamplingParams, random_seed};

/// `max_tokens` of a completion that does not say (the OpenAI API's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// Most stop sequences per request (the OpenAI API's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Most top tokens a request may ask log-probabilities of (`top_logprobs`, and `logprobs`
/// of completions): the OpenAI chat API's limit, and vLLM's default for both.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most choices (`n`) of one request: each is its own sequence in the batch.
pub const MAX_CHOICES: usize = 16;

/// The body of `POST /v1/completions` (which needs `prompt`) and of
/// `POST /v1/chat/completions` (which needs `messages`): one type, so that a wrong value
/// anywhere is reported with its field's path.
#[derive(Debug, Default, Deserialize)]
pub struct GenerationRequest {
    pub model: Option<String>,
    pub prompt: Option<Prompt>,
    pub messages: Option<Vec<Message>>,
    /// The newer name of `max_tokens` for chat.
    pub max_completion_tokens: Option<i64>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    /// Completions: how many top tokens to report (0 reports only the sampled one); chat:
    /// whether to report log-probabilities at all.
    pub logprobs: Option<LogprobsField>,
    /// Chat: how many top tokens to report beside each sampled one.
    pub top_logprobs: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Keep generating past the end-of-turn token until `max_tokens` (vLLM's and
    /// llama.cpp's extension, for load tests that need fixed output lengths).
    pub ignore_eos: Option<bool>,
}

/// `logprobs`: a count for completions, a switch for chat.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LogprobsField {
    Switch(bool),
    Count(i64),
}

/// A completion prompt: text, a one-element list of texts, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// Message content: a string or a list of parts, of which only text parts are accepted.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A validated request, ready for the engine.
#[derive(Debug, Clone)]
pub struct GenerationSpec {
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
    /// Report log-probabilities of each generated token and of this many top tokens.
    pub logprobs: Option<usize>,
    /// Independent choices (`n`) generated from the prompt.
    pub choices: usize,
}

impl GenerationSpec {
    /// The spec of choice `index` of `n`: its own sampler seed (choice 0 keeps the request's,
    /// so a request of `n` = 1 and the first of several choices start from the same seed;
    /// their draws can still part where batching moves a logit's low bits).
    pub fn for_choice(&self, index: usize) -> GenerationSpec {
        let mut spec = self.clone();
        spec.sampling.seed = choice_seed(self.sampling.seed, index);
        spec.choices = 1;
        spec
    }
}

/// The seed of choice `index`: the request's for the first, a mixed one (SplitMix64's
/// finalizer) for the others, so that neighbouring seeds' choices do not coincide.
fn choice_seed(seed: u64, index: usize) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Parses a JSON body into `T`; a syntax error or wrong type becomes a 400 naming the
/// field (`messages[0].content`) where there is one.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest {
                message: format!("the body is not a valid request: {inner}"),
                param: None,
            }
        } else {
            ApiError::bad_param(&path, format!("`{path}`: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| ApiError::BadRequest {
        message: format!("the body is not a valid request: {err}"),
        param: None,
    })?;
    Ok(parsed)
}

/// The model's limits a request is validated against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most positions (prompt + output) of one sequence.
    pub context: usize,
}

/// The prompt does not leave room for one token: `tokens` says how many it has (`812`,
/// `at least 45000`).
pub fn prompt_too_long(tokens: &str, limits: Limits) -> ApiError {
    ApiError::bad_param(
        "prompt",
        format!(
            "the prompt has {tokens} tokens, more than this model's context of {} leaves room \
             for; shorten it",
            limits.context
        ),
    )
}

impl GenerationRequest {
    /// Validates the parameters of a request to `endpoint` for a prompt of `prompt_ids` (BOS
    /// included); `max_tokens` (or `max_completion_tokens`) defaults to 16 for completions
    /// (as OpenAI's does) and to what the context leaves for chat.
    pub fn into_spec(
        self,
        prompt_ids: Vec<u32>,
        endpoint: Endpoint,
        limits: Limits,
    ) -> Result<GenerationSpec, ApiError> {
        let default_max_tokens =
            (endpoint == Endpoint::Completions).then_some(DEFAULT_COMPLETION_TOKENS);
        let choices = match self.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(ApiError::bad_param(
                    "n",
                    format!("must be between 1 and {MAX_CHOICES}"),
                ));
            }
        };
        let logprobs = logprobs_spec(self.logprobs.as_ref(), self.top_logprobs, endpoint)?;
        let max_tokens = max_tokens_spec(
            self.max_completion_tokens.or(self.max_tokens),
            prompt_ids.len(),
            default_max_tokens,
            limits,
        )?;
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: match self.top_k {
                None | Some(-1) | Some(0) => 0,
                Some(k) if k > 0 => k as usize,
                Some(_) => {
                    return Err(ApiError::bad_param(
                        "top_k",
                        "must be a positive number, or 0 or -1 to disable",
                    ));
                }
            },
            seed: self.seed.map_or_else(random_seed, |seed| seed as u64),
        };
        sampling.validate().map_err(|err| {
            ApiError::bad_param(err.parameter().unwrap_or("sampling"), err.to_string())
        })?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(stop)) => vec![stop],
            Some(Stop::Many(stops)) => stops,
        };
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::bad_param(
                "stop",
                format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_param(
                "stop",
                "stop sequences must not be empty",
            ));
        }
        let stream = self.stream.unwrap_or(false);
        Ok(GenerationSpec {
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs,
            choices,
            prompt_ids,
            max_tokens,
            sampling,
            stop,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .and_then(|options| options.include_usage)
                    .unwrap_or(false),
        })
    }
}

/// The tokens a request may generate: what it asks for (at least 1, and no more than the
/// context leaves after `prompt_tokens`), else `default`, else all the context leaves.
fn max_tokens_spec(
    requested: Option<i64>,
    prompt_tokens: usize,
    default: Option<usize>,
    limits: Limits,
) -> Result<usize, ApiError> {
    if prompt_tokens >= limits.context {
        return Err(prompt_too_long(&prompt_tokens.to_string(), limits));
    }
    let room = limits.context - prompt_tokens;
    match requested {
        Some(requested) if requested < 1 => {
            Err(ApiError::bad_param("max_tokens", "must be at least 1"))
        }
        Some(requested) if requested as u64 > room as u64 => Err(ApiError::bad_param(
            "max_tokens",
            format!(
                "{prompt_tokens} prompt tokens + max_tokens {requested} exceed this model's \
                 context of {} tokens; ask for at most {room}",
                limits.context
            ),
        )),
        Some(requested) => Ok(requested as usize),
        None => Ok(default.map_or(room, |default| default.min(room))),
    }
}

/// How many top tokens to report log-probabilities of, if any: completions take a count in
/// `logprobs`; chat a switch in `logprobs` and the count in `top_logprobs`.
fn logprobs_spec(
    logprobs: Option<&LogprobsField>,
    top_logprobs: Option<i64>,
    endpoint: Endpoint,
) -> Result<Option<usize>, ApiError> {
    let count = |field: &str, n: i64| {
        if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) {
            Ok(n as usize)
        } else {
            Err(ApiError::bad_param(
                field,
                format!("must be between 0 and {MAX_TOP_LOGPROBS}"),
            ))
        }
    };
    match (endpoint, logprobs) {
        (Endpoint::Completions, _) if top_logprobs.is_some() => Err(ApiError::bad_param(
            "top_logprobs",
            "completions take the count of top tokens in `logprobs`; `top_logprobs` is chat's",
        )),
        (Endpoint::Completions, None) => Ok(None),
        (Endpoint::Completions, Some(LogprobsField::Count(n))) => count("logprobs", *n).map(Some),
        (Endpoint::Completions, Some(LogprobsField::Switch(_))) => Err(ApiError::bad_param(
            "logprobs",
            format!("completions take a number of top tokens (0 to {MAX_TOP_LOGPROBS}) here"),
        )),
        (Endpoint::Chat, Some(LogprobsField::Switch(true))) => top_logprobs
            .map_or(Ok(0), |n| count("top_logprobs", n))
            .map(Some),
        (Endpoint::Chat, None | Some(LogprobsField::Switch(false))) => match top_logprobs {
            None => Ok(None),
            Some(_) => Err(ApiError::bad_param(
                "top_logprobs",
                "`top_logprobs` needs `logprobs: true`",
            )),
        },
        (Endpoint::Chat, Some(LogprobsField::Count(_))) => Err(ApiError::bad_param(
            "logprobs",
            "chat takes `logprobs: true` and the number of top tokens in `top_logprobs`",
        )),
    }
}

/// Checks the `model` field against the served name (an absent field means that one).
pub fn check_model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(name) if name != served => Err(ApiError::UnknownModel {
            requested: name.to_string(),
            served: served.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits { context: 100 };

    fn spec(body: &str, prompt_tokens: usize) -> Result<GenerationSpec, ApiError> {
        let request: GenerationRequest = parse_body(body.as_bytes())?;
        request.into_spec(vec![2; prompt_tokens], Endpoint::Completions, LIMITS)
    }

    fn param_of(err: ApiError) -> Option<String> {
        match err {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_their_field() {
        let err = spec(r#"{"prompt": "hi", "max_tokens": "ten"}"#, 3).unwrap_err();
        assert_eq!(param_of(err).as_deref(), Some("max_tokens"));
        let err =
            parse_body::<GenerationRequest>(br#"{"messages": [{"role": "user", "content": 5}]}"#)
                .unwrap_err();
        assert_eq!(param_of(err).as_deref(), Some("messages[0].content"));
        let err = spec("{not json", 3).unwrap_err();
        assert_eq!(param_of(err), None);
        let err = spec(r#"{"prompt": "a"} trailing"#, 3).unwrap_err();
        assert_eq!(param_of(err), None);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        for (body, field) in [
            (r#"{"prompt": "a", "max_tokens": 0}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": -5}"#, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": 98}"#, "max_tokens"),
            (r#"{"prompt": "a", "temperature": -1}"#, "temperature"),
            (r#"{"prompt": "a", "top_p": 0}"#, "top_p"),
            (r#"{"prompt": "a", "top_k": -3}"#, "top_k"),
            (r#"{"prompt": "a", "n": 0}"#, "n"),
            (r#"{"prompt": "a", "n": 17}"#, "n"),
            (r#"{"prompt": "a", "logprobs": 21}"#, "logprobs"),
            (r#"{"prompt": "a", "logprobs": -1}"#, "logprobs"),
            (r#"{"prompt": "a", "logprobs": true}"#, "logprobs"),
            (r#"{"prompt": "a", "top_logprobs": 2}"#, "top_logprobs"),
            (r#"{"prompt": "a", "stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"prompt": "a", "stop": ""}"#, "stop"),
        ] {
            let err = spec(body, 3).unwrap_err();
            assert_eq!(param_of(err).as_deref(), Some(field), "{body}");
        }
        let err = spec(r#"{"prompt": "a"}"#, 100).unwrap_err();
        assert_eq!(param_of(err).as_deref(), Some("prompt"));
    }

    #[test]
    fn defaults_and_limits() {
        let ok = spec(r#"{"prompt": "a", "max_tokens": 97, "stop": "\n"}"#, 3).unwrap();
        assert_eq!(
            (ok.max_tokens, ok.stop.clone()),
            (97, vec!["\n".to_string()])
        );
        assert!(!ok.stream && !ok.include_usage);
        let ok = spec(
            r#"{"prompt": "a", "stream": true, "stream_options": {"include_usage": true}, "seed": 5}"#,
            3,
        )
        .unwrap();
        assert!(ok.stream && ok.include_usage);
        assert_eq!((ok.max_tokens, ok.sampling.seed), (16, 5));
        assert_eq!(spec(r#"{"prompt": "a"}"#, 90).unwrap().max_tokens, 10);
        assert!(check_model(Some("other"), "gemma").is_err());
        assert!(check_model(None, "gemma").is_ok());
    }

    #[test]
    fn logprobs_take_each_endpoints_shape() {
        let chat = |body: &str| {
            let request: GenerationRequest = parse_body(body.as_bytes()).unwrap();
            request.into_spec(vec![2; 3], Endpoint::Chat, LIMITS)
        };
        let logprobs = |body| chat(body).unwrap().logprobs;
        assert_eq!(
            logprobs(r#"{"logprobs": true, "top_logprobs": 5}"#),
            Some(5)
        );
        assert_eq!(logprobs(r#"{"logprobs": true}"#), Some(0));
        assert_eq!(logprobs(r#"{"logprobs": false}"#), None);
        for (body, field) in [
            (r#"{"top_logprobs": 3}"#, "top_logprobs"),
            (r#"{"logprobs": 3}"#, "logprobs"),
            (r#"{"logprobs": true, "top_logprobs": 21}"#, "top_logprobs"),
        ] {
            assert_eq!(
                param_of(chat(body).unwrap_err()).as_deref(),
                Some(field),
                "{body}"
            );
        }
        assert_eq!(
            spec(r#"{"prompt": "a", "logprobs": 0}"#, 3)
                .unwrap()
                .logprobs,
            Some(0)
        );
        assert_eq!(spec(r#"{"prompt": "a"}"#, 3).unwrap().logprobs, None);
        assert_eq!(chat("{}").unwrap().max_tokens, LIMITS.context - 3);
    }

    #[test]
    fn each_choice_draws_with_its_own_seed_and_the_first_with_the_requests() {
        let spec = spec(r#"{"prompt": "a", "n": 3, "seed": 7}"#, 3).unwrap();
        assert_eq!(spec.choices, 3);
        let seeds: Vec<u64> = (0..3).map(|i| spec.for_choice(i).sampling.seed).collect();
        assert_eq!(seeds[0], 7);
        assert!(
            seeds[1] != seeds[2] && ![7, 8, 9].contains(&seeds[1]),
            "{seeds:?}"
        );
        assert!((0..3).all(|i| spec.for_choice(i).choices == 1));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = spec(&String::from_utf8_lossy(&body), 3);
            let _ = parse_body::<GenerationRequest>(&body);
        }

        #[test]
        fn arbitrary_field_values_never_panic(
            max_tokens in any::<i64>(), temperature in any::<f64>(), top_p in any::<f64>(),
            top_k in any::<i64>(), seed in any::<i64>(), n in any::<i64>(),
            prompt_tokens in 0usize..200,
        ) {
            let body = serde_json::json!({
                "prompt": "x", "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "top_k": top_k, "seed": seed, "n": n,
            });
            if let Ok(ok) = spec(&body.to_string(), prompt_tokens) {
                prop_assert!(ok.max_tokens >= 1 && ok.prompt_ids.len() + ok.max_tokens <= LIMITS.context);
            }
        }
    }
}
