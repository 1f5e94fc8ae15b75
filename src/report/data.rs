//! What the HTML report shows of a run, gathered from its files into one JSON value:
//! the summary, the steps, a timeline and latency distributions.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::common::Outcome;
use crate::results::load::{RequestPoint, read_request_points, read_steps};
use crate::results::load_summary::{self, Summary};
use crate::results::replicas::{ReplicaSample, read_replicas};
use crate::results::step::{Latency, Stat, StepRow};

/// At most this many timeline buckets, so a long run stays a light page.
const MAX_BUCKETS: f64 = 300.0;
/// Points per distribution curve.
const CURVE_POINTS: usize = 200;

/// One run, as the page reads it.
#[derive(Debug, Serialize)]
pub struct RunData {
    /// `summary.json` as written.
    pub summary: Summary,
    /// One entry per measured step.
    pub steps: Vec<StepData>,
    /// The run over time.
    pub timeline: Timeline,
    /// Cumulative distributions of successful requests' latencies, seconds:
    /// `{"ttft": [[latency, share], ...], "e2e": ...}`.
    pub distributions: BTreeMap<&'static str, Vec<[f64; 2]>>,
    /// Requests served per replica (measured steps).
    pub replicas: BTreeMap<String, u64>,
    /// The watched Deployment over time (`--watch-deployment`), else `null`.
    pub deployment: Option<DeploymentTimeline>,
}

/// `replicas.parquet` as columns for the page's timeline.
#[derive(Debug, Default, Serialize)]
pub struct DeploymentTimeline {
    /// Sample times, seconds from the run's start.
    pub t: Vec<f64>,
    /// The Deployment's `spec.replicas`.
    pub spec_replicas: Vec<Option<u32>>,
    /// Its ready replicas.
    pub ready_replicas: Vec<Option<u32>>,
    /// The autoscaler's desired replicas.
    pub hpa_desired: Vec<Option<u32>>,
}

impl DeploymentTimeline {
    fn from_samples(samples: &[ReplicaSample]) -> Self {
        Self {
            t: samples.iter().map(|s| s.t_s).collect(),
            spec_replicas: samples.iter().map(|s| s.spec_replicas).collect(),
            ready_replicas: samples.iter().map(|s| s.ready_replicas).collect(),
            hpa_desired: samples.iter().map(|s| s.hpa_desired).collect(),
        }
    }
}

/// A step's figures for the page.
#[derive(Debug, Serialize)]
pub struct StepData {
    /// 1-based, as people count.
    pub number: u32,
    /// "20 users" / "5 req/s".
    pub label: String,
    /// Users (closed loop).
    pub users: Option<u32>,
    /// Offered rate (open loop).
    pub offered_rate: Option<f64>,
    /// Seconds from the run's start.
    pub started_s: f64,
    /// Length.
    pub duration_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests by outcome class (only the classes seen).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Answers that asked the client to wait (`Retry-After`).
    pub retry_after_count: u64,
    /// The longest wait asked, seconds.
    pub retry_after_max_s: Option<f64>,
    /// Failed share.
    pub error_rate: f64,
    /// Share of requests that completed without text.
    pub empty_rate: f64,
    /// Requests/s sent.
    pub achieved_rate: f64,
    /// Successful requests/s.
    pub rps: f64,
    /// Output tokens/s.
    pub output_tokens_per_s: f64,
    /// Mean requests in flight.
    pub mean_concurrency: f64,
    /// `{"ttft": {"p50": s, ...}, ...}`.
    pub latency: BTreeMap<&'static str, BTreeMap<&'static str, Option<f64>>>,
    /// The client's CPU share.
    pub client_cpu_share: f64,
    /// Why the step is invalid.
    pub invalid_reason: Option<String>,
}

impl StepData {
    fn from_row(row: &StepRow) -> StepData {
        let latency = Latency::ALL
            .iter()
            .map(|&latency| {
                let stats = Stat::ALL
                    .iter()
                    .map(|&stat| (stat.as_str(), row.latency(latency, stat)))
                    .collect();
                (latency.as_str(), stats)
            })
            .collect();
        StepData {
            number: row.step + 1,
            label: row.load_label(),
            users: row.users,
            offered_rate: row.offered_rate,
            started_s: row.started_s,
            duration_s: row.duration_s,
            requests: row.requests,
            outcomes: Outcome::ALL
                .iter()
                .filter(|class| row.counts[class.index()] > 0)
                .map(|class| (class.as_str(), row.counts[class.index()]))
                .collect(),
            retry_after_count: row.retry_asked.count,
            retry_after_max_s: (row.retry_asked.count > 0)
                .then_some(row.retry_asked.longest.as_secs_f64()),
            error_rate: row.error_rate,
            empty_rate: row.empty_rate,
            achieved_rate: row.achieved_rate,
            rps: row.ok_rate,
            output_tokens_per_s: row.output_tokens_per_s,
            mean_concurrency: row.mean_concurrency,
            latency,
            client_cpu_share: row.health.cpu_share,
            invalid_reason: row.invalid_reason(),
        }
    }
}

