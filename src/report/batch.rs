//! The report of a batch run: `report.html`, the same page machinery as the load report,
//! showing throughput over time (overall and per pod), per-pod figures, the latency
//! distribution and the errors. Fed row by row while the run's outputs are written, so it
//! costs one pass and a few numbers per row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::data::{Timeline, TimelinePoint, cumulative, timeline};
use super::{ReportError, fill_page, write_file};
use crate::results::batch::RunTotals;
use crate::results::batch::SummaryRow;
use crate::results::batch_record::{BatchRecord, Status};

/// File name of a batch run's report.
pub const BATCH_REPORT_FILE: &str = "report.html";

const JS: &str = concat!(
    include_str!("assets/charts.js"),
    "\n",
    include_str!("assets/batch_view.js")
);

/// Failed rows shown by id on the page.
const ERROR_SAMPLES: usize = 20;

/// Gathers what the page shows, one row at a time, in 16 bytes per sent row.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// The first row's send time: the origin of `points`' times.
    origin: Option<f64>,
    points: Vec<CompactPoint>,
    ttft: Vec<f32>,
    pods: Vec<String>,
    errors: BTreeMap<String, u64>,
    samples: Vec<ErrorSample>,
    load_report: Option<String>,
}

/// A sent row as the timeline needs it; times are seconds from `origin`, as `f32`
/// (milliseconds exact over a day).
#[derive(Debug, Clone, Copy)]
struct CompactPoint {
    start: f32,
    end: f32,
    output_tokens: u32,
    pod: u16,
    ok: bool,
}

/// One failed row, as the page lists it.
#[derive(Debug, Clone, Serialize)]
struct ErrorSample {
    id: String,
    line: u64,
    code: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct PageData<'a> {
    kind: &'static str,
    run_id: &'a str,
    job: &'a str,
    model: &'a str,
    started_at_unix_s: f64,
    invalid: u64,
    run: &'a SummaryRow,
    pods: &'a [SummaryRow],
    timeline: Timeline,
    pod_tokens_per_s: BTreeMap<&'a str, Vec<f64>>,
    distributions: BTreeMap<&'static str, Vec<[f64; 2]>>,
    errors: &'a BTreeMap<String, u64>,
    error_samples: &'a [ErrorSample],
    load_report: Option<&'a str>,
}

impl BatchReport {
    /// Links the page to the load verification's report at `relative` (from the run
    /// directory).
    pub fn link_load_report(&mut self, relative: String) {
        self.load_report = Some(relative);
    }

