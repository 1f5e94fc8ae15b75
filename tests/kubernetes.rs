//! The Kubernetes backend's reservations against a real control plane (kube-apiserver
//! v1.20.2 with etcd and the controller manager, built by `.ci/control-plane-build.sh`): the
//! test plays the cluster autoscaler by patching the ProvisioningRequest's conditions, and
//! checks that nothing gembatch created outlives a release, a failure or an interruption;
//! also the runner under the manifests' Role and `load --watch-deployment`.
//! `kubernetes_run.rs` has the batch runs.

mod common;

use std::time::{Duration, Instant};

use common::kube_fixtures::*;
use common::run::text;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::PodTemplate;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};

#[test]
fn reserve_waits_for_provisioned_then_release_leaves_nothing() {
    let cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = reserve(&cluster, 3, "r1", "60s", &[]);
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
        wait_until_the_template_is_owned(&client, "gembatch-r1", &request).await;
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

        let release = release_leaves_nothing(&cluster, &client, "r1").await;
        assert!(
            text(&release).contains("ProvisioningRequest/default/gembatch-r1"),
            "{}",
            text(&release)
        );
    });
}

#[test]
fn a_watch_broken_by_the_api_server_resumes_and_a_cleanup_it_refuses_is_named() {
    let mut cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = reserve(&cluster, 1, "watch", "120s", &[]);
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
        release_leaves_nothing(&cluster, &client, "watch").await;

        // The API server gone when the wait times out: the timeout is what is reported,
        // the run says the cleanup could not run, and `release` later leaves nothing.
        let child = reserve(&cluster, 1, "down", "4s", &[]);
        let request = wait_for_request(&client, "gembatch-down").await;
        // Stopped only once the runner waits: before it has made the template owned by
        // the request, the stop fails that step instead of the wait.
        wait_until_the_template_is_owned(&client, "gembatch-down", &request).await;
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
        release_leaves_nothing(&cluster, &client, "down").await;
    });
}

