//! A run's origin: its id and the moment its offsets count from, on both clocks, so a
//! table can give each instant as an offset (for plots) and as an absolute time (for a
//! warehouse that joins runs).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A run's id and its start.
#[derive(Debug, Clone)]
pub struct RunOrigin {
    /// The run's id, written on every row of its tables.
    pub run_id: Arc<str>,
    /// Its start on the monotonic clock: what offsets count from.
    pub instant: Instant,
    /// Its start on the wall clock.
    pub wall: SystemTime,
}

impl RunOrigin {
    /// Run `run_id`, starting now.
    pub fn now(run_id: &str) -> RunOrigin {
        RunOrigin {
            run_id: run_id.into(),
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The start as Unix seconds.
    pub fn unix_s(&self) -> f64 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_start_is_its_wall_clock_time_in_unix_seconds() {
        let origin = RunOrigin {
            run_id: "r".into(),
            instant: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_796_342_400),
        };
        assert_eq!(origin.unix_s(), 1_796_342_400.0);
    }
}
