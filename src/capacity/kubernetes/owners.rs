//! Which object of a run owns which, so Kubernetes' garbage collector deletes a run's
//! objects together even when no runner is left to: the serve Job owns the pods' Service,
//! the ProvisioningRequest (which owns the PodTemplate) and the run's Lease. The Job itself
//! ends when its pods stop hearing the runner, and `ttlSecondsAfterFinished` deletes it.
//!
//! A runner in a cluster (the nightly CronJob's) anchors them to its own Job too: the
//! ProvisioningRequest, the Lease and the serve Job are owned by it from their creation, so
//! a runner killed while it waits for capacity, before any serve Job exists, leaves nothing
//! once its Job goes (its `ttlSecondsAfterFinished`). An object with two owners goes when
//! both have.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;

use super::KubeError;

/// A reference to the object `kind` `name` (`uid`) of `api_version` as an owner, without
/// blocking its deletion.
pub fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        ..OwnerReference::default()
    }
}

/// The runner's own Job, when it runs in one: `GEMBATCH_RUNNER_JOB` and
/// `GEMBATCH_RUNNER_JOB_UID`, which manifests/nightly_batch.yaml sets from the downward API
/// (the pod's `job-name` and `controller-uid` labels). None outside a cluster, or when
/// either is missing.
pub fn runner_job() -> Option<OwnerReference> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    Some(owner(
        "batch/v1",
        "Job",
        &var("GEMBATCH_RUNNER_JOB")?,
        &var("GEMBATCH_RUNNER_JOB_UID")?,
    ))
}

/// `owner` and the run's `anchor` (the runner's Job), as an object's owners.
pub fn owners(owner: &OwnerReference, anchor: Option<&OwnerReference>) -> Vec<OwnerReference> {
    std::iter::once(owner).chain(anchor).cloned().collect()
}

/// Makes the object `name` of `api` owned by `owners` (its only owners); `what` names it
/// for an error.
pub async fn make_owned<K>(
    api: &Api<K>,
    name: &str,
    owners: &[OwnerReference],
    what: &'static str,
) -> Result<(), KubeError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    set_owners(api, name, owners)
        .await
        .map_err(KubeError::api(what))
}

/// [`make_owned`] for an object that may not exist (then there is nothing to own).
pub async fn make_owned_if_present<K>(
    api: &Api<K>,
    name: &str,
    owners: &[OwnerReference],
    what: &'static str,
) -> Result<(), KubeError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match set_owners(api, name, owners).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(KubeError::api(what)),
    }
}

async fn set_owners<K>(
    api: &Api<K>,
    name: &str,
    owners: &[OwnerReference],
) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    // A merge patch replaces the whole list: every owner is named each time.
    let patch = serde_json::json!({"metadata": {"ownerReferences": owners}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
