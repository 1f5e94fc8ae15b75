//! The end of `gembatch run`: the outputs and report of a finished run, written from its
//! committed shards (also for a `--resume` of a run that is already complete), the load
//! verification's verdict, or how to resume an unfinished run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

use crate::cli::RunArgs;
use crate::common::say;
use crate::common::units::format_seconds;
use crate::dispatch::ledger::Ledger;
use crate::dispatch::outputs::write_outputs;
use crate::dispatch::{DispatchError, Dispatched};
use crate::job::JobSpec;
use crate::loadgen::{self, LoadOutcome};
use crate::report::batch::BatchReport;
use crate::results::batch::RunTotals;

/// A resumed run whose every shard is committed: its outputs are written again from the
/// shards (a crash may have come between the last commit and them), with nothing reserved,
/// no pod started and no load check.
pub(super) fn rebuild_finished(
    job: &JobSpec,
    args: &RunArgs,
    run_id: &str,
    dir: &Path,
    ledger: Ledger,
) -> anyhow::Result<()> {
    let shards = ledger.entries().count() as u64;
    say::info(format!(
        "every shard of {run_id} ({shards}) is committed: writing its outputs again; nothing is reserved"
    ));
    let model = ledger
        .model()
        .map(str::to_string)
        .or_else(|| job.model.name.clone())
        .unwrap_or_else(|| "unknown".to_string());
    let ended = Ended {
        batch: Ok(Dispatched { shards, model }),
        load: None,
        load_dir: None,
    };
    finish(job, args, run_id, dir, &Arc::new(Mutex::new(ledger)), ended)
}

/// How the batch and its load verification ended.
pub(super) struct Ended {
    /// The batch's end: every shard committed, or why not.
    pub batch: Result<Dispatched, DispatchError>,
    /// The load verification's end, when the job has one.
    pub load: Option<Result<LoadOutcome, loadgen::LoadError>>,
    /// Where the load verification wrote its files.
    pub load_dir: Option<PathBuf>,
}

/// Writes the outputs of a finished run or says how to resume an unfinished one.
pub(super) fn finish(
    job: &JobSpec,
    args: &RunArgs,
    run_id: &str,
    dir: &Path,
    ledger: &Arc<Mutex<Ledger>>,
    ended: Ended,
) -> anyhow::Result<()> {
    let Ended {
        batch,
        load,
        load_dir,
    } = ended;
    let mut report = BatchReport::default();
    let shown = shown_dir(
        dir,
        &ledger.lock().expect("the ledger lock is not poisoned"),
    );
    let load_violations = match load {
        Some(Ok(outcome)) => {
            if let Some(load_dir) = &load_dir {
                let page = crate::report::write_report(load_dir)?;
                let page_shown = shown_path(dir, &shown, &page);
                say::info(format!("load verification: report {page_shown}"));
                if let Ok(relative) = page.strip_prefix(dir) {
                    report.link_load_report(relative.display().to_string());
                }
            }
            for unjudged in outcome.unjudged() {
                say::notice(format!("load verification: {unjudged}"));
            }
            outcome.violations().to_vec()
        }
        Some(Err(err)) => {
            say::warning(format!("load verification failed: {err}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let dispatched = match batch {
        Ok(dispatched) => dispatched,
        Err(err @ (DispatchError::Interrupted | DispatchError::AllPodsLost)) => {
            let ledger = ledger.lock().expect("the ledger lock is not poisoned");
            bail!(
                "{err}: {} rows in {} shards are committed in {}; finish with `gembatch run {} --resume {run_id}`",
                ledger.committed_rows(),
                ledger.entries().count(),
                shown,
                args.job.display()
            );
        }
        Err(err) => return Err(err.into()),
    };
    let ledger = ledger.lock().expect("the ledger lock is not poisoned");
    let totals = write_outputs(dir, &ledger, run_id, &dispatched.model, |record| {
        report.add(record)
    })
    .with_context(|| format!("cannot write the outputs in {}", dir.display()))?;
    let page = report.write(dir, run_id, &job.name, &dispatched.model, &totals)?;
    if let Some(remote) = ledger.remote() {
        let files = remote
            .publish_outputs(dir)
            .with_context(|| format!("cannot upload the outputs to {}", remote.url()))?;
        say::info(format!("uploaded {files} output files to {}", remote.url()));
    }
    print_totals(&totals, &shown, &shown_path(dir, &shown, &page));
    if !load_violations.is_empty() {
        let lines: Vec<String> = load_violations.iter().map(ToString::to_string).collect();
        bail!("load verification SLO failed:\n  {}", lines.join("\n  "));
    }
    Ok(())
}

/// Where the run's files are, as the user reaches them: its bucket folder when it is kept
/// in one (the local directory is a working copy, gone when the run ends), else its
/// directory.
fn shown_dir(dir: &Path, ledger: &Ledger) -> String {
    ledger.remote().map_or_else(
        || dir.display().to_string(),
        |remote| remote.url().to_string(),
    )
}

/// `path`, a file of the run directory `dir`, where the user reaches it (under `shown`).
fn shown_path(dir: &Path, shown: &str, path: &Path) -> String {
    path.strip_prefix(dir).map_or_else(
        |_| path.display().to_string(),
        |relative| format!("{shown}/{}", relative.display()),
    )
}

fn print_totals(totals: &RunTotals, dir: &str, page: &str) {
    let run = &totals.run;
    println!(
        "{} rows: {} ok, {} failed, {} invalid; {:.2} rows/s, {:.1} output tok/s over {:.1} s",
        run.rows,
        run.ok,
        run.errors - totals.invalid,
        totals.invalid,
        run.requests_per_s,
        run.output_tokens_per_s,
        run.duration_s
    );
    for pod in &totals.pods {
        println!(
            "  {}: {} rows, {:.2} rows/s, {:.1} tok/s, e2e p50 {}",
            pod.key,
            pod.rows,
            pod.requests_per_s,
            pod.output_tokens_per_s,
            format_seconds(pod.e2e[0])
        );
    }
    println!("results in {dir}, report {page}");
}
