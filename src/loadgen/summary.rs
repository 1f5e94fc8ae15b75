//! `summary.json`: what was run against what, and how it went, in one small file that the
//! report and other tools read.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::plan::{Hold, Load};
use crate::common::Outcome;
use super::{LoadConfig, LoadOutcome, Prompts};

/// File name.
pub const SUMMARY_FILE: &str = "summary.json";

/// The summary of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The run's id.
    pub run_id: String,
    /// gembatch's version.
    pub gembatch_version: String,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_at_unix_s: f64,
    /// The server's base URL.
    pub target: String,
    /// The model asked for.
    pub model: String,
    /// `ramp`, `sustained` or `rate`.
    pub shape: String,
    /// Each step's load, in words.
    pub steps: Vec<String>,
    /// How each step was held, in words.
    pub hold: String,
    /// Warm-up seconds (left out of the statistics).
    pub warmup_s: f64,
    /// Where the prompts came from.
    pub prompts: String,
    /// Output length draw.
    pub output_tokens: String,
    /// Seed.
    pub seed: u64,
    /// Requests recorded, warm-up included.
    pub requests: u64,
    /// Requests in measured steps, by outcome class.
    pub outcomes: Vec<(String, u64)>,
    /// SLO gates as written.
    pub slo: Vec<String>,
    /// Requests a step needed before the gates judged it.
    #[serde(default = "one")]
    pub slo_min_requests: u64,
    /// Failed gates, one line each.
    pub violations: Vec<String>,
    /// Steps the gates did not judge (not run, or too few requests), one line each.
    #[serde(default)]
    pub unjudged: Vec<String>,
    /// Steps whose figures are not the server's (the client was the bottleneck).
    pub invalid_steps: Vec<String>,
    /// Cut short by Ctrl-C or SIGTERM.
    pub interrupted: bool,
}

/// The minimum of summaries written before it was recorded.
fn one() -> u64 {
    1
}

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
            Prompts::Synthetic { prompt } => {
                format!("synthetic, {} ± {} words", prompt.mean, prompt.stddev)
            }
            Prompts::Dataset(path) => format!("dataset {}", path.display()),
        },
        output_tokens: format!("{} ± {} tokens", config.output.mean, config.output.stddev),
        seed: config.seed,
        requests: outcome.collected.requests,
        outcomes,
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
    let text = serde_json::to_string_pretty(&summary).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(SUMMARY_FILE), text + "\n")
}

/// Reads `dir/summary.json`.
pub fn read(dir: &Path) -> Result<Summary, String> {
    let path = dir.join(SUMMARY_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|err| format!("{}: not a gembatch load summary: {err}", path.display()))
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
