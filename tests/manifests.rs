//! Every file in manifests/ parses, document by document, into its Kubernetes type with
//! nothing dropped (an unknown or misplaced field fails); the capacity reservation is what
//! `gembatch reserve --dry-run` writes; the runner's Role grants exactly the runner's calls.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[path = "common/python.rs"]
mod python;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PodTemplate, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use python::venv_bin;

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Parses `doc` as `T` and back: any field `T` does not know is lost and fails the test.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value, place: &str) {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|err| panic!("{place}: {err}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, doc, "{place}: a field was dropped or changed");
}

#[test]
fn every_manifest_is_a_valid_object_of_its_kind() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir("manifests").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        for doc in documents(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let place = format!("{} {kind} {}", path.display(), doc["metadata"]["name"]);
            match (api.as_str(), kind.as_str()) {
                ("apps/v1", "Deployment") => round_trip::<Deployment>(&doc, &place),
                ("v1", "Service") => round_trip::<Service>(&doc, &place),
                ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(&doc, &place),
                ("v1", "PodTemplate") => round_trip::<PodTemplate>(&doc, &place),
                ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                    round_trip::<HorizontalPodAutoscaler>(&doc, &place)
                }
                ("batch/v1", "CronJob") => round_trip::<CronJob>(&doc, &place),
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    round_trip::<NetworkPolicy>(&doc, &place)
                }
                ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(&doc, &place),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    round_trip::<RoleBinding>(&doc, &place)
                }
                ("autoscaling.x-k8s.io/v1", "ProvisioningRequest") => {
                    round_trip::<gembatch::capacity::kubernetes::request::ProvisioningRequest>(
                        &doc, &place,
                    )
                }
                ("monitoring.googleapis.com/v1", "PodMonitoring") => {
                    // Managed Prometheus's CRD: no Rust type; its required fields are there.
                    assert!(
                        doc["spec"]["selector"]["matchLabels"].is_object(),
                        "{place}"
                    );
                    assert!(doc["spec"]["endpoints"][0]["port"].is_string(), "{place}");
                }
                other => panic!("{place}: no check for {other:?}"),
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "CronJob",
            "Deployment",
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodMonitoring",
            "PodTemplate",
            "ProvisioningRequest",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
}

#[test]
fn the_capacity_reservation_is_what_gembatch_reserve_writes() {
    let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
        .args([
            "reserve",
            "--gpus",
            "10",
            "--run-id",
            "manual",
            "--namespace",
            "gembatch",
            "--dry-run",
        ])
        .args([
            "--image",
            "us-docker.pkg.dev/PROJECT/gembatch/gembatch:cuda",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let written: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let shipped = documents(Path::new("manifests/capacity_reservation.yaml"));
    assert_eq!(
        written
            .into_iter()
            .filter(|d| !d.is_null())
            .collect::<Vec<_>>(),
        shipped
    );
}

#[test]
fn the_runners_role_grants_exactly_the_runners_calls() {
    let role = documents(Path::new("manifests/nightly_batch.yaml"))
        .into_iter()
        .find(|doc| doc["kind"] == "Role")
        .expect("a Role");
    let role: Role = serde_json::from_value(role).unwrap();
    let granted: BTreeSet<(String, String, String)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|rule| {
            let groups = rule.api_groups.unwrap_or_default();
            let resources = rule.resources.unwrap_or_default();
            let verbs = rule.verbs;
            groups.into_iter().flat_map(move |group| {
                let verbs = verbs.clone();
                resources.clone().into_iter().flat_map(move |resource| {
                    let group = group.clone();
                    verbs
                        .clone()
                        .into_iter()
                        .map(move |verb| (group.clone(), resource.clone(), verb))
                })
            })
        })
        .collect();
    let used: BTreeSet<(String, String, String)> =
        gembatch::capacity::kubernetes::RUNNER_PERMISSIONS
            .iter()
            .flat_map(|(group, resource, verbs)| {
                verbs
                    .iter()
                    .map(|verb| (group.to_string(), resource.to_string(), verb.to_string()))
            })
            .collect();
    assert_eq!(granted, used);
}

#[test]
fn manifests_and_generated_objects_pass_the_schemas_of_recent_kubernetes() {
    let validate = venv_bin("kubernetes-validate");
    let check = Command::new(&validate).arg("--version").output();
    assert!(
        check.is_ok_and(|out| out.status.success()),
        "{} does not run: run .ci/python-venv",
        validate.display()
    );
    // What `gembatch run` creates on a cluster, beside what an operator applies: with the
    // weights in a bucket (run 1), on a volume claim (run 2), and through Kueue (run 3).
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        ("{path: gs://gembatch-models/gemma-3-4b-it}", ""),
        (
            "{path: /models/gemma-3-4b-it, volume_claim: gemma-weights}",
            "",
        ),
        (
            "{path: gs://gembatch-models/gemma-3-4b-it}",
            ", kubernetes: {queue: dws-local-queue}",
        ),
    ];
    let mut generated = Vec::new();
    for (i, (model, kubernetes)) in runs.iter().enumerate() {
        let job = dir.path().join(format!("job-{i}.yaml"));
        std::fs::write(
            &job,
            format!("name: nightly\ndataset: {{path: d.jsonl}}\nmodel: {model}\ncapacity: {{backend: kubernetes, gpus: 10{kubernetes}}}\n"),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_gembatch"))
            .args(["run", job.to_str().unwrap(), "--dry-run", "--run-id"])
            .arg(format!("nightly-{}", i + 1))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = dir.path().join(format!("generated-{i}.yaml"));
        std::fs::write(&path, output.stdout).unwrap();
        generated.push(path);
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("manifests")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.extend(generated);
    for version in ["1.30.0", "1.33.0"] {
        let output = Command::new(&validate)
            .args(["--strict", "--no-warn", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "Kubernetes {version}:\n{text}");
        for kind in [
            "job/gembatch-nightly-1",
            "job/gembatch-nightly-2",
            "job/gembatch-nightly-3",
            "service/gembatch-nightly-1",
            "deployment/gembatch-serve",
            "cronjob/gembatch-nightly",
        ] {
            assert!(
                text.contains(&format!("passed for resource {kind}")),
                "{kind} not validated:\n{text}"
            );
        }
    }
}
