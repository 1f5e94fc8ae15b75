//! Datasets of prompts: the rows the batch runner fans out and the load verifier replays.
//!
//! Formats (JSON Lines, read as a stream, one row per line):
//! - `{"id": ..., "prompt": "..."}` or `{"id": ..., "messages": [...]}`;
//! - the OpenAI Batch API input format (`custom_id`, `method`, `url`, `body`), which vLLM's
//!   `run-batch` also reads;
//!
//! and Parquet (`.parquet`): a `prompt` text column, or `messages` as JSON text, and an
//! optional `id` column, read a record batch at a time.

mod jsonl;
mod parquet_file;

use std::path::{Path, PathBuf};

pub use jsonl::JsonlReader;
pub use parquet_file::ParquetReader;

/// Opens a dataset by its extension: `.parquet`, else JSON Lines.
pub fn open(
    path: &Path,
) -> Result<Box<dyn Iterator<Item = Result<Row, DatasetError>> + Send>, DatasetError> {
    if path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("parquet"))
    {
        Ok(Box::new(ParquetReader::open(path)?))
    } else {
        Ok(Box::new(JsonlReader::open(path)?))
    }
}

/// What a row asks the model.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRequest {
    /// A plain prompt, for `/v1/completions`.
    Prompt(String),
    /// Chat messages, for `/v1/chat/completions`.
    Messages(serde_json::Value),
}

/// One dataset row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its id (`id` or `custom_id`), or its line number when the row has none.
    pub id: String,
    /// 1-based line in the file.
    pub line: u64,
    /// The prompt or messages.
    pub request: RowRequest,
    /// Generation parameters the row carries (a Batch API `body`'s other fields).
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A dataset problem, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be opened or read.
    #[error("cannot read dataset {path}: {source}")]
    Io {
        /// The dataset file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A row is wrong.
    #[error("{path}:{line}: {message}")]
    Row {
        /// The dataset file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong and what to do.
        message: String,
    },
    /// The file as a whole is not a usable dataset.
    #[error("{path}: {message}")]
    Format {
        /// The dataset file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The file holds no rows.
    #[error("dataset {path} has no rows")]
    Empty {
        /// The dataset file.
        path: PathBuf,
    },
}
