//! The tables of a `gembatch load` run: `requests.parquet` (one row per request) and
//! `steps.parquet` (one row per step), their columns defined once for writing and reading.

use std::path::Path;
use std::time::Duration;

use super::origin::RunOrigin;
use super::request::RequestRecord;
use super::step::{ClientHealth, Latency, RetryAsked, Stat, StepRow, share};
use crate::common::Outcome;

use super::table::{Cell, Column, Kind, Table, TableError, TableWriter, with_run_id};

/// File name of the per-request table.
pub const REQUESTS_FILE: &str = "requests.parquet";
/// File name of the per-step table.
pub const STEPS_FILE: &str = "steps.parquet";

fn seconds(value: Option<Duration>) -> Cell<'static> {
    Cell::F64(value.map(|d| d.as_secs_f64()))
}

/// An instant `offset` after the run's start at Unix second `origin`, as a timestamp.
fn instant(origin: f64, offset: Option<Duration>) -> Cell<'static> {
    Cell::unix_seconds(offset.map(|offset| origin + offset.as_secs_f64()))
}

/// The columns of `requests.parquet`, `run_id` first; latencies are seconds, instants are
/// both offsets from the run's start (`*_s`) and timestamps (`*_at`).
pub fn request_columns(origin: &RunOrigin) -> Vec<Column<RequestRecord>> {
    type R = RequestRecord;
    let t0 = origin.unix_s();
    let columns = vec![
        Column::new("id", Kind::I64, |r: &R| Cell::int(Some(r.id))),
        Column::new("step", Kind::I64, |r: &R| Cell::int(Some(r.step))),
        Column::new("warmup", Kind::Bool, |r: &R| Cell::Bool(Some(r.warmup))),
        Column::new("user", Kind::I64, |r: &R| Cell::int(r.user)),
        Column::new("route", Kind::Str, |r: &R| {
            Cell::text(Some(r.route.as_str()))
        }),
        Column::new("row_id", Kind::Str, |r: &R| Cell::text(r.row_id.as_deref())),
        Column::new("intended_start_s", Kind::F64, |r: &R| {
            seconds(Some(r.intended_start))
        }),
        Column::new("start_s", Kind::F64, |r: &R| seconds(Some(r.start))),
        Column::new("first_token_s", Kind::F64, |r: &R| seconds(r.first_token)),
        Column::new("end_s", Kind::F64, |r: &R| seconds(Some(r.end))),
        Column::new("intended_start_at", Kind::Time, move |r: &R| {
            instant(t0, Some(r.intended_start))
        }),
        Column::new("started_at", Kind::Time, move |r: &R| {
            instant(t0, Some(r.start))
        }),
        Column::new("first_token_at", Kind::Time, move |r: &R| {
            instant(t0, r.first_token)
        }),
        Column::new("ended_at", Kind::Time, move |r: &R| {
            instant(t0, Some(r.end))
        }),
        Column::new("ttft_s", Kind::F64, |r: &R| seconds(r.ttft())),
        Column::new("ttft_corrected_s", Kind::F64, |r: &R| {
            seconds(r.ttft_corrected())
        }),
        Column::new("itl_mean_s", Kind::F64, |r: &R| seconds(r.itl_mean())),
        Column::new("itl_max_s", Kind::F64, |r: &R| seconds(r.itl_max())),
        Column::new("tpot_s", Kind::F64, |r: &R| seconds(r.tpot())),
        Column::new("e2e_s", Kind::F64, |r: &R| seconds(Some(r.e2e()))),
        Column::new("e2e_corrected_s", Kind::F64, |r: &R| {
            seconds(Some(r.e2e_corrected()))
        }),
        Column::new("prompt_tokens", Kind::I64, |r: &R| {
            Cell::int(r.prompt_tokens)
        }),
        Column::new("output_tokens", Kind::I64, |r: &R| {
            Cell::int(Some(r.output_tokens))
        }),
        Column::new("token_source", Kind::Str, |r: &R| {
            Cell::text(Some(r.token_source.as_str()))
        }),
        Column::new("outcome", Kind::Str, |r: &R| {
            Cell::text(Some(r.outcome.as_str()))
        }),
        Column::new("http_status", Kind::I64, |r: &R| Cell::int(r.http_status)),
        Column::new("retry_after_s", Kind::F64, |r: &R| seconds(r.retry_after)),
        Column::new("error", Kind::Str, |r: &R| Cell::text(r.error.as_deref())),
        Column::new("replica", Kind::Str, |r: &R| {
            Cell::text(r.replica.as_deref())
        }),
    ];
    with_run_id(&origin.run_id, columns)
}

