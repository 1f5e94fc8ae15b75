//! The Kubernetes backend against a real control plane (kube-apiserver v1.20.2 with etcd and
//! the controller manager, built by `.ci/control-plane-build.sh`): the test plays the
//! cluster autoscaler by patching the ProvisioningRequest's conditions, and checks that
//! nothing gembatch created outlives a release, a failure or an interruption.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::run::text;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodTemplate, Service};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

fn gembatch(cluster: &Cluster, args: &[&str]) -> Child {
    gembatch_as(&cluster.kubeconfig, args)
}

/// `gembatch ARGS` with the identity of `kubeconfig`, left running.
/// Starts `gembatch run JOB --run-id RUN_ID` against the test cluster.
fn run_job(cluster: &Cluster, job: &std::path::Path, run_id: &str) -> Child {
    gembatch(cluster, &["run", job.to_str().unwrap(), "--run-id", run_id])
}

fn gembatch_as(kubeconfig: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gembatch")
}

fn requests(client: &kube::Client) -> Api<DynamicObject> {
    requests_in(client, "default")
}

fn requests_in(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling.x-k8s.io", "v1", "ProvisioningRequest"),
        "provisioningrequests",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Marks the request `name` provisioned, as the cluster autoscaler does.
async fn provision(client: &kube::Client, name: &str) {
    set_condition(client, name, &[("Provisioned", "True", "Provisioned")]).await;
}

/// Waits until the run's first shard is committed (the batch is under way).
async fn until_a_shard_is_committed(run_dir: &std::path::Path) {
    let ledger = run_dir.join("ledger.jsonl");
    until("a shard is committed", || async {
        std::fs::read_to_string(&ledger).is_ok_and(|text| !text.trim().is_empty())
    })
    .await;
}

/// Waits until the request `name` exists and returns it.
async fn wait_for_request(client: &kube::Client, name: &str) -> DynamicObject {
    wait_for_request_in(client, "default", name).await
}

/// Waits until the request `name` exists in `namespace` and returns it.
async fn wait_for_request_in(client: &kube::Client, namespace: &str, name: &str) -> DynamicObject {
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
async fn set_condition(client: &kube::Client, name: &str, conditions: &[(&str, &str, &str)]) {
    set_condition_in(client, "default", name, conditions).await;
}

/// Plays the autoscaler: sets the request's conditions, each `(type, status, reason)`.
async fn set_condition_in(
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

/// Everything labelled with `run_id` in `namespace` that is still there.
async fn leftovers(client: &kube::Client, namespace: &str, run_id: &str) -> Vec<String> {
    let selector = ListParams::default().labels(&format!("gembatch.dev/run-id={run_id}"));
    let mut left: Vec<String> = requests_in(client, namespace)
        .list(&selector)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .map(|r| format!("ProvisioningRequest/{}", r.name_any()))
        .collect();
    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), namespace);
    left.extend(
        templates
            .list(&selector)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.metadata.deletion_timestamp.is_none())
            .map(|t| format!("PodTemplate/{}", t.name_any())),
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    left.extend(
        jobs.list(&selector)
            .await
            .unwrap()
            .into_iter()
            .map(|j| format!("Job/{}", j.name_any())),
    );
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    left.extend(
        services
            .list(&selector)
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("Service/{}", s.name_any())),
    );
    left
}

async fn assert_nothing_left(client: &kube::Client, run_id: &str) {
    assert_nothing_left_in(client, "default", run_id).await;
}

