//! How the runner reaches the serve pods on Kubernetes.

use serde::{Deserialize, Serialize};

/// How the runner reaches the serve pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodAccess {
    /// Pod IPs inside a cluster (`KUBERNETES_SERVICE_HOST` set), port-forwarding outside.
    #[default]
    Auto,
    /// Straight to the pod IPs: the runner runs in the cluster (the CronJob).
    PodIp,
    /// Through the API server's port-forward: the runner runs outside the cluster.
    PortForward,
}

impl PodAccess {
    /// `Auto` settled by where this process runs: `PodIp` or `PortForward`.
    pub fn resolve(self, in_cluster: bool) -> PodAccess {
        match self {
            PodAccess::Auto if in_cluster => PodAccess::PodIp,
            PodAccess::Auto => PodAccess::PortForward,
            settled => settled,
        }
    }

    /// Whether this process runs in a pod (Kubernetes sets this for every container).
    pub fn in_cluster() -> bool {
        std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_means_pod_ips_inside_a_cluster_and_port_forwarding_outside() {
        assert_eq!(PodAccess::Auto.resolve(true), PodAccess::PodIp);
        assert_eq!(PodAccess::Auto.resolve(false), PodAccess::PortForward);
        for settled in [PodAccess::PodIp, PodAccess::PortForward] {
            assert_eq!(settled.resolve(true), settled);
            assert_eq!(settled.resolve(false), settled);
        }
    }
}
