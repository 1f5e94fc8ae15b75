//! Per-step statistics: counts by outcome and latency histograms, folded from request
//! records as they arrive, so memory stays flat however long the run.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::health::ClientHealth;
use super::plan::{Load, Step};
use super::record::RequestRecord;
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

    fn of(self, histogram: &Histogram<u64>) -> Option<f64> {
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
fn successes(counts: &[u64; Outcome::ALL.len()]) -> u64 {
    Outcome::ALL
        .iter()
        .filter(|outcome| outcome.is_success())
        .map(|outcome| counts[outcome.index()])
        .sum()
}

/// Folds the records of one step.
#[derive(Debug)]
pub struct StepStats {
    step: Step,
    counts: [u64; Outcome::ALL.len()],
    histograms: Vec<Histogram<u64>>,
    output_tokens: u64,
    prompt_tokens: u64,
    busy: Duration,
    first_start: Option<Duration>,
    last_end: Duration,
}

impl StepStats {
    /// Empty statistics for `step`.
    pub fn new(step: Step) -> StepStats {
        let histogram = micros_histogram();
        StepStats {
            step,
            counts: [0; Outcome::ALL.len()],
            histograms: vec![histogram; Latency::ALL.len()],
            output_tokens: 0,
            prompt_tokens: 0,
            busy: Duration::ZERO,
            first_start: None,
            last_end: Duration::ZERO,
        }
    }

    /// Adds one request.
    pub fn add(&mut self, record: &RequestRecord) {
        self.counts[record.outcome.index()] += 1;
        self.busy += record.e2e();
        self.first_start = Some(
            self.first_start
                .map_or(record.start, |s| s.min(record.start)),
        );
        self.last_end = self.last_end.max(record.end);
        if !record.outcome.is_success() {
            return;
        }
        self.output_tokens += u64::from(record.output_tokens);
        self.prompt_tokens += u64::from(record.prompt_tokens.unwrap_or(0));
        let mut put = |latency: Latency, value: Duration| {
            let micros = value.as_micros().min(u64::MAX as u128) as u64;
            self.histograms[latency as usize].saturating_record(micros);
        };
        if let Some(ttft) = record.ttft() {
            put(Latency::Ttft, ttft);
        }
        if let Some(ttft) = record.ttft_corrected() {
            put(Latency::TtftCorrected, ttft);
        }
        for &gap in &record.itl_gaps {
            put(Latency::Itl, gap);
        }
        if let Some(tpot) = record.tpot() {
            put(Latency::Tpot, tpot);
        }
        put(Latency::E2e, record.e2e());
        put(Latency::E2eCorrected, record.e2e_corrected());
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Successful requests seen so far (with text or without).
    pub fn successes(&self) -> u64 {
        successes(&self.counts)
    }

    /// Failed requests seen so far.
    pub fn errors(&self) -> u64 {
        self.requests() - self.successes()
    }

    /// A statistic of one latency so far, in seconds.
    pub fn latency(&self, latency: Latency, stat: Stat) -> Option<f64> {
        stat.of(&self.histograms[latency as usize])
    }

    /// The step's row, over the window `[began, ended]` (offsets from the run's start).
    pub fn finish(&self, began: Duration, ended: Duration, health: ClientHealth) -> StepRow {
        let duration = ended.saturating_sub(began).as_secs_f64().max(1e-9);
        let requests = self.requests();
        let ok = self.successes();
        let (users, offered_rate) = match self.step.load {
            Load::Users(users) => (Some(users), None),
            Load::Rate { per_second, .. } => (None, Some(per_second)),
        };
        let latencies = Latency::ALL
            .iter()
            .map(|&latency| Stat::ALL.map(|stat| self.latency(latency, stat)))
            .collect();
        StepRow {
            step: self.step.index,
            users,
            offered_rate,
            started_s: began.as_secs_f64(),
            duration_s: duration,
            requests,
            counts: self.counts,
            error_rate: share(requests - ok, requests),
            empty_rate: share(self.counts[Outcome::EmptyCompletion.index()], requests),
            achieved_rate: requests as f64 / duration,
            ok_rate: ok as f64 / duration,
            output_tokens_per_s: self.output_tokens as f64 / duration,
            total_tokens_per_s: (self.output_tokens + self.prompt_tokens) as f64 / duration,
            mean_concurrency: self.busy.as_secs_f64() / duration,
            latencies,
            health,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::plan::Hold;

    fn record(
        outcome: Outcome,
        start_ms: u64,
        ttft_ms: u64,
        e2e_ms: u64,
        tokens: u32,
    ) -> RequestRecord {
        let ms = Duration::from_millis;
        RequestRecord {
            intended_start: ms(start_ms),
            start: ms(start_ms),
            first_token: (outcome == Outcome::Ok).then(|| ms(start_ms + ttft_ms)),
            end: ms(start_ms + e2e_ms),
            itl_gaps: vec![ms(10); tokens.saturating_sub(1) as usize],
            prompt_tokens: Some(5),
            output_tokens: tokens,
            outcome,
            ..RequestRecord::fixture()
        }
    }

    #[test]
    fn folds_counts_rates_and_percentiles() {
        let step = Step {
            index: 2,
            load: Load::Users(4),
            hold: Hold::RequestsPerUser(1),
        };
        let mut stats = StepStats::new(step);
        for i in 0..100 {
            stats.add(&record(Outcome::Ok, i * 10, 100 + i, 1000, 11));
        }
        stats.add(&record(Outcome::Http5xx, 0, 0, 5, 0));
        stats.add(&record(Outcome::Timeout, 0, 0, 5, 0));
        // A success without text: counted apart, in the rates, not an error.
        stats.add(&record(Outcome::EmptyCompletion, 0, 0, 1000, 0));
        assert_eq!((stats.requests(), stats.errors()), (103, 2));
        let health = ClientHealth {
            cpu_share: 0.1,
            lag_p99: Duration::ZERO,
            lag_max: Duration::ZERO,
        };
        let row = stats.finish(Duration::ZERO, Duration::from_secs(2), health);
        assert_eq!(row.step, 2);
        assert_eq!(row.users, Some(4));
        assert_eq!(row.counts[Outcome::Ok.index()], 100);
        assert_eq!(row.counts[Outcome::Timeout.index()], 1);
        assert_eq!(row.counts[Outcome::EmptyCompletion.index()], 1);
        assert!((row.error_rate - 2.0 / 103.0).abs() < 1e-12);
        assert!((row.empty_rate - 1.0 / 103.0).abs() < 1e-12);
        assert!((row.ok_rate - 50.5).abs() < 1e-9);
        assert!((row.output_tokens_per_s - 550.0).abs() < 1e-9);
        // 100 x (5 + 11) tokens and the empty completion's 5 prompt tokens, over 2 s.
        assert!((row.total_tokens_per_s - 802.5).abs() < 1e-9);
        let p50 = row.latency(Latency::Ttft, Stat::P50).unwrap();
        assert!((p50 - 0.149).abs() < 0.0002, "{p50}");
        let max = row.latency(Latency::Ttft, Stat::Max).unwrap();
        assert!((max - 0.199).abs() < 0.0002, "{max}");
        assert!((row.latency(Latency::E2e, Stat::P99).unwrap() - 1.0).abs() < 0.001);
        assert!((row.latency(Latency::Itl, Stat::Mean).unwrap() - 0.010).abs() < 1e-5);
        // TPOT = (e2e − ttft) / 10 tokens.
        let tpot = row.latency(Latency::Tpot, Stat::Max).unwrap();
        assert!((tpot - 0.090).abs() < 0.0002, "{tpot}");
        assert_eq!(row.load_label(), "4 users");
        assert_eq!(row.invalid_reason(), None);
    }

    #[test]
    fn an_empty_step_has_no_latencies() {
        let step = Step {
            index: 0,
            load: Load::Users(1),
            hold: Hold::RequestsPerUser(1),
        };
        let health = ClientHealth {
            cpu_share: 0.0,
            lag_p99: Duration::ZERO,
            lag_max: Duration::ZERO,
        };
        let row = StepStats::new(step).finish(Duration::ZERO, Duration::from_secs(1), health);
        assert_eq!(row.latency(Latency::Ttft, Stat::P50), None);
        assert_eq!(row.error_rate, 0.0);
    }
}
