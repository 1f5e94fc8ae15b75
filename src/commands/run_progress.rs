//! `gembatch run`'s terminal display: one bar for all rows (rows/s, output tokens/s, ETA),
//! one line per pod, and the load verification's step lines above them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::common::say;
use crate::dispatch::collector::Observer;
use crate::dispatch::worker::PodLink;
use crate::loadgen::collector::{Live, Observer as LoadObserver};
use crate::loadgen::plan::Step;
use crate::loadgen::slo::Judgement;
use crate::loadgen::step_line::step_line;
use crate::results::batch_record::{BatchRecord, Status};
use crate::results::step::StepRow;

/// How often the pod lines are redrawn.
const POD_REFRESH: Duration = Duration::from_millis(500);
/// Without a terminal (a CronJob's log), how often a progress line is printed.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// The batch's bars.
pub struct RunProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    started: Instant,
    output_tokens: u64,
    failed: u64,
    pod_lines: Option<tokio::task::JoinHandle<()>>,
    last_log: Instant,
}

impl RunProgress {
    /// A display for `rows` rows of which `done` are already committed.
    pub fn new(rows: u64, done: u64) -> RunProgress {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(rows));
        overall.set_style(
            ProgressStyle::with_template(
                "rows [{bar:30}] {pos}/{len} ({percent}%) {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_position(done);
        RunProgress {
            multi,
            overall,
            started: Instant::now(),
            output_tokens: 0,
            failed: 0,
            pod_lines: None,
            last_log: Instant::now(),
        }
    }

    /// Somewhere other displays can print lines without breaking the bars.
    pub fn printer(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Stops redrawing and clears the bars.
    pub fn finish(&mut self) {
        if let Some(task) = self.pod_lines.take() {
            task.abort();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Observer for RunProgress {
    fn started(&mut self, pods: &[Arc<PodLink>]) {
        let style = ProgressStyle::with_template("  {prefix:8} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let lines: Vec<(Arc<PodLink>, ProgressBar)> = pods
            .iter()
            .map(|pod| {
                let line = self.multi.add(ProgressBar::new_spinner());
                line.set_style(style.clone());
                line.set_prefix(pod.name.to_string());
                (pod.clone(), line)
            })
            .collect();
        self.pod_lines = Some(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let elapsed = started.elapsed().as_secs_f64().max(1e-3);
                for (pod, line) in &lines {
                    let stats = &pod.stats;
                    let state = if stats.lost.load(Ordering::Relaxed) {
                        "LOST"
                    } else {
                        "up"
                    };
                    line.set_message(format!(
                        "{state} | in flight {} | done {} | failed {} | retried {} | {:.1} tok/s",
                        stats.in_flight.load(Ordering::Relaxed),
                        stats.finished.load(Ordering::Relaxed),
                        stats.failed.load(Ordering::Relaxed),
                        stats.retried.load(Ordering::Relaxed),
                        stats.output_tokens.load(Ordering::Relaxed) as f64 / elapsed,
                    ));
                }
                tokio::time::sleep(POD_REFRESH).await;
            }
        }));
    }

    fn row_finished(&mut self, record: &BatchRecord) {
        self.overall.inc(1);
        self.output_tokens += u64::from(record.output_tokens.unwrap_or(0));
        self.failed += u64::from(record.status != Status::Ok);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = format!(
            "{:.1} output tok/s | {} failed",
            self.output_tokens as f64 / elapsed,
            self.failed
        );
        if self.multi.is_hidden() {
            if self.last_log.elapsed() >= LOG_PERIOD {
                self.last_log = Instant::now();
                let (done, total) = (self.overall.position(), self.overall.length().unwrap_or(0));
                say::info(format!("rows {done}/{total} | {rate}"));
            }
        } else {
            self.overall.set_message(format!("| {rate}"));
        }
    }

    fn shard_committed(&mut self, _shard: u64, _rows: u64) {}
}

impl Drop for RunProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The load verification's display inside a batch run: its finished steps, one line each.
pub struct LoadLines {
    printer: MultiProgress,
    steps: usize,
}

impl LoadLines {
    /// Lines printed above the batch's bars.
    pub fn new(printer: MultiProgress, steps: usize) -> LoadLines {
        LoadLines { printer, steps }
    }
}

impl LoadObserver for LoadLines {
    fn step_started(&mut self, _step: &Step, _warmup: bool) {}

    fn progress(&mut self, _live: &Live) {}

    fn step_finished(&mut self, row: &StepRow, judgement: &Judgement) {
        let line = format!(
            "load verification {}",
            step_line(row, self.steps, judgement)
        );
        if self.printer.is_hidden() {
            say::info(line);
        } else {
            let _ = self.printer.println(line);
        }
    }
}
