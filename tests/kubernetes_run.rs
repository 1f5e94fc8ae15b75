//! `gembatch run` on the Kubernetes backend against a real control plane (see
//! `kubernetes.rs`): batches through pod IPs and through port-forwards, `--dry-run`, a
//! runner killed at each stage, a run abandoned outside a cluster and swept, an expired
//! booking, capacity revoked mid-run. The test plays
//! the cluster autoscaler and, with `common::kubelet`, the kubelet.

mod common;

use std::process::Command;

use common::cluster::Cluster;
use common::kube_fixtures::*;
use common::run::text;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams};

#[test]
fn a_batch_runs_on_the_pods_of_a_provisioned_reservation_and_nothing_is_left() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 12, 2, "");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "k8s");
        let output = run_provisioned(&cluster.kubeconfig, &client, "default", &job, "k8s").await;
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        let pods = assert_every_row_ok_once(&space, "k8s", 12, &words);
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
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 12, 2, "");
    through_port_forwards(&job);
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "pf");
        let output = run_provisioned(&cluster.kubeconfig, &client, "default", &job, "pf").await;
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("reaching the 2 serve pod(s) through API-server port-forwards"),
            "{words}"
        );
        let pods = assert_every_row_ok_once(&space, "pf", 12, &words);
        assert_eq!(pods.len(), 2, "rows on both pods: {pods:?}");
        // One probe per pod, then at least one relayed connection per pod.
        let sessions = kubelet
            .port_forwards
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(sessions >= 4, "{sessions} port-forward sessions");
        assert_nothing_left(&client, "pf").await;
    });
}

/// `gembatch run --dry-run` of a one-row job with `capacity` and no cluster: its YAML and
/// the kinds of its objects, in order.
fn dry_run(capacity: &str) -> (String, Vec<String>) {
    let space = common::run::Workspace::new();
    let dataset = space.dataset(1);
    let job = space.job(&dataset, capacity);
    let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["run", job.to_str().unwrap(), "--dry-run", "--run-id", "dry"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let yaml = String::from_utf8(output.stdout).unwrap();
    let kinds = yaml
        .lines()
        .filter_map(|line| line.strip_prefix("kind: "))
        .map(str::to_string)
        .collect();
    (yaml, kinds)
}

#[test]
fn run_dry_run_prints_every_object_and_touches_nothing() {
    let (yaml, kinds) = dry_run("capacity: {backend: kubernetes, gpus: 4}");
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
fn run_dry_run_through_kueue_prints_a_suspended_job_in_its_queue_and_no_request() {
    let (yaml, kinds) = dry_run(
        "capacity: {backend: kubernetes, gpus: 4, kubernetes: {queue: dws-queue, max_run_duration: 2h}}",
    );
    assert_eq!(kinds, ["Service", "Job"], "{yaml}");
    for expected in [
        "kueue.x-k8s.io/queue-name: dws-queue",
        "provreq.kueue.x-k8s.io/maxRunDurationSeconds: \"7200\"",
        "suspend: true",
        "parallelism: 4",
    ] {
        assert!(yaml.contains(expected), "{expected} in {yaml}");
    }
    assert!(!yaml.contains("consume-provisioning-request"), "{yaml}");
}

#[test]
fn a_batch_through_a_kueue_local_queue_runs_once_admitted_and_leaves_nothing() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 12, 2, "queue: dws-queue, max_run_duration: 3h");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        // No Kueue in the cluster, then no such queue: refused before anything is created,
        // naming what is missing.
        let refused = |run_id: &'static str, naming: &'static str| {
            let (cluster, client, job) = (&cluster, &client, &job);
            async move {
                let output = run_job(cluster, job, run_id).wait_with_output().unwrap();
                let words = text(&output);
                assert_eq!(output.status.code(), Some(2), "{words}");
                assert!(words.contains(naming), "{words}");
                assert_nothing_left(client, run_id).await;
            }
        };
        refused("kueue-none", "serves no Kueue API (kueue.x-k8s.io)").await;
        cluster.install_kueue_crd(&client).await;
        refused(
            "kueue-missing",
            "LocalQueue \"dws-queue\" does not exist in namespace \"default\"",
        )
        .await;

        common::kueue::create_local_queue(&client, "default", "dws-queue").await;
        let kueue = common::kueue::TestKueue::start(&cluster.kubeconfig, "default");
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "kueue");
        let output = run_job(&cluster, &job, "kueue").wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words
                .contains("submitted Job gembatch-kueue, suspended, to Kueue LocalQueue dws-queue"),
            "{words}"
        );
        assert_every_row_ok_once(&space, "kueue", 12, &words);
        let admitted = kueue.admitted.lock().unwrap().clone();
        let [admission] = &admitted[..] else {
            panic!("one Job admitted: {admitted:?}");
        };
        assert_eq!(admission.job, "gembatch-kueue");
        assert_eq!(admission.queue, "dws-queue");
        assert_eq!(admission.max_run_seconds.as_deref(), Some("10800"));
        assert_eq!(admission.count, 2);
        // gembatch made no request of its own; Kueue's went with the Job.
        assert_nothing_left(&client, "kueue").await;
        let requests = requests(&client);
        until("Kueue's request is collected with the Job", || async {
            requests
                .get_opt(&admission.request)
                .await
                .unwrap()
                .is_none()
        })
        .await;
    });
}

