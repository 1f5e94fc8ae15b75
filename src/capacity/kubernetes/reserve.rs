//! Reserving an atomic block of GPUs: the PodTemplate, then the ProvisioningRequest (in the
//! version the cluster serves), the template then owned by the request, then a watch on the
//! request's conditions under an overall timeout. A `Failed` request is replaced by a new one
//! after a backoff, up to a limit.

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::PodTemplate;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use super::KubeError;
use super::objects::ReservePlan;
use super::owners::{make_owned, owner};
use super::request::{ConditionType, ProvisioningRequest};

/// The API group of ProvisioningRequests.
pub const GROUP: &str = "autoscaling.x-k8s.io";

/// How `Failed` requests are retried (Kueue's defaults: 3 tries, 60 s doubling to 1800 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailedRetries {
    /// Requests in all, the first included.
    pub attempts: u32,
    /// Wait before the second; doubles each time.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Default for FailedRetries {
    fn default() -> FailedRetries {
        FailedRetries {
            attempts: 3,
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(1800),
        }
    }
}

/// What the reservation is doing, for the progress line.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// An object was created.
    Created {
        /// `PodTemplate` or `ProvisioningRequest`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The request's newest condition changed.
    Condition {
        /// Its `type`.
        kind: String,
        /// `True`, `False` or `Unknown`.
        status: String,
        /// Its reason.
        reason: String,
        /// Its message.
        message: String,
        /// Since the request was created.
        waited: Duration,
    },
    /// The booking expired before every serve pod was scheduled: everything is deleted and
    /// the reservation starts over.
    StartingOver {
        /// The expired request.
        request: String,
        /// The reservation about to start (2 for the first restart).
        booking: u32,
        /// Reservations allowed in all.
        of: u32,
    },
    /// The pods are ready and reached through port-forwards (the runner is outside the
    /// cluster).
    PortForwarding {
        /// How many pods.
        pods: usize,
    },
    /// The watch on the request broke; it resumes after a backoff.
    WatchBroken {
        /// What broke it.
        why: String,
    },
    /// After a failure, the run's objects could not all be deleted (the API server down,
    /// say): `gembatch release` removes them later.
    CleanupFailed {
        /// Why.
        why: String,
        /// The run.
        run_id: String,
        /// Its namespace.
        namespace: String,
    },
    /// The serve Job was submitted, suspended, to a Kueue LocalQueue.
    Queued {
        /// The Job.
        job: String,
        /// The LocalQueue.
        queue: String,
    },
    /// Kueue admitted the serve Job: its capacity is provisioned.
    Admitted {
        /// The Job.
        job: String,
        /// Since it was submitted.
        waited: Duration,
    },
    /// The API server dropped the Job's `suspend` (before Kubernetes 1.22): Kueue cannot
    /// hold the Job, whose pods start at once.
    NotHeld {
        /// The Job.
        job: String,
    },
    /// The request failed; a new one follows after `after`.
    Retrying {
        /// The failed request's reason and message.
        why: String,
        /// The backoff.
        after: Duration,
    },
}

/// One line per step: objects created, each new condition with the time waited, retries.
impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            Progress::Created { kind, name } => format!("created {kind} {name}"),
            Progress::Condition {
                kind,
                status,
                reason,
                message,
                waited,
            } => format!(
                "[{:>6}s] {kind}={status} {reason}: {message}",
                waited.as_secs()
            ),
            Progress::StartingOver {
                request,
                booking,
                of,
            } => format!(
                "the booking of {request} expired before every pod was scheduled: deleted \
                 everything, reserving again ({booking} of {of})"
            ),
            Progress::PortForwarding { pods } => format!(
                "reaching the {pods} serve pod(s) through API-server port-forwards \
                 (capacity.kubernetes.pod_access: the runner is outside the cluster)"
            ),
            Progress::CleanupFailed {
                why,
                run_id,
                namespace,
            } => format!(
                "could not delete everything of the run ({why}); `gembatch release {run_id} \
                 --namespace {namespace}` removes what is left"
            ),
            Progress::WatchBroken { why } => {
                format!("the watch on the ProvisioningRequest broke ({why}); resuming")
            }
            Progress::Queued { job, queue } => format!(
                "submitted Job {job}, suspended, to Kueue LocalQueue {queue}: Kueue's \
                 ProvisioningRequest check reserves the GPUs, then admits it"
            ),
            Progress::Admitted { job, waited } => format!(
                "[{:>6}s] Kueue admitted Job {job}; waiting for its pods",
                waited.as_secs()
            ),
            Progress::NotHeld { job } => format!(
                "the API server dropped `suspend` from Job {job} (Kubernetes before 1.22): \
                 Kueue cannot hold it back, its pods start at once"
            ),
            Progress::Retrying { why, after } => {
                format!("request failed ({why}); a new one in {} s", after.as_secs())
            }
        };
        f.write_str(&line)
    }
}