/// Streams request rows to `dir/requests.parquet`.
pub fn requests_writer(
    dir: &Path,
    origin: &RunOrigin,
) -> Result<TableWriter<RequestRecord>, parquet::errors::ParquetError> {
    TableWriter::create(&dir.join(REQUESTS_FILE), request_columns(origin))
}

fn latency_column_name(stat: Stat, latency: Latency) -> String {
    format!("{}_{}_s", stat.as_str(), latency.as_str())
}

fn count_column_name(outcome: Outcome) -> String {
    format!("{}_count", outcome.as_str())
}

/// The columns of `steps.parquet`, `run_id` first.
pub fn step_columns(origin: &RunOrigin) -> Vec<Column<StepRow>> {
    type S = StepRow;
    let t0 = origin.unix_s();
    let mut columns = vec![
        Column::new("step", Kind::I64, |s: &S| Cell::int(Some(s.step))),
        Column::new("users", Kind::I64, |s: &S| Cell::int(s.users)),
        Column::new("offered_rate", Kind::F64, |s: &S| Cell::F64(s.offered_rate)),
        Column::new("started_s", Kind::F64, |s: &S| Cell::F64(Some(s.started_s))),
        Column::new("started_at", Kind::Time, move |s: &S| {
            Cell::unix_seconds(Some(t0 + s.started_s))
        }),
        Column::new("duration_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.duration_s))
        }),
        Column::new("requests", Kind::I64, |s: &S| Cell::int(Some(s.requests))),
    ];
    for outcome in Outcome::ALL {
        columns.push(Column::new(
            count_column_name(outcome),
            Kind::I64,
            move |s: &S| Cell::int(Some(s.counts[outcome.index()])),
        ));
    }
    columns.extend([
        Column::new("retry_after_count", Kind::I64, |s: &S| {
            Cell::int(Some(s.retry_asked.count))
        }),
        Column::new("retry_after_max_s", Kind::F64, |s: &S| {
            seconds((s.retry_asked.count > 0).then_some(s.retry_asked.longest))
        }),
        Column::new("error_rate", Kind::F64, |s: &S| {
            Cell::F64(Some(s.error_rate))
        }),
        Column::new("empty_rate", Kind::F64, |s: &S| {
            Cell::F64(Some(s.empty_rate))
        }),
        Column::new("achieved_rate", Kind::F64, |s: &S| {
            Cell::F64(Some(s.achieved_rate))
        }),
        Column::new("rps", Kind::F64, |s: &S| Cell::F64(Some(s.ok_rate))),
        Column::new("output_tokens_per_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.output_tokens_per_s))
        }),
        Column::new("total_tokens_per_s", Kind::F64, |s: &S| {
            Cell::F64(Some(s.total_tokens_per_s))
        }),
        Column::new("mean_concurrency", Kind::F64, |s: &S| {
            Cell::F64(Some(s.mean_concurrency))
        }),
    ]);
    for latency in Latency::ALL {
        for stat in Stat::ALL {
            columns.push(Column::new(
                latency_column_name(stat, latency),
                Kind::F64,
                move |s: &S| Cell::F64(s.latency(latency, stat)),
            ));
        }
    }
    columns.extend([
        Column::new("client_cpu_share", Kind::F64, |s: &S| {
            Cell::F64(Some(s.health.cpu_share))
        }),
        Column::new("scheduler_lag_p99_s", Kind::F64, |s: &S| {
            seconds(Some(s.health.lag_p99))
        }),
        Column::new("scheduler_lag_max_s", Kind::F64, |s: &S| {
            seconds(Some(s.health.lag_max))
        }),
        Column::new("valid", Kind::Bool, |s: &S| {
            Cell::Bool(Some(s.invalid_reason().is_none()))
        }),
        Column::new("invalid_reason", Kind::Str, |s: &S| {
            Cell::owned_text(s.invalid_reason())
        }),
    ]);
    with_run_id(&origin.run_id, columns)
}

