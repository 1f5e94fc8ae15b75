//! The result of one dataset row of a batch run: exactly one per row, whatever happened
//! to it; a row of the run's `requests.parquet`.

use crate::common::wall_clock::unix_now;
use crate::common::{Outcome, Route};

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The model answered.
    Ok,
    /// Every attempt failed, or the failure was not worth retrying.
    Failed,
    /// The row was refused before it was sent (`--skip-invalid`).
    Invalid,
}

impl Status {
    /// Its name in `requests.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Invalid => "invalid",
        }
    }

    /// Reads a name written by [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Status> {
        [Status::Ok, Status::Failed, Status::Invalid]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// Why a row failed: a request outcome, or a row refused before any request.
pub const INVALID_ROW: &str = "invalid_row";

/// One dataset row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// The row's id.
    pub id: String,
    /// Its 1-based line (row number for Parquet).
    pub line: u64,
    /// The shard it belongs to.
    pub shard: u64,
    /// The pod that served its last attempt.
    pub pod: Option<String>,
    /// Attempts made (0 for an invalid row).
    pub attempts: u32,
    /// How it ended.
    pub status: Status,
    /// The failure's class (an outcome name or `invalid_row`).
    pub error_code: Option<String>,
    /// The failure's words.
    pub error: Option<String>,
    /// The last attempt's HTTP status.
    pub http_status: Option<u16>,
    /// The route it went to.
    pub route: Option<Route>,
    /// Prompt tokens, as the server counted them.
    pub prompt_tokens: Option<u32>,
    /// Output tokens, as the server counted them (else content chunks).
    pub output_tokens: Option<u32>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// The generated text.
    pub output: Option<String>,
    /// The row's passthrough fields (the job's `dataset.fields.passthrough`, in order).
    pub passthrough: Vec<Option<String>>,
    /// Wall-clock times, Unix seconds: queued, last attempt sent, its first token, finished.
    pub times: Times,
}

/// A row's moments as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Times {
    /// When it was first queued.
    pub queued: Option<f64>,
    /// When its last attempt was sent.
    pub started: Option<f64>,
    /// When that attempt's first token arrived.
    pub first_token: Option<f64>,
    /// When it was finished.
    pub finished: f64,
}

impl BatchRecord {
    /// Wait from first queued to the last attempt's send.
    pub fn queue_s(&self) -> Option<f64> {
        Some(self.times.started? - self.times.queued?)
    }

    /// Time to first token of the last attempt.
    pub fn ttft_s(&self) -> Option<f64> {
        Some(self.times.first_token? - self.times.started?)
    }

    /// End-to-end latency of the last attempt.
    pub fn e2e_s(&self) -> Option<f64> {
        Some(self.times.finished - self.times.started?)
    }

    /// A row refused before it was sent.
    pub fn invalid(id: String, line: u64, shard: u64, reason: String) -> BatchRecord {
        BatchRecord {
            id,
            line,
            shard,
            pod: None,
            attempts: 0,
            status: Status::Invalid,
            error_code: Some(INVALID_ROW.into()),
            error: Some(reason),
            http_status: None,
            route: None,
            prompt_tokens: None,
            output_tokens: None,
            finish_reason: None,
            output: None,
            passthrough: Vec::new(),
            times: Times {
                finished: unix_now(),
                ..Times::default()
            },
        }
    }

    /// The failure class of a failed row, as a load outcome where it is one.
    pub fn outcome(&self) -> Option<Outcome> {
        let code = self.error_code.as_deref()?;
        Outcome::ALL.into_iter().find(|o| o.as_str() == code)
    }
}

#[cfg(test)]
impl BatchRecord {
    /// A successful row for tests.
    pub fn fixture(id: &str, shard: u64, pod: &str) -> BatchRecord {
        BatchRecord {
            id: id.into(),
            line: 1,
            shard,
            pod: Some(pod.into()),
            attempts: 1,
            status: Status::Ok,
            error_code: None,
            error: None,
            http_status: Some(200),
            route: Some(Route::Completions),
            prompt_tokens: Some(5),
            output_tokens: Some(8),
            finish_reason: Some("length".into()),
            output: Some(format!("answer to {id}")),
            passthrough: Vec::new(),
            times: Times {
                queued: Some(100.0),
                started: Some(100.5),
                first_token: Some(100.75),
                finished: 101.5,
            },
        }
    }
}
