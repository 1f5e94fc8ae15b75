//! `gembatch run --backend kubernetes`: the job's capacity as reservation and pod plans,
//! the run's Lease, the cleanup after a killed attempt, and `--dry-run`'s YAML of every
//! object the run would create.

use std::path::Path;

use crate::capacity::CapacityError;
use crate::capacity::kubernetes::abandoned::sweep_abandoned;
use crate::capacity::kubernetes::cluster;
use crate::capacity::kubernetes::model_mount::ModelMount;
use crate::capacity::kubernetes::objects::{PodFit, ReservePlan};
use crate::capacity::kubernetes::owners;
use crate::capacity::kubernetes::pods::PodsPlan;
use crate::capacity::kubernetes::release::{Scope, release_capacity};
use crate::capacity::kubernetes::reserve::{FailedRetries, Reserved};
use crate::capacity::kubernetes::run_lease::{Claim, RunLease, holder_identity};
use crate::common::PodAccess;
use crate::common::say;
use crate::job::{Backend, JobSpec};

/// Settles the namespace of a Kubernetes run (the flag's or the job's, else the kubeconfig
/// context's), before `--dry-run` prints it or anything is created.
pub(super) fn settle_namespace(job: &mut JobSpec) -> anyhow::Result<()> {
    if job.capacity.backend != Backend::Kubernetes || !job.capacity.endpoints.is_empty() {
        return Ok(());
    }
    let chosen = job.capacity.kubernetes.namespace.take();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let namespace = runtime
        .block_on(cluster::namespace(chosen.as_deref()))
        .map_err(CapacityError::from)?;
    job.capacity.kubernetes.namespace = Some(namespace);
    Ok(())
}

/// The reservation, its retries and the pods of `job` for run `run_id`.
pub(super) fn plans(job: &JobSpec, run_id: &str) -> (ReservePlan, FailedRetries, PodsPlan) {
    let kubernetes = &job.capacity.kubernetes;
    let plan = ReservePlan {
        run_id: run_id.to_string(),
        namespace: kubernetes.namespace().to_string(),
        gpus: job.capacity.gpus,
        class: kubernetes.provisioning_class.clone(),
        max_run_duration: kubernetes.max_run_duration,
        timeout: job.capacity.provisioning_timeout,
        image: kubernetes.image.clone(),
        accelerator: kubernetes.accelerator.clone(),
        booking: 1,
        anchor: owners::runner_job(),
        queue: kubernetes.queue.clone(),
        fit: PodFit {
            node_pool: kubernetes.node_pool.clone(),
            cpu: kubernetes.cpu.clone(),
            memory: kubernetes.memory.clone(),
        },
    };
    let retries = FailedRetries {
        attempts: kubernetes.failed_attempts.max(1),
        ..FailedRetries::default()
    };
    let pods = PodsPlan {
        model: ModelMount::of(
            job.model.path.as_deref().and_then(Path::to_str),
            job.model.volume_claim.as_deref(),
        ),
        served_name: job.model.name.clone(),
        max_batch: job.concurrency_per_pod,
        ready_timeout: job.capacity.ready_timeout,
        access: kubernetes.pod_access.resolve(PodAccess::in_cluster()),
        runner_timeout: kubernetes.runner_timeout,
        finished_ttl: kubernetes.finished_ttl,
    };
    (plan, retries, pods)
}

/// Every object a Kubernetes run of `job` creates, in order, as one YAML stream.
pub(super) fn dry_run_yaml(job: &JobSpec, run_id: &str) -> anyhow::Result<String> {
    let (plan, _, pods) = plans(job, run_id);
    plan.check()
        .map_err(crate::capacity::kubernetes::KubeError::Plan)?;
    let service = serde_saphyr::to_string(&plan.serve_service())?;
    if let Some(queue) = &plan.queue {
        // Kueue creates the ProvisioningRequest once it takes the Job in.
        let job = serde_saphyr::to_string(&plan.queued_serve_job(queue, &pods))?;
        return Ok(format!("{service}---\n{job}"));
    }
    let reserved = Reserved {
        request: plan.request_name(0),
        api_version: "autoscaling.x-k8s.io/v1".into(),
        class: plan.class.clone(),
    };
    let job = serde_saphyr::to_string(&plan.serve_job(Some(&reserved), &pods))?;
    Ok(format!("{}---\n{service}---\n{job}", plan.dry_run_yaml()?))
}

