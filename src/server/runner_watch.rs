//! A batch pod's watch on its runner. The runner sends a heartbeat (a request carrying
//! [`HEARTBEAT_HEADER`]) every few seconds while it holds the pods; when none has come for
//! the stated time, the runner is taken for dead (killed, its node preempted) and serve
//! shuts down, exit 0, so the GPU goes back in minutes instead of at DWS's
//! maxRunDuration. Until the first heartbeat a longer wait applies: the runner starts
//! beating only once every pod is ready, and loading the model never counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::common::endpoint::HEARTBEAT_HEADER;

/// When the runner was last heard from.
#[derive(Debug)]
pub struct RunnerWatch {
    started: Instant,
    /// Milliseconds from `started` to the last heartbeat, plus one; 0 before the first.
    last_ms: AtomicU64,
    /// Silence after a heartbeat after which the runner is taken for dead.
    timeout: Duration,
    /// Longest wait for the first heartbeat.
    first_within: Duration,
}

impl RunnerWatch {
    /// A watch whose clock starts now.
    pub fn new(timeout: Duration, first_within: Duration) -> RunnerWatch {
        RunnerWatch {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            timeout,
            first_within: first_within.max(timeout),
        }
    }

    /// Notes a heartbeat.
    pub fn beat(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms
            .fetch_max(now.saturating_add(1), Ordering::Relaxed);
    }

    /// When the runner is taken for dead if nothing more is heard.
    fn deadline(&self) -> Instant {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => self.started + self.first_within,
            last => self.started + Duration::from_millis(last - 1) + self.timeout,
        }
    }

    /// Returns once the runner has been silent too long (at most a quarter of the timeout
    /// late: the first heartbeat moves the deadline earlier than the wait for it, so the
    /// watch wakes at least that often to look).
    pub async fn until_silent(&self) {
        loop {
            let now = Instant::now();
            let deadline = self.deadline();
            if now >= deadline {
                return;
            }
            tokio::time::sleep((deadline - now).min(self.timeout / 4)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn heartbeats_hold_off_the_end_and_silence_after_them_brings_it() {
        // The watch starts waiting first, as serve's does, with a long wait for the first
        // heartbeat: the heartbeats must cut that wait short.
        let watch = Arc::new(RunnerWatch::new(200 * MS, Duration::from_secs(20)));
        let started = Instant::now();
        let silent = tokio::spawn({
            let watch = watch.clone();
            async move { watch.until_silent().await }
        });
        for _ in 0..5 {
            tokio::time::sleep(100 * MS).await;
            watch.beat();
        }
        let last_beat = started.elapsed();
        silent.await.unwrap();
        let ended = started.elapsed();
        assert!(
            ended >= last_beat + 195 * MS,
            "{ended:?} after the last beat at {last_beat:?}"
        );
        // At most a quarter of the timeout late, and a scheduler's slack.
        assert!(ended < last_beat + Duration::from_secs(2), "{ended:?}");
    }

    #[tokio::test]
    async fn a_runner_never_heard_from_is_given_up_on_after_the_first_wait() {
        let watch = RunnerWatch::new(100 * MS, 400 * MS);
        let started = Instant::now();
        watch.until_silent().await;
        let ended = started.elapsed();
        assert!(
            ended >= 400 * MS && ended < Duration::from_secs(3),
            "{ended:?}"
        );
    }
}
