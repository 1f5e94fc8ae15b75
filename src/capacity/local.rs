//! The local backend, the embedded default: N `gembatch serve` children on free loopback
//! ports stand in for N GPU pods. They are told to die with the runner (a parent-death
//! signal, so even `kill -9` of the runner leaves no orphan), and are stopped with SIGTERM,
//! then SIGKILL after a grace period, on success, failure, Ctrl-C and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::CapacityError;
use crate::client::probe;
use crate::common::Endpoint;
use crate::common::proc_file::proc_bytes;

/// How to start the local pods.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Pods to start (already capped by [`fit_pods`]).
    pub pods: u32,
    /// CPU threads per pod.
    pub threads_per_pod: usize,
    /// The model file or directory.
    pub model: PathBuf,
    /// The served model name, if the job names one.
    pub served_name: Option<String>,
    /// Sequences each pod batches together.
    pub max_batch: u32,
    /// Longest wait for every pod's `/ready`.
    pub ready_timeout: Duration,
    /// Where each pod's log goes (`pod-N.log`).
    pub log_dir: PathBuf,
}

/// Started pods and their processes.
pub struct LocalPods {
    children: Vec<(Endpoint, Child)>,
}

/// How long one `/ready` probe waits for an answer.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pod gets to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The seconds a pod itself gives in-flight requests on SIGTERM.
const POD_DRAIN_SECONDS: &str = "5";

impl LocalPods {
    /// Starts every pod and waits until each answers `/ready`.
    pub async fn start(
        config: &LocalConfig,
        cancel: &CancellationToken,
    ) -> Result<LocalPods, CapacityError> {
        std::fs::create_dir_all(&config.log_dir).map_err(|err| CapacityError::Local {
            why: format!("cannot create {}: {err}", config.log_dir.display()),
        })?;
        // All at once: each loads its model before it prints its address. Dropping this
        // future (on Ctrl-C) drops the children, which kills them.
        let spawning =
            futures_util::future::join_all((0..config.pods).map(|i| spawn_pod(config, i)));
        let spawned = tokio::select! {
            spawned = spawning => spawned,
            () = cancel.cancelled() => return Err(CapacityError::Interrupted),
        };
        let mut pods = LocalPods {
            children: Vec::new(),
        };
        let mut failure = None;
        for result in spawned {
            match result {
                Ok(child) => pods.children.push(child),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        if let Some(err) = failure {
            pods.stop().await;
            return Err(err);
        }
        let ready = tokio::select! {
            ready = pods.wait_ready(config.ready_timeout) => ready,
            () = cancel.cancelled() => Err(CapacityError::Interrupted),
        };
        if let Err(err) = ready {
            pods.stop().await;
            return Err(err);
        }
        Ok(pods)
    }

    /// The pods, in order.
    pub fn pods(&self) -> Vec<Endpoint> {
        self.children.iter().map(|(pod, _)| pod.clone()).collect()
    }

    /// Process ids, in pod order.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.children.iter().map(|(_, child)| child.id()).collect()
    }

    /// SIGTERM to every pod, then SIGKILL to those still running after the grace period.
    pub async fn stop(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                // SAFETY: signalling a child we spawned and have not yet reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for (pod, child) in &mut self.children {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(pod = %pod.name, "did not stop on SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), CapacityError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (pod, child) in &mut self.children {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(CapacityError::PodFailed {
                        pod: pod.name.clone(),
                        why: format!("exited ({status}) before it was ready"),
                    });
                }
                if probe::url_answers(&pod.url, "/ready", READY_PROBE_TIMEOUT).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CapacityError::PodFailed {
                        pod: pod.name.clone(),
                        why: format!(
                            "not ready within {} s (capacity.ready_timeout)",
                            timeout.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

impl Drop for LocalPods {
    fn drop(&mut self) {
        // A panic or an early return: the children must not outlive the runner.
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// Starts pod `index` and reads the address it listens on from its first output line.
async fn spawn_pod(config: &LocalConfig, index: u32) -> Result<(Endpoint, Child), CapacityError> {
    let name = format!("pod-{index}");
    let fail = |why: String| CapacityError::PodFailed {
        pod: name.clone(),
        why,
    };
    let exe = std::env::current_exe().map_err(|err| fail(err.to_string()))?;
    let log_path = config.log_dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|err| fail(format!("cannot create {}: {err}", log_path.display())))?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--threads", &config.threads_per_pod.to_string()])
        .args(["--max-batch", &config.max_batch.to_string()])
        .args(["--drain-seconds", POD_DRAIN_SECONDS])
        .arg("--model")
        .arg(&config.model)
        .env_remove("GEMBATCH_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if let Some(served) = &config.served_name {
        command.args(["--served-model-name", served]);
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to signal this child when
    // the thread that spawned it (a runtime worker, alive as long as the runner) exits.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| fail(format!("cannot start: {err}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(config.ready_timeout, lines.next_line()).await;
    let url = match first {
        Ok(Ok(Some(line))) => listening_url(&line),
        _ => None,
    };
    let Some(url) = url else {
        let _ = child.kill().await;
        return Err(fail(format!(
            "did not report its address; see {}",
            log_path.display()
        )));
    };
    tokio::spawn(copy_rest(lines, log_path));
    Ok((Endpoint { name, url }, child))
}

/// Keeps reading a pod's stdout into its log, so it never blocks on a full pipe.
async fn copy_rest(
    mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    log: PathBuf,
) {
    let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&log) else {
        return;
    };
    while let Ok(Some(line)) = lines.next_line().await {
        // A line or two in a pod's life: not worth a blocking-pool hop.
        let _ = std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes());
    }
}

/// `http://ADDR` from `gembatch serve`'s `listening on http://ADDR (...)` line.
fn listening_url(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let url = rest.split_whitespace().next()?;
    url.starts_with("http://").then(|| url.to_string())
}

/// The machine's room for pods: at most one per `threads_per_pod` cores, and as many as
/// fit in the available memory at an estimated footprint per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineRoom {
    /// CPU cores.
    pub cores: usize,
    /// Memory available, bytes.
    pub available_memory: u64,
    /// One pod's estimated footprint, bytes.
    pub pod_memory: u64,
}

impl MachineRoom {
    /// This machine, for a model of `model_bytes` on disk.
    pub fn of_this_machine(model_bytes: u64) -> MachineRoom {
        MachineRoom {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            available_memory: available_memory().unwrap_or(u64::MAX),
            // Weights, their unpacked copies and the KV cache, plus the process itself:
            // measured at about 570 MiB for the 250 MiB default model.
            pod_memory: model_bytes * 2 + (256 << 20),
        }
    }
}

/// How many local pods a run gets and their threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSizing {
    /// Pods to start.
    pub pods: u32,
    /// Threads of each.
    pub threads_per_pod: usize,
    /// Why fewer pods than asked for start, when they do.
    pub capped: Option<String>,
}

