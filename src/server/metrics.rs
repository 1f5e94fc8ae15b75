//! The server's Prometheus metrics, named and labelled after vLLM's
//! (`vllm:num_requests_waiting{model_name="..."}` is `gembatch:num_requests_waiting{...}`
//! here; see the README), rendered as Prometheus text. Gauges and counters are atomics;
//! histograms take a short lock per observation.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request latency buckets in seconds (time to first token, end to end, per-request mean).
const REQUEST_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
];
/// Buckets of the gap between two tokens of a request, in seconds: finer at the low end,
/// where a GPU's decode steps are (vLLM's `inter_token_latency_seconds` buckets).
const TOKEN_GAP_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
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

/// Finish reasons counted in `gembatch:request_success_total`, as vLLM counts them: `abort`
/// for a request that ended unfinished (its client left, or the server shut down).
const FINISH_REASONS: [&str; 3] = ["stop", "length", "abort"];
/// Error classes that are also an aborted request.
const ABORTS: [&str; 2] = ["client_disconnected", "aborted"];

/// A Prometheus histogram with fixed buckets.
struct Histogram {
    buckets: &'static [f64],
    inner: Mutex<HistogramData>,
}

struct HistogramData {
    /// Observations per bucket (not cumulative), one more for those above the last.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Histogram {
            buckets,
            inner: Mutex::new(HistogramData {
                counts: vec![0; buckets.len() + 1],
                sum: 0.0,
            }),
        }
    }

    fn observe(&self, seconds: f64) {
        let bucket = self.buckets.partition_point(|&le| le < seconds);
        let mut data = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        data.counts[bucket] += 1;
        data.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let data = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let bounds = self.buckets.iter().map(f64::to_string);
        let mut cumulative = 0;
        for (le, count) in bounds.chain(["+Inf".to_string()]).zip(&data.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", data.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Every metric the server exports.
pub struct Metrics {
    /// `model_name="..."`, the label every series carries.
    model_label: String,
    waiting: AtomicU64,
    running: AtomicU64,
    batch_size: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    successes: [AtomicU64; FINISH_REASONS.len()],
    errors: [AtomicU64; ERROR_CLASSES.len()],
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
    request_time_per_output_token: Histogram,
    e2e_latency: Histogram,
}

impl Metrics {
    /// The metrics of a server that serves `model_name`.
    pub fn new(model_name: &str) -> Self {
        Metrics {
            model_label: format!("model_name=\"{}\"", label_value(model_name)),
            waiting: AtomicU64::default(),
            running: AtomicU64::default(),
            batch_size: AtomicU64::default(),
            prompt_tokens: AtomicU64::default(),
            generation_tokens: AtomicU64::default(),
            successes: Default::default(),
            errors: Default::default(),
            time_to_first_token: Histogram::new(REQUEST_BUCKETS),
            inter_token_latency: Histogram::new(TOKEN_GAP_BUCKETS),
            request_time_per_output_token: Histogram::new(REQUEST_BUCKETS),
            e2e_latency: Histogram::new(REQUEST_BUCKETS),
        }
    }

    /// Counts `count` sequences into the waiting queue, all or none: none when they would
    /// make more than `max` wait. The waiting gauge is the queue's admission counter, so
    /// the two never disagree.
    pub fn try_enqueue(&self, count: usize, max: usize) -> bool {
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w + count as u64 <= max as u64).then_some(w + count as u64)
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

    /// A token generated `seconds` after the request's previous one.
    pub fn observe_token_gap(&self, seconds: f64) {
        self.inter_token_latency.observe(seconds);
    }

    /// A finished request: its end-to-end latency, mean time per output token after the
    /// first, and finish reason (`stop` or `length`).
    pub fn observe_finished(&self, e2e_seconds: f64, per_token_seconds: Option<f64>, reason: &str) {
        self.e2e_latency.observe(e2e_seconds);
        if let Some(tpot) = per_token_seconds {
            self.request_time_per_output_token.observe(tpot);
        }
        count(&self.successes, &FINISH_REASONS, reason);
    }

    /// A request that failed with an error of `class` (one of [`ERROR_CLASSES`]); one its
    /// client left or the server's shutdown ended is also finished as `abort`.
    pub fn count_error(&self, class: &str) {
        count(&self.errors, &ERROR_CLASSES, class);
        if ABORTS.contains(&class) {
            count(&self.successes, &FINISH_REASONS, "abort");
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
        let labels = &self.model_label;
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {}",
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
                    "{name}{{{labels},{label}=\"{key}\"}} {}",
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
        let histograms = [
            (
                &self.time_to_first_token,
                "gembatch:time_to_first_token_seconds",
                "Time from arrival to the first generated token.",
            ),
            (
                &self.inter_token_latency,
                "gembatch:inter_token_latency_seconds",
                "Time between two consecutive generated tokens of a request.",
            ),
            (
                &self.request_time_per_output_token,
                "gembatch:request_time_per_output_token_seconds",
                "Mean time between generated tokens of a finished request.",
            ),
            (
                &self.e2e_latency,
                "gembatch:e2e_request_latency_seconds",
                "Time from arrival to the last generated token.",
            ),
        ];
        for (histogram, name, help) in histograms {
            histogram.render(&mut out, name, help, labels);
        }
        out
    }
}

/// Adds one to the counter of `key` among `keys`.
fn count(counters: &[AtomicU64], keys: &[&str], key: &str) {
    if let Some(i) = keys.iter().position(|&k| k == key) {
        counters[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// `value` as a Prometheus label value: backslash, quote and newline escaped.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_counters_and_cumulative_histograms_labelled_with_the_model() {
        let metrics = Metrics::new("gemma");
        assert!(!metrics.try_enqueue(4, 3), "all or none");
        for _ in 0..3 {
            assert!(metrics.try_enqueue(1, 3));
        }
        assert!(!metrics.try_enqueue(1, 3));
        metrics.add_generation_tokens(5);
        metrics.count_error("overloaded");
        metrics.count_error("client_disconnected");
        metrics.observe_first_token(0.02);
        metrics.observe_first_token(3.0);
        metrics.observe_token_gap(0.005);
        metrics.observe_token_gap(0.08);
        metrics.observe_finished(4.0, Some(0.1), "length");
        let text = metrics.render();
        for line in [
            "gembatch:num_requests_waiting{model_name=\"gemma\"} 3",
            "gembatch:generation_tokens_total{model_name=\"gemma\"} 5",
            "gembatch:request_errors_total{model_name=\"gemma\",class=\"overloaded\"} 1",
            "gembatch:request_success_total{model_name=\"gemma\",finished_reason=\"length\"} 1",
            "gembatch:request_success_total{model_name=\"gemma\",finished_reason=\"abort\"} 1",
            "gembatch:time_to_first_token_seconds_bucket{model_name=\"gemma\",le=\"0.025\"} 1",
            "gembatch:time_to_first_token_seconds_bucket{model_name=\"gemma\",le=\"5\"} 2",
            "gembatch:time_to_first_token_seconds_bucket{model_name=\"gemma\",le=\"+Inf\"} 2",
            "gembatch:time_to_first_token_seconds_count{model_name=\"gemma\"} 2",
            "gembatch:inter_token_latency_seconds_bucket{model_name=\"gemma\",le=\"0.01\"} 1",
            "gembatch:inter_token_latency_seconds_bucket{model_name=\"gemma\",le=\"0.075\"} 1",
            "gembatch:inter_token_latency_seconds_bucket{model_name=\"gemma\",le=\"0.1\"} 2",
            "gembatch:request_time_per_output_token_seconds_count{model_name=\"gemma\"} 1",
            "gembatch:e2e_request_latency_seconds_sum{model_name=\"gemma\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(metrics.in_flight(), 3);
    }

    #[test]
    fn an_observation_above_the_last_bucket_counts_only_in_inf() {
        let metrics = Metrics::new("m");
        metrics.observe_first_token(1000.0);
        let text = metrics.render();
        assert!(text.contains(
            "gembatch:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"160\"} 0"
        ));
        assert!(text.contains(
            "gembatch:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 1"
        ));
    }

    #[test]
    fn model_names_are_escaped_as_label_values() {
        let metrics = Metrics::new("a\"b\\c\nd");
        assert!(
            metrics
                .render()
                .contains("gembatch:batch_size{model_name=\"a\\\"b\\\\c\\nd\"} 0")
        );
    }
}
