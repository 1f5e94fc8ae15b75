//! The wall clock as Unix seconds, the one time unit of every result file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
