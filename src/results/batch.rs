//! The tables of a `gembatch run`: one row per dataset row (`requests.parquet` and each
//! shard's file), and `summary.parquet`; their columns defined once for writing and reading.

use std::path::Path;

use super::batch_record::{BatchRecord, Status, Times};
use crate::common::Route;

use super::table::{Cell, Column, Kind, Table, TableError, TableWriter, with_run_id};

/// File name of the per-row table.
pub const REQUESTS_FILE: &str = "requests.parquet";
/// File name of the per-pod and per-shard summary.
pub const SUMMARY_FILE: &str = "summary.parquet";

/// The columns of a run's per-row table: instants as timestamps, latencies in seconds,
/// then one text column per `passthrough` field of the dataset.
pub fn record_columns(passthrough: &[String]) -> Vec<Column<BatchRecord>> {
    type R = BatchRecord;
    let mut columns = vec![
        Column::new("id", Kind::Str, |r: &R| Cell::text(Some(&r.id))),
        Column::new("line", Kind::I64, |r: &R| Cell::int(Some(r.line))),
        Column::new("shard", Kind::I64, |r: &R| Cell::int(Some(r.shard))),
        Column::new("pod", Kind::Str, |r: &R| Cell::text(r.pod.as_deref())),
        Column::new("attempts", Kind::I64, |r: &R| Cell::int(Some(r.attempts))),
        Column::new("status", Kind::Str, |r: &R| {
            Cell::text(Some(r.status.as_str()))
        }),
        Column::new("error_code", Kind::Str, |r: &R| {
            Cell::text(r.error_code.as_deref())
        }),
        Column::new("error", Kind::Str, |r: &R| Cell::text(r.error.as_deref())),
        Column::new("http_status", Kind::I64, |r: &R| Cell::int(r.http_status)),
        Column::new("route", Kind::Str, |r: &R| {
            Cell::text(r.route.map(Route::as_str))
        }),
        Column::new("prompt_tokens", Kind::I64, |r: &R| {
            Cell::int(r.prompt_tokens)
        }),
        Column::new("output_tokens", Kind::I64, |r: &R| {
            Cell::int(r.output_tokens)
        }),
        Column::new("finish_reason", Kind::Str, |r: &R| {
            Cell::text(r.finish_reason.as_deref())
        }),
        Column::new("queue_s", Kind::F64, |r: &R| Cell::F64(r.queue_s())),
        Column::new("ttft_s", Kind::F64, |r: &R| Cell::F64(r.ttft_s())),
        Column::new("e2e_s", Kind::F64, |r: &R| Cell::F64(r.e2e_s())),
        Column::new("queued_at", Kind::Time, |r: &R| {
            Cell::unix_seconds(r.times.queued)
        }),
        Column::new("started_at", Kind::Time, |r: &R| {
            Cell::unix_seconds(r.times.started)
        }),
        Column::new("first_token_at", Kind::Time, |r: &R| {
            Cell::unix_seconds(r.times.first_token)
        }),
        Column::new("finished_at", Kind::Time, |r: &R| {
            Cell::unix_seconds(Some(r.times.finished))
        }),
        Column::new("output", Kind::Str, |r: &R| Cell::text(r.output.as_deref())),
    ];
    for (index, name) in passthrough.iter().enumerate() {
        columns.push(Column::new(name.clone(), Kind::Str, move |r: &R| {
            Cell::text(r.passthrough.get(index).and_then(Option::as_deref))
        }));
    }
    columns
}

/// Whether a dataset field can be passed through under its own name: not a column the
/// per-row table (or `run_id`) already has.
pub fn is_free_column_name(name: &str) -> bool {
    name != "run_id" && !record_columns(&[]).iter().any(|column| column.name == name)
}

/// Streams per-row results to `path`: a shard's file, or with `run_id` (its column first)
/// the run's published table; `passthrough` names the dataset fields the rows carry.
pub fn records_writer(
    path: &Path,
    run_id: Option<&str>,
    passthrough: &[String],
) -> Result<TableWriter<BatchRecord>, parquet::errors::ParquetError> {
    let columns = match run_id {
        Some(run_id) => with_run_id(run_id, record_columns(passthrough)),
        None => record_columns(passthrough),
    };
    TableWriter::create(path, columns)
}

