//! `gembatch load`: turns the flags into a validated run, shows live progress, writes the
//! results and the report, and fails the command when an SLO gate fails.

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::capacity::kubernetes;
use crate::cli::LoadArgs;
use crate::common::say;
use crate::common::units::format_seconds;
use crate::loadgen;
use crate::loadgen::collector::{Live, Observer};
use crate::loadgen::plan::{Hold, Load, Step};
use crate::loadgen::slo::Judgement;
use crate::loadgen::step_line::step_line;
use crate::report;
use crate::results::step::{RetryAsked, StepRow};
use crate::shutdown::cancel_on_signals;

/// Runs the load test.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    kubernetes::cluster::use_context(args.cluster.context.clone());
    let url = args.server_url();
    let config = args.profile.config(url, args.out, args.run_id)?;
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
            loadgen::run_load(&run_config, &mut progress, cancel, watch).await
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
    let asked = RetryAsked::of_run(&outcome.collected.steps);
    if asked.count > 0 {
        say::notice(format!(
            "{} answers asked to retry later (Retry-After up to {}); the load test sends on regardless",
            asked.count,
            format_seconds(Some(asked.longest.as_secs_f64()))
        ));
    }
    for unjudged in outcome.unjudged() {
        say::notice(unjudged);
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
            Some(bar) => bar.suspend(|| say::info(line)),
            None => say::info(line),
        }
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
            format_seconds(live.p50_e2e),
            live.errors
        ));
    }

    fn step_finished(&mut self, row: &StepRow, judgement: &Judgement) {
        self.say(step_line(row, self.steps, judgement));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
