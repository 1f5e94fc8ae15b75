//! The objects a reservation creates, built from its plan before any API call (so `--dry-run`
//! prints exactly what would be sent): the PodTemplate of one GPU pod and the
//! ProvisioningRequest for `gpus` of them. Every object carries the run id as a label, so
//! `gembatch release` finds whatever a dead runner left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplate, PodTemplateSpec, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

pub use super::pod_fit::PodFit;
use super::request::{PodSet, ProvisioningRequest, ProvisioningRequestSpec, TemplateRef};

/// Label holding the run id on every object gembatch creates.
pub const RUN_LABEL: &str = "gembatch.dev/run-id";
/// Label marking every object gembatch creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gembatch");
/// The labels of every object of run `run_id`: the run id, which gembatch alone sets and
/// selects by, and Kubernetes' recommended `app.kubernetes.io/*` set (name, instance,
/// version, managed-by), which dashboards and cost reports group by.
pub fn run_labels(run_id: &str) -> BTreeMap<String, String> {
    [
        (RUN_LABEL, run_id),
        (MANAGED_BY.0, MANAGED_BY.1),
        ("app.kubernetes.io/name", "gembatch"),
        ("app.kubernetes.io/instance", run_id),
        ("app.kubernetes.io/version", env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// GKE's Dynamic Workload Scheduler.
pub const DWS_CLASS: &str = "queued-provisioning.gke.io";
/// The label GKE's page puts on a DWS PodTemplate and ProvisioningRequest (Autopilot
/// applies its policies to the pods the request is for only with it).
const WARDEN_LABEL: (&str, &str) = ("cloud.google.com/apply-warden-policies", "true");
/// The taint GKE puts on nodes of a queued-provisioning pool.
const QUEUED_TAINT: &str = "cloud.google.com/gke-queued";
/// The GPU resource and taint.
const GPU: &str = "nvidia.com/gpu";
/// The container of a serve pod.
pub const SERVE_CONTAINER: &str = "gemma";

/// What to reserve, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservePlan {
    /// The run's id (a label value: at most 63 characters).
    pub run_id: String,
    /// Namespace of every object.
    pub namespace: String,
    /// GPUs, one per pod, 1 to 10.
    pub gpus: u32,
    /// `provisioningClassName`.
    pub class: String,
    /// How long the nodes may live (DWS's `maxRunDurationSeconds`).
    pub max_run_duration: Duration,
    /// Longest wait for the capacity.
    pub timeout: Duration,
    /// The pods' container image.
    pub image: String,
    /// GKE accelerator type for the node selector.
    pub accelerator: String,
    /// Which reservation of the run this is: 1, or more after a booking expired before
    /// the pods were scheduled. Later bookings name their objects apart (see
    /// [`ReservePlan::base_name`]).
    pub booking: u32,
    /// The runner's own Job, owner of the run's top-level objects when the runner runs in
    /// a cluster ([`super::owners::runner_job`]).
    pub anchor: Option<OwnerReference>,
    /// The Kueue LocalQueue the serve Job is submitted to: Kueue, not gembatch, then
    /// creates the ProvisioningRequest (see [`super::kueue`]).
    pub queue: Option<String>,
    /// Where each pod goes and what it asks of its node beside the GPU.
    pub fit: PodFit,
}

impl ReservePlan {
    /// Checks what the API server would refuse later; `Err` says what to fix.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.gpus) {
            return Err("--gpus must be 1 to 10 (one atomic block of at most 10 GPUs)".into());
        }
        if self.run_id.len() > 50 || !is_dns_label(&self.base_name()) {
            return Err(format!(
                "run id {:?} cannot name Kubernetes objects: at most 50 letters, digits, '-', '_' or '.'",
                self.run_id
            ));
        }
        if !is_dns_label(&self.namespace) {
            return Err(format!(
                "--namespace {:?} is not a namespace name",
                self.namespace
            ));
        }
        if let Some(queue) = &self.queue
            && !is_dns_label(queue)
        {
            return Err(format!(
                "capacity.kubernetes.queue {queue:?} is not a LocalQueue name (lowercase \
                 letters, digits and '-')"
            ));
        }
        self.fit.check()?;
        if self.max_run_duration.is_zero()
            || self.max_run_duration > Duration::from_secs(7 * 86_400)
        {
            return Err(
                "--max-run-duration must be above 0 and at most 7 days (DWS's limit)".into(),
            );
        }
        Ok(())
    }

    /// The name every object of this booking starts with: `gembatch-RUN` for the first,
    /// `gembatch-RUN-bN` for booking N. Objects deleted and created again at once under the
    /// same name can stall the controllers that key their caches by name (the Job
    /// controller waits out its 5-minute expectations: kubernetes/kubernetes#131917), so a
    /// new booking never reuses a name.
    pub fn base_name(&self) -> String {
        match self.booking {
            0 | 1 => object_name(&self.run_id),
            n => format!("{}-b{n}", object_name(&self.run_id)),
        }
    }

    /// The PodTemplate's name.
    pub fn template_name(&self) -> String {
        format!("{}-pod", self.base_name())
    }

    /// The ProvisioningRequest's name for try `attempt` (0 first; a failed request is
    /// replaced by a new one, as the spec is immutable).
    pub fn request_name(&self, attempt: u32) -> String {
        match attempt {
            0 => self.base_name(),
            n => format!("{}-retry{n}", self.base_name()),
        }
    }

    /// The labels of every object of this run (see [`run_labels`]).
    pub fn labels(&self) -> BTreeMap<String, String> {
        run_labels(&self.run_id)
    }

    /// The metadata of this run's object `name`: its namespace and the run's labels.
    pub(super) fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    /// [`ReservePlan::meta`] of an object nothing else of the run owns at its creation (the
    /// template, the request, the serve Job): owned by the runner's Job, when there is one.
    pub(super) fn anchored_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            owner_references: self.anchor.clone().map(|anchor| vec![anchor]),
            ..self.meta(name)
        }
    }

    /// [`ReservePlan::anchored_meta`] of the PodTemplate and the ProvisioningRequest, with
    /// GKE's warden label for a DWS request.
    fn reservation_meta(&self, name: String) -> ObjectMeta {
        let mut meta = self.anchored_meta(name);
        if self.class == DWS_CLASS {
            meta.labels
                .get_or_insert_default()
                .insert(WARDEN_LABEL.0.into(), WARDEN_LABEL.1.into());
        }
        meta
    }

    /// The pod every GPU gets: one L4, the GPU and queued-node taints tolerated.
    pub fn pod_spec(&self) -> PodSpec {
        let mut node_selector = BTreeMap::from([(
            "cloud.google.com/gke-accelerator".to_string(),
            self.accelerator.clone(),
        )]);
        self.fit.select_pool(&mut node_selector);
        PodSpec {
            node_selector: Some(node_selector),
            tolerations: Some(vec![
                Toleration {
                    key: Some(GPU.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Toleration::default()
                },
                Toleration {
                    key: Some(QUEUED_TAINT.into()),
                    operator: Some("Equal".into()),
                    value: Some("true".into()),
                    effect: Some("NoSchedule".into()),
                    ..Toleration::default()
                },
            ]),
            containers: vec![Container {
                name: SERVE_CONTAINER.into(),
                image: Some(self.image.clone()),
                // On the GPU or not at all: a pod whose GPU is missing fails at start
                // instead of serving a 4B model on its CPU.
                env: Some(vec![
                    EnvVar {
                        name: "GEMBATCH_DEVICE".into(),
                        value: Some("cuda".into()),
                        ..EnvVar::default()
                    },
                    // The root file system is read-only: the default model's first fetch
                    // goes to a scratch volume.
                    EnvVar {
                        name: "GEMBATCH_CACHE_DIR".into(),
                        value: Some(SCRATCH_PATH.into()),
                        ..EnvVar::default()
                    },
                    EnvVar {
                        name: "TMPDIR".into(),
                        value: Some(SCRATCH_PATH.into()),
                        ..EnvVar::default()
                    },
                    // Cloud Logging files each line by its own severity.
                    EnvVar {
                        name: "GEMBATCH_LOG_FORMAT".into(),
                        value: Some("json".into()),
                        ..EnvVar::default()
                    },
                ]),
                resources: Some(self.fit.resources((GPU, "1"))),
                security_context: Some(restricted_container()),
                volume_mounts: Some(vec![VolumeMount {
                    name: SCRATCH_VOLUME.into(),
                    mount_path: SCRATCH_PATH.into(),
                    ..VolumeMount::default()
                }]),
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: SCRATCH_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]),
            restart_policy: Some("Never".into()),
            // A serve pod calls no Kubernetes API: it gets no token to lose.
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NON_ROOT_USER),
                run_as_group: Some(NON_ROOT_USER),
                fs_group: Some(NON_ROOT_USER),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }
    }

    /// The reservation's objects as one YAML stream, in the order they are created.
    pub fn dry_run_yaml(&self) -> Result<String, serde_saphyr::ser::Error> {
        let template = serde_saphyr::to_string(&self.pod_template())?;
        let request = serde_saphyr::to_string(&self.provisioning_request(0))?;
        Ok(format!("---\n{template}---\n{request}"))
    }

    /// The PodTemplate the request points at (created first; owned by the runner's Job
    /// until the request owns it).
    pub fn pod_template(&self) -> PodTemplate {
        PodTemplate {
            metadata: self.reservation_meta(self.template_name()),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(self.labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(self.pod_spec()),
            }),
        }
    }

    /// The ProvisioningRequest of try `attempt`.
    pub fn provisioning_request(&self, attempt: u32) -> ProvisioningRequest {
        let mut parameters = BTreeMap::new();
        if self.class == DWS_CLASS {
            parameters.insert(
                "maxRunDurationSeconds".to_string(),
                self.max_run_duration.as_secs().to_string(),
            );
        }
        let mut request = ProvisioningRequest::new(
            &self.request_name(attempt),
            ProvisioningRequestSpec {
                pod_sets: vec![PodSet {
                    pod_template_ref: TemplateRef {
                        name: self.template_name(),
                    },
                    count: self.gpus as i32,
                }],
                provisioning_class_name: self.class.clone(),
                parameters,
            },
        );
        request.metadata = self.reservation_meta(self.request_name(attempt));
        request
    }
}