async fn assert_nothing_left_in(client: &kube::Client, namespace: &str, run_id: &str) {
    let started = Instant::now();
    loop {
        let left = leftovers(client, namespace, run_id).await;
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of the cluster's administrator, the ProvisioningRequest CRD installed.
async fn ready(cluster: &Cluster) -> kube::Client {
    let client = cluster.client().await;
    cluster.install_provisioning_request_crd(&client).await;
    client
}

/// A job of `rows` rows on `gpus` Kubernetes pods serving the default model, with `extra`
/// fields under `capacity.kubernetes`.
fn kubernetes_job(
    space: &common::run::Workspace,
    rows: usize,
    gpus: u32,
    kubernetes: &str,
) -> std::path::PathBuf {
    let model = common::default_model_path();
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

/// Rewrites a [`kubernetes_job`] so its runner reaches the pods through port-forwards, as
/// from outside the cluster.
fn through_port_forwards(job: &std::path::Path) {
    let spec = std::fs::read_to_string(job).unwrap();
    std::fs::write(
        job,
        spec.replace("pod_access: pod_ip", "pod_access: port_forward"),
    )
    .unwrap();
}

/// Runs `job` in namespace `gembatch` with the identity of `runner` (a kubeconfig),
/// provisions its request as `admin`, and waits for the run to end.
async fn run_provisioned_in_gembatch(
    admin: &kube::Client,
    runner: &std::path::Path,
    job: &std::path::Path,
    run_id: &str,
) -> std::process::Output {
    let child = gembatch_as(runner, &["run", job.to_str().unwrap(), "--run-id", run_id]);
    let request = format!("gembatch-{run_id}");
    wait_for_request_in(admin, "gembatch", &request).await;
    set_condition_in(
        admin,
        "gembatch",
        &request,
        &[("Provisioned", "True", "Provisioned")],
    )
    .await;
    child.wait_with_output().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn reserve_waits_for_provisioned_then_release_leaves_nothing() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "3",
                "--run-id",
                "r1",
                "--timeout",
                "60s",
            ],
        );
        let request = wait_for_request(&client, "gembatch-r1").await;
        assert_eq!(request.data["spec"]["podSets"][0]["count"], 3);
        assert_eq!(
            request.data["spec"]["provisioningClassName"],
            "queued-provisioning.gke.io"
        );
        assert_eq!(
            request.data["spec"]["parameters"]["maxRunDurationSeconds"],
            "28800"
        );
        let templates: Api<PodTemplate> = Api::namespaced(client.clone(), "default");
        let started = Instant::now();
        loop {
            let template = templates
                .get("gembatch-r1-pod")
                .await
                .expect("the PodTemplate exists first");
            let owners = template.metadata.owner_references.unwrap_or_default();
            if owners
                .iter()
                .any(|o| Some(&o.uid) == request.metadata.uid.as_ref())
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the template is not owned by the request"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        set_condition(
            &client,
            "gembatch-r1",
            &[("Accepted", "True", "SuccessfullyQueued")],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_condition(
            &client,
            "gembatch-r1",
            &[
                ("Accepted", "True", "SuccessfullyQueued"),
                ("Provisioned", "False", "ResourcePoolExhausted"),
            ],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_condition(
            &client,
            "gembatch-r1",
            &[
                ("Accepted", "True", "SuccessfullyQueued"),
                ("Provisioned", "True", "Provisioned"),
            ],
        )
        .await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("provisioned: ProvisioningRequest default/gembatch-r1"),
            "{words}"
        );
        assert!(
            words.contains("Provisioned=False ResourcePoolExhausted"),
            "{words}"
        );
        assert!(
            words.contains("Accepted=True SuccessfullyQueued"),
            "{words}"
        );
        assert!(
            !leftovers(&client, "default", "r1").await.is_empty(),
            "a reservation stays until released"
        );

        let release = gembatch(&cluster, &["release", "r1"])
            .wait_with_output()
            .unwrap();
        assert!(release.status.success(), "{}", text(&release));
        assert!(
            text(&release).contains("ProvisioningRequest/default/gembatch-r1"),
            "{}",
            text(&release)
        );
        assert_nothing_left(&client, "r1").await;
    });
}

#[test]
fn a_watch_broken_by_the_api_server_resumes_and_a_cleanup_it_refuses_is_named() {
    let _serial = common::load::serial();
    let mut cluster = Cluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "1",
                "--run-id",
                "watch",
                "--timeout",
                "120s",
            ],
        );
        wait_for_request(&client, "gembatch-watch").await;
        set_condition(
            &client,
            "gembatch-watch",
            &[("Accepted", "True", "SuccessfullyQueued")],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Every connection to the API server breaks, the runner's watch with them.
        cluster.restart_api_server();
        provision(&client, "gembatch-watch").await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("watch on the ProvisioningRequest broke"),
            "{words}"
        );
        assert!(
            words.contains("provisioned: ProvisioningRequest default/gembatch-watch"),
            "{words}"
        );
        let release = gembatch(&cluster, &["release", "watch"])
            .wait_with_output()
            .unwrap();
        assert!(release.status.success(), "{}", text(&release));
        assert_nothing_left(&client, "watch").await;

        // The API server gone when the wait times out: the timeout is what is reported,
        // the run says the cleanup could not run, and `release` later leaves nothing.
        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "1",
                "--run-id",
                "down",
                "--timeout",
                "4s",
            ],
        );
        wait_for_request(&client, "gembatch-down").await;
        cluster.stop_api_server();
        let output = child.wait_with_output().unwrap();
        cluster.start_api_server();
        let words = text(&output);
        assert_eq!(output.status.code(), Some(1), "{words}");
        assert!(words.contains("not provisioned within 4 s"), "{words}");
        assert!(
            words.contains("could not delete everything of the run")
                && words.contains("`gembatch release down --namespace default`"),
            "{words}"
        );
        let release = gembatch(&cluster, &["release", "down"])
            .wait_with_output()
            .unwrap();
        assert!(release.status.success(), "{}", text(&release));
        assert_nothing_left(&client, "down").await;
    });
}

