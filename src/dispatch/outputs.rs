//! A finished run's files, built from its committed shards in order: `requests.parquet`
//! (every row), `output.jsonl` and `errors.jsonl` (the OpenAI Batch API output format, so
//! existing consumers read them) and `summary.parquet` (per pod, per shard, whole run).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::ledger::{Ledger, shard_path};
use crate::common::Route;
use crate::common::durable::{commit, partial_path};
use crate::results::batch::{
    REQUESTS_FILE, RunTotals, SUMMARY_FILE, SUMMARY_PERCENTILES, SummaryRow, read_records,
    records_writer, summary_columns,
};
use crate::results::batch_record::{BatchRecord, Status};
use crate::results::step::micros_histogram;
use crate::results::table::write_all;

/// File name of the successful rows, Batch API output format.
pub const OUTPUT_FILE: &str = "output.jsonl";
/// File name of the failed and invalid rows, Batch API output format.
pub const ERRORS_FILE: &str = "errors.jsonl";

/// Writes every output of the run in `dir` from the shards `ledger` lists, showing each
/// row to `each` on the way (the report's one pass).
pub fn write_outputs(
    dir: &Path,
    ledger: &Ledger,
    run_id: &str,
    model: &str,
    mut each: impl FnMut(&BatchRecord),
) -> std::io::Result<RunTotals> {
    let io = std::io::Error::other;
    let passthrough = ledger.passthrough();
    let mut requests =
        records_writer(&dir.join(REQUESTS_FILE), Some(run_id), passthrough).map_err(io)?;
    let mut output = JsonLines::create(&dir.join(OUTPUT_FILE))?;
    let mut errors = JsonLines::create(&dir.join(ERRORS_FILE))?;
    let mut run = Figures::default();
    let mut pods: BTreeMap<String, Figures> = BTreeMap::new();
    let mut shards = Vec::new();
    let mut invalid = 0;
    for entry in ledger.entries() {
        let records = read_records(&shard_path(dir, entry.shard), passthrough)
            .map_err(std::io::Error::other)?;
        let mut shard = Figures::default();
        for record in records {
            invalid += u64::from(record.status == Status::Invalid);
            let line = batch_output_line(&record, run_id, model);
            if record.status == Status::Ok {
                output.write(&line)?;
            } else {
                errors.write(&line)?;
            }
            each(&record);
            run.add(&record);
            shard.add(&record);
            if let Some(pod) = &record.pod {
                pods.entry(pod.clone()).or_default().add(&record);
            }
            requests.push(record).map_err(io)?;
        }
        shards.push(shard.row("shard", entry.shard.to_string()));
    }
    requests.finish().map_err(io)?;
    output.finish()?;
    errors.finish()?;
    let totals = RunTotals {
        run: run.row("run", "all".into()),
        pods: pods
            .into_iter()
            .map(|(name, figures)| figures.row("pod", name))
            .collect(),
        invalid,
    };
    let rows = std::iter::once(totals.run.clone())
        .chain(totals.pods.iter().cloned())
        .chain(shards);
    write_all(&dir.join(SUMMARY_FILE), summary_columns(run_id), rows).map_err(io)?;
    Ok(totals)
}

/// One line of the Batch API output format for `record`.
pub fn batch_output_line(record: &BatchRecord, run_id: &str, model: &str) -> Value {
    let request_id = format!("{run_id}-{}", record.line);
    let id = format!("batch_req_{request_id}");
    if record.status == Status::Ok {
        let text = record.output.clone().unwrap_or_default();
        let (object, choice) = match record.route {
            Some(Route::Chat) => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": record.finish_reason, "logprobs": null}),
            ),
            _ => (
                "text_completion",
                json!({"index": 0, "text": text, "finish_reason": record.finish_reason,
                       "logprobs": null}),
            ),
        };
        let prompt = record.prompt_tokens.unwrap_or(0);
        let completion = record.output_tokens.unwrap_or(0);
        return json!({
            "id": id,
            "custom_id": record.id,
            "response": {
                "status_code": record.http_status.unwrap_or(200),
                "request_id": request_id,
                "body": {
                    "id": format!("cmpl-{request_id}"),
                    "object": object,
                    "created": record.times.finished as u64,
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                },
            },
            "error": null,
        });
    }
    let code = record.error_code.clone().unwrap_or_else(|| "error".into());
    let message = record.error.clone().unwrap_or_default();
    let response = record.http_status.map(|status| {
        json!({"status_code": status, "request_id": request_id,
               "body": {"error": {"message": message, "type": code}}})
    });
    json!({
        "id": id,
        "custom_id": record.id,
        "response": response,
        "error": {"code": code, "message": message},
    })
}

/// A JSON Lines file written under a partial name, made durable, then renamed.
struct JsonLines {
    writer: BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
}

impl JsonLines {
    fn create(path: &Path) -> std::io::Result<JsonLines> {
        let partial = partial_path(path);
        Ok(JsonLines {
            writer: BufWriter::new(File::create(&partial)?),
            partial,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, value: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.writer, value)?;
        self.writer.write_all(b"\n")
    }

    fn finish(self) -> std::io::Result<()> {
        let file = self.writer.into_inner().map_err(|err| err.into_error())?;
        commit(file, &self.partial, &self.path)
    }
}

/// Running figures of a set of rows, in constant memory whatever their number: latencies
/// go to histograms (to 0.1 %), not lists.
#[derive(Debug)]
struct Figures {
    rows: u64,
    ok: u64,
    retries: u64,
    output_tokens: u64,
    first_start: Option<f64>,
    last_finish: Option<f64>,
    ttft: Histogram<u64>,
    e2e: Histogram<u64>,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            rows: 0,
            ok: 0,
            retries: 0,
            output_tokens: 0,
            first_start: None,
            last_finish: None,
            ttft: micros_histogram(),
            e2e: micros_histogram(),
        }
    }
}