/// A stand-in for the CronJob's runner Job that a killed runner belonged to: its pod never
/// starts (the runner runs as a local process, and no kubelet takes that pod). The test
/// deletes it, as Kubernetes does once the real one's retries are spent and its
/// `ttlSecondsAfterFinished` passed. (It once failed by an `activeDeadlineSeconds` of its
/// own; under CI's load the Job controller let that deadline pass by over a minute.)
async fn runner_job(client: &kube::Client, run_id: &str) -> Job {
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("runner-{run_id}")},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "runner", "image": "gembatch:cpu"}]
            }}
        }
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(&Default::default(), &job).await.unwrap()
}

/// Starts `gembatch run JOB --run-id RUN_ID` as a runner of a Job ([`runner_job`]), waits
/// for `stage` and kills the runner with SIGKILL (no cleanup of its own); it must have left
/// objects behind.
async fn kill_at_stage<F: std::future::Future<Output = ()>>(
    cluster: &Cluster,
    client: &kube::Client,
    job: &std::path::Path,
    run_id: &str,
    stage: impl FnOnce() -> F,
) {
    let anchor = runner_job(client, run_id).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args(["run", job.to_str().unwrap(), "--run-id", run_id])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("GEMBATCH_RUNNER_JOB", anchor.metadata.name.unwrap())
        .env("GEMBATCH_RUNNER_JOB_UID", anchor.metadata.uid.unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    stage().await;
    child.kill().unwrap();
    child.wait().unwrap();
    let left = leftovers(client, "default", run_id).await;
    assert!(!left.is_empty(), "{run_id}: the killed runner left nothing");
}

#[test]
fn a_runner_killed_at_any_stage_leaves_nothing_once_its_job_is_gone() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 400, 2, "runner_timeout: 3s, finished_ttl: 1s");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

        // Waiting for capacity: the Lease, the template and the request exist, no serve Job.
        kill_at_stage(&cluster, &client, &job, "kill-wait", || async {
            wait_for_request(&client, "gembatch-kill-wait").await;
        })
        .await;

        // Provisioned, serve pods being created (no kubelet: they never start).
        kill_at_stage(&cluster, &client, &job, "kill-pods", || async {
            wait_for_request(&client, "gembatch-kill-pods").await;
            provision(&client, "gembatch-kill-pods").await;
            until("the serve Job exists", || async {
                jobs.get("gembatch-kill-pods").await.is_ok()
            })
            .await;
        })
        .await;

        // Pods serving, the batch under way: a shard is committed.
        let kubelet =
            common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "kill-batch");
        let run_dir = space.run_dir("kill-batch");
        kill_at_stage(&cluster, &client, &job, "kill-batch", || async {
            wait_for_request(&client, "gembatch-kill-batch").await;
            provision(&client, "gembatch-kill-batch").await;
            until_a_shard_is_committed(&run_dir).await;
        })
        .await;

        // The serving pods stop hearing their runner (3 s) and exit at once, giving their
        // GPUs back; every object goes once the runner's Job is gone.
        kubelet
            .assert_all_exited_within(
                std::time::Instant::now(),
                std::time::Duration::from_secs(20),
            )
            .await;
        for run_id in ["kill-wait", "kill-pods", "kill-batch"] {
            jobs.delete(&format!("runner-{run_id}"), &DeleteParams::background())
                .await
                .unwrap();
        }
        let deleted = std::time::Instant::now();
        let bound = std::time::Duration::from_secs(60);
        for run_id in ["kill-wait", "kill-pods", "kill-batch"] {
            assert_nothing_left_within(
                &client,
                "default",
                run_id,
                bound.saturating_sub(deleted.elapsed()),
            )
            .await;
        }
    });
}

