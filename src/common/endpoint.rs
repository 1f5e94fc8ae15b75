//! A model server's address: what capacity hands out and the batch runner and load
//! generator send to.

/// The response header naming the replica (the pod) that served a request.
pub const REPLICA_HEADER: &str = "x-gembatch-replica";

/// The request header of a batch runner's heartbeat to its pods (see
/// `server::runner_watch`).
pub const HEARTBEAT_HEADER: &str = "x-gembatch-runner-heartbeat";

/// A model server to send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name in the results.
    pub name: String,
    /// Its base URL (`http://host:port`).
    pub url: String,
}
