//! The ProvisioningRequest (`autoscaling.x-k8s.io`), as typed Rust: the spec gembatch writes
//! and the status conditions the cluster autoscaler (or GKE's Dynamic Workload Scheduler)
//! answers with.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// `spec` of a ProvisioningRequest: one pod set of `count` identical pods.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "autoscaling.x-k8s.io",
    version = "v1",
    kind = "ProvisioningRequest",
    plural = "provisioningrequests",
    namespaced,
    status = "ProvisioningRequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRequestSpec {
    /// The pods to make room for; GKE's queued provisioning takes exactly one set.
    pub pod_sets: Vec<PodSet>,
    /// Who provisions: `queued-provisioning.gke.io` (DWS) or an open-source class.
    pub provisioning_class_name: String,
    /// Class parameters (`maxRunDurationSeconds` for DWS), string to string.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// One set of identical pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSet {
    /// The PodTemplate the pods follow (same namespace, created first).
    pub pod_template_ref: TemplateRef,
    /// How many.
    pub count: i32,
}

/// A reference by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// The PodTemplate's name.
    pub name: String,
}

/// `status` of a ProvisioningRequest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRequestStatus {
    /// `Accepted`, `Provisioned`, `BookingExpired`, `Failed`, `CapacityRevoked`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Details the class reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provisioning_class_details: BTreeMap<String, String>,
}

/// The conditions a request goes through, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// Queued.
    Accepted,
    /// Capacity is there (True) or still awaited (False).
    Provisioned,
    /// The 10-minute booking ended.
    BookingExpired,
    /// Terminal failure.
    Failed,
    /// The nodes are being taken away.
    CapacityRevoked,
}

impl ConditionType {
    /// Its `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Accepted => "Accepted",
            ConditionType::Provisioned => "Provisioned",
            ConditionType::BookingExpired => "BookingExpired",
            ConditionType::Failed => "Failed",
            ConditionType::CapacityRevoked => "CapacityRevoked",
        }
    }
}

impl ProvisioningRequest {
    /// The condition of `kind`, if the status has it.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == kind.as_str())
    }

    /// Whether the condition of `kind` is `True`.
    pub fn is(&self, kind: ConditionType) -> bool {
        self.condition(kind)
            .is_some_and(|condition| condition.status == "True")
    }
}
