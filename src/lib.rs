//! gembatch: offline LLM batch inference at scale on Kubernetes.
//!
//! Layout (one folder per concern):
//! - `cli`: the command line, as clap types; no logic.
//! - `commands/`: one module per subcommand; the only layer that prints.
//! - `model/`: the Gemma 3 model on candle (loading, tokenizer, batched forward, sampling,
//!   generation), its CPU kernels for 8-bit weights (`model/kernels/`) and the default
//!   model's fetcher.
//!
//! Still to come, each in its own folder: `server` (`gembatch serve`), `loadgen`
//! (`gembatch load`), `dispatch` and `results` (`gembatch run`), `capacity` (Kubernetes).

pub mod cli;
pub mod commands;
pub mod model;

pub use commands::run;