/// A provisioned reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    /// The ProvisioningRequest the pods consume.
    pub request: String,
    /// Its API version (`autoscaling.x-k8s.io/v1` or `.../v1beta1`).
    pub api_version: String,
    /// Its class, which the consuming pods name too.
    pub class: String,
}

/// The ProvisioningRequest API as this cluster serves it: `v1`, else `v1beta1`.
pub async fn request_api(
    client: &Client,
    namespace: &str,
) -> Result<Api<DynamicObject>, KubeError> {
    let resource = request_resource(client).await?;
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// The request API at the version a reservation was made with (no discovery).
pub fn request_api_at(client: &Client, namespace: &str, api_version: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or((GROUP, "v1"));
    Api::namespaced_with(
        client.clone(),
        namespace,
        &request_resource_at(group, version),
    )
}

/// The ProvisioningRequest resource at `group/version`.
fn request_resource_at(group: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, "ProvisioningRequest"),
        "provisioningrequests",
    )
}

/// The served ProvisioningRequest resource (`v1` preferred).
pub async fn request_resource(client: &Client) -> Result<ApiResource, KubeError> {
    let group = kube::discovery::group(client, GROUP)
        .await
        .map_err(|err| match err {
            kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_)) => {
                KubeError::NoProvisioningRequests
            }
            // The API server did not answer: whether the API exists is unknown.
            other => KubeError::api("discover the ProvisioningRequest API")(other),
        })?;
    let version = if group.versions().any(|v| v == "v1") {
        "v1"
    } else if group.versions().any(|v| v == "v1beta1") {
        "v1beta1"
    } else {
        return Err(KubeError::NoProvisioningRequests);
    };
    Ok(request_resource_at(GROUP, version))
}

