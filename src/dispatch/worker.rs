//! A pod's workers: each takes the next row from the shared queue (so a free pod takes work
//! and a slow one never holds the job back), sends it, and either reports its result or puts
//! it back: after a backoff for a retryable failure, at once when the pod itself is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::PendingRow;
use super::clock::Clock;
use super::collector::Event;
use crate::client::exchange::{self, Target, Timed};
use crate::client::probe;
use crate::common::{Outcome, Retries};
use crate::results::batch_record::{BatchRecord, Status, Times};

/// A pod's live figures, shared with the progress display.
#[derive(Debug, Default)]
pub struct PodStats {
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Rows finished here.
    pub finished: AtomicU64,
    /// Rows that failed here for good.
    pub failed: AtomicU64,
    /// Attempts that will be retried.
    pub retried: AtomicU64,
    /// Output tokens generated here.
    pub output_tokens: AtomicU64,
    /// Set once the pod stops answering.
    pub lost: AtomicBool,
}

/// One pod as the workers see it.
pub struct PodLink {
    /// Its name (`pod-0`, a Kubernetes pod's name, an endpoint).
    pub name: Arc<str>,
    /// Where its requests go.
    pub target: Target,
    /// Its figures.
    pub stats: Arc<PodStats>,
}

/// Everything the workers share.
pub struct WorkerContext {
    /// Retry policy.
    pub retries: Retries,
    /// Where rows come from and go back to.
    pub queue: async_channel::Sender<PendingRow>,
    /// Where results go.
    pub events: mpsc::UnboundedSender<Event>,
    /// Monotonic to wall-clock.
    pub clock: Clock,
    /// Stops everything.
    pub cancel: CancellationToken,
    /// Workers still running, over all pods.
    pub live_workers: AtomicU64,
}

/// The longest `Retry-After` honoured: a longer one (a maintenance window, a mistake) is
/// waited this long, and the retry asks again.
const MOST_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long a pod gets to answer `/health` before it counts as gone.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one worker of `pod` until the queue closes, the run is cancelled or the pod is gone.
pub async fn work(
    pod: Arc<PodLink>,
    queue: async_channel::Receiver<PendingRow>,
    context: Arc<WorkerContext>,
) {
    loop {
        let job = tokio::select! {
            () = context.cancel.cancelled() => break,
            job = queue.recv() => match job {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if pod.stats.lost.load(Ordering::Relaxed) {
            let _ = context.queue.send(job).await;
            break;
        }
        pod.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let timed = tokio::select! {
            () = context.cancel.cancelled() => None,
            timed = exchange::exchange(&pod.target, &job.item, true) => Some(timed),
        };
        pod.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(timed) = timed else { break };
        if !handle(&pod, job, timed, &context).await {
            break;
        }
    }
    if context.live_workers.fetch_sub(1, Ordering::AcqRel) == 1 && !context.cancel.is_cancelled() {
        let _ = context.events.send(Event::AllPodsLost);
    }
}

/// Reports, retries or requeues one attempt; `false` when this pod is gone.
async fn handle(pod: &PodLink, mut job: PendingRow, timed: Timed, context: &WorkerContext) -> bool {
    let Some((outcome, message)) = &timed.failure else {
        finish(pod, job, timed, context);
        return true;
    };
    let transport = matches!(outcome, Outcome::ConnectError | Outcome::StreamBroken);
    if transport && !pod_answers(pod).await {
        // The pod died with this row on it: the row goes back as it was, to another pod.
        tracing::warn!(pod = %pod.name, "pod stopped answering ({message}); its rows go to the others");
        pod.stats.lost.store(true, Ordering::Relaxed);
        let _ = context.queue.send(job).await;
        return false;
    }
    let attempts_made = job.attempts + 1;
    let retryable = !matches!(outcome, Outcome::Http4xx);
    if retryable && attempts_made < context.retries.max_attempts {
        job.attempts = attempts_made;
        pod.stats.retried.fetch_add(1, Ordering::Relaxed);
        let asked = timed
            .exchange
            .retry_after
            .map(|wait| wait.min(MOST_RETRY_AFTER));
        let delay = backoff(&context.retries, attempts_made).max(asked.unwrap_or_default());
        let queue = context.queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = queue.send(job).await;
        });
    } else {
        finish(pod, job, timed, context);
    }
    true
}

/// Full-jitter exponential backoff before attempt `attempts + 1`.
fn backoff(retries: &Retries, attempts: u32) -> Duration {
    let ceiling = retries
        .initial_backoff
        .saturating_mul(1u32 << (attempts - 1).min(20))
        .min(retries.max_backoff);
    ceiling.mul_f64(rand::rng().random::<f64>())
}

/// Whether the pod is still alive (see [`probe::alive`]).
async fn pod_answers(pod: &PodLink) -> bool {
    probe::alive(&pod.target.http, "/health", PROBE_TIMEOUT).await
}

/// Sends the row's final result.
fn finish(pod: &PodLink, job: PendingRow, timed: Timed, context: &WorkerContext) {
    let record = record_of(pod, job, timed, &context.clock);
    pod.stats.finished.fetch_add(1, Ordering::Relaxed);
    if record.status != Status::Ok {
        pod.stats.failed.fetch_add(1, Ordering::Relaxed);
    }
    pod.stats.output_tokens.fetch_add(
        u64::from(record.output_tokens.unwrap_or(0)),
        Ordering::Relaxed,
    );
    let _ = context.events.send(Event::Finished(record));
}

fn record_of(pod: &PodLink, job: PendingRow, timed: Timed, clock: &Clock) -> BatchRecord {
    let exchange = timed.exchange;
    let unix = |at: Instant| clock.unix(at.into_std());
    let (status, error_code, error) = match timed.failure {
        None => (Status::Ok, None, None),
        Some((outcome, message)) => (
            Status::Failed,
            Some(outcome.as_str().to_string()),
            Some(message),
        ),
    };
    let output_tokens = exchange
        .usage
        .map(|usage| usage.completion_tokens)
        .or(Some(exchange.chunks_with_content));
    BatchRecord {
        id: job.item.row_id.as_deref().unwrap_or_default().to_string(),
        line: job.line,
        shard: job.shard,
        pod: Some(pod.name.to_string()),
        attempts: job.attempts + 1,
        status,
        error_code,
        error,
        http_status: exchange.status,
        route: Some(job.item.route),
        prompt_tokens: exchange.usage.map(|usage| usage.prompt_tokens),
        output_tokens,
        finish_reason: exchange.finish_reason,
        output: exchange.text.filter(|_| status == Status::Ok),
        passthrough: job.passthrough,
        times: Times {
            queued: Some(unix(job.queued)),
            started: Some(unix(timed.start)),
            first_token: exchange.first_token.map(unix),
            finished: unix(timed.end),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let retries = Retries {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(backoff(&retries, 1) <= Duration::from_millis(100));
            assert!(backoff(&retries, 2) <= Duration::from_millis(200));
            assert!(backoff(&retries, 9) <= Duration::from_millis(350));
        }
        let spread: Vec<Duration> = (0..50).map(|_| backoff(&retries, 3)).collect();
        assert!(
            spread.iter().any(|d| *d != spread[0]),
            "jittered, not fixed"
        );
    }
}
