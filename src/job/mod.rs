//! Batch job specifications (`jobs/*.yaml`): the file's shape as serde types, read with every
//! unknown field refused by name, then checked as a whole.

mod model;
mod spec;

use std::path::{Path, PathBuf};

pub use model::ModelSpec;
pub use spec::{Backend, Capacity, DatasetSpec, Generation, JobSpec, KubernetesSpec};

/// A job file that cannot be used; each names the file and, where it can, the field.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file cannot be read.
    #[error("cannot read job file {path}: {source}")]
    Io {
        /// The job file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML of the job's shape (unknown field, wrong type, missing field).
    #[error("{path}: {message}")]
    Parse {
        /// The job file.
        path: PathBuf,
        /// The parser's words, with the line and field.
        message: String,
    },
    /// A field's value is out of range or contradicts another.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The job file (or the flag that overrode it).
        path: PathBuf,
        /// The field, dotted (`capacity.gpus`).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl JobSpec {
    /// Reads and checks the job file at `path`.
    pub fn load(path: &Path) -> Result<JobSpec, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let spec = JobSpec::parse(&text).map_err(|message| JobError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        spec.check().map_err(|(field, message)| JobError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        })?;
        Ok(spec)
    }

    /// Parses YAML text into a spec, without the range checks.
    pub fn parse(text: &str) -> Result<JobSpec, String> {
        serde_saphyr::from_str(text).map_err(|err| err.to_string())
    }
}