/// The run in fixed-width time buckets, by request end.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    /// Bucket width, seconds.
    pub bucket_s: f64,
    /// Bucket starts, seconds from the run's start.
    pub t: Vec<f64>,
    /// Successful requests/s.
    pub rps: Vec<f64>,
    /// Failed requests/s.
    pub errors_per_s: Vec<f64>,
    /// Output tokens/s.
    pub output_tokens_per_s: Vec<f64>,
    /// Median end-to-end latency of the requests that ended in the bucket.
    pub p50_e2e: Vec<Option<f64>>,
    /// Requests in flight at the bucket's start.
    pub in_flight: Vec<u64>,
    /// Where warm-up ends (seconds), if there was one.
    pub warmup_end_s: Option<f64>,
}

/// What the timeline needs of one request, times in seconds from the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelinePoint {
    /// Sent.
    pub start_s: f64,
    /// Ended.
    pub end_s: f64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Output tokens.
    pub output_tokens: u32,
    /// Sent during the warm-up.
    pub warmup: bool,
}

impl From<&RequestPoint> for TimelinePoint {
    fn from(point: &RequestPoint) -> TimelinePoint {
        TimelinePoint {
            start_s: point.start_s,
            end_s: point.end_s,
            ok: Outcome::is_success_name(&point.outcome),
            output_tokens: point.output_tokens,
            warmup: point.warmup,
        }
    }
}

