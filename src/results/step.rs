//! One step of a load run as `steps.parquet` holds it: its figures, the latency statistics
//! they are made of, and the client's health during it.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::common::Outcome;

/// The latencies a step reports, each over its successful requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// First token − start.
    Ttft,
    /// First token − intended start.
    TtftCorrected,
    /// Gaps between streamed tokens, pooled over requests.
    Itl,
    /// Time per output token after the first.
    Tpot,
    /// End − start.
    E2e,
    /// End − intended start.
    E2eCorrected,
}

impl Latency {
    /// Every latency, in report order.
    pub const ALL: [Latency; 6] = [
        Latency::Ttft,
        Latency::TtftCorrected,
        Latency::Itl,
        Latency::Tpot,
        Latency::E2e,
        Latency::E2eCorrected,
    ];

    /// Its name in columns, SLOs and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Latency::Ttft => "ttft",
            Latency::TtftCorrected => "ttft_corrected",
            Latency::Itl => "itl",
            Latency::Tpot => "tpot",
            Latency::E2e => "e2e",
            Latency::E2eCorrected => "e2e_corrected",
        }
    }
}

/// The statistics of one latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// Largest.
    Max,
}

impl Stat {
    /// Every statistic, in report order.
    pub const ALL: [Stat; 6] = [
        Stat::Mean,
        Stat::P50,
        Stat::P90,
        Stat::P95,
        Stat::P99,
        Stat::Max,
    ];

    /// Its name in columns and SLOs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Max => "max",
        }
    }

    /// This statistic of `histogram` (microseconds), in seconds; `None` when it is empty.
    pub fn of(self, histogram: &Histogram<u64>) -> Option<f64> {
        if histogram.is_empty() {
            return None;
        }
        let micros = match self {
            Stat::Mean => histogram.mean(),
            Stat::P50 => histogram.value_at_quantile(0.50) as f64,
            Stat::P90 => histogram.value_at_quantile(0.90) as f64,
            Stat::P95 => histogram.value_at_quantile(0.95) as f64,
            Stat::P99 => histogram.value_at_quantile(0.99) as f64,
            Stat::Max => histogram.max() as f64,
        };
        Some(micros / 1e6)
    }
}

/// Longest latency a histogram holds exactly: one hour, in microseconds; longer ones are
/// recorded as one hour.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of microseconds, 1 µs to 1 h, at 3 significant digits (0.1 %).
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// `part / whole`, 0 when `whole` is 0.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The successful requests (with text or without) of counts by outcome.
pub fn successes(counts: &[u64; Outcome::ALL.len()]) -> u64 {
    Outcome::ALL
        .iter()
        .filter(|outcome| outcome.is_success())
        .map(|outcome| counts[outcome.index()])
        .sum()
}

/// The answers that asked the client to wait (a 429 or 503 with `Retry-After`): the load
/// generator does not wait (it measures), but says how often and how long it was asked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetryAsked {
    /// Answers with a `Retry-After`.
    pub count: u64,
    /// The longest wait asked.
    pub longest: Duration,
}

impl RetryAsked {
    /// Counts one answer's `Retry-After`, if it had one.
    pub fn add(&mut self, wait: Option<Duration>) {
        if let Some(wait) = wait {
            self.count += 1;
            self.longest = self.longest.max(wait);
        }
    }

    /// The asks of every step of a run together.
    pub fn of_run(steps: &[StepRow]) -> RetryAsked {
        steps
            .iter()
            .fold(RetryAsked::default(), |total, row| RetryAsked {
                count: total.count + row.retry_asked.count,
                longest: total.longest.max(row.retry_asked.longest),
            })
    }
}

