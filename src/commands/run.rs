//! `gembatch run JOB`: the job file and flags become a validated plan, the dataset is
//! checked whole, capacity is reserved, rows are dispatched exactly once (with the job's
//! load verification alongside), capacity is released whatever happened, and the run's
//! files and report are written.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::capacity::heartbeat;
use crate::capacity::kubernetes::reserve::Progress;
use crate::capacity::kubernetes::{self, backend::reserve_pods};
use crate::capacity::local::{LocalConfig, LocalPods, size_pods};
use crate::capacity::{CapacityError, Reservation};
use crate::cli::RunArgs;
use crate::common::Endpoint;
use crate::common::say;
use crate::common::scratch::Scratch;
use crate::dataset::DatasetError;
use crate::dispatch::ledger::Ledger;
use crate::dispatch::run_dir::Fingerprint;
use crate::dispatch::validate::{LengthLimit, Validation, validate};
use crate::dispatch::{self, DispatchPlan};
use crate::job::{Backend, JobError, JobSpec};
use crate::loadgen::{self, LoadConfig, LoadError, LoadOutcome};
use crate::model::fetch::ensure_default_model;
use crate::shutdown::cancel_on_signals;
use crate::store::StoreUrl;

use super::run_finish::{Ended, finish, rebuild_finished};
use super::run_progress::{LoadLines, RunProgress};
use super::run_start::{requested_run_id, run_dir};

/// Invalid rows listed before the run stops.
const PROBLEMS_SHOWN: usize = 10;

/// What one run shares between its steps: the job, the flags, its id, directory and ledger.
struct RunContext<'a> {
    job: &'a JobSpec,
    args: &'a RunArgs,
    run_id: &'a str,
    dir: &'a Path,
    ledger: &'a Arc<Mutex<Ledger>>,
    /// Whether an earlier attempt ran (it may have left cluster objects behind).
    resumed: bool,
}

/// The work a run has left once its dataset is checked.
struct Remaining {
    /// Rows in the dataset.
    rows: u64,
    /// Rows an earlier attempt committed.
    committed: u64,
    /// Invalid rows: line to reason.
    invalid: HashMap<u64, String>,
    /// The load verification, when the job has one.
    load: Option<LoadConfig>,
    /// The model file local pods serve.
    local_model: Option<PathBuf>,
}

/// Runs the job.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::capacity::kubernetes::cluster::use_context(args.cluster.context.clone());
    let mut job = job_with_flags(&args)?;
    super::run_kubernetes::settle_namespace(&mut job)?;
    let load = load_profile(&job, args.no_load_verification)?;
    if args.dry_run {
        return dry_run(&job, &args);
    }
    if let Some(fs_type) = crate::common::mounts::fuse_file_system(&job.output) {
        say::warning(format!(
            "the results go to {} on a FUSE file system ({fs_type}, such as a bucket through \
             Cloud Storage FUSE): its fsync does not finalize an object and a rename or an \
             append re-uploads it whole, so a crash there can lose or repeat committed shards; \
             name the bucket itself (`output: gs://BUCKET/PATH`), which gembatch writes with \
             create-only commits, or write to a disk (a PersistentVolume)",
            job.output.display()
        ));
    }
    let local_model = local_model(&job)?;
    let (dataset, reading, _dataset_copy) = dataset_copy(&job)?;

    say::info(format!("validating {}", job.dataset.path.display()));
    let validation = check_dataset(
        &job,
        &reading.dataset.path,
        local_model.as_deref(),
        args.skip_invalid,
    )?;
    let place = run_dir(&job, &args, &dataset, validation.rows)?;
    let (run_id, dir) = (place.run_id.as_str(), place.dir.as_path());
    let mut ledger = Ledger::open(dir, &job.dataset.fields.passthrough)
        .with_context(|| format!("cannot open {}", dir.display()))?;
    if let Some(remote) = place.remote {
        let url = remote.url().to_string();
        let fetched;
        (ledger, fetched) = ledger
            .mirrored(remote)
            .with_context(|| format!("cannot read the committed shards of {url}"))?;
        if fetched > 0 {
            say::info(format!("fetched {fetched} committed shards from {url}"));
        }
    }
    let committed = ledger.committed_rows();
    if committed == validation.rows {
        return rebuild_finished(&job, &args, run_id, dir, ledger);
    }
    let ledger = Arc::new(Mutex::new(ledger));
    let context = RunContext {
        job: &reading,
        args: &args,
        run_id,
        dir,
        ledger: &ledger,
        resumed: place.resumed,
    };
    let remaining = Remaining {
        rows: validation.rows,
        committed,
        invalid: validation.invalid,
        load,
        local_model,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ended = runtime.block_on(run_on_capacity(&context, remaining))?;
    finish(&job, &args, run_id, dir, &ledger, ended)
}

