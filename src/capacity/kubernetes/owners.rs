//! Which object of a run owns which, so Kubernetes' garbage collector deletes a run's
//! objects together even when no runner is left to: the serve Job owns the pods' Service
//! the ProvisioningRequest (which owns the PodTemplate) and the run's Lease. The Job itself ends when its
//! pods stop hearing the runner, and `ttlSecondsAfterFinished` deletes it.

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

/// Makes the object `name` of `api` owned by `owner` (its only owner); `what` names it for
/// an error.
pub async fn make_owned<K>(
    api: &Api<K>,
    name: &str,
    owner: &OwnerReference,
    what: &'static str,
) -> Result<(), KubeError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    set_owner(api, name, owner)
        .await
        .map_err(KubeError::api(what))
}

/// [`make_owned`] for an object that may not exist (then there is nothing to own).
pub async fn make_owned_if_present<K>(
    api: &Api<K>,
    name: &str,
    owner: &OwnerReference,
    what: &'static str,
) -> Result<(), KubeError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match set_owner(api, name, owner).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(KubeError::api(what)),
    }
}

async fn set_owner<K>(api: &Api<K>, name: &str, owner: &OwnerReference) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
