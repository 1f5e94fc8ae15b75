//! How the batch runner retries a failed request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{deserialize_duration, serialize_duration};

/// How failed attempts are retried: 429, 5xx, timeouts and connection errors, with
/// exponential backoff and full jitter, and at least as late as a `Retry-After` asks (up to
/// five minutes).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retries {
    /// Attempts per row, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling before the second attempt; doubles each attempt.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub max_backoff: Duration,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}
