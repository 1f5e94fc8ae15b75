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

/// A stream of dataset rows, each read or refused on its own.
pub type Rows = Box<dyn Iterator<Item = Result<Row, DatasetError>> + Send>;

/// Opens a dataset with the usual field names, its format told by its extension.
pub fn open(path: &Path) -> Result<Rows, DatasetError> {
    open_with(path, Format::Auto, &Fields::default())
}

/// Opens a dataset in `format`, reading the prompt, messages and id from `fields`.
pub fn open_with(path: &Path, format: Format, fields: &Fields) -> Result<Rows, DatasetError> {
    let parquet = match format {
        Format::Auto => path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("parquet")),
        Format::Jsonl => false,
        Format::Parquet => true,
    };
    if parquet {
        Ok(Box::new(ParquetReader::open(path, fields)?))
    } else {
        Ok(Box::new(JsonlReader::open(path, fields)?))
    }
}

/// A dataset's file format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `.parquet` files are Parquet, anything else JSON Lines.
    #[default]
    Auto,
    /// JSON Lines: prompt or messages rows, or OpenAI Batch API input (told apart per row).
    Jsonl,
    /// Parquet with a prompt (or messages, as JSON text) column.
    Parquet,
}

/// Which field or column of a row holds what. A Batch API row always uses `custom_id` and
/// its `body`'s `prompt` or `messages`, as that format fixes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// The row's id [default: `id`; absent: the line number].
    pub id: String,
    /// The prompt text, for `/v1/completions` [default: `prompt`].
    pub prompt: String,
    /// The chat messages, for `/v1/chat/completions` [default: `messages`].
    pub messages: String,
    /// Fields (columns) copied to the run's outputs as they are, one column each, and not
    /// sent to the model: a pipeline's own keys (`doc_id`, `lang`) [default: none].
    pub passthrough: Vec<String>,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            id: "id".into(),
            prompt: "prompt".into(),
            messages: "messages".into(),
            passthrough: Vec::new(),
        }
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
    /// The values of [`Fields::passthrough`], in its order, as text (text as it is, other
    /// JSON as JSON); `None` where the row lacks the field.
    pub passthrough: Vec<Option<String>>,
}

/// A passthrough field's value as text: a string as it is, any other JSON value as JSON.
pub fn passthrough_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
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
        /// The row's id, when it could be read.
        id: Option<String>,
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
