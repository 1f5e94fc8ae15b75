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
use common::server::Server;
use common::{Golden, default_model, golden};
use futures_util::StreamExt;
use gembatch::model::argmax::top2;
use gembatch::model::generate::generate;
use gembatch::model::sampling::SamplingParams;
use gembatch::model::{BatchEntry, LoadedModel};
use gembatch::server::token_logprobs::TokenText;
use serde::Deserialize;
use serde_json::{Value, json};

/// Below this gap (in logits) between llama.cpp's top token and another, which of the two
/// is top is a property of the CPU's summation order, not of the model. Measured over these
/// 352 steps (`make_golden.py spread`): llama.cpp built for AVX2 and for SSE4.2 on one AMD
/// EPYC (Zen 3) pick different top tokens at 12 steps, where the top two were at most 0.23
/// apart; llama.cpp on an Intel Xeon with AMX against the stored reference paths, at most
/// 0.44 apart (issue #15). gembatch's pick, where it is not llama.cpp's top: at most 0.62
/// behind it against the AVX2 build, 0.36 against the SSE4.2 build (0.32 and 0.56 while its
/// 8-bit kernels kept llama.cpp's eight partial sums a block instead of one exact sum; its
/// logits are the same bits on every CPU, so these hold wherever the test runs). A wrong
/// model or kernel moves the top token by whole logits.
const TIE_MARGIN: f32 = 0.75;

/// Largest |gembatch − llama.cpp| of any logit in llama.cpp's top ten at any step. Both
/// quantize activations to 8 bits before each quantized matmul, and a rounding flip early
/// in the 18 layers moves every later logit: llama.cpp's own AVX2 and SSE4.2 builds differ
/// by up to 2.05 (median 0.19) on the same machine; gembatch against llama.cpp (AVX2), up
/// to 2.25 (median 0.20; 1.82 with llama.cpp's partial sums), against the SSE4.2 build up to
/// 1.93 (median 0.19).
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

/// The cases of one top-k file.
fn top_k_cases(name: &str) -> Vec<TopKCase> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let cases: Vec<TopKCase> = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{path}: {err}"))
        .lines()
        .map(|line| serde_json::from_str(line).expect("a top-k golden line"))
        .collect();
    assert_eq!(cases.len(), 11, "{name}");
    cases
}

/// Checks every case of one top-k file and reports what it measured.
fn check_file(name: &str) {
    let cases = top_k_cases(name);
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

/// Every this many steps of each path, the API is asked for the step's log-probabilities.
const API_STEP_STRIDE: usize = 8;

/// The API's log-probabilities of one step: `/v1/completions` with the path so far as
/// token ids, greedy, one token, the 20 most likely reported.
async fn api_top_logprobs(url: &str, prompt: Vec<u32>) -> serde_json::Map<String, Value> {
    let body = json!({"prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 20});
    gembatch::client::tls::install_crypto_provider();
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["choices"][0]["logprobs"]["top_logprobs"][0]
        .as_object()
        .unwrap_or_else(|| panic!("no top_logprobs in {answer}"))
        .clone()
}

/// The logits llama.cpp reported come through the API: at every [`API_STEP_STRIDE`]th step
/// of every path, the server's log-probabilities of llama.cpp's top ten are llama.cpp's
/// logits less one constant (the log of the softmax's normalizer, taken as the median
/// difference), within the bounds the in-process logits meet; a token of llama.cpp's top
/// ten missing from the server's top 20 must have been outranked by them.
#[tokio::test(flavor = "multi_thread")]
async fn llama_cpps_top_logits_come_through_the_api_as_logprobs() {
    let tokenizer = &default_model().tokenizer;
    let key = |id: u32| {
        TokenText {
            bytes: tokenizer.token_bytes(id),
            logprob: 0.0,
        }
        .text()
    };
    let server = Server::start(&[], &[]);
    let url = server.at("/v1/completions");
    let cases = top_k_cases("gemma3-270m-llamacpp-topk.jsonl");
    let steps: Vec<(&TopKCase, usize)> = cases
        .iter()
        .flat_map(|case| {
            (0..case.path.len())
                .step_by(API_STEP_STRIDE)
                .map(move |step| (case, step))
        })
        .collect();
    let answers: Vec<_> = futures_util::stream::iter(steps.iter().map(|&(case, step)| {
        let prompt = [&case.prompt_ids[..], &case.path[..step]].concat();
        api_top_logprobs(&url, prompt)
    }))
    .buffered(4)
    .collect()
    .await;
    let mut deltas = Vec::new();
    for (&(case, step), top) in steps.iter().zip(&answers) {
        let where_ = format!(
            "{:?}... step {step}",
            case.prompt.chars().take(30).collect::<String>()
        );
        let reference = &case.steps[step];
        let keys: Vec<String> = reference.ids.iter().map(|&id| key(id)).collect();
        let unique = |k: &String| keys.iter().filter(|other| *other == k).count() == 1;
        let api = |k: &String| top.get(k).and_then(Value::as_f64).map(|lp| lp as f32);
        assert!(
            api(&keys[0]).is_some(),
            "{where_}: llama.cpp's top token {:?} is not in the API's top 20: {top:?}",
            keys[0]
        );
        let mut residuals: Vec<f32> = keys
            .iter()
            .zip(&reference.logits)
            .filter(|(k, _)| unique(k))
            .filter_map(|(k, &logit)| api(k).map(|lp| lp - logit))
            .collect();
        residuals.sort_by(f32::total_cmp);
        let shift = residuals[residuals.len() / 2];
        let lowest = top
            .values()
            .filter_map(Value::as_f64)
            .fold(f64::MAX, f64::min) as f32;
        for (k, &logit) in keys
            .iter()
            .zip(&reference.logits)
            .filter(|(k, _)| unique(k))
        {
            match api(k) {
                Some(lp) => {
                    let delta = (lp - shift - logit).abs();
                    deltas.push(delta);
                    assert!(
                        delta <= MAX_LOGIT_DELTA,
                        "{where_}: {k:?}: API {lp:.4} - {shift:.4} against llama.cpp's {logit:.4}"
                    );
                }
                None => assert!(
                    logit + shift <= lowest + MAX_LOGIT_DELTA,
                    "{where_}: {k:?} (llama.cpp {logit:.4}) should be in the API's top 20 (lowest {lowest:.4})"
                ),
            }
        }
    }
    deltas.sort_by(f32::total_cmp);
    let median = deltas[deltas.len() / 2];
    eprintln!(
        "{} steps through the API: |logprob - shift - llama.cpp logit| largest {:.4}, median {median:.4}",
        steps.len(),
        deltas.last().unwrap()
    );
    assert!(
        deltas.len() >= steps.len() * 8,
        "too few of llama.cpp's tokens compared: {}",
        deltas.len()
    );
    assert!(
        median <= MEDIAN_LOGIT_DELTA,
        "median {median:.4} above {MEDIAN_LOGIT_DELTA}"
    );
}
