//! Which run `gembatch run` is: a new one, the one `--resume` names (checked against the
//! job and dataset), or with `--start-or-resume` whichever of the two that id is; its
//! directory, and the lock this runner holds on it.

use std::path::PathBuf;

use crate::cli::RunArgs;
use crate::common::say;
use crate::dispatch::run_dir::{Fingerprint, MANIFEST_FILE, RunDirError, RunManifest};
use crate::dispatch::run_lock::RunLock;
use crate::job::{JobError, JobSpec};
use crate::results::run_id::{is_valid_run_id, new_run_id};

/// The run's id, directory, lock and whether it is resumed: a new run, the one `--resume`
/// names (checked), or with `--start-or-resume` whichever of the two that id is.
pub(super) fn run_dir(
    job: &JobSpec,
    args: &RunArgs,
    dataset: &Fingerprint,
    rows: u64,
) -> anyhow::Result<(String, PathBuf, RunLock, bool)> {
    let warn = |line: String| say::warning(line);
    let (run_id, flag) = requested_run_id(job, args);
    if !is_valid_run_id(&run_id) {
        return Err(JobError::Invalid {
            path: args.job.clone(),
            field: flag.into(),
            message: format!("{run_id:?}: use letters, digits, '-', '_' and '.'"),
        }
        .into());
    }
    let dir = job.output.join(&run_id);
    let resume = |dir: PathBuf| -> anyhow::Result<(String, PathBuf, RunLock, bool)> {
        let (manifest, lock) = RunManifest::open(&dir, warn)?;
        manifest.check_resume(&dir, job, dataset)?;
        say::info(format!("resuming {}", dir.display()));
        Ok((run_id.clone(), dir, lock, true))
    };
    let start_or_resume = args.start_or_resume.is_some();
    if args.resume.is_some() || (start_or_resume && dir.join(MANIFEST_FILE).exists()) {
        return resume(dir);
    }
    let manifest = RunManifest {
        run_id: run_id.clone(),
        job: job.clone(),
        dataset: dataset.clone(),
        rows,
    };
    match manifest.create(&dir, warn) {
        Ok(lock) => Ok((run_id, dir, lock, false)),
        // Another runner created it in between: this one joins it as a resume would.
        Err(RunDirError::Exists(_)) if start_or_resume => resume(dir),
        Err(err) => Err(err.into()),
    }
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
