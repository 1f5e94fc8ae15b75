//! The project's own Python virtual environment of peers (llama-cpp-python's server, the
//! openai SDK, kubernetes-validate, Prometheus' client and its text parser, pyarrow and
//! DuckDB), made by `.ci/python-venv` (a step of `.ci/setup`).

use std::path::PathBuf;

/// The environment's folder: `$GEMBATCH_VENV`, else `~/.cache/gembatch/venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("GEMBATCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/gembatch/venv")
        })
}

/// A program of the environment (`python`, `kubernetes-validate`), which must be there.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run .ci/setup (or .ci/python-venv), which makes the project's Python environment",
        path.display()
    );
    path
}
