//! Running `gembatch load` in tests and reading what it wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

use gembatch::common::Outcome;
use gembatch::results::step::StepRow;
use gembatch::results::table::Table;

/// The tests measure time: one at a time, so they do not slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the machine for one timing-sensitive test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `gembatch load --url URL --out DIR --run-id test ARGS...`.
pub fn load(url: &str, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["load", "--url", url, "--out"])
        .arg(out)
        .args(["--run-id", "test"])
        .args(args)
        .env_remove("OPENAI_API_KEY")
        // Never a real cluster: --watch-deployment tests get "no configuration".
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run gembatch load")
}

/// The process's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the process exited 0.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        stderr(output)
    );
}

/// Scheduling delay a measured latency may carry above the programmed one: on a loaded
/// 2-core machine the stub's timer, the client's read and its clock read can each be
/// preempted for a scheduler tick (4 ms at 250 Hz) or two, and a tail statistic (p99, max)
/// catches the worst of them. A figure taken from the wrong instant is off by a whole
/// programmed delay (200 ms or more in these tests), far beyond it.
pub const LOADED_MACHINE_SLACK_S: f64 = 0.020;

/// Asserts `measured` is the `expected` seconds the stub programmed: at most 2 % (or 1 ms)
/// below it, since a delay seen by the client cannot be shorter than the server's sleep (HDR
/// histograms keep 0.1 %), and at most that plus [`LOADED_MACHINE_SLACK_S`] above it.
pub fn assert_close(what: &str, measured: Option<f64>, expected: f64) {
    let measured = measured.unwrap_or_else(|| panic!("{what}: no value"));
    let tolerance = (expected * 0.02).max(0.001);
    let (low, high) = (
        expected - tolerance,
        expected + tolerance + LOADED_MACHINE_SLACK_S,
    );
    assert!(
        (low..=high).contains(&measured),
        "{what}: measured {measured:.6} s, programmed {expected:.6} s (allowed {low:.6} to {high:.6})"
    );
}

/// The outcome of every request in `dir/requests.parquet`, in order.
pub fn outcomes(dir: &Path) -> Vec<String> {
    Table::read(&dir.join("requests.parquet"))
        .unwrap()
        .strs("outcome")
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// Requests of a step that ended in `class`.
pub fn count(row: &StepRow, class: &str) -> u64 {
    let index = Outcome::ALL
        .iter()
        .position(|o| o.as_str() == class)
        .unwrap();
    row.counts[index]
}

/// Asserts every value of a column equals `expected`.
pub fn assert_all<T: PartialEq + std::fmt::Debug>(column: &str, values: Vec<T>, expected: T) {
    assert!(
        values.iter().all(|value| *value == expected),
        "{column}: {values:?}, expected every value to be {expected:?}"
    );
}