/// Writes `dir/steps.parquet`.
pub fn write_steps(
    dir: &Path,
    origin: &RunOrigin,
    rows: &[StepRow],
) -> Result<(), parquet::errors::ParquetError> {
    let path = dir.join(STEPS_FILE);
    super::table::write_all(&path, step_columns(origin), rows.iter().cloned())
}

/// Reads `dir/steps.parquet` back.
pub fn read_steps(dir: &Path) -> Result<Vec<StepRow>, TableError> {
    let table = Table::read(&dir.join(STEPS_FILE))?;
    let f64s = |name: &str| table.f64s(name);
    let required = |values: Vec<Option<f64>>| {
        values
            .into_iter()
            .map(|v| v.unwrap_or(0.0))
            .collect::<Vec<_>>()
    };
    let steps = table.u32s("step")?;
    let users = table.u32s("users")?;
    let offered = f64s("offered_rate")?;
    let started = required(f64s("started_s")?);
    let duration = required(f64s("duration_s")?);
    let requests = table.u64s("requests")?;
    let counts = Outcome::ALL
        .iter()
        .map(|&outcome| table.u64s(&count_column_name(outcome)))
        .collect::<Result<Vec<_>, _>>()?;
    // Runs written before these columns existed were asked for nothing.
    let retry_counts = match table.has_column("retry_after_count") {
        true => table.u64s("retry_after_count")?,
        false => vec![None; table.len()],
    };
    let retry_longest = match table.has_column("retry_after_max_s") {
        true => f64s("retry_after_max_s")?,
        false => vec![None; table.len()],
    };
    let error_rate = required(f64s("error_rate")?);
    let achieved = required(f64s("achieved_rate")?);
    let rps = required(f64s("rps")?);
    let output_tps = required(f64s("output_tokens_per_s")?);
    let total_tps = required(f64s("total_tokens_per_s")?);
    let concurrency = required(f64s("mean_concurrency")?);
    let mut latencies = Vec::new();
    for latency in Latency::ALL {
        for stat in Stat::ALL {
            latencies.push(f64s(&latency_column_name(stat, latency))?);
        }
    }
    let cpu = required(f64s("client_cpu_share")?);
    let lag_p99 = required(f64s("scheduler_lag_p99_s")?);
    let lag_max = required(f64s("scheduler_lag_max_s")?);
    Ok((0..table.len())
        .map(|i| StepRow {
            step: steps[i].unwrap_or(i as u32),
            users: users[i],
            offered_rate: offered[i],
            started_s: started[i],
            duration_s: duration[i],
            requests: requests[i].unwrap_or(0),
            counts: std::array::from_fn(|class| counts[class][i].unwrap_or(0)),
            retry_asked: RetryAsked {
                count: retry_counts[i].unwrap_or(0),
                longest: Duration::from_secs_f64(retry_longest[i].unwrap_or(0.0).max(0.0)),
            },
            error_rate: error_rate[i],
            // From the counts, so runs written before the column existed read the same.
            empty_rate: share(
                counts[Outcome::EmptyCompletion.index()][i].unwrap_or(0),
                requests[i].unwrap_or(0),
            ),
            achieved_rate: achieved[i],
            ok_rate: rps[i],
            output_tokens_per_s: output_tps[i],
            total_tokens_per_s: total_tps[i],
            mean_concurrency: concurrency[i],
            latencies: (0..Latency::ALL.len())
                .map(|l| std::array::from_fn(|s| latencies[l * Stat::ALL.len() + s][i]))
                .collect(),
            health: ClientHealth {
                cpu_share: cpu[i],
                lag_p99: Duration::from_secs_f64(lag_p99[i].max(0.0)),
                lag_max: Duration::from_secs_f64(lag_max[i].max(0.0)),
            },
        })
        .collect())
}

