//! Plays the kubelet for the pods of one run on the test control plane: each pending pod
//! gets its own loopback address (127.0.0.2, 127.0.0.3, ...), its container's `gembatch
//! serve` arguments run as a real process bound to it, and once that answers `/ready` the
//! pod is marked Running and Ready with that IP. As a kubelet does, a pod whose process
//! exits is marked Succeeded (exit 0) or Failed, and a deleted pod's process is stopped. Pods
//! are bound to a Node whose kubelet endpoint serves port-forwards (see
//! `kubelet_port_forward`), so a runner outside the cluster reaches them through the API
//! server. What it does goes to stderr, which a failing test shows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::cluster::client_from;
use super::kubelet_port_forward::{self as port_forward, NODE, PodIps};

/// The serve port every pod's container listens on.
const PORT: u16 = 8080;

/// Pod name to its process, so a test can kill a "pod".
pub type Processes = Arc<Mutex<Vec<(String, Child)>>>;

/// A running test kubelet; its processes stop when dropped.
pub struct TestKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Pod name to its process, so a test can kill a "pod".
    pub processes: Processes,
    /// Port-forward sessions the API server opened to this kubelet.
    pub port_forwards: Arc<AtomicUsize>,
}

impl TestKubelet {
    /// Starts serving the pods labelled `gembatch.dev/run-id=RUN_ID` in `namespace`.
    pub fn start(kubeconfig: &Path, namespace: &str, run_id: &str) -> TestKubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let processes = Processes::default();
        let port_forwards = Arc::new(AtomicUsize::new(0));
        let node = Node {
            kubeconfig: kubeconfig.to_path_buf(),
            namespace: namespace.to_string(),
            selector: format!("gembatch.dev/run-id={run_id}"),
            processes: processes.clone(),
            ips: PodIps::default(),
            next_address: 2,
            starting: Vec::new(),
            running: Vec::new(),
        };
        let (stopped, sessions) = (stop.clone(), port_forwards.clone());
        let thread = std::thread::spawn(move || {
            // Two threads: the port-forward relays keep going while one waits on a probe.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(node.run(stopped, sessions));
        });
        TestKubelet {
            stop,
            thread: Some(thread),
            processes,
            port_forwards,
        }
    }

    /// Waits until every serve process this kubelet started has exited, and asserts that
    /// they had by `limit` after `since` (a runner's kill: they exit when its heartbeats
    /// stop).
    pub async fn assert_all_exited_within(&self, since: std::time::Instant, limit: Duration) {
        super::kube_fixtures::until("every serve process exited", || async {
            self.processes
                .lock()
                .unwrap()
                .iter_mut()
                .all(|(_, child)| child.try_wait().is_ok_and(|status| status.is_some()))
        })
        .await;
        let exited = since.elapsed();
        assert!(exited < limit, "pods exited after {exited:?}");
    }
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for (_, child) in self.processes.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `pod` names a ProvisioningRequest to consume (Kueue adds it on admission).
fn consumes_a_request(pod: &Pod) -> bool {
    pod.annotations()
        .contains_key("autoscaling.x-k8s.io/consume-provisioning-request")
}

/// The kubelet's state, owned by its thread.
struct Node {
    kubeconfig: PathBuf,
    namespace: String,
    selector: String,
    processes: Processes,
    /// Pod name to its IP, for the port-forward endpoint.
    ips: PodIps,
    next_address: u8,
    /// Pods started and not yet ready: (name, IP).
    starting: Vec<(String, String)>,
    /// Pods marked Ready whose process has not ended yet.
    running: Vec<String>,
}