#[test]
fn a_failed_request_is_replaced_and_the_template_survives() {
    let cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let child = reserve(
            &cluster,
            2,
            "r2",
            "60s",
            &["--failed-attempts", "2", "--retry-backoff", "200ms"],
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
        let child = reserve(&cluster, 2, "r3", "60s", &["--failed-attempts", "1"]);
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
    let cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let output = reserve(&cluster, 1, "slow", "2s", &[])
            .wait_with_output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            text(&output).contains("not provisioned within 2 s"),
            "{}",
            text(&output)
        );
        assert_nothing_left(&client, "slow").await;

        let child = reserve(&cluster, 1, "term", "60s", &[]);
        wait_for_request(&client, "gembatch-term").await;
        // SAFETY: signalling the child this test started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(143), "{}", text(&output));
        assert!(text(&output).contains("interrupted"), "{}", text(&output));
        assert_nothing_left(&client, "term").await;

        // Provisioned, but no node ever runs the pods: the run says what it saw.
        let space = common::run::Workspace::new();
        let job = kubernetes_job(&space, 2, 2, "");
        let spec = std::fs::read_to_string(&job).unwrap();
        std::fs::write(&job, spec.replace("ready_timeout: 2m", "ready_timeout: 5s")).unwrap();
        let output =
            run_provisioned(&cluster.kubeconfig, &client, "default", &job, "unready").await;
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
fn the_runner_works_under_exactly_the_manifests_role() {
    let cluster = TestCluster::start();
    let space = common::run::Workspace::new();
    let job = kubernetes_job(&space, 4, 1, "namespace: gembatch");
    runtime().block_on(async {
        let admin = ready(&cluster).await;
        let runner = cluster.runner_kubeconfig(&admin).await;
        let _kubelet = common::kubelet::TestKubelet::start(&cluster.kubeconfig, "gembatch", "rbac");
        let output = run_provisioned(&runner, &admin, "gembatch", &job, "rbac").await;
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
        let output = run_provisioned(&runner, &admin, "gembatch", &outside, "rbac-pf").await;
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
    let cluster = TestCluster::start();
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
    let cluster = TestCluster::start();
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

#[test]
fn release_all_mine_leaves_the_online_service_it_did_not_create() {
    use k8s_openapi::api::core::v1::Service;
    let cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        // The online Service as manifests/online_service.yaml ships it (labelled
        // `managed-by: gembatch`), in the test's namespace.
        let manifest = std::fs::read_to_string("manifests/online_service.yaml").unwrap();
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&manifest).unwrap();
        let mut online: Service = serde_json::from_value(
            documents
                .into_iter()
                .find(|doc| doc["kind"] == "Service")
                .expect("online_service.yaml has a Service"),
        )
        .unwrap();
        online.metadata.namespace = Some("default".into());
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        services.create(&Default::default(), &online).await.unwrap();

        let child = reserve(&cluster, 1, "mine", "60s", &[]);
        wait_for_request(&client, "gembatch-mine").await;
        provision(&client, "gembatch-mine").await;
        let reserved = child.wait_with_output().unwrap();
        assert!(reserved.status.success(), "{}", text(&reserved));

        let output = gembatch(&cluster, &["release", "--all-mine"])
            .wait_with_output()
            .unwrap();
        let words = text(&output);
        assert!(output.status.success(), "{words}");
        assert!(
            words.contains("ProvisioningRequest/default/gembatch-mine"),
            "{words}"
        );
        assert!(!words.contains("gembatch-serve"), "{words}");
        assert_nothing_left(&client, "mine").await;
        let kept = services.get("gembatch-serve").await.unwrap();
        assert!(kept.metadata.deletion_timestamp.is_none());
    });
}

/// Lease expiry is judged by the waiting runner's own clock: a holder whose clock is an hour
/// behind still holds the run while it renews, and a dead one's Lease is taken a Lease
/// duration after it stopped changing, whatever its `renewTime` says.
#[test]
fn a_run_lease_expires_by_the_waiting_runners_clock_not_the_holders() {
    use gembatch::capacity::kubernetes::run_lease::{Claim, LEASE_SECONDS, RunLease, lease_name};
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let cluster = TestCluster::start();
    runtime().block_on(async {
        let client = ready(&cluster).await;
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let an_hour_ago =
            || MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1));
        for run_id in ["skewed-alive", "skewed-dead"] {
            let mut lease = Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some(format!("pid 1 on {run_id}-host")),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(an_hour_ago()),
                    ..LeaseSpec::default()
                }),
                ..Lease::default()
            };
            lease.metadata.name = Some(lease_name(run_id));
            leases.create(&Default::default(), &lease).await.unwrap();
        }
        // The live holder renews every 5 s, by its clock an hour behind.
        let renewing = {
            let leases = leases.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let mut lease = leases.get(&lease_name("skewed-alive")).await.unwrap();
                    lease.spec.as_mut().unwrap().renew_time = Some(an_hour_ago());
                    leases
                        .replace(&lease_name("skewed-alive"), &Default::default(), &lease)
                        .await
                        .unwrap();
                }
            })
        };
        let started = Instant::now();
        let claim = |run_id: &str| Claim {
            namespace: "default".into(),
            run_id: run_id.into(),
            holder: "pid 2 on here".into(),
            anchor: None,
        };
        let (alive, dead) = tokio::join!(
            RunLease::acquire(&client, claim("skewed-alive"), |_| {}),
            RunLease::acquire(&client, claim("skewed-dead"), |_| {}),
        );
        renewing.abort();
        let refused = alive
            .err()
            .expect("a renewed Lease is not taken")
            .to_string();
        assert!(refused.contains("pid 1 on skewed-alive-host"), "{refused}");
        let taken = dead.expect("a Lease nobody renews is taken");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(LEASE_SECONDS as u64),
            "taken after {waited:?}, before the Lease could have expired"
        );
        let holder = leases.get(&lease_name("skewed-dead")).await.unwrap();
        assert_eq!(
            holder.spec.unwrap().holder_identity.as_deref(),
            Some("pid 2 on here")
        );
        taken.release().await;
    });
}

/// Waits until the PodTemplate `{name}-pod` is owned by `request` (the runner's last step
/// before it waits for the request to be provisioned).
async fn wait_until_the_template_is_owned(
    client: &kube::Client,
    name: &str,
    request: &DynamicObject,
) {
    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    loop {
        let template = templates
            .get(&format!("{name}-pod"))
            .await
            .expect("the PodTemplate exists first");
        let owners = template.metadata.owner_references.unwrap_or_default();
        if owners
            .iter()
            .any(|o| Some(&o.uid) == request.metadata.uid.as_ref())
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the template is not owned by the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
