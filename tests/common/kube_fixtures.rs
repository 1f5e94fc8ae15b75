//! What the Kubernetes tests share: runs of the binary against the test control plane,
//! the test's part as the cluster autoscaler (request conditions), jobs for the Kubernetes
//! backend, and the checks that nothing of a run is left.

use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, Output, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PodTemplate, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

use super::cluster::Cluster;

/// A fresh control plane for one test. The Kubernetes tests take turns on the machine (each
/// starts its own etcd, API server and controller manager), and a test's cluster stops
/// before the next test's starts.
pub struct TestCluster {
    cluster: Cluster,
    _turn: MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Waits for this test's turn, then starts the cluster.
    pub fn start() -> TestCluster {
        let turn = super::load::serial();
        TestCluster {
            cluster: Cluster::start(),
            _turn: turn,
        }
    }
}

impl Deref for TestCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

/// `gembatch ARGS` as the cluster's administrator, left running.
pub fn gembatch(cluster: &Cluster, args: &[&str]) -> Child {
    gembatch_as(&cluster.kubeconfig, args)
}

/// Starts `gembatch run JOB --run-id RUN_ID` against the test cluster.
pub fn run_job(cluster: &Cluster, job: &std::path::Path, run_id: &str) -> Child {
    gembatch(cluster, &["run", job.to_str().unwrap(), "--run-id", run_id])
}

/// Starts `gembatch reserve --gpus GPUS --run-id RUN_ID --timeout TIMEOUT EXTRA...`.
pub fn reserve(cluster: &Cluster, gpus: u32, run_id: &str, timeout: &str, extra: &[&str]) -> Child {
    let gpus = gpus.to_string();
    let mut args = vec![
        "reserve",
        "--gpus",
        &gpus,
        "--run-id",
        run_id,
        "--timeout",
        timeout,
    ];
    args.extend_from_slice(extra);
    gembatch(cluster, &args)
}

/// `gembatch release RUN_ID`: asserts it succeeded and that nothing of the run is left;
/// returns its output.
pub async fn release_leaves_nothing(
    cluster: &Cluster,
    client: &kube::Client,
    run_id: &str,
) -> Output {
    let output = gembatch(cluster, &["release", run_id])
        .wait_with_output()
        .unwrap();
    assert!(output.status.success(), "{}", super::run::text(&output));
    assert_nothing_left(client, run_id).await;
    output
}

/// `gembatch ARGS` with the identity of `kubeconfig`, left running.
pub fn gembatch_as(kubeconfig: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gembatch")
}

/// The ProvisioningRequests of namespace `default`.
pub fn requests(client: &kube::Client) -> Api<DynamicObject> {
    requests_in(client, "default")
}

