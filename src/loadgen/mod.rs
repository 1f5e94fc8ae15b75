//! `gembatch load`: online load verification of any OpenAI-compatible server.
//!
//! - `profile`: what a run sends and checks, from flags or a job's YAML, validated;
//! - `plan`: the run's shape (ramp, sustained, rate) as validated steps;
//! - `workload`: the request bodies, from a dataset or seeded synthetic lengths;
//! - `send`: one request through the client (`crate::client`), recorded;
//! - `client_threads`: the client threads, one single-threaded runtime per CPU;
//! - `driver`: closed-loop users or an open-loop schedule per step, over the client threads;
//! - `collector` + `stats`: records to Parquet and per-step statistics;
//! - `health`: the client's own CPU and scheduler lag;
//! - `slo`: gates checked per step;
//! - `step_line`: a finished step in one line;
//! - `summary`: `summary.json`.

pub mod client_threads;
pub mod collector;
pub mod driver;
pub mod health;
pub mod plan;
pub mod profile;
pub mod send;
pub mod slo;
pub mod stats;
pub mod step_line;
pub mod summary;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capacity::kubernetes::KubeError;
use crate::capacity::kubernetes::deployment_watch::{DeploymentWatch, WatchedDeployment};
use crate::client::tls::Trust;
use crate::client::{ClientError, HttpTarget, Target, WorkItem, connect, preflight};
use crate::common::blame::Blame;
use crate::dataset::DatasetError;
use crate::results::load as tables;
use crate::results::origin::RunOrigin;
use crate::results::replicas::write_replicas;
use crate::results::request::RequestRecord;
use crate::results::table::TableWriter;
use client_threads::ClientThreads;
use collector::{Collected, Observer};
use driver::Driver;
use plan::Plan;
use slo::{Slo, Unjudged, Violation};
use workload::{BodyOptions, TokenLengths};

/// Where the prompts come from.
#[derive(Debug, Clone)]
pub enum Prompts {
    /// Seeded synthetic prompts of these lengths.
    Synthetic {
        /// Prompt length in words (about one token each).
        prompt: TokenLengths,
    },
    /// The rows of a dataset (JSONL or Parquet), cycled.
    Dataset(PathBuf),
}

/// Everything a load run needs, validated.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http(s)://host:port`, as the user wrote it.
    pub url: String,
    /// Which https certificates to trust.
    pub trust: Trust,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// The model to ask for [default: the first one the server lists].
    pub model: Option<String>,
    /// Steps.
    pub plan: Plan,
    /// Prompts.
    pub prompts: Prompts,
    /// Output lengths (`max_tokens`) where a row does not set its own.
    pub output: TokenLengths,
    /// Send `ignore_eos`.
    pub ignore_eos: bool,
    /// Sampling temperature, if set.
    pub temperature: Option<f64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Longest a request may take.
    pub timeout: Duration,
    /// Response header naming the replica.
    pub replica_header: ::http::HeaderName,
    /// SLO gates and the requests a step needs before they judge it.
    pub slo: Slo,
    /// Output directory.
    pub out_dir: PathBuf,
    /// The run's id.
    pub run_id: String,
    /// The Deployment whose replicas are recorded, and how often.
    pub watch: Option<(WatchedDeployment, Duration)>,
}

/// Connects the watch `config.watch` asks for, through `client` (made by the caller, which
/// owns the cluster connection); `None` when no Deployment is watched.
pub async fn connect_watch(
    config: &LoadConfig,
    client: impl AsyncFnOnce() -> Result<kube::Client, KubeError>,
) -> Result<Option<DeploymentWatch>, KubeError> {
    let Some((target, _)) = &config.watch else {
        return Ok(None);
    };
    Ok(Some(
        DeploymentWatch::connect(client().await?, target.clone()).await?,
    ))
}

/// Distinct synthetic requests built up front, then cycled.
const SYNTHETIC_REQUESTS: usize = 1024;
/// Most dataset rows held for cycling.
const MAX_DATASET_ROWS: usize = 100_000;
/// Records in flight between the driver and the collector.
const EVENT_QUEUE: usize = 8192;

/// Why a run could not be made or failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag is wrong.
    #[error("{0}")]
    Flags(String),
    /// The server cannot be used.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The dataset cannot be used.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// `--watch-deployment` cannot read its Deployment.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The results cannot be written.
    #[error("cannot write results to {dir}: {why}")]
    Output {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        why: String,
    },
}

impl Blame for LoadError {
    fn is_user_error(&self) -> bool {
        match self {
            LoadError::Output { .. } => false,
            LoadError::Kube(err) => err.is_user_error(),
            _ => true,
        }
    }
}

/// What a finished run produced.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Its steps, gates, counts.
    pub collected: Collected,
    /// The model used.
    pub model: String,
    /// Whether it was cut short (Ctrl-C).
    pub interrupted: bool,
}

impl LoadOutcome {
    /// Every failed gate.
    pub fn violations(&self) -> &[Violation] {
        &self.collected.violations
    }

