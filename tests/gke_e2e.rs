//! End-to-end against a real GKE cluster: ignored unless asked for (`--ignored`), with
//! `GEMBATCH_E2E_KUBECONFIG` naming the cluster's kubeconfig (see the README, "The GKE
//! end-to-end test"). It reserves GPUs through a real Dynamic Workload Scheduler
//! ProvisioningRequest, waits until GKE provisions them, releases them, and checks that
//! nothing of the run is left.
//!
//! Settings: `GEMBATCH_E2E_NAMESPACE` (default `gembatch`), `GEMBATCH_E2E_GPUS` (default 1),
//! `GEMBATCH_E2E_CLASS` (default `queued-provisioning.gke.io`), `GEMBATCH_E2E_TIMEOUT`
//! (default `45m`, the longest wait for the capacity).

mod common;

use std::process::Command;

use common::run::text;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
#[ignore = "needs a GKE cluster: GEMBATCH_E2E_KUBECONFIG=... cargo test --test gke_e2e -- --ignored"]
fn gke_reserves_provisions_and_releases_an_atomic_block() {
    let kubeconfig = std::env::var_os("GEMBATCH_E2E_KUBECONFIG")
        .expect("set GEMBATCH_E2E_KUBECONFIG to the GKE cluster's kubeconfig");
    let namespace = setting("GEMBATCH_E2E_NAMESPACE", "gembatch");
    let run_id = format!(
        "e2e-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let gembatch = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gembatch"))
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };
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
    // Released whatever happened, before any assertion. The PodTemplate is owned by the
    // request, so the garbage collector may take it first: release again until nothing is
    // left, a few times.
    let released = gembatch(&["release", &run_id, "--namespace", &namespace]);
    let mut left = String::new();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_secs(3));
        left = text(&gembatch(&["release", &run_id, "--namespace", &namespace]));
        if left.contains("nothing was left") {
            break;
        }
    }

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