/// The dataset's fingerprint, the job reading a local copy of it, and the temporary folder
/// of that copy: a dataset in a bucket is fetched whole first (its fingerprint is the
/// object's), a local one is read where it is.
fn dataset_copy(job: &JobSpec) -> anyhow::Result<(Fingerprint, JobSpec, Option<Scratch>)> {
    let Some(url) = StoreUrl::parse(&job.dataset.path) else {
        let dataset = Fingerprint::of(&job.dataset.path).map_err(|source| DatasetError::Io {
            path: job.dataset.path.clone(),
            source,
        })?;
        return Ok((dataset, job.clone(), None));
    };
    let url = url.map_err(anyhow::Error::msg)?;
    let folder = Scratch::new("gembatch-dataset-")?;
    say::info(format!("fetching {url}"));
    let fetched = crate::store::dataset::fetch(&url, folder.path())?;
    let dataset = Fingerprint {
        path: job.dataset.path.clone(),
        bytes: fetched.bytes,
        modified_ns: fetched.modified_ns,
    };
    let mut reading = job.clone();
    reading.dataset.path = fetched.path;
    Ok((dataset, reading, Some(folder)))
}

/// Takes the run's Lease (Kubernetes), reserves the capacity, runs the batch on it, and
/// releases both whatever happened there.
async fn run_on_capacity(context: &RunContext<'_>, remaining: Remaining) -> anyhow::Result<Ended> {
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    // Taking the Lease may wait out another runner's (a minute): Ctrl-C ends that wait.
    let lease = tokio::select! {
        lease = super::run_kubernetes::run_lease(context.job, context.run_id) => lease?,
        () = cancel.cancelled() => return Err(CapacityError::Interrupted.into()),
    };
    let ended = reserve_and_run(context, remaining, &cancel).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    ended
}