/// Creates the objects and waits until the request is provisioned. On an error the objects
/// stay: the caller releases them (by the run's label), as it must on Ctrl-C too.
pub async fn reserve(
    client: &Client,
    plan: &ReservePlan,
    retries: FailedRetries,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Reserved, KubeError> {
    let requests = request_api(client, &plan.namespace).await?;
    let templates: Api<PodTemplate> = Api::namespaced(client.clone(), &plan.namespace);
    let template = templates
        .create(&PostParams::default(), &plan.pod_template())
        .await
        .map_err(KubeError::api("create the PodTemplate"))?;
    progress(Progress::Created {
        kind: "PodTemplate",
        name: template.name_any(),
    });
    let started = Instant::now();
    let mut previous: Option<String> = None;
    for attempt in 0..retries.attempts.max(1) {
        let request = create_request(&requests, plan, attempt).await?;
        progress(Progress::Created {
            kind: "ProvisioningRequest",
            name: request.name_any(),
        });
        own_template(&templates, &template.name_any(), &request).await?;
        if let Some(old) = previous.take() {
            // Only now: deleting the failed request while it owned the template would have
            // taken the template with it.
            let _ = requests.delete(&old, &DeleteParams::background()).await;
        }
        let remaining = plan.timeout.saturating_sub(started.elapsed());
        let outcome = wait(&requests, &request.name_any(), remaining, progress)
            .await
            .map_err(|err| match err {
                // The whole wait, failed requests included, is what the user set a limit on.
                KubeError::Timeout { last, .. } => KubeError::Timeout {
                    waited: started.elapsed(),
                    last,
                },
                other => other,
            })?;
        match outcome {
            Waited::Provisioned => {
                return Ok(Reserved {
                    request: request.name_any(),
                    api_version: request
                        .types
                        .map_or_else(String::new, |types| types.api_version),
                    class: plan.class.clone(),
                });
            }
            Waited::Failed(why) if attempt + 1 < retries.attempts => {
                let after = retries
                    .backoff
                    .saturating_mul(1 << attempt.min(16))
                    .min(retries.max_backoff);
                progress(Progress::Retrying {
                    why: why.clone(),
                    after,
                });
                if started.elapsed() + after >= plan.timeout {
                    return Err(KubeError::Timeout {
                        waited: started.elapsed(),
                        last: why,
                    });
                }
                tokio::time::sleep(after).await;
                previous = Some(request.name_any());
            }
            Waited::Failed(why) => {
                return Err(KubeError::Failed {
                    attempts: attempt + 1,
                    why,
                });
            }
        }
    }
    unreachable!("the last attempt returns")
}

async fn create_request(
    requests: &Api<DynamicObject>,
    plan: &ReservePlan,
    attempt: u32,
) -> Result<DynamicObject, KubeError> {
    let typed = plan.provisioning_request(attempt);
    let mut object: DynamicObject =
        serde_json::from_value(serde_json::to_value(&typed).expect("a request always serializes"))
            .expect("a request is a dynamic object");
    let resource = requests.resource_url().to_string();
    let version = if resource.contains("/v1beta1/") {
        "v1beta1"
    } else {
        "v1"
    };
    object.types = Some(TypeMeta {
        api_version: format!("{GROUP}/{version}"),
        kind: "ProvisioningRequest".into(),
    });
    requests
        .create(&PostParams::default(), &object)
        .await
        .map_err(KubeError::api("create the ProvisioningRequest"))
}

/// Makes the request own the template, so deleting the request deletes the template.
async fn own_template(
    templates: &Api<PodTemplate>,
    template: &str,
    request: &DynamicObject,
) -> Result<(), KubeError> {
    let types = request.types.clone().unwrap_or_default();
    let owner = owner(
        &types.api_version,
        &types.kind,
        &request.name_any(),
        &request.uid().unwrap_or_default(),
    );
    make_owned(
        templates,
        template,
        &[owner],
        "make the PodTemplate owned by its request",
    )
    .await
}

enum Waited {
    Provisioned,
    Failed(String),
}

/// Watches the request until it is provisioned or failed, reporting each new condition. A
/// broken watch (an API server restarting, a network blip during a wait of hours) is said
/// and resumed with backoff; only the overall timeout ends the wait early.
async fn wait(
    requests: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Waited, KubeError> {
    let started = Instant::now();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(requests.clone(), config).default_backoff();
    tokio::pin!(events);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut last_shown = None;
    let mut last_words = String::from("no condition yet");
    // Whether a relist (after the watch broke) has shown the request again.
    let mut relisted_it = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut deadline => {
                return Err(KubeError::Timeout { waited: started.elapsed(), last: last_words });
            }
        };
        let object = match event {
            Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                relisted_it = true;
                object
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                return Err(KubeError::Deleted(name.to_string()));
            }
            Some(Ok(watcher::Event::Init)) => {
                relisted_it = false;
                continue;
            }
            Some(Ok(watcher::Event::InitDone)) if !relisted_it => {
                return Err(KubeError::Deleted(name.to_string()));
            }
            Some(Ok(watcher::Event::InitDone)) => continue,
            Some(Err(err)) => {
                progress(Progress::WatchBroken {
                    why: err.to_string(),
                });
                continue;
            }
            None => return Err(KubeError::Watch("the watch ended".into())),
        };
        let Some(request) = typed(&object) else {
            continue;
        };
        show(
            &request,
            started,
            &mut last_shown,
            &mut last_words,
            progress,
        );
        if request.is(ConditionType::Provisioned) {
            return Ok(Waited::Provisioned);
        }
        if request.is(ConditionType::Failed) {
            let why = request
                .condition(ConditionType::Failed)
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default();
            return Ok(Waited::Failed(why));
        }
    }
}

pub(super) fn typed(object: &DynamicObject) -> Option<ProvisioningRequest> {
    serde_json::to_value(object)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
}

/// Reports the newest condition when it differs from the last one shown.
fn show(
    request: &ProvisioningRequest,
    started: Instant,
    last_shown: &mut Option<(String, String, String)>,
    last_words: &mut String,
    progress: &mut (dyn FnMut(Progress) + Send),
) {
    let Some(newest) = request.status.as_ref().and_then(|status| {
        status
            .conditions
            .iter()
            .max_by_key(|c| c.last_transition_time.0)
    }) else {
        return;
    };
    let key = (
        newest.type_.clone(),
        newest.status.clone(),
        newest.reason.clone(),
    );
    if last_shown.as_ref() == Some(&key) {
        return;
    }
    *last_words = format!(
        "{}={} ({}: {})",
        newest.type_, newest.status, newest.reason, newest.message
    );
    progress(Progress::Condition {
        kind: newest.type_.clone(),
        status: newest.status.clone(),
        reason: newest.reason.clone(),
        message: newest.message.clone(),
        waited: started.elapsed(),
    });
    *last_shown = Some(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_changed_and_how_long_it_took() {
        let line = Progress::Condition {
            kind: "Provisioned".into(),
            status: "False".into(),
            reason: "ResourcePoolExhausted".into(),
            message: "no L4 in us-east1-b".into(),
            waited: Duration::from_secs(75),
        }
        .to_string();
        assert_eq!(
            line,
            "[    75s] Provisioned=False ResourcePoolExhausted: no L4 in us-east1-b"
        );
    }
}