#[test]
fn a_booking_that_expires_before_the_pods_are_scheduled_starts_over_and_the_run_finishes() {
    let cluster = TestCluster::start();
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
    capacity_revoked_mid_run(false);
}

#[test]
fn a_pod_lost_behind_a_port_forward_sends_its_rows_to_the_others() {
    capacity_revoked_mid_run(true);
}

/// A batch of 300 rows on two pods; once a shard is committed the request says
/// `CapacityRevoked` and one pod's process dies: every row must still be done once, on the
/// pods reached by IP or, with `port_forwarded`, through the API server's port-forward.
fn capacity_revoked_mid_run(port_forwarded: bool) {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 300, 2, "");
    if port_forwarded {
        through_port_forwards(&job);
    }
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
        let pods = assert_every_row_ok_once(&space, "revoked", 300, &words);
        assert!(
            pods.len() == 2 && pods.contains(&lost),
            "rows on both pods before the loss: {pods:?}"
        );
        if port_forwarded {
            let sessions = kubelet
                .port_forwards
                .load(std::sync::atomic::Ordering::SeqCst);
            assert!(sessions >= 4, "{sessions} port-forward sessions: {words}");
        }
        assert_nothing_left(&client, "revoked").await;
    });
}

#[test]
fn a_retried_runner_removes_what_the_killed_one_left_and_finishes_the_run() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 200, 2, "");
    let args = ["run", job.to_str().unwrap(), "--start-or-resume", "retry"];
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "retry");
        let mut first = gembatch(&cluster, &args);
        let killed = wait_for_request(&client, "gembatch-retry").await;
        provision(&client, "gembatch-retry").await;
        until_a_shard_is_committed(&space.run_dir("retry")).await;
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(!leftovers(&client, "default", "retry").await.is_empty());

        // The same command again, as Kubernetes retries a failed runner Job.
        let retry = gembatch(&cluster, &args);
        let mut request = wait_for_request(&client, "gembatch-retry").await;
        while request.metadata.uid == killed.metadata.uid {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            request = wait_for_request(&client, "gembatch-retry").await;
        }
        provision(&client, "gembatch-retry").await;
        let output = retry.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(words.contains("resuming"), "{words}");
        assert!(
            words.contains("removed what the earlier attempt left: Job/default/gembatch-retry"),
            "{words}"
        );
        assert_every_row_ok_once(&space, "retry", 200, &words);
        assert_nothing_left(&client, "retry").await;
    });
}

#[test]
fn a_runner_killed_mid_batch_leaves_nothing_once_its_pods_stop_hearing_it() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 400, 2, "runner_timeout: 3s, finished_ttl: 1s");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "orphan");
        let mut runner = run_job(&cluster, &job, "orphan");
        wait_for_request(&client, "gembatch-orphan").await;
        provision(&client, "gembatch-orphan").await;
        until_a_shard_is_committed(&space.run_dir("orphan")).await;
        // The pods take work only with the run's own key (from their Secret).
        let pods_file = std::fs::read_to_string(space.run_dir("orphan").join("pods.json")).unwrap();
        let pods: serde_json::Value = serde_json::from_str(&pods_file).unwrap();
        let url = pods[0]["url"].as_str().unwrap();
        let denied = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("{url}/v1/models"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&denied.stdout), "401");
        runner.kill().unwrap();
        runner.wait().unwrap();
        let killed = std::time::Instant::now();
        assert!(!leftovers(&client, "default", "orphan").await.is_empty());

        // Nothing but time: the pods stop hearing the runner (3 s) and exit, the Job
        // completes, its TTL (1 s) deletes it and the collector what it owns.
        kubelet
            .assert_all_exited_within(killed, std::time::Duration::from_secs(20))
            .await;
        assert_nothing_left_within(
            &client,
            "default",
            "orphan",
            std::time::Duration::from_secs(60),
        )
        .await;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
        until("the serve pods are deleted", || async {
            pods.list(&kube::api::ListParams::default().labels("gembatch.dev/run-id=orphan"))
                .await
                .is_ok_and(|list| list.items.is_empty())
        })
        .await;
    });
}

