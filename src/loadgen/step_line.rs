//! A finished step in one line for the terminal: its load, counts, rates, latencies,
//! validity and gates; `gembatch load` and `gembatch run` show the same.

use super::slo::Judgement;
use crate::common::Outcome;
use crate::common::units::format_seconds;
use crate::results::step::{Latency, Stat, StepRow};

/// The line a finished step prints: its load, counts, rates, latencies, validity and gates.
pub fn step_line(row: &StepRow, steps: usize, judgement: &Judgement) -> String {
    if let Judgement::Unjudged(unjudged) = judgement
        && unjudged.not_run()
    {
        return format!(
            "step {}/{} ({}): not run",
            row.step + 1,
            steps,
            row.load_label()
        );
    }
    let empty = row.counts[Outcome::EmptyCompletion.index()];
    let mut line = format!(
        "step {}/{} ({}): {} requests, {} failed ({:.1}%), {}{:.2} req/s, {:.0} output tok/s, \
         ttft p50 {} p95 {}, e2e p50 {} p95 {}",
        row.step + 1,
        steps,
        row.load_label(),
        row.requests,
        row.requests - row.successes(),
        row.error_rate * 100.0,
        if empty > 0 {
            format!("{empty} empty ({:.1}%), ", row.empty_rate * 100.0)
        } else {
            String::new()
        },
        row.ok_rate,
        row.output_tokens_per_s,
        format_seconds(row.latency(Latency::Ttft, Stat::P50)),
        format_seconds(row.latency(Latency::Ttft, Stat::P95)),
        format_seconds(row.latency(Latency::E2e, Stat::P50)),
        format_seconds(row.latency(Latency::E2e, Stat::P95)),
    );
    if let Some(reason) = row.invalid_reason() {
        line.push_str(&format!("\n  INVALID: {reason}"));
    }
    match judgement {
        Judgement::Judged(violations) => {
            for violation in violations {
                line.push_str(&format!(
                    "\n  SLO FAILED: {} (measured {})",
                    violation.gate, violation.actual
                ));
            }
        }
        Judgement::Unjudged(unjudged) => line.push_str(&format!(
            "\n  SLO NOT JUDGED: {} request(s), fewer than --slo-min-requests {}",
            unjudged.requests, unjudged.min_requests
        )),
    }
    line
}
