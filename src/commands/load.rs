//! `gembatch load`: turns the flags into a validated run, shows live progress, writes the
//! results and the report, and fails the command when an SLO gate fails.

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::capacity::kubernetes;
use crate::cli::LoadArgs;
use crate::common::Outcome;
use crate::loadgen;
use crate::loadgen::collector::{Live, Observer};
use crate::loadgen::plan::{Hold, Load, Step};
use crate::loadgen::slo::Judgement;
use crate::report;
use crate::results::step::{Latency, Stat, StepRow};
use crate::shutdown::cancel_on_signals;

/// Runs the load test.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let config = args.profile.config(args.url, args.out, args.run_id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = std::sync::Arc::new(config);
    let run_config = config.clone();
    // On a worker, not the main thread: records then reach the collector without waking
    // another OS thread for each one.
    let outcome = runtime.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        cancel_on_signals(cancel.clone());
        let mut progress = Progress::new(run_config.plan.steps.len());
        tokio::spawn(async move {
            let watch = loadgen::connect_watch(&run_config, kubernetes::client).await?;
            loadgen::run(&run_config, &mut progress, cancel, watch).await
        })
        .await
    })??;
    let page = report::write_report(&config.out_dir)?;
    println!(
        "{} requests against {} ({}): results in {}, report {}",
        outcome.collected.requests,
        config.url,
        outcome.model,
        config.out_dir.display(),
        page.display()
    );
    for unjudged in outcome.unjudged() {
        eprintln!("note: {unjudged}");
    }
    if outcome.interrupted {
        bail!("interrupted; the results cover what ran");
    }
    if !outcome.violations().is_empty() {
        let lines: Vec<String> = outcome
            .violations()
            .iter()
            .map(ToString::to_string)
            .collect();
        bail!("SLO failed:\n  {}", lines.join("\n  "));
    }
    Ok(())
}

/// The terminal display: a bar for the running step, one line per finished step.
struct Progress {
    steps: usize,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(steps: usize) -> Progress {
        Progress { steps, bar: None }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

/// A latency for people: milliseconds below a second.
pub(super) fn seconds(value: Option<f64>) -> String {
    match value {
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1e3),
        Some(v) => format!("{v:.2} s"),
        None => "-".into(),
    }
}

impl Observer for Progress {
    fn step_started(&mut self, step: &Step, warmup: bool) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let (length, unit) = match step.hold {
            Hold::For(duration) if !warmup => (duration.as_secs().max(1), "s"),
            Hold::RequestsPerUser(count) if !warmup => {
                let users = match step.load {
                    Load::Users(users) => users,
                    Load::Rate { .. } => 1,
                };
                (u64::from(count) * u64::from(users), "req")
            }
            _ => (1, "s"),
        };
        let bar = ProgressBar::new(length);
        let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let name = if warmup {
            "warm-up".to_string()
        } else {
            format!("step {}/{}", step.index + 1, self.steps)
        };
        bar.set_prefix(format!("{name} ({})", step.load.label()));
        self.bar = Some(bar);
    }

    fn progress(&mut self, live: &Live) {
        let Some(bar) = &self.bar else { return };
        match live.step.hold {
            Hold::RequestsPerUser(_) if !live.warmup => bar.set_position(live.requests),
            _ => bar.set_position(live.elapsed.as_secs()),
        }
        bar.set_message(format!(
            "| {:.1} req/s | p50 {} | errors {}",
            live.rps,
            seconds(live.p50_e2e),
            live.errors
        ));
    }

    fn step_finished(&mut self, row: &StepRow, judgement: &Judgement) {
        self.say(step_line(row, self.steps, judgement));
    }
}

/// The line a finished step prints: its load, counts, rates, latencies, validity and gates.
pub(super) fn step_line(row: &StepRow, steps: usize, judgement: &Judgement) -> String {
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
        seconds(row.latency(Latency::Ttft, Stat::P50)),
        seconds(row.latency(Latency::Ttft, Stat::P95)),
        seconds(row.latency(Latency::E2e, Stat::P50)),
        seconds(row.latency(Latency::E2e, Stat::P95)),
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

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
