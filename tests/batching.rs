//! Continuous batching at the model level: sequences of different lengths, at different
//! positions, joining and leaving between steps, give the same logits in one batch as alone.

mod common;

use candle_core::{IndexOp, Tensor};
use common::{default_model, default_model_path};
use gembatch::model::argmax::top2;
use gembatch::model::kv_cache::SequenceCache;
use gembatch::model::{self, BatchEntry, LoadOptions};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// With dense weights the arithmetic is exact per row, so a sequence's logits must not
/// depend on its batch companions at all: any cross-talk between sequences shows up here.
/// (Quantized kernels round activations differently for one row and for many, which moves
/// logits by up to ~1 %, as llama.cpp's own batched and single-row paths do.)
#[test]
fn batched_sequences_match_their_solo_runs() {
    let options = LoadOptions {
        dense: true,
        ..LoadOptions::default()
    };
    let loaded = &model::load(&default_model_path(), &options).unwrap();
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Kubernetes is a system for managing",
    ];
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tokenizer.encode(p, true, true).unwrap())
        .collect();

    // Solo: each prompt, then three greedy decode steps, alone.
    let mut solo = Vec::new();
    for prompt in &ids {
        let mut cache = model.new_sequence();
        let mut rows = vec![
            model
                .forward(&mut [BatchEntry {
                    tokens: prompt,
                    cache: &mut cache,
                }])
                .unwrap()
                .i(0)
                .unwrap(),
        ];
        for _ in 0..3 {
            let next = top2(&rows.last().unwrap().to_vec1::<f32>().unwrap()).0;
            rows.push(
                model
                    .forward(&mut [BatchEntry {
                        tokens: &[next],
                        cache: &mut cache,
                    }])
                    .unwrap()
                    .i(0)
                    .unwrap(),
            );
        }
        solo.push(rows);
    }

    // Batched: sequence 0 starts alone, 1 and 2 join while 0 decodes (mixing prefill and
    // decode in one pass), and every step runs all live sequences together.
    let mut caches: Vec<_> = (0..3).map(|_| model.new_sequence()).collect();
    let mut step = [0usize; 3];
    let mut pending: Vec<Vec<u32>> = ids.clone();
    let schedule: [&[usize]; 5] = [&[0], &[0, 1, 2], &[0, 1, 2], &[0, 1, 2], &[1, 2]];
    for live in schedule {
        let mut entries = Vec::new();
        let mut order = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if live.contains(&i) && step[i] <= 3 {
                entries.push((i, cache));
            }
        }
        let mut batch: Vec<BatchEntry> = entries
            .iter_mut()
            .map(|(i, cache)| {
                order.push(*i);
                BatchEntry {
                    tokens: &pending[*i],
                    cache,
                }
            })
            .collect();
        let logits = model.forward(&mut batch).unwrap();
        drop(batch);
        for (row, &i) in order.iter().enumerate() {
            let got = logits.i(row).unwrap();
            let want = &solo[i][step[i]];
            let diff = max_abs_diff(&got, want);
            assert!(
                diff < 1e-3,
                "sequence {i} step {}: batched logits differ from solo by {diff}",
                step[i]
            );
            pending[i] = vec![top2(&got.to_vec1::<f32>().unwrap()).0];
            step[i] += 1;
        }
    }
    assert_eq!(
        step,
        [4, 4, 4],
        "every sequence ran its prompt and three decode steps"
    );
}

#[test]
fn sliding_window_cache_stays_bounded_for_long_sequences() {
    let model = &default_model().model;
    let mut cache = model.new_sequence();
    let chunk: Vec<u32> = (0..model.max_chunk() as u32)
        .map(|i| 1000 + i % 50)
        .collect();
    let feed = |cache: &mut SequenceCache, chunks: usize| {
        for _ in 0..chunks {
            model
                .forward(&mut [BatchEntry {
                    tokens: &chunk,
                    cache,
                }])
                .unwrap();
        }
    };
    // Two chunks fill the sliding-window rings (window + one chunk of slots)...
    feed(&mut cache, 2);
    let full_rings = cache.bytes();
    // ...after which only the global layers grow.
    feed(&mut cache, 2);
    let cfg = model.config();
    let global_layers = (0..cfg.num_layers).filter(|&l| !cfg.is_sliding(l)).count();
    let per_position = 2 * cfg.kv_dim() * 4;
    let growth = cache.bytes() - full_rings;
    assert_eq!(growth, global_layers * per_position * 2 * model.max_chunk());
}

/// The CPU attention kernel against candle's tensor attention (the GPU path), on a prompt
/// longer than the sliding window, fed in chunks, then decoding: the same calls in another
/// arrangement, so the logits have the same bits (this model amplifies any rounding
/// difference through the 8-bit activation quantization of the next layer).
#[test]
fn host_attention_matches_the_tensor_attention() {
    let path = default_model_path();
    let host = model::load(&path, &LoadOptions::default()).unwrap();
    let mut tensors = model::load(&path, &LoadOptions::default()).unwrap();
    tensors.model.use_tensor_attention();
    let prompt = common::golden("gemma3-270m-long.jsonl")[0]
        .prompt_ids
        .clone()
        .unwrap();
    assert!(prompt.len() > host.model.max_chunk() + 200);

    let run = |model: &model::Gemma3| -> Vec<Tensor> {
        let mut cache = model.new_sequence();
        let mut rows = Vec::new();
        for chunk in prompt.chunks(300) {
            let logits = model
                .forward(&mut [BatchEntry {
                    tokens: chunk,
                    cache: &mut cache,
                }])
                .unwrap();
            rows.push(logits.i(0).unwrap());
        }
        for &token in &prompt[..8] {
            let logits = model
                .forward(&mut [BatchEntry {
                    tokens: &[token],
                    cache: &mut cache,
                }])
                .unwrap();
            rows.push(logits.i(0).unwrap());
        }
        rows
    };
    let (got, want) = (run(&host.model), run(&tensors.model));
    for (step, (got, want)) in got.iter().zip(&want).enumerate() {
        let diff = max_abs_diff(got, want);
        assert_eq!(diff, 0.0, "step {step}: host attention differs by {diff}");
    }
}
