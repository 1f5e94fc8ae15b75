//! `gembatch run`'s heart: fans a dataset's rows out to model pods, exactly once.
//!
//! - `run_dir` + `run_lock`: a run's directory, its manifest, and the lock one runner
//!   holds on it;
//! - `validate`: the dataset checked whole before any capacity is reserved;
//! - `feeder`: the dataset cut into shards as it is read, a bounded window of them open;
//! - `worker`: per pod, workers that take rows from one shared queue, retry with backoff,
//!   and hand a dead pod's rows to the others;
//! - `collector` + `ledger`: results gathered per shard; a complete shard is committed
//!   (file, fsync, rename, ledger line), so `--resume` redoes only what was not;
//! - `outputs`: the run's files from the committed shards (`requests.parquet`,
//!   `summary.parquet`, `output.jsonl`, `errors.jsonl`);
//! - `record`: one row's result.

pub mod clock;
pub mod collector;
pub mod feeder;
pub mod ledger;
pub mod outputs;
pub mod remote_run;
pub mod run_dir;
pub mod run_lock;
pub mod validate;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::HttpTarget;
use crate::client::Target;
use crate::client::WorkItem;
use crate::client::preflight;
use crate::client::tls::Trust;
use crate::common::{Endpoint, REPLICA_HEADER, Retries};
use crate::dataset::{DatasetError, Fields, Format};
use clock::Clock;
use collector::{Event, Observer};
use feeder::FeedPlan;
use ledger::Ledger;
use worker::{PodLink, PodStats, WorkerContext};

/// How to dispatch, validated.
#[derive(Debug, Clone)]
pub struct DispatchPlan {
    /// The dataset.
    pub dataset: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its field names.
    pub fields: Fields,
    /// Rows per shard.
    pub shard_size: u64,
    /// Requests in flight per pod.
    pub concurrency_per_pod: u32,
    /// Longest one attempt may take.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retries: Retries,
    /// Generation fields of every request.
    pub generation: serde_json::Map<String, serde_json::Value>,
    /// The model name requests carry [default: the first pod's first].
    pub model: Option<String>,
    /// Bearer token for the pods.
    pub api_key: Option<String>,
}

/// One row on its way to a pod.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Its shard.
    pub shard: u64,
    /// Its line in the dataset.
    pub line: u64,
    /// The request.
    pub item: WorkItem,
    /// The row's passthrough fields, for its result.
    pub passthrough: Vec<Option<String>>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was first queued.
    pub queued: Instant,
}

/// A dispatch that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A pod is not usable.
    #[error("pod {pod} ({url}): {why}")]
    Pod {
        /// Its name.
        pod: String,
        /// Its URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A shard could not be written.
    #[error("cannot commit a shard: {0}")]
    Commit(std::io::Error),
    /// Every pod stopped answering.
    #[error("every pod stopped answering; what was committed is kept")]
    AllPodsLost,
    /// Ctrl-C or SIGTERM.
    #[error("interrupted; what was committed is kept")]
    Interrupted,
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a finished dispatch tells.
pub struct Dispatched {
    /// Shards in the dataset.
    pub shards: u64,
    /// The model the rows asked for.
    pub model: String,
}

/// Sends every row not yet committed to `pods` until all shards are committed in `ledger`.
pub async fn dispatch_rows(
    plan: &DispatchPlan,
    pods: &[Endpoint],
    invalid: Arc<HashMap<u64, String>>,
    ledger: Arc<Mutex<Ledger>>,
    observer: &mut dyn Observer,
    cancel: CancellationToken,
) -> Result<Dispatched, DispatchError> {
    let links = connect(plan, pods).await?;
    let first = &pods[0];
    let model = preflight::check_server(&links[0].target.http, &first.url, plan.model.as_deref())
        .await
        .map_err(|err| DispatchError::Pod {
            pod: first.name.clone(),
            url: first.url.clone(),
            why: err.to_string(),
        })?;
    observer.started(&links);

    let stop = cancel.child_token();
    let (queue, queue_out) = async_channel::unbounded();
    let (events, inbox) = mpsc::unbounded_channel();
    let workers_per_pod = plan.concurrency_per_pod as usize;
    let context = Arc::new(WorkerContext {
        retries: plan.retries.clone(),
        queue: queue.clone(),
        events: events.clone(),
        clock: Clock::new(),
        cancel: stop.clone(),
        live_workers: AtomicU64::new((links.len() * workers_per_pod) as u64),
    });
    let mut workers = tokio::task::JoinSet::new();
    for link in &links {
        for _ in 0..workers_per_pod {
            workers.spawn(worker::work(
                link.clone(),
                queue_out.clone(),
                context.clone(),
            ));
        }
    }

    let capacity = (links.len() * workers_per_pod) as u64;
    let window = Arc::new(Semaphore::new(
        (2 * capacity).div_ceil(plan.shard_size).max(1) as usize + 1,
    ));
    let committed: Vec<u64> = ledger
        .lock()
        .expect("the ledger lock is not poisoned")
        .entries()
        .map(|entry| entry.shard)
        .collect();
    let feed_plan = FeedPlan {
        shard_size: plan.shard_size,
        invalid,
        committed,
        generation: plan.generation.clone(),
        model: model.clone(),
    };
    let (dataset, format, fields) = (plan.dataset.clone(), plan.format, plan.fields.clone());
    let feeder_window = window.clone();
    let feeder_events = events.clone();
    let feeder = tokio::task::spawn_blocking(move || {
        let result = crate::dataset::open_with(&dataset, format, &fields)
            .and_then(|rows| feeder::feed(rows, &feed_plan, feeder_window, &feeder_events, &queue));
        let _ = feeder_events.send(Event::FeederDone(result));
    });
    drop(events);

    let result = tokio::select! {
        result = collector::collect(inbox, ledger, &model, observer) => result,
        () = cancel.cancelled() => Err(DispatchError::Interrupted),
    };
    stop.cancel();
    window.close();
    context.queue.close();
    while workers.join_next().await.is_some() {}
    let _ = feeder.await;
    let shards = result?;
    Ok(Dispatched { shards, model })
}

/// A link per pod, its address resolved and a connection pool of its own.
async fn connect(
    plan: &DispatchPlan,
    pods: &[Endpoint],
) -> Result<Vec<Arc<PodLink>>, DispatchError> {
    if pods.is_empty() {
        return Err(DispatchError::Internal("no pods to dispatch to".into()));
    }
    let mut links = Vec::with_capacity(pods.len());
    for pod in pods {
        let fail = |why: String| DispatchError::Pod {
            pod: pod.name.clone(),
            url: pod.url.clone(),
            why,
        };
        let base = preflight::BaseUrl::parse(&pod.url).map_err(|err| fail(err.to_string()))?;
        let http = HttpTarget::resolve(&base, plan.api_key.as_deref(), &Trust::default())
            .await
            .map_err(|err| fail(err.to_string()))?;
        links.push(Arc::new(PodLink {
            name: Arc::from(pod.name.as_str()),
            target: Target {
                http,
                replica_header: http::HeaderName::from_static(REPLICA_HEADER),
                timeout: plan.request_timeout,
            },
            stats: Arc::new(PodStats::default()),
        }));
    }
    Ok(links)
}
