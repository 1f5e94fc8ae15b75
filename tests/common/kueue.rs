//! Plays Kueue on the test control plane, as the test kubelet plays the node: a Job
//! labelled `kueue.x-k8s.io/queue-name` whose LocalQueue exists gets what Kueue's
//! ProvisioningRequest admission check creates (a PodTemplate and a request of the Job's
//! pods, `maxRunDurationSeconds` from the Job's annotation, owned by the Job as Kueue's are
//! through its Workload), provisioned at once; then the Job is admitted: its pods are
//! annotated to consume the request. Kubernetes 1.20 drops a Job's `suspend`, so its pods
//! exist before that; the test kubelet holds every pod that consumes no request, as a
//! queued-provisioning node pool does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::cluster::client_from;
use super::kube_fixtures::{provision_in, requests_in};

const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
const MAX_RUN_ANNOTATION: &str = "provreq.kueue.x-k8s.io/maxRunDurationSeconds";
const CONSUME: &str = "autoscaling.x-k8s.io/consume-provisioning-request";
const CLASS: &str = "autoscaling.x-k8s.io/provisioning-class-name";
const DWS_CLASS: &str = "queued-provisioning.gke.io";

/// A Job the test Kueue admitted.
#[derive(Debug, Clone)]
pub struct Admission {
    pub job: String,
    pub queue: String,
    /// The Job's `maxRunDurationSeconds` annotation, copied into the request.
    pub max_run_seconds: Option<String>,
    /// The ProvisioningRequest made for it.
    pub request: String,
    /// The request's pod count (the Job's parallelism).
    pub count: i32,
}

/// A running test Kueue; stops when dropped.
pub struct TestKueue {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Every Job admitted so far.
    pub admitted: Arc<Mutex<Vec<Admission>>>,
}

impl TestKueue {
    /// Starts admitting the queued Jobs of `namespace`.
    pub fn start(kubeconfig: &Path, namespace: &str) -> TestKueue {
        let stop = Arc::new(AtomicBool::new(false));
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let (kubeconfig, namespace) = (kubeconfig.to_path_buf(), namespace.to_string());
        let (stopped, record) = (stop.clone(), admitted.clone());
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let client = client_from(&kubeconfig).await;
                    while !stopped.load(Ordering::Relaxed) {
                        admit_pass(&client, &namespace, &record).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
        });
        TestKueue {
            stop,
            thread: Some(thread),
            admitted,
        }
    }
}

impl Drop for TestKueue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The LocalQueues of `namespace`.
pub fn local_queues(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta1", "LocalQueue"),
        "localqueues",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Creates LocalQueue `name` in `namespace`, backed by a ClusterQueue of the same name.
pub async fn create_local_queue(client: &kube::Client, namespace: &str, name: &str) {
    let queue: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": name},
    }))
    .unwrap();
    local_queues(client, namespace)
        .create(&PostParams::default(), &queue)
        .await
        .expect("create the LocalQueue");
}

/// One pass: admits each queued Job not yet admitted whose LocalQueue exists, and annotates
/// the pods of admitted Jobs to consume their request.
async fn admit_pass(client: &kube::Client, namespace: &str, admitted: &Mutex<Vec<Admission>>) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let Ok(listed) = jobs.list(&ListParams::default().labels(QUEUE_LABEL)).await else {
        return;
    };
    for job in listed
        .items
        .iter()
        .filter(|job| job.metadata.deletion_timestamp.is_none())
    {
        let known = admitted
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.job == job.name_any())
            .cloned();
        let admission = match known {
            Some(admission) => admission,
            None => match admit(client, namespace, job).await {
                Some(admission) => {
                    eprintln!(
                        "kueue: admitted Job {} from {}",
                        admission.job, admission.queue
                    );
                    admitted.lock().unwrap().push(admission.clone());
                    admission
                }
                None => continue,
            },
        };
        annotate_pods(client, namespace, job, &admission.request).await;
    }
}

/// Kueue's admission of `job`, once its LocalQueue exists: a PodTemplate and a provisioned
/// request for its pods, owned by the Job.
async fn admit(client: &kube::Client, namespace: &str, job: &Job) -> Option<Admission> {
    let queue = job.labels().get(QUEUE_LABEL)?.clone();
    local_queues(client, namespace)
        .get_opt(&queue)
        .await
        .ok()??;
    let name = format!("{}-kueue", job.name_any());
    let owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.name_any(),
        uid: job.uid()?,
        ..OwnerReference::default()
    };
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.into()),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let spec = job.spec.as_ref()?;
    let template = PodTemplate {
        metadata: meta.clone(),
        template: Some(spec.template.clone()),
    };
    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), namespace);
    templates
        .create(&PostParams::default(), &template)
        .await
        .ok()?;
    let max_run_seconds = job.annotations().get(MAX_RUN_ANNOTATION).cloned();
    let count = spec.parallelism.unwrap_or(1);
    let mut parameters = BTreeMap::new();
    if let Some(seconds) = &max_run_seconds {
        parameters.insert("maxRunDurationSeconds", seconds.clone());
    }
    let request: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling.x-k8s.io/v1", "kind": "ProvisioningRequest",
        "metadata": meta,
        "spec": {
            "provisioningClassName": DWS_CLASS, "parameters": parameters,
            "podSets": [{"podTemplateRef": {"name": name}, "count": count}],
        },
    }))
    .unwrap();
    requests_in(client, namespace)
        .create(&PostParams::default(), &request)
        .await
        .ok()?;
    provision_in(client, namespace, &name).await;
    Some(Admission {
        job: job.name_any(),
        queue,
        max_run_seconds,
        request: name,
        count,
    })
}

/// Annotates the pods of `job` that do not consume `request` yet, as Kueue's admission
/// adds the annotations to the Job's pod template.
async fn annotate_pods(client: &kube::Client, namespace: &str, job: &Job, request: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(listed) = pods.list(&ListParams::default()).await else {
        return;
    };
    let uid = job.uid().unwrap_or_default();
    for pod in listed.items {
        let owned = pod.owner_references().iter().any(|owner| owner.uid == uid);
        if !owned || pod.annotations().contains_key(CONSUME) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {CONSUME: request, CLASS: DWS_CLASS}}});
        let _ = pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
    }
}
