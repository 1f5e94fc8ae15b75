//! The runner's heartbeat to its Kubernetes pods: while it holds them, every pod gets a
//! `GET /health` carrying [`HEARTBEAT_HEADER`] every few seconds. A pod started with
//! `serve --exit-without-runner` that stops hearing it shuts down (see
//! `server::runner_watch`), which is how a runner killed without its cleanup still gives
//! its GPUs back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::http::HttpTarget;
use crate::client::preflight::BaseUrl;
use crate::client::tls::Trust;
use crate::common::Endpoint;
use crate::common::endpoint::HEARTBEAT_HEADER;

/// Heartbeats per pod within one timeout: three may be lost before a live runner's pods
/// give up on it.
const BEATS_PER_TIMEOUT: u32 = 4;

/// How often to beat for pods that give up after `timeout`.
pub fn interval(timeout: Duration) -> Duration {
    (timeout / BEATS_PER_TIMEOUT).max(Duration::from_millis(200))
}

/// Beats to `pods` every `every` until `cancel`. A pod that does not answer is the
/// dispatcher's business (its rows go to the others), not the heartbeat's.
pub async fn beat(pods: &[Endpoint], every: Duration, cancel: CancellationToken) {
    let mut targets = Vec::new();
    for pod in pods {
        if let Ok(base) = BaseUrl::parse(&pod.url)
            && let Ok(target) = HttpTarget::resolve(&base, None, &Trust::default()).await
        {
            targets.push(target.with_header(HEARTBEAT_HEADER, "1"));
        }
    }
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let beats = targets.iter().map(|target| async move {
            let _ = tokio::time::timeout(every, target.get("/health", 64)).await;
        });
        futures_util::future::join_all(beats).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_four_times_per_timeout_and_never_in_a_busy_loop() {
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_secs(75));
        assert_eq!(
            interval(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }
}
