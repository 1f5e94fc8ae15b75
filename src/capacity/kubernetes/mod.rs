//! The Kubernetes backend: an atomic block of GPUs reserved through a ProvisioningRequest
//! (GKE's Dynamic Workload Scheduler, or cluster-autoscaler's atomic classes), and released
//! by label whatever happened.
//!
//! - `request`: the ProvisioningRequest as typed Rust;
//! - `objects`: what a reservation creates, built before any call (`--dry-run` prints it);
//! - `pod_fit`: a serve pod's node pool, CPU and memory;
//! - `reserve`: create, own, watch the conditions, retry a failed request;
//! - `pods`: the Job of serve pods consuming the request, its Service, the wait for them;
//! - `pod_key`: the serve pods' API key, a Secret per booking owned by their Job;
//! - `model_mount`: where those pods find the weights (image, claim or bucket);
//! - `port_forward`: reaching the pods from outside the cluster, through the API server;
//! - `owners`: which object of a run owns which, so the collector deletes them together;
//! - `release`: delete everything a run (or gembatch) created, found by label;
//! - `run_lease`: the run's lock on the cluster, one Lease per run;
//! - `backend`: reserve then start the pods, as `gembatch run` does, cleaning up on failure;
//! - `cluster`: which kubeconfig context and namespace a command works in;
//! - `kueue`: the serve Job through a Kueue LocalQueue, whose admission check reserves.

pub mod abandoned;
pub mod backend;
pub mod cluster;
pub mod deployment_watch;
pub mod kueue;
pub mod model_mount;
pub mod objects;
pub mod owners;
pub mod pod_fit;
pub mod pod_key;
pub mod pods;
pub mod port_forward;
pub mod release;
pub mod request;
pub mod reserve;
pub mod run_lease;

use std::time::Duration;

use crate::common::blame::Blame;

/// Every API call the runner makes, as RBAC rules (API group, resource, verbs): `reserve`
/// (PodTemplate create and patch, ProvisioningRequest create and watch), `pods` (Service and
/// Job create, Pod list), `kueue` (Job and LocalQueue get), `release` (list and delete of
/// all five). The Role in
/// `manifests/nightly_batch.yaml` grants exactly these; a test keeps the two equal.
pub const RUNNER_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("", "podtemplates", &["create", "patch", "list", "delete"]),
    (
        "autoscaling.x-k8s.io",
        "provisioningrequests",
        &["create", "get", "list", "watch", "patch", "delete"],
    ),
    // `get`: Kueue mode reads its serve Job until Kueue admits it.
    ("batch", "jobs", &["create", "get", "list", "delete"]),
    ("kueue.x-k8s.io", "localqueues", &["get"]),
    ("", "services", &["create", "list", "delete"]),
    // The pods' API key: created owned by their Job, so never listed or read.
    ("", "secrets", &["create", "delete"]),
    ("", "pods", &["list"]),
    (
        "coordination.k8s.io",
        "leases",
        &["create", "get", "list", "update", "patch", "delete"],
    ),
];

/// A Kubernetes step that failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The reservation as asked cannot be made.
    #[error("{0}")]
    Plan(String),
    /// No kubeconfig or in-cluster configuration.
    #[error(
        "no Kubernetes configuration ({0}); set KUBECONFIG (or --context) to a kubeconfig context, or run in a cluster"
    )]
    Config(String),
    /// An API call failed.
    #[error("cannot {what}: {why}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The API server's words.
        why: String,
    },
    /// Another runner holds the run's Lease.
    #[error(
        "run {run_id} is held by another gembatch runner ({holder}, Lease renewed {renewed}); \
         wait for it to end or stop it, then resume"
    )]
    RunHeld {
        /// The run.
        run_id: String,
        /// The Lease's holder.
        holder: String,
        /// When the holder last renewed it.
        renewed: String,
    },
    /// The cluster serves no ProvisioningRequest API.
    #[error(
        "this cluster serves no autoscaling.x-k8s.io ProvisioningRequest (v1 or v1beta1): \
         on GKE use 1.28 or later with a queued-provisioning node pool; elsewhere install \
         cluster-autoscaler's CRD"
    )]
    NoProvisioningRequests,
    /// The capacity did not come in time.
    #[error("not provisioned within {} s; last condition: {last}", waited.as_secs())]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The request's last condition, as words.
        last: String,
    },
    /// Every request failed.
    #[error("the ProvisioningRequest failed {attempts} time(s); last: {why}")]
    Failed {
        /// Requests made.
        attempts: u32,
        /// The last failure's reason and message.
        why: String,
    },
    /// The request was deleted while waited on.
    #[error("ProvisioningRequest {0} was deleted while gembatch waited on it")]
    Deleted(String),
    /// The 10-minute booking ended before the pods were all scheduled.
    #[error("the booking of ProvisioningRequest {0} expired before every serve pod was scheduled")]
    BookingExpired(String),
    /// A serve pod failed before all were ready.
    #[error("serve pod {0} failed before every pod was ready; see `kubectl logs {0}`")]
    PodFailed(String),
    /// Not every serve pod was ready in time.
    #[error(
        "{ready} of {wanted} serve pods ready after {} s (capacity.ready_timeout); the Job \
         has {created} pod(s), {scheduled} scheduled: see `kubectl describe job {job}`",
        waited.as_secs()
    )]
    PodsNotReady {
        /// Pods ready.
        ready: usize,
        /// Pods wanted.
        wanted: usize,
        /// Pods the Job has (its controller may not have made them all).
        created: usize,
        /// Of those, bound to a node.
        scheduled: usize,
        /// The Job's name.
        job: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The API server refused to port-forward to a serve pod.
    #[error(
        "cannot port-forward to serve pod {pod}: {why}; a runner outside the cluster needs \
         `get` and `create` on `pods/portforward` in the namespace (or run it in the cluster \
         with capacity.kubernetes.pod_access: pod_ip)"
    )]
    PortForward {
        /// The pod.
        pod: String,
        /// What the API server said.
        why: String,
    },
    /// An object the command was pointed at does not exist.
    #[error("{0}")]
    Missing(String),
    /// The watch broke beyond its own retries.
    #[error("the watch on the ProvisioningRequest failed: {0}")]
    Watch(String),
}

impl Blame for KubeError {
    /// The flags, the configuration, the cluster's API.
    fn is_user_error(&self) -> bool {
        matches!(
            self,
            KubeError::Plan(_)
                | KubeError::Config(_)
                | KubeError::RunHeld { .. }
                | KubeError::NoProvisioningRequests
                | KubeError::Missing(_)
                | KubeError::PortForward { .. }
        )
    }
}

impl KubeError {
    /// Maps a client error to what was being done.
    pub fn api(what: &'static str) -> impl Fn(kube::Error) -> KubeError {
        move |err| KubeError::Api {
            what,
            why: err.to_string(),
        }
    }
}

pub use cluster::client;
