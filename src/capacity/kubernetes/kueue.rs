//! Kueue mode (`capacity.kubernetes.queue`): the serve Job goes to a Kueue LocalQueue
//! suspended, as GKE documents flex-start with queued provisioning through Kueue. Kueue's
//! ProvisioningRequest admission check creates and watches the request (with the Job's
//! `maxRunDurationSeconds`), then admits the Job: it unsuspends it and annotates its pods
//! to consume the capacity. gembatch checks the queue exists, waits for the admission and
//! the ready pods, and deletes the Job at the end, which takes Kueue's Workload and
//! request with it.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::KubeError;
use super::objects::ReservePlan;
use super::pods::{PodsPlan, create_serve_job, wait_ready};
use super::reserve::Progress;
use crate::common::Endpoint;

/// Kueue's API group.
pub const KUEUE_GROUP: &str = "kueue.x-k8s.io";
/// The label naming the LocalQueue a Job is submitted to.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The annotation Kueue copies into the ProvisioningRequest's `maxRunDurationSeconds`
/// parameter (GKE's flex-start limit on how long the nodes live).
pub const MAX_RUN_ANNOTATION: &str = "provreq.kueue.x-k8s.io/maxRunDurationSeconds";
/// How often the Job is read while Kueue has not admitted it.
const ADMISSION_POLL: Duration = Duration::from_secs(2);

impl ReservePlan {
    /// The serve Job as Kueue takes it: suspended, labelled with its LocalQueue, the nodes'
    /// longest life in Kueue's annotation, the pods consuming no request yet.
    pub fn queued_serve_job(&self, queue: &str, pods: &PodsPlan) -> Job {
        let mut job = self.serve_job(None, pods);
        job.metadata
            .labels
            .get_or_insert_default()
            .insert(QUEUE_LABEL.into(), queue.into());
        job.metadata.annotations.get_or_insert_default().insert(
            MAX_RUN_ANNOTATION.into(),
            self.max_run_duration.as_secs().to_string(),
        );
        if let Some(spec) = job.spec.as_mut() {
            spec.suspend = Some(true);
        }
        job
    }
}

/// Whether Kueue has admitted `job`: it unsuspends a Job once its admission checks (the
/// ProvisioningRequest among them) pass.
pub fn admitted(job: &Job) -> bool {
    job.spec.as_ref().and_then(|spec| spec.suspend) != Some(true)
}

/// Checks that the cluster serves Kueue and that `queue` is one of its LocalQueues in
/// `namespace`: a Job sent to a queue that does not exist would wait forever.
pub async fn check_local_queue(
    client: &Client,
    namespace: &str,
    queue: &str,
) -> Result<(), KubeError> {
    let group = kube::discovery::group(client, KUEUE_GROUP)
        .await
        .map_err(|_| {
            KubeError::Missing(format!(
                "capacity.kubernetes.queue is {queue:?}, but this cluster serves no Kueue API \
                 ({KUEUE_GROUP}); install Kueue, or remove `queue` to let gembatch create the \
                 ProvisioningRequest itself"
            ))
        })?;
    let version = group.preferred_version_or_latest().to_string();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(KUEUE_GROUP, &version, "LocalQueue"),
        "localqueues",
    );
    let queues: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    match queues.get_opt(queue).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(KubeError::Missing(format!(
            "Kueue LocalQueue {queue:?} does not exist in namespace {namespace:?}: create it \
             (see manifests/README.md) or set capacity.kubernetes.queue to one that does"
        ))),
        Err(err) => Err(KubeError::api("read the Kueue LocalQueue")(err)),
    }
}

/// Submits the serve Job to `queue`, waits until Kueue admits it (at most the plan's
/// provisioning timeout) and its pods are ready; returns their addresses.
pub async fn start_queued_pods(
    client: &Client,
    plan: &ReservePlan,
    queue: &str,
    pods: &PodsPlan,
    api_key: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<Endpoint>, KubeError> {
    check_local_queue(client, &plan.namespace, queue).await?;
    let job = plan.queued_serve_job(queue, pods);
    let name = job.name_any();
    let created = create_serve_job(client, plan, &job, api_key).await?;
    progress(Progress::Queued {
        job: name.clone(),
        queue: queue.to_string(),
    });
    if created.suspended {
        wait_admitted(client, plan, &name, progress).await?;
    } else {
        progress(Progress::NotHeld { job: name });
    }
    wait_ready(client, plan, None, &created.owner.uid, pods.ready_timeout).await
}

/// Polls the Job until Kueue admits it, at most the plan's provisioning timeout. A read
/// that fails (the API server restarting during an hours-long wait) is tried again at the
/// next poll; the timeout then names it.
async fn wait_admitted(
    client: &Client,
    plan: &ReservePlan,
    name: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), KubeError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
    let started = Instant::now();
    let waiting = format!(
        "Kueue has not admitted Job {name}; see `kubectl describe workloads -n {}`",
        plan.namespace
    );
    let mut last = waiting.clone();
    loop {
        match jobs.get_opt(name).await {
            Ok(Some(job)) if admitted(&job) => {
                progress(Progress::Admitted {
                    job: name.to_string(),
                    waited: started.elapsed(),
                });
                return Ok(());
            }
            Ok(Some(_)) => last.clone_from(&waiting),
            Ok(None) => {
                return Err(KubeError::Missing(format!(
                    "the serve Job {name} was deleted while it waited for Kueue's admission"
                )));
            }
            Err(err) => last = format!("cannot read the serve Job {name}: {err}"),
        }
        if started.elapsed() >= plan.timeout {
            return Err(KubeError::Timeout {
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(ADMISSION_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::kubernetes::model_mount::ModelMount;
    use crate::capacity::kubernetes::objects::tests::plan;
    use crate::common::PodAccess;

    fn pods() -> PodsPlan {
        PodsPlan {
            model: ModelMount::Image(None),
            served_name: None,
            max_batch: 8,
            ready_timeout: Duration::from_secs(600),
            access: PodAccess::PodIp,
            runner_timeout: Duration::from_secs(300),
            finished_ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_queued_job_is_suspended_in_its_queue_and_consumes_no_request_of_its_own() {
        let plan = plan();
        let job = plan.queued_serve_job("dws-local-queue", &pods());
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[QUEUE_LABEL], "dws-local-queue");
        assert_eq!(labels["gembatch.dev/run-id"], plan.run_id);
        assert_eq!(
            job.metadata.annotations.clone().unwrap()[MAX_RUN_ANNOTATION],
            (8 * 3600).to_string()
        );
        assert!(!admitted(&job), "submitted suspended");
        let spec = job.spec.clone().unwrap();
        let pod_annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert!(
            pod_annotations
                .keys()
                .all(|key| !key.contains("provisioning")),
            "Kueue names the request on admission: {pod_annotations:?}"
        );
        let mut resumed = job;
        resumed.spec.as_mut().unwrap().suspend = Some(false);
        assert!(admitted(&resumed));
    }

    #[test]
    fn a_queue_name_that_cannot_name_a_local_queue_is_refused() {
        let plan = ReservePlan {
            queue: Some("GPU Queue".into()),
            ..plan()
        };
        assert!(
            plan.check()
                .unwrap_err()
                .contains("capacity.kubernetes.queue")
        );
    }
}
