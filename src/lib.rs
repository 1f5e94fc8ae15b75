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
//! - `dataset/`: datasets of prompts (JSONL rows, OpenAI Batch API input, Parquet), read as
//!   streams.
//! - `job/`: batch job files (`jobs/*.yaml`).
//! - `dispatch/`: `gembatch run`'s heart: validation, shards, pod workers, exactly-once
//!   commits, the run's outputs.
//! - `capacity/`: the pods a run uses: local `gembatch serve` children, existing endpoints,
//!   or a Kubernetes ProvisioningRequest and the serve pods on it (`capacity/kubernetes/`).
//! - `loadgen/`: `gembatch load`, online load verification of an OpenAI-compatible server.
//! - `results/`: typed tables to Parquet and back; the tables of each command.
//! - `report/`: the self-contained interactive HTML reports of load and batch runs.

pub mod capacity;
pub mod cli;
pub mod client;
pub mod commands;
pub mod common;
pub mod dataset;
pub mod dispatch;
pub mod job;
pub mod loadgen;
pub mod model;
pub mod report;
pub mod results;
pub mod server;
pub mod shutdown;

pub use commands::run;

/// The exit status of a mistake the user can fix (a bad path, file, job, dataset, prompt or
/// flag); other failures exit with 1.
pub const USER_ERROR_EXIT_CODE: u8 = 2;
