//! A run's lock on the cluster: one `coordination.k8s.io` Lease per run
//! (`gembatch-RUN-lock`), taken by the runner before it creates anything and renewed while
//! it runs. The run directory's `flock` does not reach across machines (a bucket mount, a
//! CronJob retry on another node beside a manual `--resume`); this does. A second runner on
//! a held run exits 2 naming the holder; a Lease its dead runner stopped renewing expires
//! after [`LEASE_SECONDS`] and the next runner takes it over. Once the serve Job exists it
//! owns the Lease (see `pods`), so Kubernetes deletes it with the rest.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::KubeError;
use super::objects::{MANAGED_BY, RUN_LABEL, object_name};

/// How long a Lease holds without renewal.
pub const LEASE_SECONDS: i32 = 60;
/// How often the holder renews it: three renewals may fail before it expires.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How long a Lease held by another is waited on: past its expiry, were it renewed last
/// just now.
const EXPIRY_WAIT: Duration = Duration::from_secs(LEASE_SECONDS as u64 + 5);

/// The name of run `run_id`'s Lease.
pub fn lease_name(run_id: &str) -> String {
    format!("{}-lock", object_name(run_id))
}

/// A held Lease, renewed until [`RunLease::release`] (or the drop, which only stops the
/// renewal: the Lease then expires).
pub struct RunLease {
    api: Api<Lease>,
    name: String,
    holder: String,
    _renewing: DropGuard,
}

impl RunLease {
    /// Takes run `run_id`'s Lease in `namespace` as `holder`, or says who holds it. A Lease
    /// held by another is waited on until it expires (a runner just killed, whose retry
    /// this may be, renews it no more), telling `waiting` once; one still renewed then is
    /// refused.
    pub async fn acquire(
        client: &Client,
        namespace: &str,
        run_id: &str,
        holder: &str,
        mut waiting: impl FnMut(&str),
    ) -> Result<RunLease, KubeError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let name = lease_name(run_id);
        let wanted = lease(namespace, &name, run_id, holder, 0);
        match api.create(&PostParams::default(), &wanted).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let give_up = Instant::now() + EXPIRY_WAIT;
                let mut said = false;
                loop {
                    match take_over(&api, namespace, &name, run_id, holder).await {
                        Err(KubeError::RunHeld { holder, .. }) if Instant::now() < give_up => {
                            if !std::mem::replace(&mut said, true) {
                                waiting(&holder);
                            }
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        other => break other?,
                    }
                }
            }
            Err(err) => return Err(KubeError::api("create the run's Lease")(err)),
        }
        let stop = CancellationToken::new();
        let held = Held {
            namespace: namespace.to_string(),
            name: name.clone(),
            run_id: run_id.to_string(),
            holder: holder.to_string(),
        };
        tokio::spawn(renew(api.clone(), held, stop.clone()));
        Ok(RunLease {
            api,
            name,
            holder: holder.to_string(),
            _renewing: stop.drop_guard(),
        })
    }

    /// Stops renewing and deletes the Lease if it is still this runner's.
    pub async fn release(self) {
        if let Ok(current) = self.api.get(&self.name).await
            && holder_of(&current) == Some(self.holder.as_str())
        {
            let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
        }
    }
}

/// The Lease exists: takes it when it expired, else names its holder.
async fn take_over(
    api: &Api<Lease>,
    namespace: &str,
    name: &str,
    run_id: &str,
    holder: &str,
) -> Result<(), KubeError> {
    let current = match api.get(name).await {
        Ok(current) => current,
        // Released between the refused create and this read: free to take.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return api
                .create(
                    &PostParams::default(),
                    &lease(namespace, name, run_id, holder, 0),
                )
                .await
                .map(|_| ())
                .map_err(KubeError::api("create the run's Lease"));
        }
        Err(err) => return Err(KubeError::api("read the run's Lease")(err)),
    };
    let spec = current.spec.clone().unwrap_or_default();
    let held_by = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|time| time.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let expired = renewed.is_none_or(|renewed| {
        renewed.as_second().saturating_add(duration) < Timestamp::now().as_second()
    });
    if !expired && held_by != holder {
        return Err(KubeError::RunHeld {
            run_id: run_id.to_string(),
            holder: held_by,
            renewed: renewed.map_or_else(String::new, |time| time.to_string()),
        });
    }
    let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
    let mut taken = lease(namespace, name, run_id, holder, transitions);
    // Only over the version read: of two runners taking it over at once, one wins. Owned
    // by nothing: the dead runner's Job, which owned it, is about to be deleted.
    taken.metadata.resource_version = current.metadata.resource_version.clone();
    match api.replace(name, &PostParams::default(), &taken).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(KubeError::RunHeld {
            run_id: run_id.to_string(),
            holder: "another runner that took it over first".into(),
            renewed: Timestamp::now().to_string(),
        }),
        Err(err) => Err(KubeError::api("take over the run's Lease")(err)),
    }
}

/// Which Lease a runner holds, for its renewal.
struct Held {
    namespace: String,
    name: String,
    run_id: String,
    holder: String,
}

/// Renews the Lease every [`RENEW_EVERY`] until `stop`; says so once if it was lost.
async fn renew(api: Api<Lease>, held: Held, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        let mut current = match api.get(&held.name).await {
            Ok(current) => current,
            // Collected with a Job that owned it (a booking started over): still this
            // runner's run, so it is made again.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let again = lease(&held.namespace, &held.name, &held.run_id, &held.holder, 0);
                let _ = api.create(&PostParams::default(), &again).await;
                continue;
            }
            // The API server away: the next tick tries again, three before expiry.
            Err(_) => continue,
        };
        if holder_of(&current) != Some(held.holder.as_str()) {
            tracing::warn!(
                lease = held.name,
                holder = holder_of(&current).unwrap_or("nobody"),
                "another runner took over this run's Lease"
            );
            return;
        }
        if let Some(spec) = current.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let _ = api
            .replace(&held.name, &PostParams::default(), &current)
            .await;
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// The Lease `name` of run `run_id`, held by `holder` from now.
fn lease(namespace: &str, name: &str, run_id: &str, holder: &str, transitions: i32) -> Lease {
    let now = MicroTime(Timestamp::now());
    let mut lease = Lease {
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
        ..Lease::default()
    };
    lease.metadata.name = Some(name.to_string());
    lease.metadata.namespace = Some(namespace.to_string());
    lease.metadata.labels = Some(
        [
            (RUN_LABEL.to_string(), run_id.to_string()),
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ]
        .into(),
    );
    lease
}

/// Who this runner is, for a Lease and for the runner it refuses: its pod (or host) and
/// process.
pub fn holder_identity() -> String {
    format!(
        "{} pid {}",
        crate::common::host::host_name().unwrap_or_else(|| "unnamed host".into()),
        std::process::id()
    )
}