/// One step's figures: a row of `steps.parquet` and what SLOs are checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    /// 0-based step index.
    pub step: u32,
    /// Closed-loop users, if the step was closed loop.
    pub users: Option<u32>,
    /// Offered requests/s, if the step was open loop.
    pub offered_rate: Option<f64>,
    /// When it began, seconds from the run's start.
    pub started_s: f64,
    /// How long it lasted, to the end of its last request.
    pub duration_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests by outcome, in [`Outcome::ALL`] order.
    pub counts: [u64; Outcome::ALL.len()],
    /// Answers that asked the client to wait.
    pub retry_asked: RetryAsked,
    /// Share of requests that failed.
    pub error_rate: f64,
    /// Share of requests that completed without text (successes, counted apart).
    pub empty_rate: f64,
    /// Requests/s sent (achieved load).
    pub achieved_rate: f64,
    /// Successful requests/s.
    pub ok_rate: f64,
    /// Output tokens/s of successful requests.
    pub output_tokens_per_s: f64,
    /// Prompt + output tokens/s of successful requests.
    pub total_tokens_per_s: f64,
    /// Mean requests in flight.
    pub mean_concurrency: f64,
    /// Seconds, indexed `[Latency as usize][Stat as usize]`; `None` without data.
    pub latencies: Vec<[Option<f64>; Stat::ALL.len()]>,
    /// The client's own health.
    pub health: ClientHealth,
}

impl StepRow {
    /// A latency statistic in seconds.
    pub fn latency(&self, latency: Latency, stat: Stat) -> Option<f64> {
        self.latencies[latency as usize][stat as usize]
    }

    /// Successful requests (with text or without).
    pub fn successes(&self) -> u64 {
        successes(&self.counts)
    }

    /// Why the step's figures are the client's rather than the server's, if they are.
    pub fn invalid_reason(&self) -> Option<String> {
        self.health.invalid_reason()
    }

    /// The step's load in words: "20 users" or "5 req/s".
    pub fn load_label(&self) -> String {
        match (self.users, self.offered_rate) {
            (Some(users), _) => format!("{users} users"),
            (None, Some(rate)) => format!("{rate} req/s"),
            (None, None) => "?".into(),
        }
    }
}

/// A step is invalid when the client used more than this share of its CPUs ...
pub const MAX_CPU_SHARE: f64 = 0.9;
/// ... or its scheduler woke later than this at the 99th percentile.
pub const MAX_LAG_P99: Duration = Duration::from_millis(20);

/// What the client looked like during one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientHealth {
    /// CPU time used / (wall time x CPUs available), 0..1.
    pub cpu_share: f64,
    /// 99th percentile of the probe's wake-up lag.
    pub lag_p99: Duration,
    /// Its worst wake-up lag.
    pub lag_max: Duration,
}

impl ClientHealth {
    /// Why the window's figures cannot be trusted, if they cannot.
    pub fn invalid_reason(&self) -> Option<String> {
        if self.cpu_share > MAX_CPU_SHARE {
            Some(format!(
                "the load generator used {:.0}% of its CPUs (limit {:.0}%)",
                self.cpu_share * 100.0,
                MAX_CPU_SHARE * 100.0
            ))
        } else if self.lag_p99 > MAX_LAG_P99 {
            Some(format!(
                "the load generator's scheduler lagged {:.1} ms at p99 (limit {} ms)",
                self.lag_p99.as_secs_f64() * 1e3,
                MAX_LAG_P99.as_millis()
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
impl StepRow {
    /// A step of 5 requests, one failed, with every figure set, for tests.
    pub(crate) fn fixture() -> StepRow {
        let mut counts = [0; Outcome::ALL.len()];
        counts[Outcome::Ok.index()] = 4;
        counts[Outcome::Http5xx.index()] = 1;
        let latencies = Latency::ALL
            .iter()
            .enumerate()
            .map(|(at, _)| {
                Stat::ALL.map(|stat| (at != 2).then(|| 0.05 * (at + 1) as f64 + stat as u8 as f64))
            })
            .collect();
        StepRow {
            step: 0,
            users: Some(3),
            offered_rate: None,
            started_s: 0.0,
            duration_s: 1.0,
            requests: 5,
            counts,
            retry_asked: RetryAsked {
                count: 1,
                longest: Duration::from_secs(2),
            },
            error_rate: 0.2,
            empty_rate: 0.0,
            achieved_rate: 5.0,
            ok_rate: 4.0,
            output_tokens_per_s: 44.0,
            total_tokens_per_s: 92.0,
            mean_concurrency: 1.5,
            latencies,
            health: ClientHealth {
                cpu_share: 0.25,
                lag_p99: Duration::from_micros(1500),
                lag_max: Duration::from_millis(4),
            },
        }
    }
}