#[test]
fn a_failed_request_is_replaced_and_the_template_survives() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "2",
                "--run-id",
                "r2",
                "--timeout",
                "60s",
                "--failed-attempts",
                "2",
                "--retry-backoff",
                "200ms",
            ],
        );
        wait_for_request(&client, "gembatch-r2").await;
        set_condition(
            &client,
            "gembatch-r2",
            &[("Failed", "True", "QuotaExceeded")],
        )
        .await;
        let retry = wait_for_request(&client, "gembatch-r2-retry1").await;
        // The failed request is deleted only once the new one owns the template.
        let templates: Api<PodTemplate> = Api::namespaced(client.clone(), "default");
        let started = Instant::now();
        while requests(&client)
            .get("gembatch-r2")
            .await
            .is_ok_and(|r| r.metadata.deletion_timestamp.is_none())
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the failed request stays"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let template = templates
            .get("gembatch-r2-pod")
            .await
            .expect("the template survives its first owner");
        assert_eq!(
            template.metadata.owner_references.unwrap()[0].uid,
            retry.metadata.uid.unwrap()
        );
        provision(&client, "gembatch-r2-retry1").await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(words.contains("request failed (QuotaExceeded"), "{words}");

        // A second failure, with no attempt left, gives up and leaves nothing.
        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "2",
                "--run-id",
                "r3",
                "--timeout",
                "60s",
                "--failed-attempts",
                "1",
            ],
        );
        wait_for_request(&client, "gembatch-r3").await;
        set_condition(
            &client,
            "gembatch-r3",
            &[("Failed", "True", "QuotaExceeded")],
        )
        .await;
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains("failed 1 time(s)"),
            "{}",
            text(&output)
        );
        assert_nothing_left(&client, "r3").await;
    });
}

#[test]
fn a_timeout_or_an_interruption_leaves_nothing_behind() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let output = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "1",
                "--run-id",
                "slow",
                "--timeout",
                "2s",
            ],
        )
        .wait_with_output()
        .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains("not provisioned within 2 s"),
            "{}",
            text(&output)
        );
        assert_nothing_left(&client, "slow").await;

        let child = gembatch(
            &cluster,
            &[
                "reserve",
                "--gpus",
                "1",
                "--run-id",
                "term",
                "--timeout",
                "60s",
            ],
        );
        wait_for_request(&client, "gembatch-term").await;
        // SAFETY: signalling the child this test started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(text(&output).contains("interrupted"), "{}", text(&output));
        assert_nothing_left(&client, "term").await;

        // Provisioned, but no node ever runs the pods: the run says what it saw.
        let space = common::run::Workspace::new();
        let job = kubernetes_job(&space, 2, 2, "");
        let spec = std::fs::read_to_string(&job).unwrap();
        std::fs::write(&job, spec.replace("ready_timeout: 2m", "ready_timeout: 5s")).unwrap();
        let child = run_job(&cluster, &job, "unready");
        wait_for_request(&client, "gembatch-unready").await;
        provision(&client, "gembatch-unready").await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert_eq!(output.status.code(), Some(1), "{words}");
        assert!(
            words.contains(
                "0 of 2 serve pods ready after 5 s (capacity.ready_timeout); the Job has 2 \
                 pod(s), 0 scheduled: see `kubectl describe job gembatch-unready`"
            ),
            "{words}"
        );
        assert_nothing_left(&client, "unready").await;
    });
}

