//! `summary.json`: what a load run ran against what, and how it went, in one small file that
//! the report and other tools read.

use std::path::Path;

use serde::{Deserialize, Serialize};

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
    /// Answers in measured steps that asked the client to wait (`Retry-After`).
    #[serde(default)]
    pub retry_after: RetryAfterTotal,
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

/// How often and how long a run's server asked its client to wait.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryAfterTotal {
    /// Answers with a `Retry-After` header.
    pub count: u64,
    /// The longest wait asked, seconds.
    pub longest_s: f64,
}

/// The minimum of summaries written before it was recorded.
fn one() -> u64 {
    1
}

/// Writes `dir/summary.json`.
pub fn write_summary(dir: &Path, summary: &Summary) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
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
