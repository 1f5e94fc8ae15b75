//! The words every other module shares. This module imports nothing else in the crate, so
//! any module may import it without a cycle.
//!
//! - `blame`: whose mistake an error is, and the user-error exit code;
//! - `durable`: files written whole or not at all (fsync, rename);
//! - `endpoint`: a model server's name and URL;
//! - `error_text`: an error and its causes on one line;
//! - `host`: this machine's (or pod's) name;
//! - `model_location`: where pods mount a model, and bucket paths;
//! - `mounts`: whether a path is on a FUSE mount of a bucket;
//! - `outcome`: how one request ended;
//! - `pod_access`: how the runner reaches Kubernetes pods;
//! - `proc_file`: sizes from Linux's `/proc` files;
//! - `retries`: the batch runner's retry policy;
//! - `route`: the OpenAI route of a request;
//! - `say`: gembatch's own lines on stderr, as text or as Cloud Logging JSON;
//! - `scratch`: temporary folders that a killed process leaves only until the next run;
//! - `units`: the one duration and number parser;
//! - `wall_clock`: now, as Unix seconds.

pub mod blame;
pub mod durable;
pub mod endpoint;
pub mod error_text;
pub mod host;
pub mod model_location;
pub mod mounts;
pub mod outcome;
pub mod pod_access;
pub mod proc_file;
pub mod retries;
pub mod route;
pub mod say;
pub mod scratch;
pub mod units;
pub mod wall_clock;

pub use endpoint::{Endpoint, REPLICA_HEADER};
pub use outcome::Outcome;
pub use pod_access::PodAccess;
pub use retries::Retries;
pub use route::Route;
