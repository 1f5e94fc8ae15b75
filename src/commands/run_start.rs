//! Which run `gembatch run` is: a new one, the one `--resume` names (checked against the
//! job and dataset), or with `--start-or-resume` whichever of the two that id is; its
//! directory, and the lock this runner holds on it. A run kept in a bucket (`output:
//! gs://...`) is worked on in a local copy that is rebuilt from the bucket.

use std::path::{Path, PathBuf};

use crate::cli::RunArgs;
use crate::common::say;
use crate::common::scratch::Scratch;
use crate::dispatch::remote_run::RemoteRun;
use crate::dispatch::run_dir::{Fingerprint, MANIFEST_FILE, RunDirError, RunManifest};
use crate::dispatch::run_lock::RunLock;
use crate::job::{JobError, JobSpec};
use crate::results::run_id::{is_valid_run_id, new_run_id};
use crate::store::{Created, StoreUrl};

/// Where a run is worked on.
pub(super) struct RunPlace {
    /// The run's id.
    pub run_id: String,
    /// Its local directory (a working copy when the run is kept in a bucket).
    pub dir: PathBuf,
    /// Whether an earlier attempt ran.
    pub resumed: bool,
    /// The bucket folder the run is kept in, when it is.
    pub remote: Option<RemoteRun>,
    _lock: RunLock,
    /// The working copy's temporary parent, removed with it.
    _stage: Option<Scratch>,
}

/// What a new run's `run.json` holds.
struct NewRun<'a> {
    job: &'a JobSpec,
    dataset: &'a Fingerprint,
    rows: u64,
}

/// The run's place: a new run, the one `--resume` names (checked), or with
/// `--start-or-resume` whichever of the two that id is.
pub(super) fn run_dir(
    job: &JobSpec,
    args: &RunArgs,
    dataset: &Fingerprint,
    rows: u64,
) -> anyhow::Result<RunPlace> {
    let (run_id, flag) = requested_run_id(job, args);
    if !is_valid_run_id(&run_id) {
        return Err(JobError::Invalid {
            path: args.job.clone(),
            field: flag.into(),
            message: format!("{run_id:?}: use letters, digits, '-', '_' and '.'"),
        }
        .into());
    }
    let new = NewRun { job, dataset, rows };
    match StoreUrl::parse(&job.output) {
        Some(url) => remote_run_dir(&new, args, run_id, &url.map_err(anyhow::Error::msg)?),
        None => local_run_dir(&new, args, run_id),
    }
}

fn local_run_dir(new: &NewRun<'_>, args: &RunArgs, run_id: String) -> anyhow::Result<RunPlace> {
    let dir = new.job.output.join(&run_id);
    let start_or_resume = args.start_or_resume.is_some();
    let (lock, resumed) =
        if args.resume.is_some() || (start_or_resume && dir.join(MANIFEST_FILE).exists()) {
            (resume(new, &dir, &dir)?, true)
        } else {
            match create(new, &run_id, &dir) {
                Ok(lock) => (lock, false),
                // Another runner created it in between: this one joins it as a resume would.
                Err(RunDirError::Exists(_)) if start_or_resume => (resume(new, &dir, &dir)?, true),
                Err(err) => return Err(err.into()),
            }
        };
    Ok(RunPlace {
        run_id,
        dir,
        resumed,
        remote: None,
        _lock: lock,
        _stage: None,
    })
}

/// A run kept in the bucket folder `output/RUN`: the bucket says whether it exists, and a
/// resume fetches its manifest into a fresh working copy (the ledger follows in `run`).
fn remote_run_dir(
    new: &NewRun<'_>,
    args: &RunArgs,
    run_id: String,
    output: &StoreUrl,
) -> anyhow::Result<RunPlace> {
    let url = output.join(&run_id);
    let shown = PathBuf::from(url.to_string());
    let remote = RemoteRun::open(&url)?;
    let stage = Scratch::new("gembatch-run-")?;
    let dir = stage.path().join(&run_id);
    let exists = remote.exists()?;
    let mut resumed = args.resume.is_some() || (args.start_or_resume.is_some() && exists);
    if !resumed && exists {
        return Err(RunDirError::Exists(shown).into());
    }
    if args.resume.is_some() && !exists {
        return Err(RunDirError::Missing(shown).into());
    }
    let lock = if resumed {
        std::fs::create_dir(&dir)?;
        remote.fetch_manifest(&dir)?;
        resume(new, &dir, &shown)?
    } else {
        let lock = create(new, &run_id, &dir)?;
        match remote.create_manifest(&dir)? {
            Created::New => {
                say::info(format!("the run is kept in {url}"));
                lock
            }
            // Another runner created it in between: this one joins it as a resume would.
            Created::Exists if args.start_or_resume.is_some() => {
                drop(lock);
                remote.fetch_manifest(&dir)?;
                resumed = true;
                resume(new, &dir, &shown)?
            }
            Created::Exists => return Err(RunDirError::Exists(shown).into()),
        }
    };
    Ok(RunPlace {
        run_id,
        dir,
        resumed,
        remote: Some(remote),
        _lock: lock,
        _stage: Some(stage),
    })
}

/// Opens the run in `dir` (shown as `shown`), checks it against the job and dataset and
/// returns its lock.
fn resume(new: &NewRun<'_>, dir: &Path, shown: &Path) -> anyhow::Result<RunLock> {
    let (manifest, lock) = RunManifest::open(dir, say::warning)?;
    manifest.check_resume(shown, new.job, new.dataset)?;
    say::info(format!("resuming {}", shown.display()));
    Ok(lock)
}

fn create(new: &NewRun<'_>, run_id: &str, dir: &Path) -> Result<RunLock, RunDirError> {
    let manifest = RunManifest {
        run_id: run_id.to_string(),
        job: new.job.clone(),
        dataset: new.dataset.clone(),
        rows: new.rows,
    };
    manifest.create(dir, say::warning)
}

/// The id the flags name and the flag that names it, or a new id.
pub(super) fn requested_run_id(job: &JobSpec, args: &RunArgs) -> (String, &'static str) {
    match (&args.resume, &args.start_or_resume, &args.run_id) {
        (Some(id), _, _) => (id.clone(), "--resume"),
        (_, Some(id), _) => (id.clone(), "--start-or-resume"),
        (_, _, Some(id)) => (id.clone(), "--run-id"),
        _ => (new_run_id(&job.name), "--run-id"),
    }
}