/// The run in at most [`MAX_BUCKETS`] buckets of whole seconds; `view` reads each point.
pub(super) fn timeline<P>(points: &[P], view: impl Fn(&P) -> TimelinePoint) -> Timeline {
    let Some(last) = points.iter().map(|p| view(p).end_s).reduce(f64::max) else {
        return Timeline::default();
    };
    let bucket = (last / MAX_BUCKETS).ceil().max(1.0);
    let count = (last / bucket).floor() as usize + 1;
    let mut ok = vec![0u64; count];
    let mut errors = vec![0u64; count];
    let mut tokens = vec![0u64; count];
    let mut latencies = vec![Vec::new(); count];
    let mut starts = vec![0i64; count + 1];
    for point in points.iter().map(&view) {
        let index = ((point.end_s / bucket) as usize).min(count - 1);
        if point.ok {
            ok[index] += 1;
            tokens[index] += u64::from(point.output_tokens);
            latencies[index].push(point.end_s - point.start_s);
        } else {
            errors[index] += 1;
        }
        // In flight at a bucket's start: started before it, ended after it.
        let first = (point.start_s / bucket).ceil() as usize;
        let past = ((point.end_s / bucket).ceil() as usize).min(count);
        if first < past {
            starts[first] += 1;
            starts[past] -= 1;
        }
    }
    let mut running = 0i64;
    let in_flight = starts[..count]
        .iter()
        .map(|delta| {
            running += delta;
            running.max(0) as u64
        })
        .collect();
    let per_second = |values: &[u64]| values.iter().map(|&v| v as f64 / bucket).collect();
    Timeline {
        bucket_s: bucket,
        t: (0..count).map(|i| i as f64 * bucket).collect(),
        rps: per_second(&ok),
        errors_per_s: per_second(&errors),
        output_tokens_per_s: per_second(&tokens),
        p50_e2e: latencies.iter_mut().map(|values| median(values)).collect(),
        in_flight,
        warmup_end_s: points
            .iter()
            .map(view)
            .filter(|p| p.warmup)
            .map(|p| p.end_s)
            .reduce(f64::max),
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// `[latency, share of requests at or below it]`, at most [`CURVE_POINTS`] points.
pub(super) fn cumulative(mut values: Vec<f64>) -> Vec<[f64; 2]> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let step = (n as f64 / CURVE_POINTS as f64).max(1.0);
    let mut curve: Vec<[f64; 2]> = (0..n.min(CURVE_POINTS))
        .map(|i| {
            let index = ((i as f64 * step) as usize).min(n - 1);
            [values[index], (index + 1) as f64 / n as f64]
        })
        .collect();
    if curve.last().map(|p| p[1]) != Some(1.0) {
        curve.push([values[n - 1], 1.0]);
    }
    curve
}

/// Reads a run directory.
pub fn read_run(dir: &Path) -> Result<RunData, String> {
    let summary = load_summary::read(dir)?;
    let rows = read_steps(dir).map_err(|err| err.to_string())?;
    let points = read_request_points(dir).map_err(|err| err.to_string())?;
    let deployment = read_replicas(dir).map_err(|err| err.to_string())?;
    let measured = || points.iter().filter(|p| !p.warmup);
    let successful = || measured().filter(|p| Outcome::is_success_name(&p.outcome));
    let mut distributions = BTreeMap::new();
    distributions.insert(
        "ttft",
        cumulative(successful().filter_map(|p| p.ttft_s).collect()),
    );
    distributions.insert("e2e", cumulative(successful().map(|p| p.e2e_s).collect()));
    let mut replicas = BTreeMap::new();
    for point in measured() {
        let name = point
            .replica
            .clone()
            .unwrap_or_else(|| "(not named)".into());
        *replicas.entry(name).or_insert(0) += 1;
    }
    Ok(RunData {
        summary,
        steps: rows.iter().map(StepData::from_row).collect(),
        timeline: timeline(&points, |p| TimelinePoint::from(p)),
        distributions,
        replicas,
        deployment: deployment.as_deref().map(DeploymentTimeline::from_samples),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(start_s: f64, end_s: f64, outcome: &str) -> RequestPoint {
        RequestPoint {
            step: 0,
            warmup: false,
            start_s,
            end_s,
            ttft_s: Some(0.1),
            e2e_s: end_s - start_s,
            output_tokens: 10,
            outcome: outcome.into(),
            replica: None,
        }
    }

    #[test]
    fn a_runs_page_data_is_as_reviewed() {
        use crate::results::load::{requests_writer, write_steps};
        use crate::results::load_summary::write_summary;
        use crate::results::request::RequestRecord;
        use crate::results::step::StepRow;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let summary = Summary {
            run_id: "load-fixture".into(),
            gembatch_version: "0.0.0".into(),
            started_at_unix_s: 1_796_000_000.0,
            target: "http://127.0.0.1:8080".into(),
            model: "gemma".into(),
            shape: "sustained".into(),
            steps: vec!["3 users".into()],
            hold: "60 s per step".into(),
            warmup_s: 0.0,
            prompts: "synthetic, 128 ± 0 words".into(),
            output_tokens: "128 ± 0 tokens".into(),
            seed: 0,
            requests: 5,
            outcomes: vec![("ok".into(), 4), ("http_5xx".into(), 1)],
            retry_after: Default::default(),
            slo: vec!["error_rate<=25%".into()],
            slo_min_requests: 1,
            violations: Vec::new(),
            unjudged: Vec::new(),
            invalid_steps: Vec::new(),
            interrupted: false,
        };
        write_summary(dir.path(), &summary).unwrap();
        let origin = crate::results::origin::RunOrigin::now("load-1");
        write_steps(dir.path(), &origin, &[StepRow::fixture()]).unwrap();
        let mut writer = requests_writer(dir.path(), &origin).unwrap();
        let ms = Duration::from_millis;
        for id in 0..5u64 {
            let failed = id == 4;
            writer
                .push(RequestRecord {
                    id,
                    warmup: id == 0,
                    start: ms(100 * id),
                    intended_start: ms(100 * id),
                    first_token: (!failed).then(|| ms(100 * id + 40)),
                    end: ms(100 * id + 250),
                    outcome: if failed {
                        Outcome::Http5xx
                    } else {
                        Outcome::Ok
                    },
                    replica: Some(format!("pod-{}", id % 2)),
                    ..RequestRecord::fixture()
                })
                .unwrap();
        }
        writer.finish().unwrap();
        insta::assert_json_snapshot!(read_run(dir.path()).unwrap());
    }

    #[test]
    fn timeline_buckets_by_end_and_counts_in_flight() {
        let points = [
            point(0.0, 0.5, "ok"),
            point(0.2, 2.5, "ok"),
            point(1.1, 1.2, "http_5xx"),
        ];
        let timeline = timeline(&points, |p| TimelinePoint::from(p));
        assert_eq!(timeline.bucket_s, 1.0);
        assert_eq!(timeline.t, [0.0, 1.0, 2.0]);
        assert_eq!(timeline.rps, [1.0, 0.0, 1.0]);
        assert_eq!(timeline.errors_per_s, [0.0, 1.0, 0.0]);
        assert_eq!(timeline.output_tokens_per_s, [10.0, 0.0, 10.0]);
        assert_eq!(timeline.p50_e2e, [Some(0.5), None, Some(2.3)]);
        // At t=0 the request sent at 0.0; at t=1 and t=2 the 0.2..2.5 one.
        assert_eq!(timeline.in_flight, [1, 1, 1]);
    }

    #[test]
    fn cumulative_curves_end_at_one_and_stay_small() {
        let curve = cumulative((1..=1000).map(f64::from).collect());
        assert!(curve.len() <= CURVE_POINTS + 1);
        assert_eq!(curve.last(), Some(&[1000.0, 1.0]));
        assert!(
            curve
                .windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1])
        );
        assert_eq!(cumulative(vec![2.0]), vec![[2.0, 1.0]]);
        assert!(cumulative(Vec::new()).is_empty());
    }
}
