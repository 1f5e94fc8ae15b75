//! The sustained-rate verdicts and search of `benches/serve_under_traffic.py`, checked by
//! `tests/bench_verdicts.py` on runs whose outcome is known (the bench needs pyarrow, so
//! it runs with the project's Python environment).

mod common;

use std::path::Path;
use std::process::Command;

use common::python::venv_bin;

#[test]
fn the_bench_judges_known_runs_as_they_are() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench_verdicts.py");
    let out = Command::new(venv_bin("python"))
        .arg(&script)
        .output()
        .expect("run tests/bench_verdicts.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Ran 8 tests"), "{stderr}");
}
