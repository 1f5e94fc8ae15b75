//! `gembatch generate`: continue a prompt, streaming text or printing one JSON object.

use std::io::Write;

use crate::cli::GenerateArgs;
use crate::common::say;
use crate::model::ModelError;
use crate::model::generate::generate;
use crate::model::sampling::{SamplingParams, random_seed};
use crate::model::text_stream::TextStream;

/// Runs the subcommand.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.prompt.is_empty() {
        return Err(ModelError::EmptyPrompt.into());
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed.unwrap_or_else(random_seed),
    };
    sampling.validate()?;
    let loaded = args.model.load(|line| say::info(line))?;
    let tokenizer = &loaded.tokenizer;
    let prompt_ids = tokenizer.encode(&args.prompt, true, true)?;
    let mut stream = TextStream::default();
    let mut stdout = std::io::stdout().lock();
    let generation = generate(
        &loaded.model,
        tokenizer,
        &prompt_ids,
        args.max_tokens,
        &sampling,
        |id| {
            if !args.json
                && let Some(piece) = stream.push(tokenizer, id)?
            {
                // A closed stdout (`| head`) ends the output, not the process with a panic.
                let _ = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|_| stdout.flush());
            }
            Ok(())
        },
    )?;
    let text = tokenizer.decode(&generation.output_ids)?;
    let per_second = |tokens: usize, seconds: f64| {
        if seconds > 0.0 {
            tokens as f64 / seconds
        } else {
            0.0
        }
    };
    if args.json {
        let report = serde_json::json!({
            "prompt": args.prompt,
            "prompt_ids": prompt_ids,
            "output_ids": generation.output_ids,
            "text": text,
            "finish_reason": generation.finish,
            "prompt_tokens": prompt_ids.len(),
            "output_tokens": generation.output_ids.len(),
            "prefill_tokens_per_s": per_second(prompt_ids.len(), generation.prefill_seconds),
            "decode_tokens_per_s": per_second(generation.decode_steps, generation.decode_seconds),
            "load_seconds": loaded.load_seconds,
            "seed": sampling.seed,
        });
        writeln!(stdout, "{report}")?;
    } else {
        writeln!(stdout)?;
        say::info(format!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, finish: {:?}]",
            prompt_ids.len(),
            per_second(prompt_ids.len(), generation.prefill_seconds),
            generation.output_ids.len(),
            per_second(generation.decode_steps, generation.decode_seconds),
            generation.finish,
        ));
    }
    Ok(())
}
