//! The HTTP routes: the OpenAI endpoints, models, health, readiness and metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::AppState;
use super::api::{self, GenerationRequest, GenerationSpec, Prompt};
use super::chat_template;
use super::engine::Event;
use super::error::ApiError;
use super::long_prompts::{self, Refused};
use super::responses::{ChoiceAnswer, Endpoint, ResponseMeta};

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(state, body, Endpoint::Completions).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(state, body, Endpoint::Chat).await
}

/// Parses, validates and runs a request of either endpoint; every failure is counted and
/// answered in the OpenAI error shape.
async fn respond(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let arrived = Instant::now();
    let result = async {
        let mut request: GenerationRequest = api::parse_body(&read_body(body, &state)?)?;
        api::check_model(request.model.as_deref(), &state.served_model)?;
        let prompt_ids = match endpoint {
            Endpoint::Completions => {
                let prompt = request.prompt.take().ok_or_else(|| required("prompt"))?;
                completion_prompt(&state, prompt).await?
            }
            Endpoint::Chat => {
                let messages = request
                    .messages
                    .take()
                    .ok_or_else(|| required("messages"))?;
                let prompt = chat_template::render(&messages)?;
                encode(&state, prompt, false).await?
            }
        };
        let spec = request.into_spec(prompt_ids, endpoint, state.limits)?;
        generate(&state, spec, endpoint, arrived).await
    }
    .await;
    result.unwrap_or_else(|err| state.reject(err))
}

/// The token ids of a completion prompt (BOS first).
async fn completion_prompt(state: &Arc<AppState>, prompt: Prompt) -> Result<Vec<u32>, ApiError> {
    match prompt {
        Prompt::Text(text) => encode(state, text, true).await,
        Prompt::Texts(mut texts) if texts.len() == 1 => encode(state, texts.remove(0), true).await,
        Prompt::Texts(_) => Err(ApiError::bad_param(
            "prompt",
            "send exactly one prompt per request",
        )),
        Prompt::Tokens(ids) => token_prompt(state, ids),
    }
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.served_model, "object": "model", "created": 0, "owned_by": "gembatch",
            "max_model_len": state.limits.context,
        }],
    }))
}

/// `GET /health`: the process is alive and its engine thread runs (a liveness probe
/// restarts a pod whose engine died).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.engine.is_alive() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine thread has stopped",
        )
            .into_response()
    }
}

/// `GET /ready`: the model is loaded, its engine runs and the server is not draining.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response()
    };
    if !state.engine.is_alive() {
        not_ready("engine stopped")
    } else if state.engine.is_draining() {
        not_ready("draining")
    } else {
        Json(json!({"ready": true})).into_response()
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found() -> Response {
    let body = json!({"error": {"message": "no such route; see /v1/completions, /v1/chat/completions, /v1/models",
        "type": "invalid_request_error", "param": null, "code": "not_found"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

fn required(field: &str) -> ApiError {
    ApiError::bad_param(field, format!("`{field}` is required"))
}

fn read_body(body: Result<Bytes, BytesRejection>, state: &AppState) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.body_limit,
            }
        } else {
            ApiError::BadRequest {
                message: format!("cannot read the request body: {rejection}"),
                param: None,
            }
        }
    })
}

/// Prompts longer than this are tokenized on [`AppState::long_prompts`]' thread; shorter
/// ones (milliseconds of work) never queue behind them.
const LONG_PROMPT_BYTES: usize = 64 * 1024;

/// Tokenizes a prompt off the async threads, long prompts one at a time at the lowest CPU
/// priority; a prompt that cannot fit the context however it tokenizes is refused before
/// any of that.
async fn encode(state: &Arc<AppState>, text: String, add_bos: bool) -> Result<Vec<u32>, ApiError> {
    let fewest = state.model.tokenizer.fewest_tokens(&text) + usize::from(add_bos);
    if fewest >= state.limits.context {
        return Err(api::prompt_too_long(
            &format!("at least {fewest}"),
            state.limits,
        ));
    }
    let long = text.len() > LONG_PROMPT_BYTES;
    let model = state.model.clone();
    let tokenize = move || model.tokenizer.encode(&text, add_bos, true);
    let ids = if long {
        state
            .long_prompts
            .run(tokenize)
            .await
            .map_err(|refused| match refused {
                Refused::Full => ApiError::Overloaded {
                    waiting: long_prompts::QUEUE,
                    retry_after: 1,
                },
                Refused::Stopped => ApiError::Internal("the long-prompt thread stopped".into()),
            })?
    } else {
        tokio::task::spawn_blocking(tokenize)
            .await
            .map_err(|err| ApiError::Internal(err.to_string()))?
    }
    .map_err(|err| ApiError::Internal(err.to_string()))?;
    if ids.len() <= usize::from(add_bos) || ids == [state.model.tokenizer.bos()] {
        return Err(ApiError::bad_param(
            "prompt",
            "the prompt is empty: give at least one character",
        ));
    }
    Ok(ids)
}

