//! gembatch: offline LLM batch inference at scale on Kubernetes.
//!
//! Layout (one folder per concern):
//! - `cli`: the command line, as clap types; no logic.
//! - `commands/`: one module per subcommand; the only layer that prints.
//! - `model/`: the Gemma 3 model on candle (loading, tokenizer, batched forward, sampling,
//!   generation), its CPU kernels for 8-bit weights (`model/kernels/`) and the default
//!   model's fetcher.
//! - `shutdown`: the process's cancellation root (SIGINT and SIGTERM).
//! - `server/`: `gembatch serve`, the OpenAI-compatible model server with continuous
//!   batching.
//!
//! Still to come, each in its own folder: `loadgen`
//! (`gembatch load`), `dispatch` and `results` (`gembatch run`), `capacity` (Kubernetes).

pub mod cli;
pub mod commands;
pub mod model;
pub mod server;
pub mod shutdown;

pub use commands::run;
