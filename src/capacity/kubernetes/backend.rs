//! The Kubernetes backend as `gembatch run` uses it: reserve, start the serve pods on the
//! reservation, and on any failure or interruption on the way delete everything created.

use kube::Client;
use tokio_util::sync::CancellationToken;

use super::KubeError;
use super::objects::ReservePlan;
use super::pods::{PodsPlan, start_pods};
use super::release::{Scope, release};
use super::reserve::{FailedRetries, Progress, reserve};
use crate::capacity::{CapacityError, KubernetesPods, Reservation};

/// Reserves `plan`, then starts and waits for the pods; the reservation returned owns them.
pub async fn reserve_pods(
    client: Client,
    plan: ReservePlan,
    retries: FailedRetries,
    pods: &PodsPlan,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<Reservation, CapacityError> {
    plan.check().map_err(KubeError::Plan)?;
    let started = async {
        let reserved = reserve(&client, &plan, retries, progress).await?;
        start_pods(&client, &plan, &reserved, pods).await
    };
    let result = tokio::select! {
        result = started => result.map_err(CapacityError::from),
        () = cancel.cancelled() => Err(CapacityError::Interrupted),
    };
    match result {
        Ok(endpoints) => Ok(Reservation::Kubernetes(Box::new(KubernetesPods {
            client,
            plan,
            pods: endpoints,
        }))),
        Err(err) => {
            let scope = Scope::Run {
                run_id: plan.run_id.clone(),
                namespace: plan.namespace.clone(),
            };
            // Best effort: the error that stopped the run is the one to report; leftovers
            // are found by `gembatch release` later.
            let _ = release(&client, &scope).await;
            Err(err)
        }
    }
}
