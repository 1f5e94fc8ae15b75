//! The words every other module shares. This module imports nothing else in the crate, so
//! any module may import it without a cycle.
//!
//! - `endpoint`: a model server's name and URL;
//! - `outcome`: how one request ended;
//! - `pod_access`: how the runner reaches Kubernetes pods;
//! - `retries`: the batch runner's retry policy;
//! - `route`: the OpenAI route of a request;
//! - `units`: the one duration and number parser;
//! - `wall_clock`: now, as Unix seconds.

pub mod endpoint;
pub mod outcome;
pub mod pod_access;
pub mod retries;
pub mod route;
pub mod units;
pub mod wall_clock;

pub use endpoint::Endpoint;
pub use outcome::Outcome;
pub use pod_access::PodAccess;
pub use retries::Retries;
pub use route::Route;