impl Figures {
    fn add(&mut self, record: &BatchRecord) {
        self.rows += 1;
        self.retries += u64::from(record.attempts.saturating_sub(1));
        if record.status != Status::Ok {
            return;
        }
        self.ok += 1;
        self.output_tokens += u64::from(record.output_tokens.unwrap_or(0));
        if let Some(started) = record.times.started {
            self.first_start = Some(self.first_start.map_or(started, |s| s.min(started)));
        }
        let finished = record.times.finished;
        self.last_finish = Some(self.last_finish.map_or(finished, |f| f.max(finished)));
        record_seconds(&mut self.ttft, record.ttft_s());
        record_seconds(&mut self.e2e, record.e2e_s());
    }

    fn row(self, scope: &'static str, key: String) -> SummaryRow {
        let duration_s = match (self.first_start, self.last_finish) {
            (Some(start), Some(end)) if end > start => end - start,
            _ => 0.0,
        };
        let per_second = |count: u64| {
            if duration_s > 0.0 {
                count as f64 / duration_s
            } else {
                0.0
            }
        };
        SummaryRow {
            scope,
            key,
            rows: self.rows,
            ok: self.ok,
            errors: self.rows - self.ok,
            retries: self.retries,
            output_tokens: self.output_tokens,
            duration_s,
            requests_per_s: per_second(self.ok),
            output_tokens_per_s: per_second(self.output_tokens),
            ttft: percentiles(&self.ttft),
            e2e: percentiles(&self.e2e),
        }
    }
}

/// Adds a latency in seconds, if there is one.
fn record_seconds(histogram: &mut Histogram<u64>, seconds: Option<f64>) {
    if let Some(seconds) = seconds {
        histogram.saturating_record((seconds * 1e6).round().max(1.0) as u64);
    }
}

/// The summary's percentiles of `histogram`, in seconds.
fn percentiles(histogram: &Histogram<u64>) -> [Option<f64>; 3] {
    SUMMARY_PERCENTILES
        .map(|(_, q)| (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::table::Table;

    #[test]
    fn writes_every_output_from_the_committed_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), &[]).unwrap();
        let mut chat = BatchRecord::fixture("b", 0, "pod-1");
        chat.route = Some(Route::Chat);
        chat.attempts = 3;
        let mut failed = BatchRecord::fixture("c", 1, "pod-0");
        failed.status = Status::Failed;
        failed.error_code = Some("http_5xx".into());
        failed.error = Some("HTTP 503: busy".into());
        failed.http_status = Some(503);
        ledger
            .commit(
                0,
                "gemma",
                vec![BatchRecord::fixture("a", 0, "pod-0"), chat],
            )
            .unwrap();
        ledger
            .commit(
                1,
                "gemma",
                vec![
                    failed,
                    BatchRecord::invalid("d".into(), 9, 1, "too long".into()),
                ],
            )
            .unwrap();
        let totals = write_outputs(dir.path(), &ledger, "run-1", "gemma", |_| {}).unwrap();
        assert_eq!(
            (totals.run.rows, totals.run.ok, totals.run.errors),
            (4, 2, 2)
        );
        assert_eq!(totals.run.retries, 2);
        assert_eq!(totals.invalid, 1);
        assert_eq!(totals.pods.len(), 2);
        let ttft = totals.run.ttft[0].unwrap();
        assert!((ttft - 0.25).abs() < 0.25e-3, "{ttft}");

        let read = |name: &str| -> Vec<Value> {
            std::fs::read_to_string(dir.path().join(name))
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        };
        let output = read(OUTPUT_FILE);
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["custom_id"], "a");
        assert_eq!(
            output[0]["response"]["body"]["choices"][0]["text"],
            "answer to a"
        );
        assert_eq!(output[0]["response"]["body"]["usage"]["total_tokens"], 13);
        assert_eq!(
            output[1]["response"]["body"]["choices"][0]["message"]["content"],
            "answer to b"
        );
        let errors = read(ERRORS_FILE);
        assert_eq!(errors[0]["error"]["code"], "http_5xx");
        assert_eq!(errors[0]["response"]["status_code"], 503);
        assert_eq!(errors[1]["error"]["code"], "invalid_row");
        assert!(errors[1]["response"].is_null());

        let requests = Table::read(&dir.path().join(REQUESTS_FILE)).unwrap();
        assert_eq!(requests.len(), 4);
        let summary = Table::read(&dir.path().join(SUMMARY_FILE)).unwrap();
        let scopes = summary.strs("scope").unwrap();
        assert_eq!(
            scopes
                .iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["run", "pod", "pod", "shard", "shard"]
        );
    }

    #[test]
    fn percentiles_to_a_tenth_of_a_percent() {
        let mut histogram = micros_histogram();
        for ms in (1..=100).rev() {
            record_seconds(&mut histogram, Some(f64::from(ms) / 1e3));
        }
        let measured = percentiles(&histogram);
        for (value, expected) in measured.into_iter().zip([0.050, 0.090, 0.099]) {
            let value = value.unwrap();
            assert!(
                (value - expected).abs() <= expected * 1e-3,
                "{value} vs {expected}"
            );
        }
        assert_eq!(percentiles(&micros_histogram()), [None, None, None]);
    }
}
