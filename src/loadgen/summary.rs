//! A load run's `summary.json`, made from its configuration and outcome.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::plan::{Hold, Load};
use super::{LoadConfig, LoadOutcome, Prompts};
use crate::common::Outcome;
use crate::results::load_summary::{RetryAfterTotal, Summary, write_summary};
use crate::results::step::RetryAsked;

/// Writes `dir/summary.json`.
pub fn write(
    dir: &Path,
    config: &LoadConfig,
    base: &str,
    started_at: SystemTime,
    outcome: &LoadOutcome,
) -> std::io::Result<()> {
    let steps = &outcome.collected.steps;
    let outcomes = Outcome::ALL
        .iter()
        .map(|&class| {
            let count = steps.iter().map(|row| row.counts[class.index()]).sum();
            (class.as_str().to_string(), count)
        })
        .collect();
    let asked = RetryAsked::of_run(steps);
    let summary = Summary {
        run_id: config.run_id.clone(),
        gembatch_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_unix_s: started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        target: base.to_string(),
        model: outcome.model.clone(),
        shape: config.plan.kind.as_str().to_string(),
        steps: config
            .plan
            .steps
            .iter()
            .map(|step| load_label(step.load))
            .collect(),
        hold: config
            .plan
            .steps
            .first()
            .map_or_else(String::new, |step| hold_label(step.hold)),
        warmup_s: config.plan.warmup.map_or(0.0, |w| w.as_secs_f64()),
        prompts: match &config.prompts {
            Prompts::Synthetic { prompt } => format!("synthetic, {prompt} words"),
            Prompts::Dataset(path) => format!("dataset {}", path.display()),
        },
        output_tokens: format!("{} tokens", config.output),
        seed: config.seed,
        requests: outcome.collected.requests,
        outcomes,
        retry_after: RetryAfterTotal {
            count: asked.count,
            longest_s: asked.longest.as_secs_f64(),
        },
        slo: config
            .slo
            .gates
            .iter()
            .map(|gate| gate.text.clone())
            .collect(),
        slo_min_requests: config.slo.min_requests,
        violations: outcome
            .violations()
            .iter()
            .map(ToString::to_string)
            .collect(),
        unjudged: outcome.unjudged().iter().map(ToString::to_string).collect(),
        invalid_steps: steps
            .iter()
            .filter_map(|row| {
                let reason = row.invalid_reason()?;
                Some(format!(
                    "step {} ({}): {reason}",
                    row.step + 1,
                    row.load_label()
                ))
            })
            .collect(),
        interrupted: outcome.interrupted,
    };
    write_summary(dir, &summary)
}

fn load_label(load: Load) -> String {
    match load {
        Load::Users(_) => load.label(),
        Load::Rate {
            arrivals,
            max_concurrency,
            ..
        } => format!(
            "{} ({arrivals:?}, at most {max_concurrency} in flight)",
            load.label()
        ),
    }
}

fn hold_label(hold: Hold) -> String {
    match hold {
        Hold::For(duration) => format!("{} s per step", duration.as_secs_f64()),
        Hold::RequestsPerUser(count) => format!("{count} requests per user per step"),
    }
}
