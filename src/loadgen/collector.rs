//! The one owner of a run's results: takes every record from the driver, streams it to
//! `requests.parquet`, folds it into the step's statistics, checks the SLO gates when a
//! step ends and keeps the observer (the terminal's progress display) informed.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::driver::Event;
use super::plan::Step;
use super::slo::{Judgement, Slo, Unjudged, Violation};
use super::stats::StepStats;
use crate::results::request::RequestRecord;
use crate::results::step::{Latency, Stat, StepRow};
use crate::results::table::TableWriter;

/// How often the observer hears how the step is going.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// Live figures of the running step.
#[derive(Debug, Clone)]
pub struct Live {
    /// The step.
    pub step: Step,
    /// Whether it is the warm-up.
    pub warmup: bool,
    /// Time since it began.
    pub elapsed: Duration,
    /// Requests ended so far.
    pub requests: u64,
    /// Failed requests so far.
    pub errors: u64,
    /// Requests/s so far.
    pub rps: f64,
    /// Median end-to-end latency so far, seconds.
    pub p50_e2e: Option<f64>,
}

/// Who watches a run (the command's progress display; tests).
pub trait Observer: Send {
    /// A step began.
    fn step_started(&mut self, step: &Step, warmup: bool);
    /// Every [`PROGRESS_PERIOD`] while a step runs.
    fn progress(&mut self, live: &Live);
    /// A measured step ended, with what the gates made of it.
    fn step_finished(&mut self, row: &StepRow, judgement: &Judgement);
}

/// What a run collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// One row per measured step that ran.
    pub steps: Vec<StepRow>,
    /// Every failed gate, step by step.
    pub violations: Vec<Violation>,
    /// The steps the gates did not judge (not run, or too few requests).
    pub unjudged: Vec<Unjudged>,
    /// Records written, warm-up included.
    pub requests: u64,
}

struct Running {
    step: Step,
    warmup: bool,
    stats: StepStats,
    began: Instant,
}

/// Collects until the driver drops its sender, then finishes the Parquet file.
pub async fn collect(
    mut events: mpsc::Receiver<Event>,
    mut writer: TableWriter<RequestRecord>,
    slo: &Slo,
    observer: &mut dyn Observer,
) -> Result<Collected, parquet::errors::ParquetError> {
    let mut collected = Collected::default();
    let mut running: Option<Running> = None;
    let mut ticks = tokio::time::interval(PROGRESS_PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = ticks.tick() => {
                if let Some(running) = &running {
                    observer.progress(&live(running));
                }
                continue;
            }
        };
        match event {
            Event::StepStarted { step, warmup } => {
                observer.step_started(&step, warmup);
                running = Some(Running {
                    step,
                    warmup,
                    stats: StepStats::new(step),
                    began: Instant::now(),
                });
            }
            Event::Records(records) => {
                for record in records {
                    if let Some(running) = running
                        .as_mut()
                        .filter(|r| r.step.index == record.step && r.warmup == record.warmup)
                    {
                        running.stats.add(&record);
                    }
                    collected.requests += 1;
                    writer.push(record)?;
                }
            }
            Event::StepFinished {
                warmup,
                began,
                ended,
                health,
                ..
            } => {
                let Some(done) = running.take() else { continue };
                if warmup {
                    continue;
                }
                let row = done.stats.finish(began, ended, health);
                let judgement = slo.judge(&row);
                observer.step_finished(&row, &judgement);
                match judgement {
                    Judgement::Judged(violations) => collected.violations.extend(violations),
                    Judgement::Unjudged(unjudged) => collected.unjudged.push(unjudged),
                }
                collected.steps.push(row);
            }
        }
    }
    writer.finish()?;
    Ok(collected)
}

fn live(running: &Running) -> Live {
    let elapsed = running.began.elapsed();
    let requests = running.stats.requests();
    Live {
        step: running.step,
        warmup: running.warmup,
        elapsed,
        requests,
        errors: running.stats.errors(),
        rps: requests as f64 / elapsed.as_secs_f64().max(1e-3),
        p50_e2e: running.stats.latency(Latency::E2e, Stat::P50),
    }
}