/// On Kubernetes, the run's Lease: no two runners on one run, whichever machines they are
/// on (the run directory's lock covers one machine). Once it is held, runs abandoned in
/// the namespace are swept in the background (see `abandoned`).
pub(super) async fn run_lease(job: &JobSpec, run_id: &str) -> anyhow::Result<Option<RunLease>> {
    if job.capacity.backend != Backend::Kubernetes || !job.capacity.endpoints.is_empty() {
        return Ok(None);
    }
    let client = crate::capacity::kubernetes::client()
        .await
        .map_err(CapacityError::from)?;
    let namespace = job.capacity.kubernetes.namespace();
    let waiting = |holder: &str| {
        say::info(format!(
            "run {run_id} is held by {holder}; waiting for its Lease to expire"
        ))
    };
    let claim = Claim {
        namespace: namespace.to_string(),
        run_id: run_id.to_string(),
        holder: holder_identity(),
        anchor: owners::runner_job(),
    };
    let lease = RunLease::acquire(&client, claim.clone(), waiting)
        .await
        .map_err(CapacityError::from)?;
    tokio::spawn(async move {
        let swept = sweep_abandoned(
            &client,
            &claim.namespace,
            Some(&claim.run_id),
            &claim.holder,
        );
        match swept.await {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => say::info(format!(
                "removed what abandoned runs left: {}",
                deleted.join(", ")
            )),
            Err(err) => tracing::warn!("could not sweep abandoned runs: {err}"),
        }
    });
    Ok(Some(lease))
}

/// Deletes what an attempt killed without its cleanup (a preempted node, SIGKILL) left of
/// `plan`'s run: this runner holds the run's lock and Lease, so those objects are nobody's
/// now.
pub(super) async fn remove_earlier_attempt(
    client: &kube::Client,
    plan: &ReservePlan,
) -> Result<(), CapacityError> {
    let scope = Scope::Run {
        run_id: plan.run_id.clone(),
        namespace: plan.namespace.clone(),
    };
    let left = release_capacity(client, &scope).await?;
    if !left.is_empty() {
        say::info(format!(
            "removed what the earlier attempt left: {}",
            left.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nightly_jobs_objects_are_as_reviewed() {
        let job = JobSpec::parse(include_str!("../../jobs/nightly.yaml")).unwrap();
        insta::assert_snapshot!(dry_run_yaml(&job, "nightly-20261204-000000").unwrap());
    }

    #[test]
    fn every_object_and_pod_carries_the_run_id_and_the_recommended_labels() {
        let job = JobSpec::parse(include_str!("../../jobs/nightly.yaml")).unwrap();
        let text = dry_run_yaml(&job, "nightly-1").unwrap();
        let objects: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(objects.len(), 4, "template, request, service, job");
        let expected = [
            ("gembatch.dev/run-id", "nightly-1"),
            ("app.kubernetes.io/managed-by", "gembatch"),
            ("app.kubernetes.io/name", "gembatch"),
            ("app.kubernetes.io/instance", "nightly-1"),
            ("app.kubernetes.io/version", env!("CARGO_PKG_VERSION")),
        ];
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let mut label_sets = vec![&object["metadata"]["labels"]];
            for pods in [&object["template"], &object["spec"]["template"]] {
                if !pods.is_null() {
                    label_sets.push(&pods["metadata"]["labels"]);
                }
            }
            for labels in label_sets {
                for (key, value) in expected {
                    assert_eq!(labels[key], value, "{kind}: {key}");
                }
            }
        }
    }
}
