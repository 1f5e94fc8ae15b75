//! gembatch: offline LLM batch inference at scale on Kubernetes.
//!
//! Layout, by floors: a module imports only modules on its own floor or below, and never
//! one that imports it back (`tests/layout.rs` checks both, with these floors).
//!
//! - floor 4, the command line: `cli` (clap types), `exit_code` (errors to exit codes and
//!   words), `commands/` (one module per subcommand: parse, call the domain, print; the
//!   only layer that prints; no command imports another).
//! - floor 3, the run: `dispatch/` (`gembatch run`'s batch: validation, shards, pod workers,
//!   exactly-once commits, the run's outputs), `report/` (the HTML reports of load and
//!   batch runs, from result files), `job/` (job files, `jobs/*.yaml`, into a checked spec).
//! - floor 2, the parts a run is made of: `loadgen/` (`gembatch load`: profiles, driver,
//!   statistics, SLO gates), `capacity/` (the pods: local `gembatch serve` children,
//!   existing endpoints, or a Kubernetes ProvisioningRequest and its serve pods), `server/`
//!   (`gembatch serve`, the OpenAI-compatible model server with continuous batching).
//! - floor 1, the tools: `client/` (the one OpenAI-compatible HTTP client: TLS, pooled
//!   HTTP/1.1, SSE, timed streams, preflight, probes), `results/` (result files and the
//!   row types they hold), `dataset/` (prompt datasets read as streams), `model/` (Gemma 3
//!   on candle, its kernels, tokenizer and fetcher), `shutdown` (SIGINT and SIGTERM),
//!   `store/` (buckets: `gs://`, `s3://`, `az://` folders read and written, create-only).
//! - floor 0: `common/`, the words every floor shares (endpoint, outcome, route, retries,
//!   pod access, units, blame); it imports nothing else in the crate.

pub mod capacity;
pub mod cli;
pub mod client;
pub mod commands;
pub mod common;
pub mod dataset;
pub mod dispatch;
pub mod exit_code;
pub mod job;
pub mod loadgen;
pub mod model;
pub mod report;
pub mod results;
pub mod server;
pub mod shutdown;
pub mod store;

pub use commands::execute;
pub use common::blame::USER_ERROR_EXIT_CODE;
