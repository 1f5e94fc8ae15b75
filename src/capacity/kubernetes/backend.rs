//! The Kubernetes backend as `gembatch run` uses it: reserve, start the serve pods on the
//! reservation, and on any failure or interruption on the way delete everything created.

use kube::Client;
use tokio_util::sync::CancellationToken;

use super::KubeError;
use super::kueue::start_queued_pods;
use super::objects::ReservePlan;
use super::pod_key::new_api_key;
use super::pods::{PodsPlan, start_pods};
use super::port_forward::forward;
use super::release::{Scope, release_after_failure, release_capacity};
use super::reserve::{FailedRetries, Progress, reserve};
use crate::capacity::{CapacityError, KubernetesPods, Reservation};
use crate::common::PodAccess;

/// Reservations made in all when bookings keep expiring before the pods are scheduled.
const BOOKINGS: u32 = 3;

/// Reserves `plan`, then starts and waits for the pods; the reservation returned owns them.
/// With a Kueue queue, Kueue reserves instead once the pods' Job is submitted to it.
/// A booking that expires before every pod is scheduled deletes everything and starts over,
/// up to [`BOOKINGS`] reservations.
pub async fn reserve_pods(
    client: Client,
    mut plan: ReservePlan,
    retries: FailedRetries,
    pods: &PodsPlan,
    progress: &mut (dyn FnMut(Progress) + Send),
    cancel: &CancellationToken,
) -> Result<Reservation, CapacityError> {
    plan.check().map_err(KubeError::Plan)?;
    let scope = Scope::Run {
        run_id: plan.run_id.clone(),
        namespace: plan.namespace.clone(),
    };
    let api_key = new_api_key();
    let started = async {
        let endpoints = loop {
            if let Some(queue) = plan.queue.clone() {
                break start_queued_pods(&client, &plan, &queue, pods, &api_key, progress).await?;
            }
            let reserved = reserve(&client, &plan, retries, progress).await?;
            match start_pods(&client, &plan, &reserved, pods, &api_key).await {
                // The capacity is gone for the pods still waiting: start over, whole, under
                // new names.
                Err(KubeError::BookingExpired(request)) if plan.booking < BOOKINGS => {
                    plan.booking += 1;
                    progress(Progress::StartingOver {
                        request,
                        booking: plan.booking,
                        of: BOOKINGS,
                    });
                    release_capacity(&client, &scope).await?;
                }
                other => break other?,
            }
        };
        match pods.access {
            PodAccess::PortForward => {
                progress(Progress::PortForwarding {
                    pods: endpoints.len(),
                });
                let (local, forwards) = forward(&client, &plan.namespace, endpoints).await?;
                Ok::<_, KubeError>((local, Some(forwards)))
            }
            PodAccess::PodIp | PodAccess::Auto => Ok((endpoints, None)),
        }
    };
    let result = tokio::select! {
        result = started => result.map_err(CapacityError::from),
        () = cancel.cancelled() => Err(CapacityError::Interrupted),
    };
    match result {
        Ok((endpoints, forwards)) => Ok(Reservation::Kubernetes(Box::new(KubernetesPods {
            client,
            plan,
            pods: endpoints,
            forwards,
            api_key,
        }))),
        Err(err) => {
            release_after_failure(&client, &plan.run_id, &plan.namespace, progress).await;
            Err(err)
        }
    }
}
