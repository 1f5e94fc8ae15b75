//! One request inside the engine: its KV cache, sampler, prefill progress, text
//! detokenizer and stop matcher, and how each model step's logits advance it.

use std::time::Instant;

use super::engine::{Event, Request, Usage};
use super::error::ApiError;
use super::metrics::Metrics;
use super::stop::{Release, StopMatcher};
use super::token_logprobs::{GeneratedToken, TokenText};
use crate::model::generate::FinishReason;
use crate::model::kv_cache::SequenceCache;
use crate::model::logprobs::{TokenLogprob, step_logprobs};
use crate::model::sampling::Sampler;
use crate::model::text_stream::TextStream;
use crate::model::{BatchEntry, LoadedModel};

/// What a step did to a sequence.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It goes on in the next step.
    Continue,
    /// It finished and has been answered; remove it from the batch.
    Finished,
}

/// A request being prefilled or decoded.
pub struct Sequence {
    request: Request,
    cache: SequenceCache,
    sampler: Sampler,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The token to feed in the next decode step.
    next_input: [u32; 1],
    generated: usize,
    text: TextStream,
    /// Characters the detokenizer has produced, before any stop sequence cuts them.
    text_chars: usize,
    stop: StopMatcher,
    /// Log-probabilities of generated tokens not yet sent with a piece of text.
    logprobs: Vec<GeneratedToken>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
}

impl Sequence {
    /// A fresh sequence for an admitted request.
    pub fn new(model: &LoadedModel, request: Request) -> Self {
        Self {
            cache: model.model.new_sequence(),
            sampler: request.spec.sampling.sampler(),
            stop: StopMatcher::new(request.spec.stop.clone()),
            request,
            prefilled: 0,
            next_input: [0],
            generated: 0,
            text: TextStream::default(),
            text_chars: 0,
            logprobs: Vec::new(),
            first_token_at: None,
            last_token_at: None,
        }
    }

    /// Whether the client has gone away.
    pub fn abandoned(&self) -> bool {
        self.request.events.is_closed()
    }

    /// Whether prompt tokens remain to be prefilled.
    pub fn is_prefilling(&self) -> bool {
        self.prefilled < self.request.spec.prompt_ids.len()
    }

    /// Tokens this sequence could use in the next step: a prompt chunk or one decode token.
    pub fn tokens_wanted(&self, max_chunk: usize) -> usize {
        if self.is_prefilling() {
            (self.request.spec.prompt_ids.len() - self.prefilled).min(max_chunk)
        } else {
            1
        }
    }

    /// The batch entry of the next step, with `take` tokens (at most [`Self::tokens_wanted`]).
    pub fn batch_entry(&mut self, take: usize) -> BatchEntry<'_> {
        let tokens = if self.is_prefilling() {
            &self.request.spec.prompt_ids[self.prefilled..self.prefilled + take]
        } else {
            &self.next_input[..]
        };
        BatchEntry {
            tokens,
            cache: &mut self.cache,
        }
    }

    /// Counts the `take` prompt tokens a step fed in; true when the sequence now has a
    /// token to draw from that step's logits (its prompt is complete, or it was decoding).
    pub fn take_step(&mut self, take: usize, metrics: &Metrics) -> bool {
        if self.is_prefilling() {
            self.prefilled += take;
            metrics.add_prompt_tokens(take);
        }
        !self.is_prefilling()
    }

    /// The sampler, for drawing this step's token (possibly on another thread).
    pub fn sampler(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// Takes the token `id` drawn from `logits` (this sequence's row of the step, as f32):
    /// streams its text, and ends the sequence on end-of-turn, a stop sequence or
    /// `max_tokens`.
    pub fn accept(
        &mut self,
        model: &LoadedModel,
        id: u32,
        logits: &[f32],
        metrics: &Metrics,
    ) -> Result<Outcome, String> {
        let tokenizer = &model.tokenizer;
        if tokenizer.is_end_of_generation(id) && !self.request.spec.ignore_eos {
            return Ok(self.finish(FinishReason::Stop, metrics));
        }
        self.generated += 1;
        metrics.add_generation_tokens(1);
        let now = Instant::now();
        match self.last_token_at.replace(now) {
            Some(previous) => metrics.observe_token_gap((now - previous).as_secs_f64()),
            None => {
                self.first_token_at = Some(now);
                metrics.observe_first_token((now - self.request.arrived).as_secs_f64());
            }
        }
        if let Some(top) = self.request.spec.logprobs {
            let step = step_logprobs(logits, id, top);
            let text = |token: TokenLogprob| TokenText {
                bytes: tokenizer.token_bytes(token.id),
                logprob: token.logprob,
            };
            self.logprobs.push(GeneratedToken {
                sampled: text(step.sampled),
                top: step.top.into_iter().map(text).collect(),
                text_offset: self.text_chars,
            });
        }
        let piece = self
            .text
            .push(tokenizer, id)
            .map_err(|err| err.to_string())?;
        if let Some(piece) = piece {
            self.text_chars += piece.chars().count();
            match self.stop.push(&piece) {
                Release::Text(text) => self.send_text(text),
                Release::Stopped(text) => {
                    self.send_text(text);
                    return Ok(self.finish(FinishReason::Stop, metrics));
                }
            }
        }
        if self.generated >= self.request.spec.max_tokens {
            return Ok(self.finish(FinishReason::Length, metrics));
        }
        self.next_input = [id];
        Ok(Outcome::Continue)
    }

    /// Answers the request with an error.
    pub fn fail(&self, err: ApiError) {
        let _ = self.request.events.send(Event::Failed(err));
    }

    /// Sends released text (empty while a stop sequence may be starting) with the
    /// log-probabilities of the tokens generated since the last send; nothing when there
    /// is neither.
    fn send_text(&mut self, text: String) {
        if !text.is_empty() || !self.logprobs.is_empty() {
            let logprobs = std::mem::take(&mut self.logprobs);
            let _ = self.request.events.send(Event::Text { text, logprobs });
        }
    }

    fn finish(&mut self, finish: FinishReason, metrics: &Metrics) -> Outcome {
        let rest = self.stop.finish();
        self.send_text(rest);
        let usage = Usage {
            prompt_tokens: self.request.spec.prompt_ids.len(),
            completion_tokens: self.generated,
            finish,
        };
        let per_token = match (self.first_token_at, self.generated) {
            (Some(first), n) if n > 1 => Some(first.elapsed().as_secs_f64() / (n - 1) as f64),
            _ => None,
        };
        // Counted before the client hears the end, so metrics read after an answer hold it.
        metrics.observe_finished(
            self.request.arrived.elapsed().as_secs_f64(),
            per_token,
            finish.as_str(),
        );
        let _ = self.request.events.send(Event::Finished(usage));
        Outcome::Finished
    }
}
