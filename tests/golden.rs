//! The model against llama.cpp on the same GGUF, in a form that holds on any x86-64 CPU:
//! exact token ids for every text, and along 11 greedy paths (352 steps, among them a
//! 753-token prompt beyond the sliding window) llama.cpp's ten highest logits at every step,
//! made by `tests/data/make_golden.py topk` with two builds of llama.cpp that sum in other
//! orders: for AVX2 (`gemma3-270m-llamacpp-topk.jsonl`, the project's environment) and for
//! SSE4.2 (`-march=x86-64-v2`, `...-topk-sse42.jsonl`). gembatch must match both.
//!
//! Exact greedy tokens are not portable: llama.cpp itself picks another top token on
//! another CPU where its own top two are nearly tied (its SIMD paths sum in other orders).
//! So gembatch, fed the same path (teacher forcing), must pick llama.cpp's top token at every
//! step unless llama.cpp's logit for gembatch's pick is within [`TIE_MARGIN`] of its top,
//! and every logit of llama.cpp's top ten must be within [`MAX_LOGIT_DELTA`] of gembatch's.

mod common;

use candle_core::IndexOp;
use common::{Golden, default_model, golden};
use gembatch::model::argmax::top2;
use gembatch::model::generate::generate;
use gembatch::model::sampling::SamplingParams;
use gembatch::model::{BatchEntry, LoadedModel};
use serde::Deserialize;

/// Below this gap (in logits) between llama.cpp's top token and another, which of the two
/// is top is a property of the CPU's summation order, not of the model. Measured over these
/// 352 steps (`make_golden.py spread`): llama.cpp built for AVX2 and for SSE4.2 on one AMD
/// EPYC (Zen 3) pick different top tokens at 12 steps, where the top two were at most 0.23
/// apart; llama.cpp on an Intel Xeon with AMX against the stored reference paths, at most
/// 0.44 apart (issue #15). gembatch's pick, where it is not llama.cpp's top: at most 0.32
/// behind it against the AVX2 build, 0.56 against the SSE4.2 build. A wrong model or kernel
/// moves the top token by whole logits.
const TIE_MARGIN: f32 = 0.75;

/// Largest |gembatch − llama.cpp| of any logit in llama.cpp's top ten at any step. Both
/// quantize activations to 8 bits before each quantized matmul, and a rounding flip early
/// in the 18 layers moves every later logit: llama.cpp's own AVX2 and SSE4.2 builds differ
/// by up to 2.05 (median 0.19) on the same machine; gembatch against llama.cpp (AVX2), up
/// to 1.82 (median 0.20). 2.5 leaves room for the CPU the goldens were not made on.
const MAX_LOGIT_DELTA: f32 = 2.5;

/// The median of those differences: rounding flips move few logits far; a systematic error
/// (a norm's epsilon, a scale, RoPE) moves them all. llama.cpp between its own builds: 0.19.
const MEDIAN_LOGIT_DELTA: f32 = 0.3;

/// One greedy path and llama.cpp's top logits at each of its steps.
#[derive(Deserialize)]
struct TopKCase {
    prompt: String,
    prompt_ids: Vec<u32>,
    path: Vec<u32>,
    steps: Vec<TopK>,
}

/// llama.cpp's highest logits at one step, highest first.
#[derive(Deserialize)]
struct TopK {
    ids: Vec<u32>,
    logits: Vec<f32>,
}

/// What one case measured.
#[derive(Default)]
struct Measured {
    steps: usize,
    /// Steps where gembatch's top token is not llama.cpp's, with llama.cpp's gap to it.
    ties: Vec<(String, usize, f32)>,
    /// |gembatch − llama.cpp| of every logit in llama.cpp's top ten, every step.
    deltas: Vec<f32>,
}

#[test]
fn tokenizer_matches_llama_cpp_on_every_text() {
    let tokenizer = &default_model().tokenizer;
    let cases: Vec<Golden> = golden("gemma3-270m-llamacpp.jsonl")
        .into_iter()
        .filter(|g| g.kind == "tokenize")
        .collect();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case.text.unwrap();
        let ids = tokenizer.encode(&text, false, false).unwrap();
        assert_eq!(ids, case.ids.unwrap(), "token ids of {text:?}");
    }
}

/// gembatch's logits after the prompt and after each token of the path, in order.
fn teacher_forced_logits(model: &LoadedModel, prompt_ids: &[u32], path: &[u32]) -> Vec<Vec<f32>> {
    let model = &model.model;
    let mut cache = model.new_sequence();
    let mut last = None;
    for chunk in prompt_ids.chunks(model.max_chunk()) {
        last = Some(
            model
                .forward(&mut [BatchEntry {
                    tokens: chunk,
                    cache: &mut cache,
                }])
                .unwrap(),
        );
    }
    let mut rows = Vec::new();
    let mut logits = last.unwrap();
    for (step, &token) in path.iter().enumerate() {
        rows.push(logits.i(0).unwrap().to_vec1().unwrap());
        if step + 1 < path.len() {
            logits = model
                .forward(&mut [BatchEntry {
                    tokens: &[token],
                    cache: &mut cache,
                }])
                .unwrap();
        }
    }
    rows
}

