//! The continuous-batching engine: one thread owns the model and runs it step after step.
//! Between steps it admits waiting requests (up to `max_batch` sequences), gives every
//! decoding sequence one token and the prefilling ones prompt chunks from what is left of
//! the step's token budget (so a long prompt never stalls everyone's decoding), samples
//! each sequence with its own seeded sampler, and drops a sequence the moment it finishes
//! or its client goes away. Requests reach it over a channel and answer through their own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use candle_core::{DType, Storage, Tensor};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::api::GenerationSpec;
use super::error::ApiError;
use super::metrics::Metrics;
use super::sequence::{Outcome, Sequence};
use super::step_log::{StepLog, StepRecord};
use super::token_logprobs::GeneratedToken;
use crate::model::generate::FinishReason;
use crate::model::sampling::{Draw, sample_rows};
use crate::model::{LoadedModel, ModelError};

/// How much the engine takes on at once.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most sequences in one step.
    pub max_batch: usize,
    /// Most tokens (decode tokens plus prompt chunks) in one step.
    pub max_batch_tokens: usize,
    /// Most requests waiting for a place in the batch; beyond it requests are refused.
    pub max_waiting: usize,
}

/// What a sequence hears back, in order: text pieces, then one `Finished` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// Newly generated text (possibly empty), and the log-probabilities of the tokens
    /// generated since the last piece when the request asked for them.
    Text {
        text: String,
        logprobs: Vec<GeneratedToken>,
    },
    /// Generation ended normally.
    Finished(Usage),
    /// Generation failed; nothing more follows.
    Failed(ApiError),
}

/// Token counts and finish reason of a finished request.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish: FinishReason,
}

/// A request on its way to the engine.
pub struct Request {
    pub spec: GenerationSpec,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// The handle the HTTP layer submits through; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

/// State the engine thread and the handles share.
struct Shared {
    config: EngineConfig,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    abort: AtomicBool,
    /// False once the engine thread has ended, normally or by a panic.
    alive: AtomicBool,
}

/// Marks the engine dead when its thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// Runs `body` on the engine thread, with `shared` marked dead when it returns or panics.
fn spawn_engine_thread(shared: Arc<Shared>, body: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("gembatch-engine".into())
        .spawn(move || {
            let _alive = AliveGuard(shared);
            body();
        })
        .expect("spawning the engine thread");
}

/// Starts the engine thread on a loaded model, writing each step to `step_log` if given.
pub fn start(
    model: Arc<LoadedModel>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    step_log: Option<StepLog>,
) -> EngineHandle {
    let (requests, inbox) = mpsc::channel();
    let shared = Arc::new(Shared {
        config,
        metrics,
        draining: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        alive: AtomicBool::new(true),
    });
    let engine = Engine {
        model,
        inbox,
        shared: shared.clone(),
        waiting: VecDeque::new(),
        running: Vec::new(),
        step_log,
    };
    spawn_engine_thread(shared.clone(), move || engine.run());
    EngineHandle { requests, shared }
}

impl EngineHandle {
    /// Queues a request as one sequence per choice (`n`), all or none: refused with 429
    /// when the waiting queue has no room for them all and with 503 while draining. Each
    /// choice answers on its own channel, in choice order.
    pub fn submit(
        &self,
        spec: GenerationSpec,
        arrived: Instant,
    ) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
        if self.is_draining() {
            return Err(ApiError::Draining);
        }
        let max_waiting = self.shared.config.max_waiting;
        if spec.choices > max_waiting {
            return Err(ApiError::bad_param(
                "n",
                format!(
                    "n = {} is more than this server queues at once ({max_waiting}, its \
                     --max-waiting); ask for fewer choices",
                    spec.choices
                ),
            ));
        }
        if !self.shared.metrics.try_enqueue(spec.choices, max_waiting) {
            return Err(ApiError::Overloaded {
                waiting: max_waiting,
                retry_after: 1,
            });
        }
        let mut receivers = Vec::with_capacity(spec.choices);
        for index in 0..spec.choices {
            let (events, receiver) = unbounded_channel();
            let request = Request {
                spec: spec.for_choice(index),
                events,
                arrived,
            };
            if self.requests.send(request).is_err() {
                // The engine is gone: nothing will dequeue the choices not sent.
                for _ in index..spec.choices {
                    self.shared.metrics.dequeue();
                }
                return Err(ApiError::Internal("the engine has stopped".into()));
            }
            receivers.push(receiver);
        }
        Ok(receivers)
    }

