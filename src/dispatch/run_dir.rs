//! A run's directory and its `run.json`: the job as it ran and the dataset it read, so a
//! `--resume` continues the same run and refuses one whose dataset or sharding changed.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

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
    /// Creates the run directory `dir` and writes the manifest; `dir` must not exist.
    pub fn create(&self, dir: &Path) -> Result<(), RunDirError> {
        if dir.exists() {
            return Err(RunDirError::Exists(dir.to_path_buf()));
        }
        let io = |source| RunDirError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = serde_json::to_string_pretty(self).map_err(|err| io(err.into()))?;
        std::fs::write(dir.join(MANIFEST_FILE), text).map_err(io)
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
        manifest.create(&run).unwrap();
        assert!(matches!(manifest.create(&run), Err(RunDirError::Exists(_))));
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
            RunManifest::read(&dir.path().join("nope")),
            Err(RunDirError::Missing(_))
        ));
    }
}