#[test]
fn a_batch_runs_on_the_pods_of_a_provisioned_reservation_and_nothing_is_left() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 12, 2, "");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "k8s");
        let child = run_job(&cluster, &job, "k8s");
        wait_for_request(&client, "gembatch-k8s").await;
        provision(&client, "gembatch-k8s").await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        let requests = common::run::Requests::read(&space.run_dir("k8s"));
        assert_eq!(requests.sorted_ids(), common::run::expected_ids(12));
        assert!(requests.strs("status").iter().all(|s| s == "ok"), "{words}");
        let pods: std::collections::BTreeSet<String> = requests.strs("pod").into_iter().collect();
        assert!(
            pods.iter().all(|p| p.starts_with("gembatch-k8s-")),
            "{pods:?}"
        );
        assert!(words.contains("released: deleted"), "{words}");
        assert_nothing_left(&client, "k8s").await;
    });
}

#[test]
fn a_runner_outside_the_cluster_reaches_the_pods_through_port_forwards() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 12, 2, "");
    through_port_forwards(&job);
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "pf");
        let child = run_job(&cluster, &job, "pf");
        wait_for_request(&client, "gembatch-pf").await;
        provision(&client, "gembatch-pf").await;
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("reaching the 2 serve pod(s) through API-server port-forwards"),
            "{words}"
        );
        let requests = common::run::Requests::read(&space.run_dir("pf"));
        assert_eq!(requests.sorted_ids(), common::run::expected_ids(12));
        assert!(requests.strs("status").iter().all(|s| s == "ok"), "{words}");
        let pods: std::collections::BTreeSet<String> = requests.strs("pod").into_iter().collect();
        assert_eq!(pods.len(), 2, "rows on both pods: {pods:?}");
        // One probe per pod, then at least one relayed connection per pod.
        let sessions = kubelet
            .port_forwards
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(sessions >= 4, "{sessions} port-forward sessions");
        assert_nothing_left(&client, "pf").await;
    });
}

#[test]
fn run_dry_run_prints_every_object_and_touches_nothing() {
    let space = common::run::Workspace::new();
    let dataset = space.dataset(1);
    let job = space.job(&dataset, "capacity: {backend: kubernetes, gpus: 4}");
    let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["run", job.to_str().unwrap(), "--dry-run", "--run-id", "dry"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let yaml = String::from_utf8(output.stdout).unwrap();
    let kinds: Vec<&str> = yaml
        .lines()
        .filter_map(|line| line.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        ["PodTemplate", "ProvisioningRequest", "Service", "Job"]
    );
    assert!(yaml.contains("count: 4"));
    assert!(yaml.contains("autoscaling.x-k8s.io/consume-provisioning-request: gembatch-dry"));
    assert!(
        yaml.contains(
            "cluster-autoscaler.kubernetes.io/consume-provisioning-request: gembatch-dry"
        )
    );
}

#[test]
fn the_runner_works_under_exactly_the_manifests_role() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 4, 1, "namespace: gembatch");
    runtime().block_on(async {
        let admin = ready(&cluster).await;
        let runner = cluster.runner_kubeconfig(&admin).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "gembatch", "rbac");
        let output = run_provisioned_in_gembatch(&admin, &runner, &job, "rbac").await;
        let words = text(&output);
        assert!(output.status.success(), "under the runner's Role: {words}");
        assert!(!words.contains("forbidden"), "{words}");
        assert!(words.contains("released: deleted"), "{words}");

        // The Role is for the runner in the cluster: from outside, port-forwarding is
        // refused, the run says what to grant, and leaves nothing behind.
        let outside = kubernetes_job(&space, 4, 1, "namespace: gembatch");
        through_port_forwards(&outside);
        let _kubelet =
            common::kubelet::TestKubelet::start(&cluster.kubeconfig, "gembatch", "rbac-pf");
        let output = run_provisioned_in_gembatch(&admin, &runner, &outside, "rbac-pf").await;
        let words = text(&output);
        assert_eq!(output.status.code(), Some(2), "{words}");
        assert!(
            words.contains("cannot port-forward to serve pod gembatch-rbac-pf-"),
            "{words}"
        );
        assert!(
            words.contains("`get` and `create` on `pods/portforward`"),
            "{words}"
        );
        assert_nothing_left_in(&admin, "gembatch", "rbac-pf").await;

        // Anything the Role does not grant is refused: the check above is not vacuous.
        let limited = common::cluster::client_from(&runner).await;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(limited, "gembatch");
        assert!(
            secrets.list(&ListParams::default()).await.is_err(),
            "the runner cannot read secrets"
        );
    });
}