/// The image's user (the Dockerfile's `USER 65532`, distroless's "nonroot").
const NON_ROOT_USER: i64 = 65532;
/// The serve container's one writable directory: the model cache and temporary files.
const SCRATCH_VOLUME: &str = "scratch";
const SCRATCH_PATH: &str = "/scratch";

/// What Kubernetes' "restricted" Pod Security Standard asks of a container: no privilege
/// escalation, no capabilities, a read-only root file system.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// A run id as an object name: lower case, `_` and `.` as `-`, prefixed `gembatch-`.
pub fn object_name(run_id: &str) -> String {
    let name: String = run_id
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '_' | '.' => '-',
            other => other,
        })
        .collect();
    format!("gembatch-{name}")
}

/// An RFC 1123 label: lower-case letters, digits and `-`, at most 63, alphanumeric ends.
pub(super) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn plan() -> ReservePlan {
        ReservePlan {
            run_id: "Nightly_20261130.1".into(),
            namespace: "batch".into(),
            gpus: 10,
            class: DWS_CLASS.into(),
            max_run_duration: Duration::from_secs(8 * 3600),
            timeout: Duration::from_secs(6 * 3600),
            image: "gembatch:latest".into(),
            accelerator: "nvidia-l4".into(),
            booking: 1,
            anchor: None,
            queue: None,
            fit: PodFit::default(),
        }
    }

    #[test]
    fn the_reservation_yaml_is_as_reviewed() {
        insta::assert_snapshot!(plan().dry_run_yaml().unwrap());
    }

    #[test]
    fn pods_ask_for_cpu_and_memory_beside_the_gpu_and_may_name_their_node_pool() {
        let pooled = ReservePlan {
            fit: PodFit {
                node_pool: Some("l4-dws".into()),
                ..PodFit::default()
            },
            ..plan()
        };
        let spec = pooled.pod_spec();
        let resources = spec.containers[0].resources.clone().unwrap();
        assert_eq!(resources, PodFit::default().resources((GPU, "1")));
        assert_eq!(
            spec.node_selector.unwrap()["cloud.google.com/gke-nodepool"],
            "l4-dws"
        );
        assert_eq!(plan().pod_spec().node_selector.unwrap().len(), 1);
        let bad = ReservePlan {
            fit: PodFit {
                memory: "16 GB".into(),
                ..PodFit::default()
            },
            ..plan()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .contains("capacity.kubernetes.memory")
        );
        let labels = pooled.provisioning_request(0).metadata.labels.unwrap();
        assert_eq!(labels["cloud.google.com/apply-warden-policies"], "true");
    }

    #[test]
    fn serve_pods_meet_the_restricted_pod_security_standard() {
        let pod = plan().pod_spec();
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        let restricted = container.security_context.clone().unwrap();
        assert_eq!(restricted.allow_privilege_escalation, Some(false));
        assert_eq!(restricted.read_only_root_filesystem, Some(true));
        assert_eq!(
            restricted.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        // The one writable place is where the model cache and temporary files go.
        let scratch = &container.volume_mounts.as_ref().unwrap()[0];
        let env = container.env.as_ref().unwrap();
        for name in ["GEMBATCH_CACHE_DIR", "TMPDIR"] {
            let var = env.iter().find(|var| var.name == name).unwrap();
            assert_eq!(var.value.as_deref(), Some(scratch.mount_path.as_str()));
        }
    }

    #[test]
    fn the_request_points_at_its_template_and_both_carry_the_run_id() {
        let plan = plan();
        assert!(plan.check().is_ok());
        let template = plan.pod_template();
        let request = plan.provisioning_request(0);
        assert_eq!(
            template.metadata.name.as_deref(),
            Some("gembatch-nightly-20261130-1-pod")
        );
        assert_eq!(
            request.metadata.name.as_deref(),
            Some("gembatch-nightly-20261130-1")
        );
        assert_eq!(plan.request_name(2), "gembatch-nightly-20261130-1-retry2");
        let third = ReservePlan {
            booking: 3,
            ..plan.clone()
        };
        assert_eq!(third.request_name(0), "gembatch-nightly-20261130-1-b3");
        assert_eq!(third.template_name(), "gembatch-nightly-20261130-1-b3-pod");
        assert_eq!(
            request.spec.pod_sets[0].pod_template_ref.name,
            plan.template_name()
        );
        assert_eq!(request.spec.pod_sets[0].count, 10);
        assert_eq!(request.spec.parameters["maxRunDurationSeconds"], "28800");
        for labels in [&template.metadata.labels, &request.metadata.labels] {
            assert_eq!(labels.as_ref().unwrap()[RUN_LABEL], "Nightly_20261130.1");
        }
        let spec = template.template.unwrap().spec.unwrap();
        let limits = spec.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap();
        assert_eq!(limits[GPU].0, "1");
        assert_eq!(spec.tolerations.unwrap().len(), 2);
    }

    #[test]
    fn plans_the_server_would_refuse_are_refused_first() {
        for (change, expected) in [
            (
                Box::new(|p: &mut ReservePlan| p.gpus = 11) as Box<dyn Fn(&mut ReservePlan)>,
                "--gpus",
            ),
            (
                Box::new(|p: &mut ReservePlan| p.run_id = "x".repeat(60)),
                "cannot name",
            ),
            (
                Box::new(|p: &mut ReservePlan| p.namespace = "Bad_NS".into()),
                "--namespace",
            ),
            (
                Box::new(|p: &mut ReservePlan| {
                    p.max_run_duration = Duration::from_secs(8 * 86_400)
                }),
                "7 days",
            ),
        ] {
            let mut plan = plan();
            change(&mut plan);
            assert!(plan.check().unwrap_err().contains(expected));
        }
        let mut open_source = plan();
        open_source.class = "best-effort-atomic-scale-up.autoscaling.x-k8s.io".into();
        assert!(
            open_source
                .provisioning_request(0)
                .spec
                .parameters
                .is_empty()
        );
    }
}
