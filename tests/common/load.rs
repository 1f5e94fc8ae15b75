//! Running `gembatch load` in tests and reading what it wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

use gembatch::loadgen::record::Outcome;
use gembatch::loadgen::stats::StepRow;
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

/// Asserts `measured` is within 1 ms or 2 % (whichever is larger) of `expected` seconds.
pub fn assert_close(what: &str, measured: Option<f64>, expected: f64) {
    let measured = measured.unwrap_or_else(|| panic!("{what}: no value"));
    let tolerance = (expected * 0.02).max(0.001);
    assert!(
        (measured - expected).abs() <= tolerance,
        "{what}: measured {measured:.6} s, programmed {expected:.6} s (tolerance {tolerance:.6})"
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
