//! A flood of the costliest prompts beside normal clients, for `benches/prompt_flood.rs` and
//! `tests/prompt_flood.rs`: the prompt, the two kinds of client, and what they measured.

#![allow(dead_code, reason = "the test uses part of it")]

use std::time::{Duration, Instant};

use gembatch::model::tokenizer::GemmaTokenizer;
use gembatch::model::{self, fetch};

/// What the server accepts as a body (its `--max-body` default).
const BODY_LIMIT: usize = 4 << 20;
const NORMAL_PROMPT: &str = "Write a short story about a lighthouse keeper who finds a message in a bottle on a stormy night, and what the message says.";

/// Texts repeated into costly prompts: words on which the quick check's bound is loosest
/// (it lets the most text through to the tokenizer) and runs of one character.
const COSTLY_UNITS: [&str; 5] = [
    "internationalization ",
    "quantitatively",
    "hello world ",
    "ab",
    "<",
];

/// A prompt the server tokenizes and then refuses as too long for its context.
pub struct CostlyPrompt {
    pub text: String,
    /// What is repeated in it.
    pub unit: &'static str,
    /// How long this machine took to tokenize it, on one thread.
    pub tokenize_seconds: f64,
}

/// The tokenizer of the default model (fetched when missing).
pub fn default_tokenizer() -> GemmaTokenizer {
    let path =
        fetch::ensure_default_model(false, |line| eprintln!("{line}")).expect("default model");
    let (tokenizer, _context) = model::load_tokenizer(&path).expect("the default tokenizer");
    tokenizer
}

/// The costliest prompt for `context`: each of [`COSTLY_UNITS`] repeated to the longest
/// length the server's quick check lets through (its fewest possible tokens, plus BOS,
/// below the context) within the body limit, kept when its real tokens and one to generate
/// do not fit; the one this machine tokenizes slowest.
pub fn costliest_prompt(tokenizer: &GemmaTokenizer, context: usize) -> CostlyPrompt {
    COSTLY_UNITS
        .iter()
        .filter_map(|&unit| {
            let text = unit.repeat(longest_repeat_let_through(tokenizer, unit, context));
            let started = Instant::now();
            let tokens = 1 + tokenizer.encode(&text, true, true).expect("tokenize").len();
            let tokenize_seconds = started.elapsed().as_secs_f64();
            (tokens > context).then_some(CostlyPrompt {
                text,
                unit,
                tokenize_seconds,
            })
        })
        .max_by(|a, b| a.tokenize_seconds.total_cmp(&b.tokenize_seconds))
        .expect("a repeat the quick check lets through that cannot fit")
}

/// How many times `unit` repeats before the quick check refuses it (or the body is full).
fn longest_repeat_let_through(tokenizer: &GemmaTokenizer, unit: &str, context: usize) -> usize {
    let fits = |times: usize| tokenizer.fewest_tokens(&unit.repeat(times)) + 1 < context;
    let (mut low, mut high) = (1, (BODY_LIMIT - 1024) / unit.len());
    if fits(high) {
        return high;
    }
    while high - low > 1 {
        let middle = (low + high) / 2;
        if fits(middle) {
            low = middle
        } else {
            high = middle
        }
    }
    low
}

/// What one phase measured.
#[derive(Default)]
pub struct Phase {
    /// The normal clients' times to first token, seconds.
    pub ttft: Vec<f64>,
    /// Normal requests that failed or streamed no text.
    pub normal_failures: u64,
    /// How long each flood request took to be answered, seconds.
    pub flood_seconds: Vec<f64>,
    /// Flood requests answered with anything but 400 (too long for the context), by
    /// status or error.
    pub flood_unexpected: std::collections::BTreeMap<String, u64>,
}

impl Phase {
    /// Adds what `other` measured to this one (rounds into their total).
    pub fn absorb(&mut self, other: Phase) {
        self.ttft.extend(other.ttft);
        self.normal_failures += other.normal_failures;
        self.flood_seconds.extend(other.flood_seconds);
        for (status, count) in other.flood_unexpected {
            *self.flood_unexpected.entry(status).or_default() += count;
        }
    }
}

/// The `q` quantile of `values` (nearest rank); NaN when there are none.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One streamed completion; its time to first token, or None when it failed.
async fn normal_request(client: &reqwest::Client, url: &str) -> Option<f64> {
    let started = Instant::now();
    let body = serde_json::json!({
        "prompt": NORMAL_PROMPT, "max_tokens": 16, "temperature": 0, "ignore_eos": true, "stream": true
    });
    let mut response = client.post(url).json(&body).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut first = None;
    while let Some(chunk) = response.chunk().await.ok()? {
        if first.is_none() && chunk.windows(6).any(|w| w == b"\"text\"") {
            first = Some(started.elapsed().as_secs_f64());
        }
    }
    first
}

/// A flood request: `prompt`, one token to generate.
fn flood_body(prompt: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"prompt": prompt, "max_tokens": 1})).expect("json")
}

/// Sends one flood request; its status (or error) and how long the answer took, seconds.
async fn send(client: &reqwest::Client, completions: &str, body: Vec<u8>) -> (String, f64) {
    let started = Instant::now();
    let status = client
        .post(completions)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|response| response.status().as_u16().to_string());
    let status = status.unwrap_or_else(|err| format!("error: {err}"));
    (status, started.elapsed().as_secs_f64())
}

/// One request of `prompt` on an idle server: its status and answer time, seconds.
pub async fn send_once(url: &str, prompt: &str) -> (String, f64) {
    gembatch::client::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    send(
        &client,
        &format!("{url}/v1/completions"),
        flood_body(prompt),
    )
    .await
}

/// Runs the normal clients (and the flood, when `flood` is given) for `seconds`.
pub async fn phase(url: &str, users: u64, flood: Option<(&str, u64)>, seconds: u64) -> Phase {
    gembatch::client::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let completions = format!("{url}/v1/completions");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut normal = Vec::new();
    for _ in 0..users {
        let (client, completions) = (client.clone(), completions.clone());
        normal.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while Instant::now() < deadline {
                results.push(normal_request(&client, &completions).await);
            }
            results
        }));
    }
    let mut flooders = Vec::new();
    if let Some((prompt, count)) = flood {
        let body = flood_body(prompt);
        for _ in 0..count {
            let (client, completions, body) = (client.clone(), completions.clone(), body.clone());
            flooders.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                while Instant::now() < deadline {
                    answers.push(send(&client, &completions, body.clone()).await);
                }
                answers
            }));
        }
    }
    let mut measured = Phase::default();
    for task in normal {
        for ttft in task.await.expect("normal client") {
            match ttft {
                Some(seconds) => measured.ttft.push(seconds),
                None => measured.normal_failures += 1,
            }
        }
    }
    for task in flooders {
        for (status, seconds) in task.await.expect("flooder") {
            measured.flood_seconds.push(seconds);
            if status != "400" {
                *measured.flood_unexpected.entry(status).or_default() += 1;
            }
        }
    }
    measured
}