/// A Deployment of `replicas` and an autoscaler on it whose status says it wants `desired`
/// (the test plays the HPA controller, as it plays the cluster autoscaler above).
async fn deployment_with_autoscaler(
    client: &kube::Client,
    name: &str,
    replicas: i32,
    desired: i32,
) {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "serve", "image": "gembatch:test"}]}
            }
        }
    }))
    .unwrap();
    let params = kube::api::PostParams::default();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&params, &deployment)
        .await
        .unwrap();
    let autoscaler: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80
        }
    }))
    .unwrap();
    let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "default");
    autoscalers.create(&params, &autoscaler).await.unwrap();
    let status =
        serde_json::json!({"status": {"currentReplicas": replicas, "desiredReplicas": desired}});
    autoscalers
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[test]
fn load_records_the_watched_deployment_and_its_autoscaler_over_the_run() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let stub = common::stub::Stub::start(|_| common::stub::Behaviour::Stream {
        ttft: Duration::from_millis(5),
        gap: Duration::from_millis(1),
        tokens: 4,
        usage: true,
    });
    let out = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let client = cluster.client().await;
        deployment_with_autoscaler(&client, "gemma-serve", 1, 3).await;
        let child = gembatch(
            &cluster,
            &[
                "load",
                "--url",
                &stub.url,
                "--users",
                "2",
                "--duration",
                "4s",
                "--watch-deployment",
                "default/gemma-serve",
                "--watch-interval",
                "200ms",
                "--out",
                &out.path().display().to_string(),
            ],
        );
        // The autoscaler's wish carried out halfway through the run.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let scale = serde_json::json!({"spec": {"replicas": 3}});
        Api::<Deployment>::namespaced(client.clone(), "default")
            .patch(
                "gemma-serve",
                &PatchParams::default(),
                &Patch::Merge(&scale),
            )
            .await
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
    });
    let samples = gembatch::results::replicas::read_replicas(out.path())
        .unwrap()
        .expect("replicas.parquet written");
    assert!(
        samples.len() >= 10,
        "{} samples in a 4 s run every 200 ms",
        samples.len()
    );
    let spec: Vec<Option<u32>> = samples.iter().map(|s| s.spec_replicas).collect();
    assert_eq!(spec.first(), Some(&Some(1)), "{spec:?}");
    assert_eq!(spec.last(), Some(&Some(3)), "{spec:?}");
    let scaled_at = samples
        .iter()
        .find(|s| s.spec_replicas == Some(3))
        .unwrap()
        .t_s;
    assert!((1.0..4.5).contains(&scaled_at), "scaled at {scaled_at} s");
    assert!(
        samples.iter().all(|s| s.hpa_desired == Some(3)),
        "{samples:?}"
    );
    let page = std::fs::read_to_string(out.path().join("results_viewer.html")).unwrap();
    assert!(
        page.contains("\"deployment\":{\"t\":["),
        "the report carries the samples"
    );
}

#[test]
fn load_refuses_a_deployment_that_does_not_exist_before_sending_anything() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let stub = common::stub::Stub::start(|_| common::stub::Behaviour::Status(500));
    let out = tempfile::tempdir().unwrap();
    let output = gembatch(
        &cluster,
        &[
            "load",
            "--url",
            &stub.url,
            "--users",
            "1",
            "--duration",
            "2s",
            "--watch-deployment",
            "default/absent",
            "--out",
            &out.path().display().to_string(),
        ],
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--watch-deployment default/absent: no Deployment absent in namespace default"
        ),
        "{stderr}"
    );
    assert_eq!(stub.served(), 0, "no completion before the watch is set up");
}

/// Starts `gembatch run JOB --run-id RUN_ID`, waits for `stage`, kills the runner with
/// SIGKILL (no cleanup of its own), and checks that it left objects behind and that
/// `gembatch release RUN_ID` then removes every one.
async fn kill_at_stage_then_release<F: std::future::Future<Output = ()>>(
    cluster: &Cluster,
    client: &kube::Client,
    job: &std::path::Path,
    run_id: &str,
    stage: impl FnOnce() -> F,
) {
    let mut child = run_job(cluster, job, run_id);
    stage().await;
    child.kill().unwrap();
    child.wait().unwrap();
    let left = leftovers(client, "default", run_id).await;
    assert!(
        !left.is_empty(),
        "{run_id}: the killed runner left nothing to release"
    );
    let output = gembatch(cluster, &["release", run_id])
        .wait_with_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_nothing_left(client, run_id).await;
}

