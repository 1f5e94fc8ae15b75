//! Drawing one sampled token over Gemma 3's 262,144 logits: gembatch's `Drawer` against
//! candle's `LogitsProcessor` (what the server used before), side by side in one run, per
//! filter, printing microseconds per token and the ratio.
//!
//!     cargo bench --bench sampling -- [--draws 200] [--rounds 3]
//!
//! The logits are a trained model's shape, not uniform noise: a few hundred tokens stand
//! out of a flat floor, so top-p sets hold tens of tokens, as they do in generation.

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use gembatch::model::draw::{Drawer, Filter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCAB: usize = 262_144;

/// `--name VALUE` from the bench's arguments.
fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// Peaked logits: a floor of noise, a few hundred tokens above it, one clear favourite.
fn logits(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..VOCAB)
        .map(|i| {
            let noise = rng.random::<f32>() * 3.0 - 8.0;
            match i % 1021 {
                0 => noise + 14.0,
                7 if i < 4000 => 12.0,
                _ => noise,
            }
        })
        .collect()
}

/// Microseconds per draw of `draw` over `draws` logit vectors.
fn time(samples: &[Vec<f32>], mut draw: impl FnMut(&[f32]) -> u32) -> f64 {
    let started = Instant::now();
    for values in samples {
        black_box(draw(values));
    }
    started.elapsed().as_secs_f64() * 1e6 / samples.len() as f64
}

fn main() {
    let draws = flag("--draws", 200);
    let rounds = flag("--rounds", 3);
    let samples: Vec<Vec<f32>> = (0..draws as u64).map(logits).collect();
    let tensors: Vec<Tensor> = samples
        .iter()
        .map(|v| Tensor::from_slice(v, VOCAB, &Device::Cpu).expect("tensor"))
        .collect();
    let cases = [
        ("temperature 0.8", 0.8, 0, 1.0),
        ("top_k 40", 0.8, 40, 1.0),
        ("top_p 0.95", 0.8, 0, 0.95),
        ("top_k 40 + top_p 0.95", 0.8, 40, 0.95),
    ];
    println!("| filter | candle µs/token | gembatch µs/token | ratio |");
    println!("|---|---|---|---|");
    for (name, temperature, top_k, top_p) in cases {
        let sampling = match (top_k, top_p < 1.0) {
            (0, false) => Sampling::All { temperature },
            (k, false) => Sampling::TopK { k, temperature },
            (0, true) => Sampling::TopP {
                p: top_p,
                temperature,
            },
            (k, true) => Sampling::TopKThenTopP {
                k,
                p: top_p,
                temperature,
            },
        };
        let filter = Filter {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
        };
        let (mut candle_best, mut ours_best) = (f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let mut processor = LogitsProcessor::from_sampling(1, sampling.clone());
            let mut index = 0;
            let candle = time(&samples, |_| {
                index += 1;
                processor.sample(&tensors[index - 1]).expect("candle draw")
            });
            let mut drawer = Drawer::default();
            let mut rng = StdRng::seed_from_u64(1);
            let ours = time(&samples, |values| drawer.draw(values, filter, &mut rng));
            candle_best = candle_best.min(candle);
            ours_best = ours_best.min(ours);
        }
        println!(
            "| {name} | {candle_best:.0} | {ours_best:.0} | {:.1}x |",
            candle_best / ours_best
        );
    }
}
