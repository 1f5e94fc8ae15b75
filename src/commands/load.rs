//! `gembatch load`: turns the flags into a validated run, shows live progress, writes the
//! results and the report, and fails the command when an SLO gate fails.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::capacity::kubernetes;
use crate::capacity::kubernetes::deployment_watch::WatchedDeployment;
use crate::cli::LoadArgs;
use crate::common::Outcome;
use crate::loadgen::collector::{Live, Observer};
use crate::loadgen::plan::{Arrivals, Hold, Load, Plan, Step};
use crate::loadgen::slo::{self, Judgement, Slo};
use crate::client::tls::Trust;
use crate::loadgen::workload::TokenLengths;
use crate::loadgen::{self, LoadConfig, LoadError, Prompts};
use crate::report;
use crate::results::run_id::{is_valid_run_id, new_run_id};
use crate::results::step::{Latency, Stat, StepRow};
use crate::shutdown::cancel_on_signals;

/// Runs the load test.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let config = config(args)?;
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

/// The flags as a validated run; nothing is sent before this passes.
pub(super) fn config(args: LoadArgs) -> Result<LoadConfig, LoadError> {
    let flags = LoadError::Flags;
    check_shape_flags(&args).map_err(flags)?;
    let warmup = (!args.warmup.is_zero()).then_some(args.warmup);
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let plan = if let Some(max_users) = args.max_users {
        let hold = match args.requests_per_user {
            Some(count) => Hold::RequestsPerUser(count),
            None => Hold::For(args.step_duration.unwrap_or(DEFAULT_DURATION)),
        };
        let step_size = args.step_size.unwrap_or(DEFAULT_STEP_SIZE);
        let start = args.start_users.unwrap_or(step_size.min(max_users));
        Plan::ramp(start, step_size, max_users, hold, warmup)
    } else if let Some(users) = args.users {
        Plan::sustained(users, duration, warmup)
    } else {
        let rate = args.rate.unwrap_or(0.0);
        let arrivals = if args.poisson {
            Arrivals::Poisson
        } else {
            Arrivals::Constant
        };
        Plan::rate(rate, arrivals, args.max_concurrency, duration, warmup)
    }
    .map_err(flags)?;
    let lengths = |flag: &str, text: &str| {
        TokenLengths::parse(text).map_err(|why| flags(format!("--{flag}: {why}")))
    };
    let prompts = match args.dataset {
        Some(path) => Prompts::Dataset(path),
        None => Prompts::Synthetic {
            prompt: lengths("prompt-tokens", &args.prompt_tokens)?,
        },
    };
    let slo = Slo {
        gates: args
            .slo
            .as_deref()
            .map(slo::parse)
            .transpose()
            .map_err(flags)?
            .unwrap_or_default(),
        min_requests: args.slo_min_requests,
    };
    if args.timeout.is_zero() {
        return Err(flags("--timeout must be above 0 s".into()));
    }
    let replica_header =
        http::HeaderName::try_from(args.replica_header.as_str()).map_err(|_| {
            flags(format!(
                "--replica-header {:?} is not a header name",
                args.replica_header
            ))
        })?;
    let watch = args
        .watch_deployment
        .as_deref()
        .map(WatchedDeployment::parse)
        .transpose()
        .map_err(flags)?;
    if args.watch_interval.is_zero() {
        return Err(flags("--watch-interval must be above 0 s".into()));
    }
    let run_id = args.run_id.unwrap_or_else(|| new_run_id("load"));
    if !is_valid_run_id(&run_id) {
        return Err(flags(format!(
            "--run-id {run_id:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let trust = match (args.cacert, args.insecure) {
        (_, true) => Trust::AnyCertificate,
        (Some(path), false) => Trust::CaFile(path),
        (None, false) => Trust::SystemRoots,
    };
    Ok(LoadConfig {
        url: args.url,
        trust,
        api_key: args.api_key,
        model: args.model,
        plan,
        prompts,
        output: lengths("output-tokens", &args.output_tokens)?,
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        seed: args.seed,
        timeout: args.timeout,
        replica_header,
        slo,
        out_dir: args
            .out
            .unwrap_or_else(|| PathBuf::from("results").join(&run_id)),
        run_id,
        watch: watch.map(|target| (target, args.watch_interval)),
    })
}

/// A ramp step's length and a sustained or rate run's length, unless given.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Users added per ramp step, unless given.
const DEFAULT_STEP_SIZE: u32 = 10;

/// Flags of one shape given to another are mistakes, not something to ignore.
fn check_shape_flags(args: &LoadArgs) -> Result<(), String> {
    const RAMP: &str = "a ramp (--max-users)";
    const OPEN_LOOP: &str = "an open-loop run (--rate)";
    let (ramp, rate) = (args.max_users.is_some(), args.rate.is_some());
    let given = [
        ("--step-size", args.step_size.is_some(), ramp, RAMP),
        ("--start-users", args.start_users.is_some(), ramp, RAMP),
        ("--step-duration", args.step_duration.is_some(), ramp, RAMP),
        (
            "--requests-per-user",
            args.requests_per_user.is_some(),
            ramp,
            RAMP,
        ),
        (
            "--duration",
            args.duration.is_some(),
            !ramp,
            "--users or --rate runs; a ramp step lasts --step-duration",
        ),
        ("--poisson", args.poisson, rate, OPEN_LOOP),
        (
            "--max-concurrency",
            args.max_concurrency.is_some(),
            rate,
            OPEN_LOOP,
        ),
    ];
    match given
        .iter()
        .find(|(_, present, fits, _)| *present && !*fits)
    {
        Some((flag, _, _, shape)) => Err(format!("{flag} is for {shape}")),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> LoadArgs {
        let cli = Cli::try_parse_from([&["gembatch", "load"][..], flags].concat()).unwrap();
        match cli.command {
            Command::Load(args) => *args,
            _ => unreachable!("a load command"),
        }
    }

    #[test]
    fn flags_of_another_shape_are_refused() {
        let cases = [
            (
                &["--users", "2", "--step-size", "3"][..],
                "--step-size is for a ramp",
            ),
            (
                &["--rate", "2", "--step-duration", "5s"],
                "--step-duration is for a ramp",
            ),
            (
                &["--max-users", "4", "--duration", "5s"],
                "--duration is for --users or --rate",
            ),
            (
                &["--users", "4", "--poisson"],
                "--poisson is for an open-loop run",
            ),
            (
                &["--max-users", "4", "--max-concurrency", "3"],
                "--max-concurrency is for an open-loop",
            ),
        ];
        for (flags, expected) in cases {
            let err = config(args(flags)).unwrap_err().to_string();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
        let plan = config(args(&["--max_users", "30", "--step_size", "10"]))
            .unwrap()
            .plan;
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.steps[0].hold, Hold::For(DEFAULT_DURATION));
        assert!(config(args(&["--rate", "5", "--poisson", "--duration", "2s"])).is_ok());
    }
}