/// Sizes `wanted` pods of the model at `model` on this machine: `threads_per_pod` each
/// [default: the cores shared out], capped to what its cores and memory hold.
pub fn size_pods(wanted: u32, threads_per_pod: Option<usize>, model: &Path) -> PodSizing {
    let room = MachineRoom::of_this_machine(model_bytes(model));
    let threads = threads_per_pod.unwrap_or_else(|| (room.cores / wanted.max(1) as usize).max(1));
    let (pods, capped) = fit_pods(wanted, threads, room);
    PodSizing {
        pods,
        threads_per_pod: threads,
        capped,
    }
}

/// Caps `requested` pods to what `room` holds; the message says why when it caps.
pub fn fit_pods(
    requested: u32,
    threads_per_pod: usize,
    room: MachineRoom,
) -> (u32, Option<String>) {
    let by_cores = (room.cores / threads_per_pod.max(1)).max(1) as u32;
    let by_memory = (room.available_memory / room.pod_memory.max(1)).max(1) as u32;
    let fit = requested.min(by_cores).min(by_memory);
    if fit == requested {
        return (fit, None);
    }
    let why = if by_cores <= by_memory {
        format!(
            "{} cores at {threads_per_pod} thread(s) per pod",
            room.cores
        )
    } else {
        format!(
            "{:.1} GiB available at about {:.1} GiB per pod",
            room.available_memory as f64 / f64::from(1u32 << 30),
            room.pod_memory as f64 / f64::from(1u32 << 30)
        )
    };
    (
        fit,
        Some(format!(
            "capacity.gpus is {requested} but this machine holds {fit} local pod(s) ({why}); running {fit}"
        )),
    )
}

/// `MemAvailable` from `/proc/meminfo`.
fn available_memory() -> Option<u64> {
    proc_bytes(Path::new("/proc/meminfo"), "MemAvailable")
}

/// The size of a model file, or of a model directory's files.
pub fn model_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| entry.metadata().ok())
                    .map(|meta| meta.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map_or(0, |meta| meta.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_a_pod_prints() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:41234 (model `m`, replica r)"),
            Some("http://127.0.0.1:41234".into())
        );
        assert_eq!(listening_url("loading model"), None);
    }

    #[test]
    fn pods_are_capped_by_cores_and_memory_with_a_reason() {
        let room = MachineRoom {
            cores: 2,
            available_memory: 8 << 30,
            pod_memory: 1 << 30,
        };
        assert_eq!(fit_pods(2, 1, room), (2, None));
        let (fit, why) = fit_pods(4, 1, room);
        assert_eq!(fit, 2);
        assert!(why.unwrap().contains("2 cores at 1 thread(s) per pod"));
        let tight = MachineRoom {
            available_memory: 3 << 30,
            cores: 16,
            ..room
        };
        let (fit, why) = fit_pods(10, 1, tight);
        assert_eq!(fit, 3);
        assert!(why.unwrap().contains("3.0 GiB available"));
        assert_eq!(fit_pods(3, 4, room).0, 1, "never below one pod");
    }
}
