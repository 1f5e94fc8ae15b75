//! Giving everything back: every object carrying the run's label (or, for `--all-mine`,
//! any run's label: only gembatch's runner sets it, no shipped manifest of a long-lived
//! object does) is deleted, consumers first: Jobs (with their pods), Services,
//! ProvisioningRequests (which cancels a pending one), PodTemplates, then the run's Lease. A cluster without the
//! ProvisioningRequest API has none to delete; one whose discovery fails is an error, never
//! a release reported whole.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PodTemplate, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

use super::KubeError;
use super::objects::RUN_LABEL;
use super::reserve::{Progress, request_resource};

/// Which objects to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One run's, in one namespace.
    Run {
        /// The run id.
        run_id: String,
        /// Its namespace.
        namespace: String,
    },
    /// Every object gembatch created, in every namespace the caller may list.
    AllMine,
}

impl Scope {
    fn selector(&self) -> String {
        match self {
            Scope::Run { run_id, .. } => format!("{RUN_LABEL}={run_id}"),
            // Every run's objects, and only those: `managed-by=gembatch` is on the online
            // service's manifests too.
            Scope::AllMine => RUN_LABEL.to_string(),
        }
    }

    /// The API to list `resource` in (one namespace, or all), and to delete it in its
    /// namespace.
    fn apis(
        &self,
        client: &Client,
        resource: &ApiResource,
    ) -> (
        Api<DynamicObject>,
        impl Fn(&str) -> Api<DynamicObject> + use<>,
    ) {
        let list = match self {
            Scope::Run { namespace, .. } => {
                Api::namespaced_with(client.clone(), namespace, resource)
            }
            Scope::AllMine => Api::all_with(client.clone(), resource),
        };
        let (client, resource) = (client.clone(), resource.clone());
        (list, move |namespace: &str| {
            Api::namespaced_with(client.clone(), namespace, &resource)
        })
    }
}

/// Deletes what the failed run `run_id` created in `namespace`. The run's own error stays
/// the one to report, so a cleanup that fails only tells `progress` (with how to finish it
/// by hand); the names deleted when it succeeds.
pub async fn release_after_failure(
    client: &Client,
    run_id: &str,
    namespace: &str,
    mut progress: impl FnMut(Progress),
) -> Option<Vec<String>> {
    let scope = Scope::Run {
        run_id: run_id.to_string(),
        namespace: namespace.to_string(),
    };
    match release(client, &scope).await {
        Ok(deleted) => Some(deleted),
        Err(cleanup) => {
            progress(Progress::CleanupFailed {
                why: cleanup.to_string(),
                run_id: run_id.to_string(),
                namespace: namespace.to_string(),
            });
            None
        }
    }
}

/// Deletes what `scope` names, the run's Lease (its lock) included; returns
/// `Kind/namespace/name` of each deleted object.
pub async fn release(client: &Client, scope: &Scope) -> Result<Vec<String>, KubeError> {
    let mut deleted = release_capacity(client, scope).await?;
    let leases = ApiResource::erase::<Lease>(&());
    delete_all(
        scope.apis(client, &leases),
        "Lease",
        &scope.selector(),
        &mut deleted,
    )
    .await?;
    Ok(deleted)
}

/// Deletes the pods and the reservation `scope` names but not the Lease: what a runner
/// that holds the run does to start its capacity over.
pub async fn release_capacity(client: &Client, scope: &Scope) -> Result<Vec<String>, KubeError> {
    let selector = scope.selector();
    let mut kinds = vec![
        ("Job", ApiResource::erase::<Job>(&())),
        ("Service", ApiResource::erase::<Service>(&())),
    ];
    match request_resource(client).await {
        Ok(resource) => kinds.push(("ProvisioningRequest", resource)),
        Err(KubeError::NoProvisioningRequests) => {}
        Err(err) => return Err(err),
    }
    kinds.push(("PodTemplate", ApiResource::erase::<PodTemplate>(&())));
    let mut deleted = Vec::new();
    for (kind, resource) in kinds {
        delete_all(scope.apis(client, &resource), kind, &selector, &mut deleted).await?;
    }
    Ok(deleted)
}

async fn delete_all(
    (list, namespaced): (Api<DynamicObject>, impl Fn(&str) -> Api<DynamicObject>),
    kind: &str,
    selector: &str,
    deleted: &mut Vec<String>,
) -> Result<(), KubeError> {
    let found = list
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(KubeError::api("list what to release"))?;
    for object in found {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        match namespaced(&namespace)
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => deleted.push(format!("{kind}/{namespace}/{name}")),
            // Gone meanwhile (an owner took it along): nothing left to do.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(KubeError::api("delete")(err)),
        }
    }
    Ok(())
}
