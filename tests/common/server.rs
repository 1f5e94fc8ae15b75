//! A `gembatch serve` process on a free loopback port, for end-to-end tests over real HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::default_model_path;

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    /// Starts `gembatch serve` on the default model with extra flags and environment.
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let model = default_model_path();
        let mut command = Command::new(env!("CARGO_BIN_EXE_gembatch"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--model"])
            .arg(&model)
            .args(extra)
            .env_remove("GEMBATCH_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn gembatch serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, url }
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends a signal (`TERM`, as Kubernetes does to a pod being stopped, or `INT`, Ctrl-C).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for serve") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of metric `name` in Prometheus text: its first series (a metric with only the
/// `model_name` label has one).
pub fn metric(text: &str, name: &str) -> f64 {
    series(text, name, "")
}

/// The value of the series of metric `name` whose labels hold `label` (`class="overloaded"`).
pub fn series(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels.contains(label).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("metric {name}{{{label}}} missing in\n{text}"))
}
