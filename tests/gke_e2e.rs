//! End-to-end against a real GKE cluster: ignored unless asked for (`--ignored`), with
//! `GEMBATCH_E2E_KUBECONFIG` naming the cluster's kubeconfig (see the README, "The GKE
//! end-to-end test"). One test reserves GPUs through a real Dynamic Workload Scheduler
//! ProvisioningRequest, waits until GKE provisions them, releases them, and checks that
//! nothing of the run is left; the other runs a whole batch from this machine on serve pods
//! of `GEMBATCH_E2E_IMAGE` on that capacity, reached through port-forwards.
//!
//! Settings: `GEMBATCH_E2E_NAMESPACE` (default `gembatch`), `GEMBATCH_E2E_GPUS` (default 1),
//! `GEMBATCH_E2E_CLASS` (default `queued-provisioning.gke.io`), `GEMBATCH_E2E_TIMEOUT`
//! (default `45m`, the longest wait for the capacity); for the batch, `GEMBATCH_E2E_IMAGE`
//! (the gembatch CUDA image, required) and `GEMBATCH_E2E_MODEL` (a path in the image or a
//! `gs://` path; default: the pods fetch the default model).

mod common;

use std::process::Command;

use common::run::text;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn kubeconfig() -> std::ffi::OsString {
    std::env::var_os("GEMBATCH_E2E_KUBECONFIG")
        .expect("set GEMBATCH_E2E_KUBECONFIG to the GKE cluster's kubeconfig")
}

fn new_run_id() -> String {
    format!(
        "e2e-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    )
}

/// `gembatch ARGS` against the cluster, waited for.
fn gembatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .env("KUBECONFIG", kubeconfig())
        .args(args)
        .output()
        .unwrap()
}

/// Releases `run_id` until nothing is left (the PodTemplate is owned by the request, so
/// the garbage collector may take it first): the last `release`'s words.
fn release_until_nothing_is_left(run_id: &str, namespace: &str) -> String {
    let mut left = String::new();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_secs(3));
        left = text(&gembatch(&["release", run_id, "--namespace", namespace]));
        if left.contains("nothing was left") {
            break;
        }
    }
    left
}

#[test]
#[ignore = "needs a GKE cluster: GEMBATCH_E2E_KUBECONFIG=... cargo test --test gke_e2e -- --ignored"]
fn gke_reserves_provisions_and_releases_an_atomic_block() {
    let namespace = setting("GEMBATCH_E2E_NAMESPACE", "gembatch");
    let run_id = new_run_id();
    let reserved = gembatch(&[
        "reserve",
        "--gpus",
        &setting("GEMBATCH_E2E_GPUS", "1"),
        "--namespace",
        &namespace,
        "--class",
        &setting("GEMBATCH_E2E_CLASS", "queued-provisioning.gke.io"),
        "--timeout",
        &setting("GEMBATCH_E2E_TIMEOUT", "45m"),
        "--max-run-duration",
        "1h",
        "--run-id",
        &run_id,
    ]);
    // Released whatever happened, before any assertion.
    let released = gembatch(&["release", &run_id, "--namespace", &namespace]);
    let left = release_until_nothing_is_left(&run_id, &namespace);

    assert!(reserved.status.success(), "reserve:\n{}", text(&reserved));
    let reserve_text = text(&reserved);
    assert!(reserve_text.contains("Provisioned"), "{reserve_text}");
    assert!(
        reserve_text.contains("provisioned: ProvisioningRequest"),
        "{reserve_text}"
    );
    assert!(released.status.success(), "release:\n{}", text(&released));
    let released_text = text(&released);
    assert!(
        released_text.contains("ProvisioningRequest/"),
        "{released_text}"
    );
    assert!(
        left.contains("nothing was left") && !left.contains("ProvisioningRequest/"),
        "leftovers after release:\n{left}"
    );
}

#[test]
#[ignore = "needs a GKE cluster and the gembatch image: GEMBATCH_E2E_KUBECONFIG=... GEMBATCH_E2E_IMAGE=... cargo test --test gke_e2e -- --ignored"]
fn gke_runs_a_batch_from_outside_the_cluster_through_port_forwards() {
    let image = std::env::var("GEMBATCH_E2E_IMAGE")
        .expect("set GEMBATCH_E2E_IMAGE to the gembatch CUDA image the cluster can pull");
    let namespace = setting("GEMBATCH_E2E_NAMESPACE", "gembatch");
    let gpus = setting("GEMBATCH_E2E_GPUS", "1");
    let model = std::env::var("GEMBATCH_E2E_MODEL")
        .map(|path| format!("model: {{path: {path}}}\n"))
        .unwrap_or_default();
    let space = common::run::Workspace::new();
    let dataset = space.dataset(16);
    let job = space.job(
        &dataset,
        &format!(
            "{model}capacity: {{backend: kubernetes, gpus: {gpus}, provisioning_timeout: {}, \
             ready_timeout: 30m, kubernetes: {{namespace: {namespace}, image: {image}, \
             provisioning_class: {}, max_run_duration: 1h, pod_access: port_forward}}}}\n\
             generation: {{max_tokens: 16, temperature: 0}}",
            setting("GEMBATCH_E2E_TIMEOUT", "45m"),
            setting("GEMBATCH_E2E_CLASS", "queued-provisioning.gke.io"),
        ),
    );
    let run_id = new_run_id();
    let ran = gembatch(&["run", job.to_str().unwrap(), "--run-id", &run_id]);
    let left = release_until_nothing_is_left(&run_id, &namespace);

    let words = text(&ran);
    assert!(ran.status.success(), "run:\n{words}");
    assert!(
        words.contains("through API-server port-forwards"),
        "{words}"
    );
    let requests = common::run::Requests::read(&space.run_dir(&run_id));
    assert_eq!(requests.sorted_ids(), common::run::expected_ids(16));
    assert!(requests.strs("status").iter().all(|s| s == "ok"), "{words}");
    assert!(
        left.contains("nothing was left"),
        "leftovers after the run:\n{left}"
    );
}