/// Reads a per-row table (a shard's file or `requests.parquet`) back, with the
/// `passthrough` fields' columns.
pub fn read_records(path: &Path, passthrough: &[String]) -> Result<Vec<BatchRecord>, TableError> {
    let table = Table::read(path)?;
    let bad = |column: &str, expected: &'static str| TableError::Column {
        path: path.to_path_buf(),
        column: column.to_string(),
        expected,
    };
    let ids = table.strs("id")?;
    let lines = table.u64s("line")?;
    let shards = table.u64s("shard")?;
    let pods = table.strs("pod")?;
    let attempts = table.u32s("attempts")?;
    let statuses = table.strs("status")?;
    let codes = table.strs("error_code")?;
    let errors = table.strs("error")?;
    let http = table.u32s("http_status")?;
    let routes = table.strs("route")?;
    let prompt_tokens = table.u32s("prompt_tokens")?;
    let output_tokens = table.u32s("output_tokens")?;
    let reasons = table.strs("finish_reason")?;
    let queued = table.instants("queued_at")?;
    let started = table.instants("started_at")?;
    let first = table.instants("first_token_at")?;
    let finished = table.instants("finished_at")?;
    let outputs = table.strs("output")?;
    let mut kept = passthrough
        .iter()
        .map(|name| table.strs(name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut records = Vec::with_capacity(table.len());
    for i in 0..table.len() {
        let status = statuses[i]
            .as_deref()
            .and_then(Status::parse)
            .ok_or_else(|| bad("status", "ok, failed or invalid"))?;
        records.push(BatchRecord {
            id: ids[i]
                .clone()
                .ok_or_else(|| bad("id", "set on every row"))?,
            line: lines[i].unwrap_or_default(),
            shard: shards[i].unwrap_or_default(),
            pod: pods[i].clone(),
            attempts: attempts[i].unwrap_or_default(),
            status,
            error_code: codes[i].clone(),
            error: errors[i].clone(),
            http_status: http[i].and_then(|s| u16::try_from(s).ok()),
            route: routes[i].as_deref().and_then(Route::parse),
            prompt_tokens: prompt_tokens[i],
            output_tokens: output_tokens[i],
            finish_reason: reasons[i].clone(),
            output: outputs[i].clone(),
            passthrough: kept.iter_mut().map(|column| column[i].take()).collect(),
            times: Times {
                queued: queued[i],
                started: started[i],
                first_token: first[i],
                finished: finished[i].unwrap_or_default(),
            },
        });
    }
    Ok(records)
}

/// One line of `summary.parquet`: a pod's, a shard's or the whole run's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    /// `run`, `pod` or `shard`.
    pub scope: &'static str,
    /// The pod's name or the shard's number (`all` for the run).
    pub key: String,
    /// Rows.
    pub rows: u64,
    /// Rows that succeeded.
    pub ok: u64,
    /// Rows that failed or were invalid.
    pub errors: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// From the first send to the last finish, seconds.
    pub duration_s: f64,
    /// Successful rows per second over `duration_s`.
    pub requests_per_s: f64,
    /// Output tokens per second over `duration_s`.
    pub output_tokens_per_s: f64,
    /// p50, p90, p99 of time to first token and end to end.
    pub ttft: [Option<f64>; 3],
    /// p50, p90, p99 of end-to-end latency.
    pub e2e: [Option<f64>; 3],
}

/// The percentiles in a summary row.
pub const SUMMARY_PERCENTILES: [(&str, f64); 3] = [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)];

/// The columns of `summary.parquet`, `run_id` first.
pub fn summary_columns(run_id: &str) -> Vec<Column<SummaryRow>> {
    type S = SummaryRow;
    let mut columns = vec![
        Column::new("scope", Kind::Str, |s: &S| Cell::text(Some(s.scope))),
        Column::new("key", Kind::Str, |s: &S| Cell::text(Some(&s.key))),
        Column::new("rows", Kind::I64, |s: &S| Cell::int(Some(s.rows))),
        Column::new("ok", Kind::I64, |s: &S| Cell::int(Some(s.ok))),
        Column::new("errors", Kind::I64, |s: &S| Cell::int(Some(s.errors))),
        Column::new("retries", Kind::I64, |s: &S| Cell::int(Some(s.retries))),
        Column::new("output_tokens", Kind::I64, |s: &S| {
            Cell::int(Some(s.output_tokens))
        }),
        Column::new("duration_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.duration_s))
        }),
        Column::new("requests_per_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.requests_per_s))
        }),
        Column::new("output_tokens_per_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.output_tokens_per_s))
        }),
    ];
    for (index, (name, _)) in SUMMARY_PERCENTILES.into_iter().enumerate() {
        columns.push(Column::new(
            format!("{name}_ttft_s"),
            Kind::F64,
            move |s: &S| Cell::F64(s.ttft[index]),
        ));
    }
    for (index, (name, _)) in SUMMARY_PERCENTILES.into_iter().enumerate() {
        columns.push(Column::new(
            format!("{name}_e2e_s"),
            Kind::F64,
            move |s: &S| Cell::F64(s.e2e[index]),
        ));
    }
    with_run_id(run_id, columns)
}

/// The figures of a whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTotals {
    /// The run as a whole (`scope` `run`).
    pub run: SummaryRow,
    /// Each pod.
    pub pods: Vec<SummaryRow>,
    /// Rows refused before they were sent.
    pub invalid: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.parquet");
        let ok = BatchRecord::fixture("a", 3, "pod-0");
        let mut invalid = BatchRecord::invalid("b".into(), 7, 3, "too long".into());
        // Instants are kept to the microsecond.
        invalid.times.finished = 1_796_342_400.25;
        let mut writer = records_writer(&path, None, &[]).unwrap();
        writer.push(ok.clone()).unwrap();
        writer.push(invalid.clone()).unwrap();
        writer.finish().unwrap();
        let back = read_records(&path, &[]).unwrap();
        assert_eq!(back, vec![ok.clone(), invalid]);
        let table = Table::read(&path).unwrap();
        assert_eq!(table.f64s("queue_s").unwrap()[0], Some(0.5));
        assert_eq!(table.f64s("ttft_s").unwrap()[0], Some(0.25));
        assert_eq!(table.f64s("e2e_s").unwrap()[0], Some(1.0));
        assert_eq!(
            table.strs("error_code").unwrap()[1].as_deref(),
            Some("invalid_row")
        );
    }
}
