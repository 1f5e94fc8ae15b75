//! Capacity: the pods a run sends its rows to, reserved before dispatch and released after,
//! whatever happens. One seam, three kinds:
//! - `local`: `gembatch serve` children on this machine (the embedded default);
//! - endpoints: servers that already exist, nothing to reserve or release;
//! - Kubernetes: a DWS ProvisioningRequest and Gemma pods on L4 nodes (its own issue).

pub mod kubernetes;
pub mod local;

use crate::dispatch::Pod;
use local::LocalPods;

/// Reserved capacity; [`Reservation::release`] gives it back.
pub enum Reservation {
    /// Local `gembatch serve` processes.
    Local(LocalPods),
    /// Existing servers.
    Endpoints(Vec<Pod>),
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
    /// The backend is not built yet.
    #[error("{0}")]
    Unsupported(String),
    /// Ctrl-C or SIGTERM while reserving.
    #[error("interrupted while reserving capacity")]
    Interrupted,
}

impl CapacityError {
    /// Whether the user can fix it (exit code 2): a backend that cannot serve this job.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            CapacityError::Unsupported(_) | CapacityError::Local { .. }
        )
    }
}

impl Reservation {
    /// Existing servers at `urls`, named `endpoint-N`.
    pub fn endpoints(urls: &[String]) -> Reservation {
        Reservation::Endpoints(
            urls.iter()
                .enumerate()
                .map(|(index, url)| Pod {
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
        }
    }

    /// The pods to send rows to.
    pub fn pods(&self) -> Vec<Pod> {
        match self {
            Reservation::Local(local) => local.pods(),
            Reservation::Endpoints(pods) => pods.clone(),
        }
    }

    /// Gives everything back: stops local pods; existing servers are left alone.
    pub async fn release(&mut self) {
        match self {
            Reservation::Local(local) => local.stop().await,
            Reservation::Endpoints(_) => {}
        }
    }
}
