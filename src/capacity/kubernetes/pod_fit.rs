//! Where a serve pod goes and what it asks of its node beside its GPU, as GKE's DWS page
//! writes its PodTemplate: a node pool selector and CPU and memory requests (which Kueue's
//! ClusterQueue quotas count too).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::objects::is_dns_label;

/// The node selector naming a GKE node pool.
const NODE_POOL_LABEL: &str = "cloud.google.com/gke-nodepool";

/// A serve pod's node pool and its CPU and memory.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFit {
    /// The queued-provisioning node pool (`cloud.google.com/gke-nodepool`), when the
    /// cluster has other pools of the same accelerator the pods must not land on.
    pub node_pool: Option<String>,
    /// CPU request (a Kubernetes quantity); no limit, so a pod may use the node's idle CPU.
    pub cpu: String,
    /// Memory request and limit (a Kubernetes quantity).
    pub memory: String,
}

impl Default for PodFit {
    /// Half of a g2-standard-8 (8 vCPUs, 32 GB, one L4): room for loading a 4B model's
    /// 8.6 GB of bf16 weights on the way to the GPU.
    fn default() -> PodFit {
        PodFit {
            node_pool: None,
            cpu: "4".into(),
            memory: "16Gi".into(),
        }
    }
}

impl PodFit {
    /// Checks what the API server would refuse later; `Err` names the field to fix.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            if !is_quantity(value) {
                return Err(format!(
                    "capacity.kubernetes.{field} {value:?} is not a Kubernetes quantity (say \
                     \"4\", \"500m\" or \"16Gi\")"
                ));
            }
        }
        match &self.node_pool {
            Some(pool) if !is_dns_label(pool) => Err(format!(
                "capacity.kubernetes.node_pool {pool:?} is not a node pool name"
            )),
            _ => Ok(()),
        }
    }

    /// The container's requests (`extra` beside CPU and memory) and limits (`extra` and
    /// memory).
    pub fn resources(&self, extra: (&str, &str)) -> ResourceRequirements {
        let quantity = |text: &str| Quantity(text.to_string());
        let extra = (extra.0.to_string(), quantity(extra.1));
        let memory = ("memory".to_string(), quantity(&self.memory));
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                extra.clone(),
                ("cpu".to_string(), quantity(&self.cpu)),
                memory.clone(),
            ])),
            limits: Some(BTreeMap::from([extra, memory])),
            ..ResourceRequirements::default()
        }
    }

    /// Adds the node pool, if any, to a pod's node selector.
    pub fn select_pool(&self, selector: &mut BTreeMap<String, String>) {
        if let Some(pool) = &self.node_pool {
            selector.insert(NODE_POOL_LABEL.into(), pool.clone());
        }
    }
}

/// Whether `text` is a Kubernetes quantity above zero (`4`, `500m`, `16Gi`, `1.5`).
fn is_quantity(text: &str) -> bool {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    number.parse::<f64>().is_ok_and(|n| n > 0.0)
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_pool_names_are_checked_naming_their_field() {
        for quantity in ["4", "500m", "1.5", "16Gi", "64G"] {
            assert!(is_quantity(quantity), "{quantity}");
        }
        for wrong in ["0", "-1", "Gi", "four", "16 GB", ""] {
            assert!(!is_quantity(wrong), "{wrong}");
        }
        for (fit, field) in [
            (
                PodFit {
                    cpu: "four".into(),
                    ..PodFit::default()
                },
                "cpu",
            ),
            (
                PodFit {
                    memory: "16 GB".into(),
                    ..PodFit::default()
                },
                "memory",
            ),
            (
                PodFit {
                    node_pool: Some("L4 pool".into()),
                    ..PodFit::default()
                },
                "node_pool",
            ),
        ] {
            let err = fit.check().unwrap_err();
            assert!(
                err.contains(&format!("capacity.kubernetes.{field}")),
                "{err}"
            );
        }
        assert_eq!(PodFit::default().check(), Ok(()));
    }

    #[test]
    fn memory_is_requested_and_limited_cpu_only_requested() {
        let resources = PodFit::default().resources(("nvidia.com/gpu", "1"));
        let requests = resources.requests.unwrap();
        assert_eq!(
            (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
            ("4", "16Gi")
        );
        assert_eq!(requests["nvidia.com/gpu"].0, "1");
        let limits = resources.limits.unwrap();
        assert!(!limits.contains_key("cpu"), "no CPU limit: no throttling");
        assert_eq!(limits["memory"].0, "16Gi");
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
    }
}
