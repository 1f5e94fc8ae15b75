//! The wall clock as Unix seconds, the unit of every instant in memory (files hold them as
//! timestamps: see `results::table`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