    /// Stops admitting requests (the server is shutting down).
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the engine has stopped admitting requests.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Whether the engine thread still runs (a panic in the model ends it).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Ends every request still waiting or running with an error (the drain grace period
    /// is over).
    pub fn abort_all(&self) {
        self.shared.abort.store(true, Ordering::SeqCst);
    }

    /// Requests waiting or running.
    pub fn in_flight(&self) -> u64 {
        self.shared.metrics.in_flight()
    }
}

/// What one running sequence could use in the next step.
#[derive(Debug, Clone, Copy)]
struct Want {
    /// Whether it is still prefilling its prompt.
    prefill: bool,
    /// Tokens it could take: a prompt chunk, or 1 to decode.
    tokens: usize,
}

/// Plans one step as `(sequence index, tokens)`: every decoding sequence first, one token
/// each, then prompt chunks in arrival order from what is left of `budget`.
fn plan_step(wants: &[Want], mut budget: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i].prefill);
    let mut planned = Vec::with_capacity(order.len());
    for i in order {
        let take = wants[i].tokens.min(budget);
        if take > 0 {
            budget -= take;
            planned.push((i, take));
        }
    }
    planned
}

/// Calls `f` with `logits` as host f32 values: the tensor's own memory when it already is
/// that (a CPU step: 16 rows are 16 MB, not worth copying every step), else one copy for
/// the whole batch (on a GPU, rows x 1 MB for Gemma 3's 262k vocabulary in one transfer,
/// not one synchronising copy per sequence).
fn with_host_values<R>(logits: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, ModelError> {
    if logits.dtype() == DType::F32 {
        let (storage, layout) = logits.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&cpu.as_slice::<f32>()?[start..end]));
        }
    }
    let values = logits
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(f(&values))
}

/// The engine thread's own state.
struct Engine {
    model: Arc<LoadedModel>,
    inbox: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    waiting: VecDeque<Request>,
    running: Vec<Sequence>,
    step_log: Option<StepLog>,
}

impl Engine {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.inbox.recv_timeout(Duration::from_millis(100)) {
                    Ok(request) => self.waiting.push_back(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            self.waiting.extend(self.inbox.try_iter());
            if self.shared.abort.load(Ordering::SeqCst) {
                self.abort_everything();
                continue;
            }
            self.drop_abandoned();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Forgets requests whose client has gone away, waiting or running.
    fn drop_abandoned(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|request| !request.events.is_closed());
        for _ in self.waiting.len()..before {
            self.metrics().dequeue();
            self.metrics().count_error("client_disconnected");
        }
        let before = self.running.len();
        self.running.retain(|sequence| !sequence.abandoned());
        for _ in self.running.len()..before {
            self.metrics().count_error("client_disconnected");
        }
        self.metrics().set_running(self.running.len());
    }

    /// Moves waiting requests into the batch while there is room.
    fn admit(&mut self) {
        while self.running.len() < self.shared.config.max_batch {
            let Some(request) = self.waiting.pop_front() else {
                break;
            };
            self.running.push(Sequence::new(&self.model, request));
            self.metrics().set_running(self.running.len());
            self.metrics().dequeue();
        }
    }

    /// One model step over the batch.
    fn step(&mut self) {
        let max_chunk = self.model.model.max_chunk();
        let wants: Vec<Want> = self
            .running
            .iter()
            .map(|sequence| Want {
                prefill: sequence.is_prefilling(),
                tokens: sequence.tokens_wanted(max_chunk),
            })
            .collect();
        let planned = plan_step(&wants, self.shared.config.max_batch_tokens);
        let started = Instant::now();
        let mut record = StepRecord {
            waiting: self.waiting.len(),
            ..StepRecord::default()
        };
        let mut slots: Vec<Option<&mut Sequence>> = self.running.iter_mut().map(Some).collect();
        let mut entries = Vec::with_capacity(planned.len());
        for &(i, take) in &planned {
            let sequence = slots[i].take().expect("each sequence planned once");
            let entry = sequence.batch_entry(take);
            record.count(wants[i].prefill, entry.cache.len, take);
            entries.push(entry);
        }
        self.shared.metrics.set_batch_size(entries.len());
        let result = self.model.model.forward(&mut entries);
        drop(entries);
        let outcome = result.and_then(|logits| {
            with_host_values(&logits, |values| self.take_step(&planned, values))
        });
        if let Some(log) = self.step_log.as_mut() {
            record.at_s = log.elapsed(started);
            record.seconds = started.elapsed().as_secs_f64();
            log.write(&record);
        }
        match outcome {
            Ok(finished) => self.remove(finished),
            Err(err) => {
                let message = err.to_string();
                tracing::error!(%message, "model step failed");
                self.fail(planned.iter().map(|&(i, _)| i), &message);
            }
        }
    }

