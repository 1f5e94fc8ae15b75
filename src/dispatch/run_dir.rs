//! A run's directory and its `run.json`: the job as it ran and the dataset it read, so a
//! `--resume` continues the same run and refuses one whose dataset or sharding changed.
//! Whoever creates or resumes a run holds its lock (`run_lock`) until it ends.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::run_lock::RunLock;
use crate::common::durable::{create_private_dir_all, write_atomically};
use crate::job::JobSpec;

/// File name of the run's manifest.
pub const MANIFEST_FILE: &str = "run.json";

/// What identifies a dataset file's content cheaply: its size and modification time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its modification time, Unix nanoseconds (an integer: it survives JSON exactly).
    pub modified_ns: u64,
}

impl Fingerprint {
    /// The fingerprint of `path` now.
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        let meta = std::fs::metadata(path)?;
        let modified_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Fingerprint {
            path: path.to_path_buf(),
            bytes: meta.len(),
            modified_ns,
        })
    }
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run's id.
    pub run_id: String,
    /// The job, flags applied.
    pub job: JobSpec,
    /// The dataset as it was when the run started.
    pub dataset: Fingerprint,
    /// Rows in the dataset.
    pub rows: u64,
}

/// Why a run directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A new run's directory exists already.
    #[error("{0} exists already; pick another --run-id, or --resume that run")]
    Exists(PathBuf),
    /// Another runner holds the run.
    #[error(
        "{dir} is in use by another gembatch run ({holder}); wait for it to end or stop it, then --resume"
    )]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it, as it wrote in the lock file.
        holder: String,
    },
    /// The run to resume is not there.
    #[error("no run to resume at {0} (no run.json); check --resume and --out")]
    Missing(PathBuf),
    /// The resumed run differs where it must not.
    #[error("cannot resume {dir}: {why}")]
    Mismatch {
        /// The run directory.
        dir: PathBuf,
        /// What changed.
        why: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RunManifest {
    /// Creates the run directory `dir` (readable by its owner and group only: rows may be
    /// private), takes its lock and writes the manifest. `dir` must not hold a run already;
    /// one left without a manifest by a runner that crashed at once is taken over.
    pub fn create(&self, dir: &Path, warn: impl FnOnce(String)) -> Result<RunLock, RunDirError> {
        let io = |source| RunDirError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let manifest = dir.join(MANIFEST_FILE);
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir_all(parent).map_err(io)?;
        }
        match std::fs::DirBuilder::new().mode(0o750).create(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if manifest.exists() {
                    return Err(RunDirError::Exists(dir.to_path_buf()));
                }
            }
            Err(err) => return Err(io(err)),
        }
        let lock = RunLock::acquire(dir, warn)?;
        if manifest.exists() {
            return Err(RunDirError::Exists(dir.to_path_buf()));
        }
        let text = serde_json::to_string_pretty(self).map_err(|err| io(err.into()))?;
        write_atomically(&manifest, text.as_bytes()).map_err(|source| RunDirError::Io {
            path: manifest.clone(),
            source,
        })?;
        Ok(lock)
    }

    /// Takes the lock of the run in `dir` and reads its manifest, to resume it.
    pub fn open(
        dir: &Path,
        warn: impl FnOnce(String),
    ) -> Result<(RunManifest, RunLock), RunDirError> {
        if !dir.join(MANIFEST_FILE).exists() {
            return Err(RunDirError::Missing(dir.to_path_buf()));
        }
        let lock = RunLock::acquire(dir, warn)?;
        Ok((RunManifest::read(dir)?, lock))
    }

    /// Reads the manifest of the run in `dir`.
    pub fn read(dir: &Path) -> Result<RunManifest, RunDirError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RunDirError::Missing(dir.to_path_buf()),
            _ => RunDirError::Io {
                path: path.clone(),
                source,
            },
        })?;
        serde_json::from_str(&text).map_err(|err| RunDirError::Io {
            path,
            source: err.into(),
        })
    }

    /// Refuses to resume `self` (as first run) with `job` over `dataset` unless the rows
    /// and their shards are the same.
    pub fn check_resume(
        &self,
        dir: &Path,
        job: &JobSpec,
        dataset: &Fingerprint,
    ) -> Result<(), RunDirError> {
        let mismatch = |why: String| RunDirError::Mismatch {
            dir: dir.to_path_buf(),
            why,
        };
        if self.dataset != *dataset {
            return Err(mismatch(format!(
                "the dataset changed since the run started (was {} bytes at {}, now {} bytes at {}); start a new run",
                self.dataset.bytes,
                self.dataset.path.display(),
                dataset.bytes,
                dataset.path.display()
            )));
        }
        let first = &self.job;
        if first.shard_size != job.shard_size
            || first.dataset.fields != job.dataset.fields
            || first.dataset.format != job.dataset.format
        {
            return Err(mismatch(
                "shard_size or the dataset's format or fields changed; resume with the job as it was"
                    .into(),
            ));
        }
        if first.generation != job.generation || first.model != job.model {
            return Err(mismatch(
                "the model or generation parameters changed; half the rows would differ from the other half"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> (RunManifest, PathBuf) {
        let dataset = dir.join("d.jsonl");
        std::fs::write(&dataset, "{\"prompt\": \"a\"}\n").unwrap();
        let job = JobSpec::parse(&format!(
            "name: t\ndataset: {{path: {}}}\n",
            dataset.display()
        ))
        .unwrap();
        let manifest = RunManifest {
            run_id: "t-1".into(),
            job,
            dataset: Fingerprint::of(&dataset).unwrap(),
            rows: 1,
        };
        (manifest, dataset)
    }

    #[test]
    fn round_trips_and_refuses_what_would_break_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, dataset) = manifest(dir.path());
        let run = dir.path().join("t-1");
        let lock = manifest.create(&run, |_| {}).unwrap();
        assert!(matches!(
            manifest.create(&run, |_| {}),
            Err(RunDirError::Exists(_))
        ));
        assert!(matches!(
            RunManifest::open(&run, |_| {}),
            Err(RunDirError::Locked { .. })
        ));
        drop(lock);
        let (_, _lock) = RunManifest::open(&run, |_| {}).unwrap();
        let back = RunManifest::read(&run).unwrap();
        assert_eq!(back, manifest);
        let fingerprint = Fingerprint::of(&dataset).unwrap();
        assert!(back.check_resume(&run, &manifest.job, &fingerprint).is_ok());

        let mut more_gpus = manifest.job.clone();
        more_gpus.capacity.gpus = 4;
        assert!(back.check_resume(&run, &more_gpus, &fingerprint).is_ok());
        let mut resharded = manifest.job.clone();
        resharded.shard_size = 7;
        let err = back
            .check_resume(&run, &resharded, &fingerprint)
            .unwrap_err();
        assert!(err.to_string().contains("shard_size"), "{err}");

        std::fs::write(&dataset, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n").unwrap();
        let changed = Fingerprint::of(&dataset).unwrap();
        let err = back
            .check_resume(&run, &manifest.job, &changed)
            .unwrap_err();
        assert!(err.to_string().contains("dataset changed"), "{err}");
        assert!(matches!(
            RunManifest::open(&dir.path().join("nope"), |_| {}),
            Err(RunDirError::Missing(_))
        ));
    }

    #[test]
    fn a_directory_left_without_a_manifest_is_taken_over_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (manifest, _) = manifest(dir.path());
        let run = dir.path().join("results").join("t-1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("run.json.partial"), "{\"run_").unwrap();
        let _lock = manifest.create(&run, |_| {}).unwrap();
        assert_eq!(RunManifest::read(&run).unwrap(), manifest);

        let fresh = dir.path().join("results").join("t-2");
        let _lock = manifest.create(&fresh, |_| {}).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "others get nothing: {mode:o}");
    }
}