#[test]
fn a_second_runner_elsewhere_on_a_held_run_is_refused_by_its_lease() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 8, 1, "");
    // The first runner must still be waiting for capacity when the second gives up (70 s).
    waiting_for_capacity_up_to(&job, "5m");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "default", "dual");
        let first = run_job(&cluster, &job, "dual");
        let request = wait_for_request(&client, "gembatch-dual").await;
        // Another machine: its own results directory, so only the Lease stands between.
        let elsewhere = space.dir.path().join("elsewhere");
        let second = gembatch(
            &cluster,
            &[
                "run",
                job.to_str().unwrap(),
                "--run-id",
                "dual",
                "--out",
                elsewhere.to_str().unwrap(),
            ],
        )
        .wait_with_output()
        .unwrap();
        let words = text(&second);
        assert_eq!(second.status.code(), Some(2), "{words}");
        assert!(words.contains("waiting for its Lease to expire"), "{words}");
        assert!(
            words.contains("run dual is held by another gembatch runner ("),
            "{words}"
        );
        assert!(
            words.contains(&format!("(pid {} on ", first.id())),
            "{words}"
        );
        // The refused runner touched nothing of the first's.
        let still = wait_for_request(&client, "gembatch-dual").await;
        assert_eq!(still.metadata.uid, request.metadata.uid);

        provision(&client, "gembatch-dual").await;
        let output = first.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert_every_row_ok_once(&space, "dual", 8, &words);
        assert_nothing_left(&client, "dual").await;
    });
}

#[test]
fn a_run_abandoned_outside_a_cluster_is_swept_by_the_next_runner_and_by_release() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 8, 1, "");
    // The live runner must still be waiting for capacity after two sweeps (70 s each).
    waiting_for_capacity_up_to(&job, "10m");
    runtime().block_on(async {
        let client = ready(&cluster).await;
        // A runner outside the cluster (no runner Job to anchor its objects) killed while
        // it waits for capacity: its request stays queued, nobody's.
        let mut abandoned = run_job(&cluster, &job, "abandoned");
        wait_for_request(&client, "gembatch-abandoned").await;
        abandoned.kill().unwrap();
        abandoned.wait().unwrap();
        assert!(!leftovers(&client, "default", "abandoned").await.is_empty());

        // The next runner in the namespace sweeps it once its Lease went unrenewed for 70 s.
        let live = run_job(&cluster, &job, "live");
        let request = wait_for_request(&client, "gembatch-live").await;
        let swept = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        // Meanwhile `release --abandoned` watches both runs: it leaves the live one alone.
        let watched = gembatch(
            &cluster,
            &["release", "--abandoned", "--namespace", "default"],
        );
        assert_nothing_left_within(
            &client,
            "default",
            "abandoned",
            std::time::Duration::from_secs(100),
        )
        .await;
        assert!(
            swept.elapsed() >= std::time::Duration::from_secs(60),
            "swept after {:?}, before its Lease could expire",
            swept.elapsed()
        );
        let output = watched.wait_with_output().unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(!words.contains("gembatch-live"), "{words}");
        let still = wait_for_request(&client, "gembatch-live").await;
        assert_eq!(still.metadata.uid, request.metadata.uid);
        assert!(
            leftovers(&client, "default", "live")
                .await
                .iter()
                .any(|left| left.starts_with("Lease")),
            "the live run's Lease was taken"
        );

        // Killed in turn, the live runner said what it swept, and `release --abandoned`
        // now deletes its run.
        let mut live = live;
        live.kill().unwrap();
        let output = live.wait_with_output().unwrap();
        let words = text(&output);
        assert!(
            words.contains("removed what abandoned runs left: ")
                && words.contains("ProvisioningRequest/default/gembatch-abandoned"),
            "{words}"
        );
        let output = gembatch(
            &cluster,
            &["release", "--abandoned", "--namespace", "default"],
        )
        .wait_with_output()
        .unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("ProvisioningRequest/default/gembatch-live"),
            "{words}"
        );
        assert_nothing_left(&client, "live").await;
    });
}