    /// Hands each planned sequence its row of the step's logits (`values`: `[rows, vocab]`
    /// f32, one row per planned entry): prompt progress, then the draws of every sequence
    /// that samples, all at once, then each token accepted in turn. Returns the sequences
    /// that finished.
    fn take_step(&mut self, planned: &[(usize, usize)], values: &[f32]) -> Vec<usize> {
        let vocab = values.len() / planned.len().max(1);
        let rows: Vec<&[f32]> = values.chunks(vocab.max(1)).collect();
        let metrics = &self.shared.metrics;
        let sampling: Vec<bool> = planned
            .iter()
            .map(|&(i, take)| self.running[i].take_step(take, metrics))
            .collect();
        let mut slots: Vec<Option<&mut Sequence>> = self.running.iter_mut().map(Some).collect();
        let draws = planned
            .iter()
            .zip(&sampling)
            .enumerate()
            .filter(|&(_, (_, &samples))| samples)
            .map(|(row, (&(i, _), _))| Draw {
                sampler: slots[i]
                    .take()
                    .expect("each sequence planned once")
                    .sampler(),
                logits: rows[row],
            })
            .collect();
        let mut tokens = sample_rows(draws).into_iter();
        let mut finished = Vec::new();
        for (row, (&(i, _), &samples)) in planned.iter().zip(&sampling).enumerate() {
            if !samples {
                continue;
            }
            let id = tokens.next().expect("one token per draw");
            match self.running[i].accept(&self.model, id, rows[row], metrics) {
                Ok(Outcome::Continue) => {}
                Ok(Outcome::Finished) => finished.push(i),
                Err(message) => {
                    self.running[i].fail(ApiError::Internal(message));
                    metrics.count_error("internal");
                    finished.push(i);
                }
            }
        }
        finished
    }

    /// Ends these running sequences with an internal error.
    fn fail(&mut self, indices: impl Iterator<Item = usize>, message: &str) {
        let indices: Vec<usize> = indices.collect();
        for &i in &indices {
            self.running[i].fail(ApiError::Internal(message.to_string()));
            self.metrics().count_error("internal");
        }
        self.remove(indices);
    }

    /// Removes running sequences by index, keeping the others in arrival order.
    fn remove(&mut self, indices: Vec<usize>) {
        let mut index = 0;
        self.running.retain(|_| {
            index += 1;
            !indices.contains(&(index - 1))
        });
        self.metrics().set_running(self.running.len());
    }

    /// Ends every waiting and running request: the server is going away.
    fn abort_everything(&mut self) {
        let aborted =
            || ApiError::Internal("the server shut down before the request finished".into());
        for request in self.waiting.drain(..) {
            let _ = request.events.send(Event::Failed(aborted()));
            self.shared.metrics.dequeue();
            self.shared.metrics.count_error("aborted");
        }
        for sequence in self.running.drain(..) {
            sequence.fail(aborted());
            self.shared.metrics.count_error("aborted");
        }
        self.metrics().set_running(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(prefill: bool, tokens: usize) -> Want {
        Want { prefill, tokens }
    }

    #[test]
    fn an_engine_thread_that_panics_is_reported_dead() {
        let shared = Arc::new(Shared {
            config: EngineConfig {
                max_batch: 1,
                max_batch_tokens: 1,
                max_waiting: 1,
            },
            metrics: Arc::new(Metrics::new("test")),
            draining: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            alive: AtomicBool::new(true),
        });
        let (requests, _inbox) = mpsc::channel();
        let handle = EngineHandle {
            requests,
            shared: shared.clone(),
        };
        assert!(handle.is_alive());
        spawn_engine_thread(shared, || panic!("a model bug"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!handle.is_alive());
    }

    #[test]
    fn decoding_goes_first_and_prompts_share_what_is_left() {
        let wants = [
            want(true, 512),
            want(false, 1),
            want(true, 300),
            want(false, 1),
        ];
        assert_eq!(plan_step(&wants, 512), vec![(1, 1), (3, 1), (0, 510)]);
        assert_eq!(
            plan_step(&wants, 2000),
            vec![(1, 1), (3, 1), (0, 512), (2, 300)]
        );
        assert_eq!(plan_step(&wants, 1), vec![(1, 1)]);
    }
}
