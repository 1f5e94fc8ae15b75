//! The costliest prompts a client can send: how long one takes to be answered, and how much
//! a flood of them moves normal clients' time to first token.
//!
//!     cargo bench --bench prompt_flood -- [--seconds 20] [--users 4] [--flooders 8] [--rounds 2]
//!
//! The costliest prompt is a text the server must tokenize before it can refuse it: one of a
//! few words or characters repeated to the longest length its quick "cannot fit the
//! context" check lets through (within the 4 MiB body limit), whose real tokens then do not
//! fit. The slowest to tokenize on this machine is chosen, at the context of the default
//! model (32,768) and at Gemma 3 4B's (131,072; the vocabulary is the same). The goal: any
//! request within the body limit answered in under 1 s on one core.
//!
//! One `gembatch serve` on the default model (every CPU). First one costliest request
//! alone, then each round, for `--seconds` each: the normal clients alone (`--users`
//! closed-loop streams, a 48-token prompt, 16 tokens out), then the same clients beside
//! `--flooders` closed-loop senders of the costly prompt. Printed per round and for all
//! rounds: the normal clients' p50 and p95 TTFT and requests, the flood's requests and
//! median answer time, and the ratio of the p95 TTFTs (the goal: at most 1.20).

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use support::flag;
use support::flood::{Phase, costliest_prompt, default_tokenizer, percentile, phase, send_once};

/// Gemma 3 4B's context, the largest a shipped job serves (the vocabulary is the default
/// model's).
const GEMMA_3_4B_CONTEXT: usize = 131_072;

/// `gembatch serve` on the default model, on a loopback port.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gembatch serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(name: &str, phase: &Phase) {
    println!(
        "  {name:<12} normal: {} requests ({} failed), TTFT p50 {:.3} s p95 {:.3} s{}",
        phase.ttft.len(),
        phase.normal_failures,
        percentile(&phase.ttft, 0.5),
        percentile(&phase.ttft, 0.95),
        if phase.flood_seconds.is_empty() {
            String::new()
        } else {
            format!(
                "; flood: {} requests (not 400: {:?}), median answer {:.2} s",
                phase.flood_seconds.len(),
                phase.flood_unexpected,
                percentile(&phase.flood_seconds, 0.5)
            )
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = flag(&args, "--seconds", 20);
    let users = flag(&args, "--users", 4);
    let flooders = flag(&args, "--flooders", 8);
    let rounds = flag(&args, "--rounds", 2);
    let serve = Serve::start();
    // reqwest's https takes the process's rustls provider (see `install_crypto_provider`).
    gembatch::client::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let context = runtime.block_on(async {
        let models: serde_json::Value = reqwest::get(format!("{}/v1/models", serve.url))
            .await
            .expect("GET /v1/models")
            .json()
            .await
            .expect("models JSON");
        models["data"][0]["max_model_len"]
            .as_u64()
            .expect("max_model_len") as usize
    });
    let tokenizer = default_tokenizer();
    let costliest = costliest_prompt(&tokenizer, GEMMA_3_4B_CONTEXT);
    println!(
        "costliest prompt at context {GEMMA_3_4B_CONTEXT}: {:.2} MB of {:?}, tokenized in {:.3} s \
         (goal < 1 s)",
        costliest.text.len() as f64 / 1e6,
        costliest.unit,
        costliest.tokenize_seconds
    );
    let costliest = costliest_prompt(&tokenizer, context);
    let answered = runtime.block_on(send_once(&serve.url, &costliest.text));
    println!(
        "costliest prompt at context {context}: {:.2} MB of {:?}, tokenized in {:.3} s, \
         answered {} in {:.3} s (goal < 1 s)",
        costliest.text.len() as f64 / 1e6,
        costliest.unit,
        costliest.tokenize_seconds,
        answered.0,
        answered.1
    );
    let prompt = costliest.text;
    println!(
        "prompt flood: {users} normal clients, {flooders} flooders sending that prompt, \
         {seconds} s per phase, {rounds} rounds"
    );
    let (mut calm, mut flooded) = (Phase::default(), Phase::default());
    for round in 1..=rounds {
        println!("round {round}");
        let alone = runtime.block_on(phase(&serve.url, users, None, seconds));
        describe("alone", &alone);
        let beside = runtime.block_on(phase(&serve.url, users, Some((&prompt, flooders)), seconds));
        describe("beside flood", &beside);
        calm.absorb(alone);
        flooded.absorb(beside);
    }
    println!("all rounds");
    describe("alone", &calm);
    describe("beside flood", &flooded);
    println!(
        "p95 TTFT beside the flood / alone: {:.2}x (goal <= 1.20x)",
        percentile(&flooded.ttft, 0.95) / percentile(&calm.ttft, 0.95)
    );
}