    /// Every step the gates did not judge (not run, or too few requests).
    pub fn unjudged(&self) -> &[Unjudged] {
        &self.collected.unjudged
    }
}

/// Runs `config` to the end (or until `cancel`), writing `requests.parquet`,
/// `steps.parquet` and `summary.json` into the output directory; with `watch` (the
/// connected watch of `config.watch`, see [`connect_watch`]), `replicas.parquet` too.
pub async fn run_load(
    config: &LoadConfig,
    observer: &mut dyn Observer,
    cancel: CancellationToken,
    watch: Option<DeploymentWatch>,
) -> Result<LoadOutcome, LoadError> {
    let (base, http) = connect(&config.url, config.api_key.as_deref(), &config.trust).await?;
    let model = preflight::check_server(&http, &base.root(), config.model.as_deref()).await?;
    let work = requests(config, &model)?;
    let dir = &config.out_dir;
    crate::common::durable::create_private_dir_all(dir).or_output(dir, "")?;
    let origin = RunOrigin::now(&config.run_id);
    let writer = tables::requests_writer(dir, &origin).or_output(dir, "")?;

    let stop_watch = cancel.child_token();
    let watching = watch
        .zip(config.watch.as_ref())
        .map(|(watch, (_, interval))| {
            tokio::spawn(watch.run(origin.instant, *interval, stop_watch.clone()))
        });
    let collected = drive(config, &http, work, writer, &origin, observer, &cancel).await?;
    stop_watch.cancel();
    if let Some(watching) = watching {
        let samples = watching
            .await
            .or_output(dir, "the Deployment watch failed")?;
        write_replicas(dir, &origin, &samples).or_output(dir, "")?;
    }

    tables::write_steps(dir, &origin, &collected.steps).or_output(dir, "")?;
    let outcome = LoadOutcome {
        collected,
        model,
        interrupted: cancel.is_cancelled(),
    };
    summary::write(dir, config, &base.root(), origin.wall, &outcome).or_output(dir, "")?;
    Ok(outcome)
}

/// The requests of the run, for `model`: synthetic ones, or one per dataset row.
fn requests(config: &LoadConfig, model: &str) -> Result<Arc<[WorkItem]>, LoadError> {
    let options = BodyOptions {
        model: model.to_string(),
        ignore_eos: config.ignore_eos,
        temperature: config.temperature,
    };
    Ok(match &config.prompts {
        Prompts::Synthetic { prompt } => workload::synthetic(
            SYNTHETIC_REQUESTS,
            *prompt,
            config.output,
            config.seed,
            &options,
        )
        .into(),
        Prompts::Dataset(path) => {
            let rows = crate::dataset::open(path)?
                .take(MAX_DATASET_ROWS)
                .collect::<Result<Vec<_>, _>>()?;
            if rows.is_empty() {
                return Err(DatasetError::Empty { path: path.clone() }.into());
            }
            workload::from_rows(&rows, config.output, config.seed, &options).into()
        }
    })
}

/// Sends `work` as `config.plan` says from client threads, one per CPU, and collects
/// the records into `writer` and per-step statistics.
async fn drive(
    config: &LoadConfig,
    http: &HttpTarget,
    work: Arc<[WorkItem]>,
    writer: TableWriter<RequestRecord>,
    origin: &RunOrigin,
    observer: &mut dyn Observer,
    cancel: &CancellationToken,
) -> Result<Collected, LoadError> {
    let dir = &config.out_dir;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let stop_driver = cancel.child_token();
    let target = || Target {
        http: http.new_pool(),
        replica_header: config.replica_header.clone(),
        timeout: config.timeout,
    };
    let clients = ClientThreads::start(cpus, target, &stop_driver)
        .or_output(dir, "cannot start the client threads")?;
    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let driver = Driver::new(
        clients,
        work,
        events,
        stop_driver.clone(),
        origin.instant.into(),
        config.seed,
    );
    let plan = config.plan.clone();
    let driving = tokio::spawn(async move { driver.run(&plan).await });
    let collected = collector::collect(inbox, writer, &config.slo, observer).await;
    if collected.is_err() {
        // Nothing can record what the driver would send.
        stop_driver.cancel();
    }
    driving.await.or_output(dir, "the load driver failed")?;
    collected.or_output(dir, "")
}

/// A failure to write the run's results, as [`LoadError::Output`] for its directory.
trait OrOutput<T> {
    /// `Err` as the output error of `dir`, its words after `what` when `what` is not empty.
    fn or_output(self, dir: &Path, what: &str) -> Result<T, LoadError>;
}

impl<T, E: std::fmt::Display> OrOutput<T> for Result<T, E> {
    fn or_output(self, dir: &Path, what: &str) -> Result<T, LoadError> {
        self.map_err(|err| LoadError::Output {
            dir: dir.to_path_buf(),
            why: if what.is_empty() {
                err.to_string()
            } else {
                format!("{what}: {err}")
            },
        })
    }
}
