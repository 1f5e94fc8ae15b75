//! The server's Prometheus metrics, named after vLLM's (`vllm:num_requests_waiting` is
//! `gembatch:num_requests_waiting` here; see the README), rendered as Prometheus text.
//! Gauges and counters are atomics; histograms take a short lock per observation.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets in seconds, the same for every histogram.
const BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
];

/// Error classes counted in `gembatch:request_errors_total`.
pub const ERROR_CLASSES: [&str; 7] = [
    "bad_request",
    "unauthorized",
    "overloaded",
    "draining",
    "internal",
    "client_disconnected",
    "aborted",
];

/// Finish reasons counted in `gembatch:request_success_total`.
const FINISH_REASONS: [&str; 2] = ["stop", "length"];

/// A Prometheus histogram with fixed buckets.
#[derive(Default)]
struct Histogram {
    inner: Mutex<HistogramData>,
}

#[derive(Default)]
struct HistogramData {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let mut data = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = BUCKETS.iter().position(|&le| seconds <= le) {
            data.counts[bucket] += 1;
        }
        data.count += 1;
        data.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let data = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, count) in BUCKETS.iter().zip(data.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", data.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", data.sum, data.count);
    }
}

/// Every metric the server exports.
#[derive(Default)]
pub struct Metrics {
    waiting: AtomicU64,
    running: AtomicU64,
    batch_size: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    successes: [AtomicU64; FINISH_REASONS.len()],
    errors: [AtomicU64; ERROR_CLASSES.len()],
    time_to_first_token: Histogram,
    time_per_output_token: Histogram,
    e2e_latency: Histogram,
}

impl Metrics {
    /// Counts a request into the waiting queue unless `max` are waiting already. The
    /// waiting gauge is the queue's admission counter, so the two never disagree.
    pub fn try_enqueue(&self, max: usize) -> bool {
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w < max as u64).then_some(w + 1)
            })
            .is_ok()
    }

    /// A waiting request left the queue (scheduled, abandoned or aborted).
    pub fn dequeue(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Requests in the running batch.
    pub fn set_running(&self, n: usize) {
        self.running.store(n as u64, Ordering::Relaxed);
    }

    /// Sequences in the last model step.
    pub fn set_batch_size(&self, n: usize) {
        self.batch_size.store(n as u64, Ordering::Relaxed);
    }

    /// Prompt tokens prefilled.
    pub fn add_prompt_tokens(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Tokens generated.
    pub fn add_generation_tokens(&self, n: usize) {
        self.generation_tokens
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A request that got its first token `seconds` after it arrived.
    pub fn observe_first_token(&self, seconds: f64) {
        self.time_to_first_token.observe(seconds);
    }

    /// A finished request: its end-to-end latency, mean time per output token after the
    /// first, and finish reason (`stop` or `length`).
    pub fn observe_finished(&self, e2e_seconds: f64, per_token_seconds: Option<f64>, reason: &str) {
        self.e2e_latency.observe(e2e_seconds);
        if let Some(tpot) = per_token_seconds {
            self.time_per_output_token.observe(tpot);
        }
        if let Some(i) = FINISH_REASONS.iter().position(|&r| r == reason) {
            self.successes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request that failed with an error of `class` (one of [`ERROR_CLASSES`]).
    pub fn count_error(&self, class: &str) {
        if let Some(i) = ERROR_CLASSES.iter().position(|&c| c == class) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests waiting plus running.
    pub fn in_flight(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed) + self.running.load(Ordering::Relaxed)
    }

    /// All metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let scalars = [
            (
                "gembatch:num_requests_waiting",
                "gauge",
                "Requests waiting to be scheduled.",
                &self.waiting,
            ),
            (
                "gembatch:num_requests_running",
                "gauge",
                "Requests in the running batch.",
                &self.running,
            ),
            (
                "gembatch:batch_size",
                "gauge",
                "Sequences in the last model step.",
                &self.batch_size,
            ),
            (
                "gembatch:prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
                &self.prompt_tokens,
            ),
            (
                "gembatch:generation_tokens_total",
                "counter",
                "Tokens generated.",
                &self.generation_tokens,
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        label: &str,
                        keys: &[&str],
                        values: &[AtomicU64]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (key, value) in keys.iter().zip(values) {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{key}\"}} {}",
                    value.load(Ordering::Relaxed)
                );
            }
        };
        labelled(
            &mut out,
            "gembatch:request_success_total",
            "Requests finished, by finish reason.",
            "finished_reason",
            &FINISH_REASONS,
            &self.successes,
        );
        labelled(
            &mut out,
            "gembatch:request_errors_total",
            "Requests that failed, by error class.",
            "class",
            &ERROR_CLASSES,
            &self.errors,
        );
        self.time_to_first_token.render(
            &mut out,
            "gembatch:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
        );
        self.time_per_output_token.render(
            &mut out,
            "gembatch:time_per_output_token_seconds",
            "Mean time between generated tokens of a request.",
        );
        self.e2e_latency.render(
            &mut out,
            "gembatch:e2e_request_latency_seconds",
            "Time from arrival to the last generated token.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        for _ in 0..3 {
            assert!(metrics.try_enqueue(3));
        }
        assert!(!metrics.try_enqueue(3));
        metrics.add_generation_tokens(5);
        metrics.count_error("overloaded");
        metrics.observe_first_token(0.02);
        metrics.observe_first_token(3.0);
        metrics.observe_finished(4.0, Some(0.1), "length");
        let text = metrics.render();
        for line in [
            "gembatch:num_requests_waiting 3",
            "gembatch:generation_tokens_total 5",
            "gembatch:request_errors_total{class=\"overloaded\"} 1",
            "gembatch:request_success_total{finished_reason=\"length\"} 1",
            "gembatch:time_to_first_token_seconds_bucket{le=\"0.025\"} 1",
            "gembatch:time_to_first_token_seconds_bucket{le=\"5\"} 2",
            "gembatch:time_to_first_token_seconds_count 2",
            "gembatch:e2e_request_latency_seconds_sum 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(metrics.in_flight(), 3);
    }
}