impl Node {
    async fn run(mut self, stop: Arc<AtomicBool>, sessions: Arc<AtomicUsize>) {
        let client = client_from(&self.kubeconfig).await;
        let certs = tempfile::tempdir().expect("a directory for the kubelet's certificate");
        super::certs::serving_certificate(certs.path(), "gembatch-test-kubelet");
        port_forward::start(client.clone(), certs.path(), self.ips.clone(), sessions).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(client, &self.namespace);
        while !stop.load(Ordering::Relaxed) {
            match pods
                .list(&ListParams::default().labels(&self.selector))
                .await
            {
                Ok(listed) => {
                    let live: Vec<&Pod> = listed
                        .items
                        .iter()
                        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                        .collect();
                    self.stop_deleted(&live);
                    for pod in live {
                        // As a queued-provisioning node pool: only pods that consume a
                        // ProvisioningRequest get a node.
                        if self.started(pod) || !consumes_a_request(pod) {
                            continue;
                        }
                        // As a kubelet: a container whose Secret is not there yet waits.
                        if let Some(env) = secret_env(&secrets, pod).await {
                            self.start_new(pod, &env);
                        }
                    }
                    self.report_starting(&pods).await;
                    self.report_ended(&pods).await;
                }
                Err(err) => eprintln!("kubelet: cannot list pods: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the processes of pods that are gone or being deleted.
    fn stop_deleted(&mut self, live: &[&Pod]) {
        let names: BTreeSet<String> = live.iter().map(|pod| pod.name_any()).collect();
        let mut processes = self.processes.lock().unwrap();
        processes.retain_mut(|(name, child)| {
            let keep = names.contains(name);
            if !keep {
                eprintln!("kubelet: {name} deleted, stopping its process");
                let _ = child.kill();
                let _ = child.wait();
            }
            keep
        });
        self.starting.retain(|(name, _)| names.contains(name));
    }

    /// Whether `pod`'s process was started.
    fn started(&self, pod: &Pod) -> bool {
        let name = pod.name_any();
        self.processes
            .lock()
            .unwrap()
            .iter()
            .any(|(n, _)| *n == name)
    }

    /// Runs a pod not seen before on the next loopback address, with `env` (its variables
    /// taken from Secrets).
    fn start_new(&mut self, pod: &Pod, from_secrets: &[(String, String)]) {
        let name = pod.name_any();
        let ip = format!("127.0.0.{}", self.next_address);
        self.next_address += 1;
        let container = &pod.spec.as_ref().expect("a pod spec").containers[0];
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|arg| arg.replace("0.0.0.0", &ip))
            .collect();
        // A node without GPUs: the container asks for one (GEMBATCH_DEVICE=cuda), which
        // this CPU build would refuse, so the pod runs on the CPU as a real GPU pod's
        // `serve` runs on its GPU.
        let env = container.env.as_deref().unwrap_or_default();
        assert!(
            env.iter()
                .any(|var| var.name == "GEMBATCH_DEVICE" && var.value.as_deref() == Some("cuda")),
            "a serve pod asks for its GPU"
        );
        let child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
            .args(&args)
            .args(["--threads", "1", "--device", "cpu"])
            .envs(from_secrets.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a pod's gembatch serve");
        eprintln!("kubelet: {name} started at {ip}");
        self.ips.lock().unwrap().insert(name.clone(), ip.clone());
        self.processes.lock().unwrap().push((name.clone(), child));
        self.starting.push((name, ip));
    }

    /// Marks each starting pod Ready once it answers, or Failed if its process ended; a
    /// status the API server did not take is sent again on the next pass.
    async fn report_starting(&mut self, pods: &Api<Pod>) {
        let mut still_starting = Vec::new();
        for (name, ip) in std::mem::take(&mut self.starting) {
            let status = match self.exit_code(&name) {
                Some(code) => ended_status(code),
                None if answers_ready(&ip) => {
                    bind(pods, &name).await;
                    ready_status(&ip)
                }
                None => {
                    still_starting.push((name, ip));
                    continue;
                }
            };
            let running = status["status"]["phase"] == "Running";
            if !set_status(pods, &name, &status).await {
                still_starting.push((name, ip));
            } else if running {
                self.running.push(name);
            }
        }
        self.starting = still_starting;
    }

    /// Marks each running pod whose process ended Succeeded (exit 0) or Failed, as a
    /// kubelet does for a container of `restartPolicy: Never`.
    async fn report_ended(&mut self, pods: &Api<Pod>) {
        let mut still_running = Vec::new();
        for name in std::mem::take(&mut self.running) {
            let Some(code) = self.exit_code(&name) else {
                still_running.push(name);
                continue;
            };
            let status = ended_status(code);
            if !set_status(pods, &name, &status).await {
                still_running.push(name);
            }
        }
        self.running = still_running;
    }

    /// The exit code of `name`'s process if it has ended.
    fn exit_code(&self, name: &str) -> Option<i32> {
        let mut processes = self.processes.lock().unwrap();
        let (_, child) = processes.iter_mut().find(|(n, _)| n == name)?;
        let status = child.try_wait().ok()??;
        Some(status.code().unwrap_or(137))
    }
}

/// The container's variables that come from Secrets, read as the kubelet does; `None`
/// while one of those Secrets does not exist.
async fn secret_env(secrets: &Api<Secret>, pod: &Pod) -> Option<Vec<(String, String)>> {
    let container = &pod.spec.as_ref()?.containers[0];
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let Some(selector) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        else {
            continue;
        };
        let secret = secrets.get(&selector.name).await.ok()?;
        let value = secret.data.as_ref()?.get(&selector.key)?;
        env.push((var.name.clone(), String::from_utf8(value.0.clone()).ok()?));
    }
    Some(env)
}

/// Sets the status of pod `name`; false when the API server did not take it (a pod gone
/// meanwhile needs none).
async fn set_status(pods: &Api<Pod>, name: &str, status: &serde_json::Value) -> bool {
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
    {
        Ok(_) => {
            eprintln!("kubelet: {name} is {}", status["status"]["phase"]);
            true
        }
        Err(kube::Error::Api(err)) if err.code == 404 => true,
        Err(err) => {
            eprintln!("kubelet: {name}: status not taken ({err}), again next pass");
            false
        }
    }
}

/// Binds `name` to the test Node, as the scheduler would (already bound: nothing to do).
async fn bind(pods: &Api<Pod>, name: &str) {
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
    });
    let bound: Result<serde_json::Value, _> = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    if let Err(err) = bound {
        eprintln!("kubelet: {name} not bound: {err}");
    }
}

/// Whether `gembatch serve` at `ip` answers `/ready` with 200.
fn answers_ready(ip: &str) -> bool {
    std::net::TcpStream::connect((ip, PORT)).is_ok()
        && Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://{ip}:{PORT}/ready"))
            .output()
            .is_ok_and(|out| out.stdout == b"200")
}

const NOW: &str = "2026-11-30T10:00:00Z";

fn ready_status(ip: &str) -> serde_json::Value {
    serde_json::json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": NOW}],
    }})
}

/// The status of a pod whose container exited with `exit_code`.
fn ended_status(exit_code: i32) -> serde_json::Value {
    let (phase, reason) = if exit_code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    serde_json::json!({"status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": NOW}],
        "containerStatuses": [{
            "name": "gemma", "image": "gembatch", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": NOW, "finishedAt": NOW}},
        }],
    }})
}
