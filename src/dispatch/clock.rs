//! Monotonic instants as wall-clock Unix seconds, for the rows' timestamps.

use std::time::Instant;

use crate::common::wall_clock::unix_now;

/// Turns monotonic instants into wall-clock Unix seconds, anchored once.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix: f64,
}

impl Clock {
    /// Anchors now.
    pub fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            unix: unix_now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn unix(&self, at: Instant) -> f64 {
        if at >= self.instant {
            self.unix + (at - self.instant).as_secs_f64()
        } else {
            self.unix - (self.instant - at).as_secs_f64()
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}