/// What the report needs of each request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPoint {
    /// Step index.
    pub step: u32,
    /// Whether it was sent in the warm-up.
    pub warmup: bool,
    /// Sent, seconds from the run's start.
    pub start_s: f64,
    /// Ended, seconds from the run's start.
    pub end_s: f64,
    /// Time to first token, for successful requests.
    pub ttft_s: Option<f64>,
    /// End-to-end latency.
    pub e2e_s: f64,
    /// Output tokens.
    pub output_tokens: u32,
    /// Outcome class.
    pub outcome: String,
    /// The replica that served it.
    pub replica: Option<String>,
}

/// Reads the report's view of `dir/requests.parquet`.
pub fn read_request_points(dir: &Path) -> Result<Vec<RequestPoint>, TableError> {
    let table = Table::read(&dir.join(REQUESTS_FILE))?;
    let steps = table.u32s("step")?;
    let warmup = table.bools("warmup")?;
    let start = table.f64s("start_s")?;
    let end = table.f64s("end_s")?;
    let ttft = table.f64s("ttft_s")?;
    let e2e = table.f64s("e2e_s")?;
    let tokens = table.u32s("output_tokens")?;
    let mut outcome = table.strs("outcome")?;
    let mut replica = table.strs("replica")?;
    let successful = |i: usize, outcome: &str| {
        Outcome::is_success_name(outcome)
            .then_some(ttft[i])
            .flatten()
    };
    Ok((0..table.len())
        .map(|i| {
            let outcome = outcome[i].take().unwrap_or_default();
            RequestPoint {
                step: steps[i].unwrap_or(0),
                warmup: warmup[i].unwrap_or(false),
                start_s: start[i].unwrap_or(0.0),
                end_s: end[i].unwrap_or(0.0),
                ttft_s: successful(i, &outcome),
                e2e_s: e2e[i].unwrap_or(0.0),
                output_tokens: tokens[i].unwrap_or(0),
                outcome,
                replica: replica[i].take(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, outcome: Outcome) -> RequestRecord {
        let ms = Duration::from_millis;
        RequestRecord {
            id,
            warmup: id == 0,
            user: Some(1),
            route: crate::common::Route::Chat,
            row_id: Some("row-7".into()),
            intended_start: ms(10 * id),
            start: ms(10 * id + 1),
            first_token: (outcome == Outcome::Ok).then(|| ms(10 * id + 50)),
            end: ms(10 * id + 300),
            itl_gaps: vec![ms(25); 10],
            prompt_tokens: Some(12),
            output_tokens: 11,
            outcome,
            replica: Some("pod-a".into()),
            ..RequestRecord::fixture()
        }
    }

    #[test]
    fn steps_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let row = StepRow::fixture();
        write_steps(dir.path(), &RunOrigin::now("r"), std::slice::from_ref(&row)).unwrap();
        assert_eq!(read_steps(dir.path()).unwrap(), vec![row]);
    }

    #[test]
    fn requests_are_read_back_for_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let origin = RunOrigin::now("load-1");
        let mut writer = requests_writer(dir.path(), &origin).unwrap();
        writer.push(record(0, Outcome::Ok)).unwrap();
        writer.push(record(1, Outcome::Timeout)).unwrap();
        writer.finish().unwrap();
        let points = read_request_points(dir.path()).unwrap();
        assert_eq!(points.len(), 2);
        assert!(points[0].warmup);
        assert_eq!(points[0].ttft_s, Some(0.049));
        assert_eq!(points[1].ttft_s, None);
        assert_eq!(points[1].outcome, "timeout");
        assert_eq!(points[1].replica.as_deref(), Some("pod-a"));
        let table = Table::read(&dir.path().join(REQUESTS_FILE)).unwrap();
        assert_eq!(table.strs("route").unwrap()[1].as_deref(), Some("chat"));
        assert_eq!(table.strs("row_id").unwrap()[1].as_deref(), Some("row-7"));
        let columns: Vec<String> = request_columns(&origin)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(columns.contains(&"ttft_corrected_s".to_string()));
        assert_eq!(table.strs("run_id").unwrap()[1].as_deref(), Some("load-1"));
        let ended = table.instants("ended_at").unwrap()[1].unwrap();
        assert!((ended - (origin.unix_s() + 0.310)).abs() < 1e-6);
    }
}
