//! `gembatch serve --step-log FILE`: one JSON line per engine step, saying what the step
//! ran (decoding sequences, prompt tokens, the context they attended to) and how long it
//! took, so that where a server's time goes under real traffic can be measured from the
//! outside (`benches/step_profile.py` fits the step times to those counts). A write that
//! fails (a full disk) ends the log with one warning; it never stops the server.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// What one engine step ran and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepRecord {
    /// When the step began, in seconds since the log was opened (as the server started).
    pub at_s: f64,
    /// The step's duration: the model pass, sampling and handing tokens to the requests.
    pub seconds: f64,
    /// Sequences that decoded one token.
    pub decode_sequences: usize,
    /// Positions the decoded tokens attended to, summed (before any sliding window).
    pub decode_context: usize,
    /// Prompt tokens prefilled (chunks of one or more prompts).
    pub prefill_tokens: usize,
    /// Positions the prompt tokens attended to, summed (causal, before any window).
    pub prefill_context: usize,
    /// Requests waiting for a place in the batch when the step began.
    pub waiting: usize,
}

impl StepRecord {
    /// Counts one batch entry of `take` tokens at cache position `position`: a decoding
    /// token attends to `position + 1` positions, prompt token `i` of a chunk to
    /// `position + i + 1`.
    pub fn count(&mut self, prefill: bool, position: usize, take: usize) {
        let context = take * position + take * (take + 1) / 2;
        if prefill {
            self.prefill_tokens += take;
            self.prefill_context += context;
        } else {
            self.decode_sequences += 1;
            self.decode_context += context;
        }
    }
}

/// The open step log.
pub struct StepLog {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    started: Instant,
}

impl StepLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            out: Some(BufWriter::new(File::create(path)?)),
            started: Instant::now(),
        })
    }

    /// Seconds from the log's opening to `at`, for [`StepRecord::at_s`].
    pub fn elapsed(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64()
    }

    /// Appends one step, flushed so that a log read while the server runs is whole.
    pub fn write(&mut self, record: &StepRecord) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let written = serde_json::to_writer(&mut *out, record)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if let Err(err) = written {
            tracing::warn!(
                path = %self.path.display(),
                %err,
                "cannot write the step log; no more steps are logged"
            );
            self.out = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_count_tokens_and_the_positions_they_attend_to() {
        let mut record = StepRecord::default();
        record.count(false, 9, 1);
        record.count(false, 0, 1);
        record.count(true, 0, 3);
        record.count(true, 4, 2);
        assert_eq!(record.decode_sequences, 2);
        assert_eq!(record.decode_context, 10 + 1);
        assert_eq!(record.prefill_tokens, 5);
        // 1 + 2 + 3 for the first chunk, 5 + 6 for the second.
        assert_eq!(record.prefill_context, 6 + 11);
    }

    #[test]
    fn each_step_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        let mut log = StepLog::create(&path).unwrap();
        let mut record = StepRecord {
            seconds: 0.25,
            waiting: 3,
            ..StepRecord::default()
        };
        record.count(true, 0, 4);
        log.write(&record);
        log.write(&StepRecord::default());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["prefill_tokens"], 4);
        assert_eq!(lines[0]["prefill_context"], 10);
        assert_eq!(lines[0]["waiting"], 3);
        assert_eq!(lines[0]["seconds"], 0.25);
        assert_eq!(lines[1]["decode_sequences"], 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_ends_the_log_without_stopping_anything() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let mut log = StepLog::create(Path::new("/dev/full")).unwrap();
        log.write(&StepRecord::default());
        assert!(log.out.is_none(), "the log is closed after the failure");
        log.write(&StepRecord::default());
    }
}