/// Checks one case step by step against llama.cpp's top logits.
fn check_case(case: &TopKCase, measured: &mut Measured) {
    let loaded = default_model();
    let shown: String = case.prompt.chars().take(30).collect();
    assert_eq!(
        loaded.tokenizer.encode(&case.prompt, true, true).unwrap(),
        case.prompt_ids,
        "prompt ids of {:?}",
        case.prompt
    );
    assert_eq!(case.steps.len(), case.path.len());
    let rows = teacher_forced_logits(loaded, &case.prompt_ids, &case.path);
    let mut own_picks = Vec::new();
    for (step, (row, top)) in rows.iter().zip(&case.steps).enumerate() {
        measured.steps += 1;
        let (got, _) = top2(row);
        own_picks.push(got);
        for (&id, &reference) in top.ids.iter().zip(&top.logits) {
            let delta = (row[id as usize] - reference).abs();
            measured.deltas.push(delta);
            assert!(
                delta <= MAX_LOGIT_DELTA,
                "{shown:?}... step {step}: token {id}: gembatch {:.4}, llama.cpp {reference:.4}: \
                 |difference| {delta:.4} > {MAX_LOGIT_DELTA}",
                row[id as usize]
            );
        }
        if got == top.ids[0] {
            continue;
        }
        let rank = top.ids.iter().position(|&id| id == got);
        let gap = rank.map_or(f32::INFINITY, |rank| top.logits[0] - top.logits[rank]);
        assert!(
            gap < TIE_MARGIN,
            "{shown:?}... step {step}: gembatch picks {got}, llama.cpp {} (top ten {:?}): \
             llama.cpp's gap to gembatch's pick is {gap:.4}, not a tie (< {TIE_MARGIN})",
            top.ids[0],
            top.ids
        );
        measured.ties.push((shown.clone(), step, gap));
    }
    // The generation path (chunked prefill, the sampler at temperature 0) must pick what the
    // teacher-forced logits pick, up to the first step where gembatch leaves the path (from
    // there on the two see different tokens).
    let leaves = own_picks
        .iter()
        .zip(&case.path)
        .position(|(own, path)| own != path)
        .map_or(case.path.len(), |step| step + 1);
    let generation = generate(
        &loaded.model,
        &loaded.tokenizer,
        &case.prompt_ids,
        leaves,
        &SamplingParams::default(),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(
        generation.output_ids[..leaves],
        own_picks[..leaves],
        "greedy generation of {:?}",
        case.prompt
    );
}

/// Checks every case of one top-k file and reports what it measured.
fn check_file(name: &str) {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let cases: Vec<TopKCase> = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{path}: {err}"))
        .lines()
        .map(|line| serde_json::from_str(line).expect("a top-k golden line"))
        .collect();
    assert_eq!(cases.len(), 11, "{name}");
    assert!(
        cases.iter().any(|case| case.prompt_ids.len() > 512 + 200),
        "a prompt beyond the 512-token sliding window"
    );
    let mut measured = Measured::default();
    for case in &cases {
        check_case(case, &mut measured);
    }
    for (prompt, step, gap) in &measured.ties {
        eprintln!(
            "{name}: near-tie: {prompt:?}... step {step}: gembatch picks a token {gap:.4} logits behind llama.cpp's top"
        );
    }
    let widest = measured.ties.iter().map(|t| t.2).fold(0.0f32, f32::max);
    let mut deltas = measured.deltas;
    deltas.sort_by(f32::total_cmp);
    let median = deltas[deltas.len() / 2];
    eprintln!(
        "{name}: {} steps: {} near-ties (widest llama.cpp margin {widest:.4}, bound {TIE_MARGIN}); \
         |logit difference| over llama.cpp's top ten: largest {:.4} (bound {MAX_LOGIT_DELTA}), \
         median {median:.4} (bound {MEDIAN_LOGIT_DELTA})",
        measured.steps,
        measured.ties.len(),
        deltas.last().unwrap(),
    );
    assert_eq!(measured.steps, 352);
    assert!(
        median <= MEDIAN_LOGIT_DELTA,
        "{name}: the median |logit difference| {median:.4} is above {MEDIAN_LOGIT_DELTA}: every logit drifts"
    );
}

#[test]
fn every_step_of_llama_cpp_greedy_paths_matches_within_cross_cpu_bounds() {
    check_file("gemma3-270m-llamacpp-topk.jsonl");
}

#[test]
fn every_step_matches_llama_cpp_built_for_another_instruction_set_too() {
    check_file("gemma3-270m-llamacpp-topk-sse42.jsonl");
}
