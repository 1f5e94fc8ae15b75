//! Capacity: the pods a run sends its rows to, reserved before dispatch and released after,
//! whatever happens. One seam, three kinds:
//! - `local`: `gembatch serve` children on this machine (the embedded default);
//! - endpoints: servers that already exist, nothing to reserve or release;
//! - Kubernetes: a DWS ProvisioningRequest and Gemma pods on L4 nodes, kept alive by the
//!   runner's `heartbeat`.

pub mod heartbeat;
pub mod kubernetes;
pub mod local;

use crate::common::Endpoint;
use crate::common::blame::Blame;
use kubernetes::objects::ReservePlan;
use kubernetes::release::{Scope, release};
use local::LocalPods;

/// Reserved capacity; [`Reservation::release`] gives it back.
pub enum Reservation {
    /// Local `gembatch serve` processes.
    Local(LocalPods),
    /// Existing servers.
    Endpoints(Vec<Endpoint>),
    /// A provisioned ProvisioningRequest and the serve pods on it.
    Kubernetes(Box<KubernetesPods>),
}

/// Serve pods on a provisioned reservation.
pub struct KubernetesPods {
    /// The cluster.
    pub client: kube::Client,
    /// What was reserved (its run id labels every object).
    pub plan: ReservePlan,
    /// The ready pods, as the runner reaches them.
    pub pods: Vec<Endpoint>,
    /// The port-forwards to them, when the runner is outside the cluster.
    pub forwards: Option<kubernetes::port_forward::PortForwards>,
    /// The pods' API key (their Secret's), sent with every request.
    pub api_key: String,
}

/// Capacity that could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The local backend cannot run here.
    #[error("local backend: {why}")]
    Local {
        /// Why.
        why: String,
    },
    /// A pod did not start or become ready.
    #[error("{pod}: {why}")]
    PodFailed {
        /// The pod.
        pod: String,
        /// Why.
        why: String,
    },
    /// Ctrl-C or SIGTERM while reserving.
    #[error("interrupted while reserving capacity")]
    Interrupted,
    /// The Kubernetes reservation or its pods failed.
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubeError),
}

impl Blame for CapacityError {
    /// A backend that cannot serve this job as configured.
    fn is_user_error(&self) -> bool {
        match self {
            CapacityError::Local { .. } => true,
            CapacityError::Kubernetes(err) => err.is_user_error(),
            CapacityError::PodFailed { .. } | CapacityError::Interrupted => false,
        }
    }
}

impl Reservation {
    /// Existing servers at `urls`, named `endpoint-N`.
    pub fn endpoints(urls: &[String]) -> Reservation {
        Reservation::Endpoints(
            urls.iter()
                .enumerate()
                .map(|(index, url)| Endpoint {
                    name: format!("endpoint-{index}"),
                    url: url.clone(),
                })
                .collect(),
        )
    }

    /// Process ids of local pods, in pod order (none for other kinds).
    pub fn pids(&self) -> Vec<Option<u32>> {
        match self {
            Reservation::Local(local) => local.pids(),
            Reservation::Endpoints(pods) => vec![None; pods.len()],
            Reservation::Kubernetes(kubernetes) => vec![None; kubernetes.pods.len()],
        }
    }

    /// The pods to send rows to.
    pub fn pods(&self) -> Vec<Endpoint> {
        match self {
            Reservation::Local(local) => local.pods(),
            Reservation::Endpoints(pods) => pods.clone(),
            Reservation::Kubernetes(kubernetes) => kubernetes.pods.clone(),
        }
    }

    /// The API key the pods want, when the reservation made them one.
    pub fn api_key(&self) -> Option<&str> {
        match self {
            Reservation::Kubernetes(kubernetes) => Some(&kubernetes.api_key),
            Reservation::Local(_) | Reservation::Endpoints(_) => None,
        }
    }

    /// Gives everything back: stops local pods, deletes every Kubernetes object of the run;
    /// existing servers are left alone. Returns what it released, in words.
    pub async fn release(&mut self) -> String {
        match self {
            Reservation::Local(local) => {
                local.stop().await;
                "local pods stopped".into()
            }
            Reservation::Endpoints(_) => "nothing to release (existing endpoints)".into(),
            Reservation::Kubernetes(kubernetes) => {
                let KubernetesPods { client, plan, .. } = kubernetes.as_ref();
                let scope = Scope::Run {
                    run_id: plan.run_id.clone(),
                    namespace: plan.namespace.clone(),
                };
                match release(client, &scope).await {
                    Ok(deleted) => format!("deleted {}", deleted.join(", ")),
                    Err(err) => format!(
                        "could not delete everything ({err}); run `gembatch release {} --namespace {}`",
                        plan.run_id, plan.namespace
                    ),
                }
            }
        }
    }
}
