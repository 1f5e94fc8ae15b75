//! `gembatch logits`: the model's logits after every token of a sequence, fed one token at
//! a time through the serving path's forward pass (teacher forcing), written as raw f32 rows
//! for a comparison with a reference implementation (benches/gpu_check.py).

use std::io::{BufWriter, Write};

use anyhow::Context;

use crate::cli::LogitsArgs;
use crate::common::say;
use crate::model::device::device_name;
use crate::model::{BatchEntry, ModelError};

/// Runs the subcommand; prints one JSON line describing what was written.
pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
    let loaded = args.model.load(|line| say::info(line))?;
    let ids = match &args.text {
        Some(text) => loaded.tokenizer.encode(text, true, true)?,
        None => args.ids.clone(),
    };
    let vocab = loaded.model.config().vocab_size;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::InvalidParameter {
            name: "--ids",
            reason: format!("token {bad} is outside the model's vocabulary of {vocab}"),
        }
        .into());
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let mut cache = loaded.model.new_sequence();
    let started = std::time::Instant::now();
    for id in &ids {
        let logits = loaded.model.forward(&mut [BatchEntry {
            tokens: std::slice::from_ref(id),
            cache: &mut cache,
        }])?;
        for value in logits.squeeze(0)?.to_vec1::<f32>()? {
            out.write_all(&value.to_le_bytes())?;
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "tokens": ids.len(),
            "vocab": vocab,
            "ids": ids,
            "device": device_name(loaded.model.device()),
            "weights": loaded.weights,
            "load_seconds": loaded.load_seconds,
            "forward_seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
