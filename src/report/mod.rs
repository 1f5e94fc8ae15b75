//! The report of a load run: `results_viewer.html`, one self-contained interactive page
//! (inline SVG charts, no network at view time) rebuilt at any time from the run's Parquet
//! files and `summary.json`, alone or beside a second run.

pub mod batch;
mod data;

use std::path::{Path, PathBuf};

use crate::common::blame::Blame;

pub use data::{RunData, read_run};

/// File name of a run's report.
pub const REPORT_FILE: &str = "results_viewer.html";

const TEMPLATE: &str = include_str!("assets/template.html");
const CSS: &str = include_str!("assets/viewer.css");
const JS: &str = concat!(
    include_str!("assets/charts.js"),
    "\n",
    include_str!("assets/load_view.js")
);

/// A report that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run's files cannot be read.
    #[error("{dir}: {why} (is it a gembatch load results directory?)")]
    Run {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        why: String,
    },
    /// The page cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The page.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Blame for ReportError {
    /// A directory that is not a run.
    fn is_user_error(&self) -> bool {
        matches!(self, ReportError::Run { .. })
    }
}

fn read(dir: &Path) -> Result<RunData, ReportError> {
    read_run(dir).map_err(|why| ReportError::Run {
        dir: dir.to_path_buf(),
        why,
    })
}

/// The page for `runs` (one, or two side by side).
pub fn render(runs: &[RunData]) -> String {
    let title = runs
        .iter()
        .map(|run| run.summary.run_id.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    fill_page(&format!("gembatch load: {title}"), JS, runs)
}

/// A report page: the template filled with `title` (escaped here), the style, the script
/// `js` and `data` as JSON for it.
fn fill_page(title: &str, js: &str, data: &(impl serde::Serialize + ?Sized)) -> String {
    let data = serde_json::to_string(data).expect("report data always serializes");
    // Inside <script>, "</" would end the element early.
    let data = data.replace("</", "<\\/");
    TEMPLATE
        .replace("{{TITLE}}", &escape_html(title))
        .replace("{{CSS}}", CSS)
        .replace("{{JS}}", js)
        .replace("{{DATA}}", &data)
}

/// Writes `dir/results_viewer.html` from the run's files; returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let run = read(dir)?;
    write_page(&dir.join(REPORT_FILE), &[run])
}

/// Writes a page showing `dir` and `other` side by side into `dir`; returns its path.
pub fn write_comparison(dir: &Path, other: &Path) -> Result<PathBuf, ReportError> {
    let runs = [read(dir)?, read(other)?];
    let name = format!("compare_{}.html", file_safe(&runs[1].summary.run_id));
    write_page(&dir.join(name), &runs)
}

fn write_page(path: &Path, runs: &[RunData]) -> Result<PathBuf, ReportError> {
    write_file(path, render(runs))
}

/// Writes `page` to `path`; returns the path.
fn write_file(path: &Path, page: String) -> Result<PathBuf, ReportError> {
    std::fs::write(path, page).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
