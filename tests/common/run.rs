//! Running `gembatch run` in tests: job files and datasets in a temporary directory, the
//! binary as a child process, and what it wrote read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use gembatch::results::table::Table;

/// A temporary place for one test's job, dataset and results.
pub struct Workspace {
    /// The temporary directory (removed when dropped).
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Where run directories go.
    pub fn results(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// The run directory of `run_id`.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.results().join(run_id)
    }

    /// Writes `rows` prompt rows with ids `r0000`.. and returns the dataset's path.
    pub fn dataset(&self, rows: usize) -> PathBuf {
        let text: String = (0..rows)
            .map(|i| format!("{{\"id\": \"r{i:04}\", \"prompt\": \"prompt number {i}\"}}\n"))
            .collect();
        self.file("data.jsonl", &text)
    }

    /// Writes `text` to `name` in the workspace.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    /// Writes a job over `dataset` with `extra` YAML lines and returns its path.
    pub fn job(&self, dataset: &Path, extra: &str) -> PathBuf {
        let text = format!(
            "name: test\ndataset:\n  path: {}\noutput: {}\n{extra}\n",
            dataset.display(),
            self.results().display()
        );
        self.file("job.yaml", &text)
    }
}

/// `gembatch run JOB ARGS...`, waited for.
pub fn run(job: &Path, args: &[&str]) -> Output {
    command(job, args).output().expect("run gembatch run")
}

/// `gembatch run JOB ARGS...`, started and left running.
pub fn spawn(job: &Path, args: &[&str]) -> Child {
    command(job, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gembatch run")
}

/// The `gembatch run JOB ARGS...` command, for a test that adds to it (its environment).
pub fn command(job: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gembatch"));
    command
        .arg("run")
        .arg(job)
        .args(args)
        .env_remove("OPENAI_API_KEY")
        // Never the developer's cluster.
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    command
}

/// The process's stderr and stdout as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    )
}

/// Asserts the process exited 0.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        text(output)
    );
}

/// A `requests.parquet` read back.
pub struct Requests {
    /// The table.
    pub table: Table,
}

impl Requests {
    /// Reads `run_dir/requests.parquet`.
    pub fn read(run_dir: &Path) -> Requests {
        Requests {
            table: Table::read(&run_dir.join("requests.parquet")).expect("requests.parquet"),
        }
    }

    /// A text column, nulls as empty.
    pub fn strs(&self, column: &str) -> Vec<String> {
        self.table
            .strs(column)
            .expect("text column")
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// An integer column as `u32`s, nulls as 0.
    pub fn u32s(&self, column: &str) -> Vec<u32> {
        self.table
            .u32s(column)
            .expect("integer column")
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// The ids, sorted.
    pub fn sorted_ids(&self) -> Vec<String> {
        let mut ids = self.strs("id");
        ids.sort();
        ids
    }
}

/// The ids `r0000`.. of a dataset of `rows` rows.
pub fn expected_ids(rows: usize) -> Vec<String> {
    (0..rows).map(|i| format!("r{i:04}")).collect()
}

/// Lines of a JSON Lines file, parsed.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