    /// Takes one row's result.
    pub fn add(&mut self, record: &BatchRecord) {
        if record.status != Status::Ok {
            let code = record.error_code.clone().unwrap_or_else(|| "error".into());
            *self.errors.entry(code.clone()).or_insert(0) += 1;
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(ErrorSample {
                    id: record.id.clone(),
                    line: record.line,
                    code,
                    message: record.error.clone().unwrap_or_default(),
                });
            }
        }
        let Some(started) = record.times.started else {
            return;
        };
        let pod = record.pod.as_deref().unwrap_or("(none)");
        let index = match self.pods.iter().position(|name| name == pod) {
            Some(index) => index,
            None => {
                self.pods.push(pod.to_string());
                self.pods.len() - 1
            }
        };
        let origin = *self.origin.get_or_insert(started);
        self.points.push(CompactPoint {
            start: (started - origin) as f32,
            end: (record.times.finished - origin) as f32,
            output_tokens: record.output_tokens.unwrap_or(0),
            pod: index as u16,
            ok: record.status == Status::Ok,
        });
        if record.status == Status::Ok {
            self.ttft.extend(record.ttft_s().map(|s| s as f32));
        }
    }

    /// Writes `dir/report.html`; returns its path.
    pub fn write(
        self,
        dir: &Path,
        run_id: &str,
        job: &str,
        model: &str,
        totals: &RunTotals,
    ) -> Result<PathBuf, ReportError> {
        let data = self.page_data(run_id, job, model, totals);
        let page = fill_page(&format!("gembatch run: {run_id}"), JS, &data);
        write_file(&dir.join(BATCH_REPORT_FILE), page)
    }

    /// What the page shows, as its script reads it.
    fn page_data<'a>(
        &'a self,
        run_id: &'a str,
        job: &'a str,
        model: &'a str,
        totals: &'a RunTotals,
    ) -> PageData<'a> {
        // Shards finish out of order: the earliest send is the page's time zero.
        let earliest = self
            .points
            .iter()
            .map(|p| p.start)
            .reduce(f32::min)
            .unwrap_or(0.0);
        let start = self.origin.unwrap_or(0.0) + f64::from(earliest);
        let view = |p: &CompactPoint| TimelinePoint {
            start_s: f64::from(p.start - earliest),
            end_s: f64::from(p.end - earliest),
            ok: p.ok,
            output_tokens: p.output_tokens,
            warmup: false,
        };
        let run_timeline = timeline(&self.points, view);
        let mut pod_tokens: BTreeMap<&str, Vec<f64>> = self
            .pods
            .iter()
            .map(|name| (name.as_str(), vec![0.0; run_timeline.t.len()]))
            .collect();
        let bucket = run_timeline.bucket_s.max(1e-9);
        for compact in &self.points {
            let point = view(compact);
            if let Some(series) = pod_tokens.get_mut(self.pods[usize::from(compact.pod)].as_str())
                && !series.is_empty()
            {
                let index = ((point.end_s / bucket) as usize).min(series.len() - 1);
                series[index] += f64::from(point.output_tokens) / bucket;
            }
        }
        let mut distributions = BTreeMap::new();
        distributions.insert(
            "ttft",
            cumulative(self.ttft.iter().map(|&s| f64::from(s)).collect()),
        );
        distributions.insert(
            "e2e",
            cumulative(
                self.points
                    .iter()
                    .filter(|p| p.ok)
                    .map(|p| f64::from(p.end - p.start))
                    .collect(),
            ),
        );
        PageData {
            kind: "batch",
            run_id,
            job,
            model,
            started_at_unix_s: start,
            invalid: totals.invalid,
            run: &totals.run,
            pods: &totals.pods,
            timeline: run_timeline,
            pod_tokens_per_s: pod_tokens,
            distributions,
            errors: &self.errors,
            error_samples: &self.samples,
            load_report: self.load_report.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(scope: &'static str, key: &str, rows: u64, ok: u64) -> SummaryRow {
        SummaryRow {
            scope,
            key: key.into(),
            rows,
            ok,
            errors: rows - ok,
            retries: 1,
            output_tokens: 8 * ok,
            duration_s: 2.0,
            requests_per_s: ok as f64 / 2.0,
            output_tokens_per_s: 4.0 * ok as f64,
            ttft: [Some(0.25), Some(0.25), Some(0.25)],
            e2e: [Some(1.0), Some(1.0), Some(1.0)],
        }
    }

    #[test]
    fn a_runs_page_data_is_as_reviewed() {
        let mut report = BatchReport::default();
        for (index, pod) in ["pod-0", "pod-1", "pod-0"].into_iter().enumerate() {
            let mut record = BatchRecord::fixture(&format!("row-{index}"), 0, pod);
            record.line = index as u64 + 1;
            record.times.started = Some(100.0 + index as f64);
            record.times.first_token = Some(100.25 + index as f64);
            record.times.finished = 101.0 + index as f64;
            report.add(&record);
        }
        let mut failed = BatchRecord::fixture("row-3", 1, "pod-1");
        failed.line = 4;
        failed.status = Status::Failed;
        failed.error_code = Some("http_5xx".into());
        failed.error = Some("HTTP 500: overloaded".into());
        report.add(&failed);
        report.link_load_report("load/results_viewer.html".into());
        let totals = RunTotals {
            run: summary("run", "all", 4, 3),
            pods: vec![summary("pod", "pod-0", 2, 2), summary("pod", "pod-1", 2, 1)],
            invalid: 0,
        };
        let data = report.page_data("demo-1", "demo", "gemma", &totals);
        insta::assert_json_snapshot!(data);
    }
}
