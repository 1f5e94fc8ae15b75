//! `gembatch bench-model`: the model's speed and memory as one JSON object, the figures
//! `benches/model_vs_llamacpp.py` sets beside llama.cpp's.

use std::path::Path;
use std::time::Instant;

use candle_core::IndexOp;

use crate::cli::BenchModelArgs;
use crate::common::proc_file::proc_bytes;
use crate::common::say;
use crate::model::argmax::top2;
use crate::model::error::ModelError;
use crate::model::kv_cache::SequenceCache;
use crate::model::{BatchEntry, Gemma3};

/// Shortest prompt the measurements take.
const MIN_PREFILL_TOKENS: usize = 32;

/// Runs the subcommand.
pub fn run(args: BenchModelArgs) -> anyhow::Result<()> {
    for (name, value) in [
        ("--batch", args.batch),
        ("--repeat", args.repeat),
        ("--decode-tokens", args.decode_tokens),
    ] {
        check(name, value >= 1, "must be at least 1")?;
    }
    let loaded = args.model.load(|line| say::info(line))?;
    let model = &loaded.model;
    // The decode measurements start from the prompt's first 16 tokens and the batch's
    // prompts from 8 tokens up: a shorter prompt leaves them nothing to vary.
    check(
        "--prefill-tokens",
        (MIN_PREFILL_TOKENS..=model.max_chunk()).contains(&args.prefill_tokens),
        &format!("must be {MIN_PREFILL_TOKENS} to {}", model.max_chunk()),
    )?;
    let prompt = synthetic_prompt(args.prefill_tokens);

    let prefill_seconds = best_of(args.repeat, || {
        let mut cache = model.new_sequence();
        let started = Instant::now();
        model.forward(&mut [BatchEntry {
            tokens: &prompt,
            cache: &mut cache,
        }])?;
        Ok(started.elapsed().as_secs_f64())
    })?;
    let single_seconds = best_of(args.repeat, || {
        decode_batch(model, &[&prompt[..16]], args.decode_tokens)
    })?;
    // Comparable with llama.cpp's figure, which covers one sequence only.
    let single_sequence_peak_rss = peak_rss_bytes();
    // Sequences of different lengths, decoded together.
    let prompts: Vec<&[u32]> = (0..args.batch)
        .map(|i| &prompt[..8 + 24 * i % (prompt.len() - 8)])
        .collect();
    let batch_seconds = best_of(args.repeat, || {
        decode_batch(model, &prompts, args.decode_tokens)
    })?;

    let report = serde_json::json!({
        "model": loaded.path.display().to_string(),
        "threads": std::env::var("CANDLE_NUM_THREADS").ok(),
        "load_seconds": loaded.load_seconds,
        "prefill_tokens": prompt.len(),
        "prefill_tokens_per_s": prompt.len() as f64 / prefill_seconds,
        "decode_tokens_per_s": args.decode_tokens as f64 / single_seconds,
        "batch": args.batch,
        "batch_decode_tokens_per_s": (args.batch * args.decode_tokens) as f64 / batch_seconds,
        "peak_rss_bytes": single_sequence_peak_rss,
        "peak_rss_with_batch_bytes": peak_rss_bytes(),
    });
    println!("{report}");
    Ok(())
}

/// A user error naming the flag unless `ok`.
fn check(name: &'static str, ok: bool, reason: &str) -> Result<(), ModelError> {
    if ok {
        return Ok(());
    }
    Err(ModelError::InvalidParameter {
        name,
        reason: reason.to_string(),
    })
}

/// A prompt of `n` ordinary tokens (BOS first) that needs no tokenizer.
fn synthetic_prompt(n: usize) -> Vec<u32> {
    std::iter::once(2)
        .chain((0..n as u32 - 1).map(|i| 1000 + (i * 7919) % 20000))
        .collect()
}

/// Prefills every prompt, then times `steps` greedy decoding steps of all of them together.
fn decode_batch(model: &Gemma3, prompts: &[&[u32]], steps: usize) -> anyhow::Result<f64> {
    let mut caches: Vec<SequenceCache> = prompts.iter().map(|_| model.new_sequence()).collect();
    let mut next = Vec::with_capacity(prompts.len());
    for (prompt, cache) in prompts.iter().zip(caches.iter_mut()) {
        let logits = model.forward(&mut [BatchEntry {
            tokens: prompt,
            cache,
        }])?;
        next.push(top2(&logits.i(0)?.to_vec1()?).0);
    }
    let started = Instant::now();
    for _ in 0..steps {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut batch: Vec<BatchEntry> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| BatchEntry { tokens: t, cache })
            .collect();
        let logits = model.forward(&mut batch)?;
        for (row, token) in next.iter_mut().enumerate() {
            *token = top2(&logits.i(row)?.to_vec1()?).0;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn best_of(repeat: usize, mut run: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        best = best.min(run()?);
    }
    Ok(best)
}

/// Peak resident memory of this process (`VmHWM`), where Linux reports it.
fn peak_rss_bytes() -> Option<u64> {
    proc_bytes(Path::new("/proc/self/status"), "VmHWM")
}
