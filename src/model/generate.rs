//! Generation of one sequence: chunked prefill, then token-by-token decoding until a stop
//! token, the token limit or the context end.

use std::time::Instant;

use candle_core::IndexOp;

use super::error::{ModelError, Result};
use super::gemma3::{BatchEntry, Gemma3};
use super::sampling::SamplingParams;
use super::tokenizer::GemmaTokenizer;

/// Why generation ended (the OpenAI `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI API's name for it (`stop`, `length`), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the stop token excluded.
    pub output_ids: Vec<u32>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Seconds spent on the prompt (up to the first sampled token).
    pub prefill_seconds: f64,
    /// Seconds spent producing the tokens after the first.
    pub decode_seconds: f64,
    /// Tokens produced by decoding steps (all but the first).
    pub decode_steps: usize,
}

/// Generates up to `max_tokens` tokens after `prompt_ids` (which carry their BOS), calling
/// `on_token` with each new id as soon as it is sampled.
pub fn generate(
    model: &Gemma3,
    tokenizer: &GemmaTokenizer,
    prompt_ids: &[u32],
    max_tokens: usize,
    sampling: &SamplingParams,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    sampling.validate()?;
    if prompt_ids.is_empty() || prompt_ids == [tokenizer.bos()] {
        return Err(ModelError::EmptyPrompt);
    }
    if max_tokens == 0 {
        return Err(ModelError::InvalidParameter {
            name: "max_tokens",
            reason: "must be at least 1".into(),
        });
    }
    if prompt_ids.len() >= model.context() {
        return Err(ModelError::PromptTooLong {
            tokens: prompt_ids.len(),
            context: model.context(),
        });
    }
    let mut sampler = sampling.sampler();
    let mut cache = model.new_sequence();
    let started = Instant::now();
    let mut logits = None;
    for chunk in prompt_ids.chunks(model.max_chunk()) {
        logits = Some(model.forward(&mut [BatchEntry {
            tokens: chunk,
            cache: &mut cache,
        }])?);
    }
    let mut next = sampler.sample(&logits.expect("prompt is not empty").i(0)?)?;
    let prefill_seconds = started.elapsed().as_secs_f64();

    let decode_started = Instant::now();
    let mut output_ids = Vec::new();
    let mut decode_steps = 0;
    let finish = loop {
        if tokenizer.is_end_of_generation(next) {
            break FinishReason::Stop;
        }
        output_ids.push(next);
        on_token(next)?;
        if output_ids.len() >= max_tokens || cache.len >= model.context() {
            break FinishReason::Length;
        }
        let logits = model.forward(&mut [BatchEntry {
            tokens: &[next],
            cache: &mut cache,
        }])?;
        next = sampler.sample(&logits.i(0)?)?;
        decode_steps += 1;
    };
    Ok(Generation {
        output_ids,
        finish,
        prefill_seconds,
        decode_seconds: decode_started.elapsed().as_secs_f64(),
        decode_steps,
    })
}