/// A prompt given as token ids: checked against the vocabulary, BOS prepended if missing.
fn token_prompt(state: &AppState, mut ids: Vec<u32>) -> Result<Vec<u32>, ApiError> {
    let vocab = state.model.model.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let bos = state.model.tokenizer.bos();
    if ids.first() != Some(&bos) {
        ids.insert(0, bos);
    }
    if ids.len() < 2 {
        return Err(ApiError::bad_param(
            "prompt",
            "the prompt is empty: give at least one token",
        ));
    }
    Ok(ids)
}

/// Runs a validated request through the engine, streaming or not.
async fn generate(
    state: &Arc<AppState>,
    spec: GenerationSpec,
    endpoint: Endpoint,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let meta = ResponseMeta::new(endpoint, &state.served_model, spec.logprobs.is_some());
    let include_usage = spec.include_usage;
    let stream = spec.stream;
    let choices = state.engine.submit(spec, arrived)?;
    if stream {
        return Ok(sse_response(meta, choices, include_usage));
    }
    let mut answers = Vec::with_capacity(choices.len());
    for events in choices {
        match collect_choice(events, meta.logprobs).await? {
            Collected::Answer(answer) => answers.push(answer),
            // Already counted by the engine; answered without counting again.
            Collected::Failed(err) => return Ok(err.into_response()),
        }
    }
    Ok(Json(meta.complete(&answers)).into_response())
}

/// What one choice's events came to.
enum Collected {
    Answer(ChoiceAnswer),
    /// The engine failed the choice (and counted the failure).
    Failed(ApiError),
}

/// Gathers one choice's text and log-probabilities until it finishes.
async fn collect_choice(
    mut events: UnboundedReceiver<Event>,
    with_logprobs: bool,
) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text {
                text: piece,
                logprobs: tokens,
            } => {
                text.push_str(&piece);
                logprobs.extend(tokens);
            }
            Event::Finished(usage) => {
                return Ok(Collected::Answer(ChoiceAnswer {
                    text,
                    logprobs: with_logprobs.then_some(logprobs),
                    usage,
                }));
            }
            Event::Failed(err) => return Ok(Collected::Failed(err)),
        }
    }
    Err(ApiError::Internal(
        "the engine stopped before the request finished".into(),
    ))
}

/// Where a stream of several choices stands.
struct StreamProgress {
    choices: usize,
    finished: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
    done: bool,
}

/// A server-sent-event stream of chunks, the choices' chunks interleaved as they come,
/// ending with `data: [DONE]` once every choice has finished (or one failed). Dropping it
/// (the client went away) closes every choice's channel, and the engine frees them.
fn sse_response(
    meta: ResponseMeta,
    choices: Vec<UnboundedReceiver<Event>>,
    include_usage: bool,
) -> Response {
    let openings: Vec<_> = (0..choices.len())
        .filter_map(|index| meta.opening_chunk(index))
        .map(|chunk| Ok(Bytes::from(sse_data(&chunk))))
        .collect();
    let progress = StreamProgress {
        choices: choices.len(),
        finished: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        done: false,
    };
    let merged =
        futures_util::stream::select_all(choices.into_iter().enumerate().map(|(index, events)| {
            UnboundedReceiverStream::new(events).map(move |event| (index, event))
        }));
    let state = (merged, meta, progress);
    let chunks =
        futures_util::stream::unfold(state, move |(mut merged, meta, mut progress)| async move {
            if progress.done {
                return None;
            }
            let bytes = match merged.next().await {
                Some((index, Event::Text { text, logprobs })) => {
                    sse_data(&meta.text_chunk(index, &text, &logprobs))
                }
                Some((index, Event::Finished(usage))) => {
                    progress.finished += 1;
                    progress.prompt_tokens = usage.prompt_tokens;
                    progress.completion_tokens += usage.completion_tokens;
                    let mut bytes = sse_data(&meta.finish_chunk(index, usage.finish));
                    if progress.finished == progress.choices {
                        if include_usage {
                            let usage = meta
                                .usage_chunk(progress.prompt_tokens, progress.completion_tokens);
                            bytes.push_str(&sse_data(&usage));
                        }
                        bytes.push_str("data: [DONE]\n\n");
                        progress.done = true;
                    }
                    bytes
                }
                Some((_, Event::Failed(err))) => {
                    progress.done = true;
                    sse_data(&err.body()) + "data: [DONE]\n\n"
                }
                None => return None,
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(bytes)),
                (merged, meta, progress),
            ))
        });
    let body = Body::from_stream(futures_util::stream::iter(openings).chain(chunks));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}