/// Reserves the capacity, runs the batch on it, and releases it whatever happened there.
async fn reserve_and_run(
    context: &RunContext<'_>,
    remaining: Remaining,
    cancel: &CancellationToken,
) -> anyhow::Result<Ended> {
    let local_model = remaining.local_model.clone();
    let mut reservation = reserve(context, local_model, cancel).await?;
    // A panic while the pods run is caught, so it too releases them before it goes on.
    let ended = AssertUnwindSafe(run_on_pods(context, remaining, &reservation, cancel))
        .catch_unwind()
        .await;
    let released = reservation.release().await;
    say::info(format!("released: {released}"));
    ended.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Dispatches the remaining rows to the reserved pods, with the load verification alongside.
async fn run_on_pods(
    context: &RunContext<'_>,
    remaining: Remaining,
    reservation: &Reservation,
    cancel: &CancellationToken,
) -> anyhow::Result<Ended> {
    let pods = reservation.pods();
    write_pods_file(context.dir, &pods, &reservation.pids())?;
    say::info(format!(
        "{} pod(s) ready: {}",
        pods.len(),
        pods.iter()
            .map(|pod| format!("{} {}", pod.name, pod.url))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // Kubernetes pods exit when they stop hearing from this runner (see `heartbeat`).
    let heartbeat = cancel.child_token();
    let _stop_beating = heartbeat.clone().drop_guard();
    if let Reservation::Kubernetes(_) = reservation {
        let every = heartbeat::interval(context.job.capacity.kubernetes.runner_timeout);
        let pods = pods.clone();
        tokio::spawn(async move { heartbeat::beat(&pods, every, heartbeat).await });
    }
    // The pods' own key when the reservation made them one, else the flag's.
    let api_key = reservation
        .api_key()
        .map(str::to_string)
        .or_else(|| context.args.api_key.clone());
    let plan = dispatch_plan(context.job, api_key.clone());
    let invalid = Arc::new(remaining.invalid);
    let mut progress = RunProgress::new(remaining.rows, remaining.committed);
    let printer = progress.printer();
    let load_dir = remaining.load.as_ref().map(|_| free_load_dir(context.dir));
    let batch = async {
        let ledger = context.ledger.clone();
        let result =
            dispatch::dispatch_rows(&plan, &pods, invalid, ledger, &mut progress, cancel.clone())
                .await;
        progress.finish();
        result
    };
    let (batch, load) = match (remaining.load, &load_dir) {
        (Some(config), Some(load_dir)) => {
            let config = LoadConfig {
                url: pods[0].url.clone(),
                out_dir: load_dir.clone(),
                run_id: format!("{}-load", context.run_id),
                api_key: api_key.or(config.api_key),
                ..config
            };
            let lines = LoadLines::new(printer, config.plan.steps.len());
            let (batch, load) = alongside(batch, &config, lines, cancel).await;
            (batch, Some(load))
        }
        _ => (batch.await, None),
    };
    Ok(Ended {
        batch,
        load,
        load_dir,
    })
}

/// Runs `batch` with the load verification `config` alongside, the load stopped when the
/// batch ends: it measures the service while the batch runs, no longer.
async fn alongside<T>(
    batch: impl Future<Output = T>,
    config: &LoadConfig,
    mut lines: LoadLines,
    cancel: &CancellationToken,
) -> (T, Result<LoadOutcome, LoadError>) {
    let load_cancel = cancel.child_token();
    let load = async {
        let watch = loadgen::connect_watch(config, kubernetes::client).await?;
        loadgen::run_load(config, &mut lines, load_cancel.clone(), watch).await
    };
    let batch = async {
        let result = batch.await;
        load_cancel.cancel();
        result
    };
    tokio::join!(batch, load)
}

/// `--dry-run`: the objects a Kubernetes run creates, or what the other backends would do.
fn dry_run(job: &JobSpec, args: &RunArgs) -> anyhow::Result<()> {
    let (run_id, _) = requested_run_id(job, args);
    if !job.capacity.endpoints.is_empty() {
        println!(
            "# --endpoints: nothing is created; rows go to {}",
            job.capacity.endpoints.join(", ")
        );
    } else if job.capacity.backend == Backend::Kubernetes {
        print!("{}", super::run_kubernetes::dry_run_yaml(job, &run_id)?);
    } else {
        println!(
            "# the local backend creates no cluster object: it starts {} `gembatch serve` process(es) here",
            job.capacity.gpus
        );
    }
    Ok(())
}

/// Reads and checks a job file as `gembatch run` would before touching anything: its
/// fields, and its load verification as `gembatch load` flags.
pub fn check_job_file(path: &Path) -> anyhow::Result<JobSpec> {
    let job = JobSpec::load(path)?;
    load_profile(&job, false)?;
    Ok(job)
}

/// The job file with the flags applied, checked again as a whole.
fn job_with_flags(args: &RunArgs) -> Result<JobSpec, JobError> {
    let mut job = JobSpec::load(&args.job)?;
    if let Some(dataset) = &args.dataset {
        job.dataset.path = dataset.clone();
    }
    if let Some(gpus) = args.gpus {
        job.capacity.gpus = gpus;
    }
    if let Some(out) = &args.out {
        job.output = out.clone();
    }
    match args.backend.as_deref() {
        Some("kubernetes") => job.capacity.backend = Backend::Kubernetes,
        Some(_) => job.capacity.backend = Backend::Local,
        None => {}
    }
    if !args.endpoints.is_empty() {
        job.capacity.endpoints = args.endpoints.clone();
    }
    if let Some(namespace) = &args.namespace {
        job.capacity.kubernetes.namespace = Some(namespace.clone());
    }
    job.check().map_err(|(field, message)| JobError::Invalid {
        path: args.job.clone(),
        field,
        message,
    })?;
    Ok(job)
}

/// The job's load verification as a validated `gembatch load` run (URL and output are set
/// once the pods exist), so a bad profile stops the run before anything is reserved.
fn load_profile(job: &JobSpec, skip: bool) -> anyhow::Result<Option<LoadConfig>> {
    let Some(profile) = job.load_verification.as_ref().filter(|_| !skip) else {
        return Ok(None);
    };
    // The URL, the directory and the id are set once the pods exist.
    let mut config = profile
        .clone()
        .config(String::new(), None, None)
        .map_err(|err| JobError::Invalid {
            path: PathBuf::from(&job.name),
            field: "load_verification".into(),
            message: err.to_string(),
        })?;
    if config.model.is_none() {
        config.model = job.model.name.clone();
    }
    Ok(Some(config))
}

/// The model file the local backend serves and the length check reads, when there is one
/// on this machine.
fn local_model(job: &JobSpec) -> anyhow::Result<Option<PathBuf>> {
    let local = job.capacity.backend == Backend::Local && job.capacity.endpoints.is_empty();
    match &job.model.path {
        Some(path) if path.exists() => Ok(Some(path.clone())),
        Some(path) if local => Err(crate::model::ModelError::NotFound {
            path: path.display().to_string(),
        }
        .into()),
        None if local => Ok(Some(ensure_default_model(false, |line| say::info(line))?)),
        _ => Ok(None),
    }
}

/// Validates every row of the dataset's copy at `local` (messages name the job's dataset);
/// stops with the first problems unless `skip_invalid`.
fn check_dataset(
    job: &JobSpec,
    local: &Path,
    model: Option<&Path>,
    skip_invalid: bool,
) -> anyhow::Result<Validation> {
    let limit = match model {
        Some(path) => {
            let (tokenizer, context) = crate::model::load_tokenizer(path)?;
            Some(LengthLimit {
                tokenizer,
                context: job.model.context.map_or(context, |c| c as usize),
                max_tokens: job.generation.max_tokens,
            })
        }
        None => None,
    };
    let check = |row: &crate::dataset::Row| match &limit {
        Some(limit) => limit.check(row),
        None => Ok(()),
    };
    let rows = crate::dataset::open_with(local, job.dataset.format, &job.dataset.fields)?;
    let validation = validate(rows, Some(&check))?;
    if validation.rows == 0 {
        return Err(DatasetError::Empty {
            path: job.dataset.path.clone(),
        }
        .into());
    }
    if !validation.invalid.is_empty() && !skip_invalid {
        let path = job.dataset.path.display();
        let lines: Vec<String> = validation
            .first_problems(PROBLEMS_SHOWN)
            .into_iter()
            .map(|(line, reason)| format!("{path}:{line}: {reason}"))
            .collect();
        return Err(DatasetError::Format {
            path: job.dataset.path.clone(),
            message: format!(
                "{} of {} rows are invalid; fix them, or pass --skip-invalid to write them to errors.jsonl and go on:\n  {}",
                validation.invalid.len(),
                validation.rows,
                lines.join("\n  ")
            ),
        }
        .into());
    }
    Ok(validation)
}

/// Reserves the job's capacity: existing endpoints, local pods, or Kubernetes.
async fn reserve(
    context: &RunContext<'_>,
    local_model: Option<PathBuf>,
    cancel: &CancellationToken,
) -> anyhow::Result<Reservation> {
    let RunContext {
        job, run_id, dir, ..
    } = *context;
    if !job.capacity.endpoints.is_empty() {
        return Ok(Reservation::endpoints(&job.capacity.endpoints));
    }
    match job.capacity.backend {
        Backend::Kubernetes => {
            let client = crate::capacity::kubernetes::client()
                .await
                .map_err(CapacityError::from)?;
            let (plan, retries, pods) = super::run_kubernetes::plans(job, run_id);
            if context.resumed {
                super::run_kubernetes::remove_earlier_attempt(&client, &plan).await?;
            }
            say::info(format!(
                "reserving {} GPU(s) in namespace {} ({})",
                plan.gpus, plan.namespace, plan.class
            ));
            let mut show = |progress: Progress| say::info(progress);
            Ok(reserve_pods(client, plan, retries, &pods, &mut show, cancel).await?)
        }
        Backend::Local => {
            let model = local_model.expect("the local backend always has a model file");
            let sizing = size_pods(job.capacity.gpus, job.capacity.threads_per_pod, &model);
            if let Some(why) = &sizing.capped {
                say::notice(why);
            }
            say::info(format!(
                "starting {} local pod(s), {} thread(s) each",
                sizing.pods, sizing.threads_per_pod
            ));
            let config = LocalConfig {
                pods: sizing.pods,
                threads_per_pod: sizing.threads_per_pod,
                model,
                served_name: job.model.name.clone(),
                max_batch: job.concurrency_per_pod,
                ready_timeout: job.capacity.ready_timeout,
                log_dir: dir.join("pods"),
            };
            Ok(Reservation::Local(LocalPods::start(&config, cancel).await?))
        }
    }
}

fn dispatch_plan(job: &JobSpec, api_key: Option<String>) -> DispatchPlan {
    DispatchPlan {
        dataset: job.dataset.path.clone(),
        format: job.dataset.format,
        fields: job.dataset.fields.clone(),
        shard_size: u64::from(job.shard_size),
        concurrency_per_pod: job.concurrency_per_pod,
        request_timeout: job.request_timeout,
        retries: job.retries.clone(),
        generation: job.generation.body_fields(),
        model: job.model.name.clone(),
        api_key,
    }
}

/// `pods.json`: each pod's name, URL and (local) process id, for operators and tests.
fn write_pods_file(dir: &Path, pods: &[Endpoint], pids: &[Option<u32>]) -> anyhow::Result<()> {
    let list: Vec<serde_json::Value> = pods
        .iter()
        .zip(pids)
        .map(|(pod, pid)| serde_json::json!({"name": pod.name, "url": pod.url, "pid": pid}))
        .collect();
    let path = dir.join("pods.json");
    std::fs::write(&path, serde_json::to_string_pretty(&list)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `load`, or `load-2`, `load-3`... when a resumed run already has one.
fn free_load_dir(dir: &Path) -> PathBuf {
    let first = dir.join("load");
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|n| dir.join(format!("load-{n}")))
        .find(|candidate| !candidate.exists())
        .expect("some name is free")
}