/// Waits until `check` holds, for at most a minute.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_runner_killed_at_any_stage_leaves_what_release_removes() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 400, 2, "");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

        // Waiting for capacity: the template and the request exist.
        kill_at_stage_then_release(&cluster, &client, &job, "kill-wait", || async {
            wait_for_request(&client, "gembatch-kill-wait").await;
        })
        .await;

        // Provisioned, serve pods being created (no kubelet: they never start).
        kill_at_stage_then_release(&cluster, &client, &job, "kill-pods", || async {
            wait_for_request(&client, "gembatch-kill-pods").await;
            provision(&client, "gembatch-kill-pods").await;
            until("the serve Job exists", || async {
                jobs.get("gembatch-kill-pods").await.is_ok()
            })
            .await;
        })
        .await;

        // Pods serving, the batch under way: a shard is committed.
        let _kubelet =
            common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "kill-batch");
        let run_dir = space.run_dir("kill-batch");
        kill_at_stage_then_release(&cluster, &client, &job, "kill-batch", || async {
            wait_for_request(&client, "gembatch-kill-batch").await;
            provision(&client, "gembatch-kill-batch").await;
            until_a_shard_is_committed(&run_dir).await;
        })
        .await;
    });
}

#[test]
fn a_booking_that_expires_before_the_pods_are_scheduled_starts_over_and_the_run_finishes() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 6, 2, "");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
        let child = run_job(&cluster, &job, "expiry");
        wait_for_request(&client, "gembatch-expiry").await;
        provision(&client, "gembatch-expiry").await;
        until("the first serve Job exists", || async {
            jobs.get("gembatch-expiry").await.is_ok()
        })
        .await;
        // No kubelet yet: the pods stay unscheduled until the booking ends.
        set_condition(
            &client,
            "gembatch-expiry",
            &[
                ("Provisioned", "True", "Provisioned"),
                ("BookingExpired", "True", "BookingExpired"),
            ],
        )
        .await;
        // The next booking's objects are named apart: a Job deleted and created again
        // under one name may get no pods for minutes (kubernetes/kubernetes#131917).
        wait_for_request(&client, "gembatch-expiry-b2").await;
        provision(&client, "gembatch-expiry-b2").await;
        let _kubelet =
            common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "expiry");
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("expired before every pod was scheduled"),
            "{words}"
        );
        assert!(words.contains("reserving again (2 of 3)"), "{words}");
        let requests = common::run::Requests::read(&space.run_dir("expiry"));
        assert_eq!(requests.sorted_ids(), common::run::expected_ids(6));
        let pods = requests.strs("pod");
        assert!(
            pods.iter()
                .all(|pod| pod.starts_with("gembatch-expiry-b2-")),
            "every row on the second booking's pods: {pods:?}"
        );
        assert_nothing_left(&client, "expiry").await;
    });
}

#[test]
fn capacity_revoked_mid_run_sends_the_lost_pods_rows_to_the_others() {
    let _serial = common::load::serial();
    let cluster = Cluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 300, 2, "");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let kubelet =
            common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "revoked");
        let child = run_job(&cluster, &job, "revoked");
        wait_for_request(&client, "gembatch-revoked").await;
        provision(&client, "gembatch-revoked").await;
        let run_dir = space.run_dir("revoked");
        until_a_shard_is_committed(&run_dir).await;
        // The autoscaler takes a node back: the request says so and one pod dies with it.
        set_condition(
            &client,
            "gembatch-revoked",
            &[
                ("Provisioned", "True", "Provisioned"),
                ("CapacityRevoked", "True", "CapacityRevoked"),
            ],
        )
        .await;
        let lost = {
            let mut processes = kubelet.processes.lock().unwrap();
            let (name, process) = processes.first_mut().expect("a serve pod runs");
            process.kill().unwrap();
            name.clone()
        };
        let output = child.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        let requests = common::run::Requests::read(&space.run_dir("revoked"));
        assert_eq!(
            requests.sorted_ids(),
            common::run::expected_ids(300),
            "every row once"
        );
        assert!(requests.strs("status").iter().all(|s| s == "ok"), "{words}");
        let pods: std::collections::BTreeSet<String> = requests.strs("pod").into_iter().collect();
        assert!(
            pods.len() == 2 && pods.contains(&lost),
            "rows on both pods before the loss: {pods:?}"
        );
        assert_nothing_left(&client, "revoked").await;
    });
}
