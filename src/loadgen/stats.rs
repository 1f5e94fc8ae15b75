//! Per-step statistics: counts by outcome and latency histograms, folded from request
//! records as they arrive, so memory stays flat however long the run.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::plan::{Load, Step};
use crate::common::Outcome;
use crate::results::request::RequestRecord;
use crate::results::step::{
    ClientHealth, Latency, RetryAsked, Stat, StepRow, micros_histogram, share, successes,
};

/// Folds the records of one step.
#[derive(Debug)]
pub struct StepStats {
    step: Step,
    counts: [u64; Outcome::ALL.len()],
    retry_asked: RetryAsked,
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
            retry_asked: RetryAsked::default(),
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
        self.retry_asked.add(record.retry_after);
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
            retry_asked: self.retry_asked,
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