/// The ProvisioningRequests of `namespace`.
pub fn requests_in(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling.x-k8s.io", "v1", "ProvisioningRequest"),
        "provisioningrequests",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Marks the request `name` of namespace `default` provisioned, as the cluster
/// autoscaler does.
pub async fn provision(client: &kube::Client, name: &str) {
    provision_in(client, "default", name).await;
}

/// Marks the request `name` of `namespace` provisioned.
pub async fn provision_in(client: &kube::Client, namespace: &str, name: &str) {
    set_condition_in(
        client,
        namespace,
        name,
        &[("Provisioned", "True", "Provisioned")],
    )
    .await;
}

/// Waits until the run's first shard is committed (the batch is under way).
pub async fn until_a_shard_is_committed(run_dir: &std::path::Path) {
    let ledger = run_dir.join("ledger.jsonl");
    until("a shard is committed", || async {
        std::fs::read_to_string(&ledger).is_ok_and(|text| !text.trim().is_empty())
    })
    .await;
}

/// Waits until the request `name` exists and returns it.
pub async fn wait_for_request(client: &kube::Client, name: &str) -> DynamicObject {
    wait_for_request_in(client, "default", name).await
}

/// Waits until the request `name` exists in `namespace` and returns it.
pub async fn wait_for_request_in(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> DynamicObject {
    let started = Instant::now();
    loop {
        if let Ok(request) = requests_in(client, namespace).get(name).await {
            return request;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no request {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays the autoscaler: sets the conditions of request `name` in `default`.
pub async fn set_condition(client: &kube::Client, name: &str, conditions: &[(&str, &str, &str)]) {
    set_condition_in(client, "default", name, conditions).await;
}

/// Plays the autoscaler: sets the request's conditions, each `(type, status, reason)`.
pub async fn set_condition_in(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    conditions: &[(&str, &str, &str)],
) {
    let now = "2026-11-30T10:00:00Z";
    let list: Vec<serde_json::Value> = conditions
        .iter()
        .enumerate()
        .map(|(i, (kind, status, reason))| {
            serde_json::json!({
                "type": kind, "status": status, "reason": reason,
                "message": format!("test autoscaler says {reason}"),
                "lastTransitionTime": now.replace("00Z", &format!("{:02}Z", i)),
            })
        })
        .collect();
    let patch = serde_json::json!({"status": {"conditions": list}});
    requests_in(client, namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the request's status");
}

/// Everything labelled with `run_id` in `namespace` that is still there (a request or
/// template already being deleted no longer counts; a Job or Service does).
pub async fn leftovers(client: &kube::Client, namespace: &str, run_id: &str) -> Vec<String> {
    let selector = ListParams::default().labels(&format!("gembatch.dev/run-id={run_id}"));
    let mut left = listed(
        requests_in(client, namespace),
        &selector,
        "ProvisioningRequest",
        true,
    )
    .await;
    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), namespace);
    left.extend(listed(templates, &selector, "PodTemplate", true).await);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    left.extend(listed(jobs, &selector, "Job", false).await);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    left.extend(listed(services, &selector, "Service", false).await);
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    left.extend(listed(leases, &selector, "Lease", false).await);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    left.extend(listed(secrets, &selector, "Secret", false).await);
    left
}

/// `KIND/NAME` of each object `api` lists under `selector`, leaving out those being
/// deleted when `skip_deleting`.
async fn listed<K>(
    api: Api<K>,
    selector: &ListParams,
    kind: &str,
    skip_deleting: bool,
) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(selector)
        .await
        .unwrap()
        .into_iter()
        .filter(|object| !skip_deleting || object.meta().deletion_timestamp.is_none())
        .map(|object| format!("{kind}/{}", object.name_any()))
        .collect()
}

pub async fn assert_nothing_left(client: &kube::Client, run_id: &str) {
    assert_nothing_left_in(client, "default", run_id).await;
}

pub async fn assert_nothing_left_in(client: &kube::Client, namespace: &str, run_id: &str) {
    assert_nothing_left_within(client, namespace, run_id, Duration::from_secs(20)).await;
}

/// Asserts that nothing of `run_id` is left in `namespace` within `limit`.
pub async fn assert_nothing_left_within(
    client: &kube::Client,
    namespace: &str,
    run_id: &str,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let left = leftovers(client, namespace, run_id).await;
        if left.is_empty() {
            return;
        }
        assert!(started.elapsed() < limit, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of the cluster's administrator, the ProvisioningRequest CRD installed.
pub async fn ready(cluster: &Cluster) -> kube::Client {
    let client = cluster.client().await;
    cluster.install_provisioning_request_crd(&client).await;
    client
}

/// A job of `rows` rows on `gpus` Kubernetes pods serving the default model, with `extra`
/// fields under `capacity.kubernetes`.
pub fn kubernetes_job(
    space: &super::run::Workspace,
    rows: usize,
    gpus: u32,
    kubernetes: &str,
) -> std::path::PathBuf {
    let model = super::default_model_path();
    let dataset = space.dataset(rows);
    // The runner reaches pod IPs, as in the cluster; one test overrides this.
    let kubernetes = match kubernetes {
        "" => "pod_access: pod_ip".to_string(),
        more => format!("pod_access: pod_ip, {more}"),
    };
    space.job(
        &dataset,
        &format!(
            "model: {{path: {}}}\n\
             capacity: {{backend: kubernetes, gpus: {gpus}, provisioning_timeout: 60s, ready_timeout: 2m, kubernetes: {{{kubernetes}}}}}\n\
             shard_size: 2\nconcurrency_per_pod: 2\ngeneration: {{max_tokens: 4, temperature: 0}}",
            model.display()
        ),
    )
}

/// Rewrites a [`kubernetes_job`] so its runner waits `timeout` for capacity (60 s by
/// default), for a test that needs a runner still waiting after that.
pub fn waiting_for_capacity_up_to(job: &std::path::Path, timeout: &str) {
    let spec = std::fs::read_to_string(job).unwrap();
    let longer = format!("provisioning_timeout: {timeout}");
    std::fs::write(job, spec.replace("provisioning_timeout: 60s", &longer)).unwrap();
}

/// Rewrites a [`kubernetes_job`] so its runner reaches the pods through port-forwards, as
/// from outside the cluster.
pub fn through_port_forwards(job: &std::path::Path) {
    let spec = std::fs::read_to_string(job).unwrap();
    std::fs::write(
        job,
        spec.replace("pod_access: pod_ip", "pod_access: port_forward"),
    )
    .unwrap();
}

/// Runs `job` as `run_id` with the identity of `kubeconfig`, provisions its request in
/// `namespace` as `admin` (the test's cluster autoscaler), and waits for the run to end.
pub async fn run_provisioned(
    kubeconfig: &std::path::Path,
    admin: &kube::Client,
    namespace: &str,
    job: &std::path::Path,
    run_id: &str,
) -> Output {
    let child = gembatch_as(
        kubeconfig,
        &["run", job.to_str().unwrap(), "--run-id", run_id],
    );
    let request = format!("gembatch-{run_id}");
    wait_for_request_in(admin, namespace, &request).await;
    provision_in(admin, namespace, &request).await;
    child.wait_with_output().unwrap()
}

/// Asserts that run `run_id` of `space` did each of its `rows` rows exactly once, all ok;
/// returns the pods that served them. `words` is the run's output, for the message.
pub fn assert_every_row_ok_once(
    space: &super::run::Workspace,
    run_id: &str,
    rows: usize,
    words: &str,
) -> std::collections::BTreeSet<String> {
    let requests = super::run::Requests::read(&space.run_dir(run_id));
    assert_eq!(
        requests.sorted_ids(),
        super::run::expected_ids(rows),
        "every row once"
    );
    assert!(requests.strs("status").iter().all(|s| s == "ok"), "{words}");
    requests.strs("pod").into_iter().collect()
}

/// The tokio runtime every Kubernetes test drives its client on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `check` holds, for at most a minute.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
