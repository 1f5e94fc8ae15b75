//! A run's lock on the cluster: one `coordination.k8s.io` Lease per run
//! (`gembatch-RUN-lock`), taken by the runner before it creates anything and renewed while
//! it runs. The run directory's `flock` does not reach across machines (a bucket mount, a
//! CronJob retry on another node beside a manual `--resume`); this does. A second runner on
//! a held run exits 2 naming the holder; a Lease its dead runner stopped renewing expires
//! after [`LEASE_SECONDS`] and the next runner takes it over. Once the serve Job exists it
//! owns the Lease (see `pods`), so Kubernetes deletes it with the rest; a run abandoned
//! before that, outside a cluster, is swept by the next runner (see `abandoned`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::KubeError;
use super::objects::{RUN_LABEL, object_name, run_labels};

/// How long a Lease holds without renewal.
pub const LEASE_SECONDS: i32 = 60;
/// How often the holder renews it: three renewals may fail before it expires.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How long a Lease held by another is waited on: past its expiry, were it renewed last
/// just now.
pub const EXPIRY_WAIT: Duration = Duration::from_secs(LEASE_SECONDS as u64 + 10);

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

/// Who wants which run's Lease.
#[derive(Clone)]
pub struct Claim {
    /// The namespace of the run's objects.
    pub namespace: String,
    /// The run.
    pub run_id: String,
    /// Who asks ([`holder_identity`]).
    pub holder: String,
    /// The runner's own Job, owner of the Lease when there is one (see `owners`).
    pub anchor: Option<OwnerReference>,
}

impl Claim {
    fn name(&self) -> String {
        lease_name(&self.run_id)
    }

    /// The Lease, held by this claim's holder from now, its `transitions`-th holder.
    fn lease(&self, transitions: i32) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        lease.metadata.name = Some(self.name());
        lease.metadata.namespace = Some(self.namespace.clone());
        lease.metadata.owner_references = self.anchor.clone().map(|anchor| vec![anchor]);
        lease.metadata.labels = Some(run_labels(&self.run_id));
        lease
    }
}

impl RunLease {
    /// Takes the claimed run's Lease, or says who holds it. A Lease held by another is
    /// waited on until it expires (a runner just killed, whose retry this may be, renews
    /// it no more), telling `waiting` once; one still renewed then is refused.
    pub async fn acquire(
        client: &Client,
        claim: Claim,
        mut waiting: impl FnMut(&str),
    ) -> Result<RunLease, KubeError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &claim.namespace);
        match api.create(&PostParams::default(), &claim.lease(0)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let give_up = Instant::now() + EXPIRY_WAIT;
                let mut said = false;
                let mut sighting = None;
                loop {
                    match take_over(&api, &claim, &mut sighting, IfGone::Create).await {
                        Err(KubeError::RunHeld { holder, .. }) if Instant::now() < give_up => {
                            if !std::mem::replace(&mut said, true) {
                                waiting(&holder);
                            }
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        other => break other.map(|_| ())?,
                    }
                }
            }
            Err(err) => return Err(KubeError::api("create the run's Lease")(err)),
        }
        let stop = CancellationToken::new();
        let (name, holder) = (claim.name(), claim.holder.clone());
        tokio::spawn(renew(api.clone(), claim, stop.clone()));
        Ok(RunLease {
            api,
            name,
            holder,
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

/// Another runner's Lease as this runner first saw it unchanged: its version, and when on
/// this runner's own clock. Expiry is judged by that clock alone, as client-go's leader
/// election does: the holder's `renewTime` comes from its clock, which may be off by more
/// than the Lease lasts.
struct Sighting {
    version: Option<String>,
    since: Instant,
}

/// What to do when the Lease to take over is gone.
#[derive(Clone, Copy)]
enum IfGone {
    /// Create it: the runner wants the run.
    Create,
    /// Nothing: a sweeper wanted it only to delete it.
    Leave,
}

/// Takes the Lease when it has not changed for its duration since `sighting` (or is held by
/// nobody, or by this holder), else names its holder; when it is gone, does what `if_gone`
/// says. True when taken.
async fn take_over(
    api: &Api<Lease>,
    claim: &Claim,
    sighting: &mut Option<Sighting>,
    if_gone: IfGone,
) -> Result<bool, KubeError> {
    let name = claim.name();
    let current = match api.get(&name).await {
        Ok(current) => current,
        // Released between the refused create and this read: free to take.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return match if_gone {
                IfGone::Create => api
                    .create(&PostParams::default(), &claim.lease(0))
                    .await
                    .map(|_| true)
                    .map_err(KubeError::api("create the run's Lease")),
                IfGone::Leave => Ok(false),
            };
        }
        Err(err) => return Err(KubeError::api("read the run's Lease")(err)),
    };
    let spec = current.spec.clone().unwrap_or_default();
    let held_by = spec.holder_identity.clone().unwrap_or_default();
    let duration =
        Duration::from_secs(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(0) as u64);
    let version = current.metadata.resource_version.clone();
    let unchanged_since = match sighting {
        Some(seen) if seen.version == version => seen.since,
        _ => {
            sighting
                .insert(Sighting {
                    version,
                    since: Instant::now(),
                })
                .since
        }
    };
    let expired = held_by.is_empty() || unchanged_since.elapsed() >= duration;
    if !expired && held_by != claim.holder {
        return Err(KubeError::RunHeld {
            run_id: claim.run_id.clone(),
            holder: held_by,
            renewed: spec
                .renew_time
                .map_or_else(String::new, |time| time.0.to_string()),
        });
    }
    let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
    let mut taken = claim.lease(transitions);
    // Only over the version read: of two runners taking it over at once, one wins.
    taken.metadata.resource_version = current.metadata.resource_version.clone();
    match api.replace(&name, &PostParams::default(), &taken).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(KubeError::RunHeld {
            run_id: claim.run_id.clone(),
            holder: "another runner that took it over first".into(),
            renewed: Timestamp::now().to_string(),
        }),
        Err(err) => Err(KubeError::api("take over the run's Lease")(err)),
    }
}

/// Renews the Lease every [`RENEW_EVERY`] until `stop`; says so once if it was lost.
async fn renew(api: Api<Lease>, claim: Claim, stop: CancellationToken) {
    let name = claim.name();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        let mut current = match api.get(&name).await {
            Ok(current) => current,
            // Collected with a Job that owned it (a booking started over): still this
            // runner's run, so it is made again.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let _ = api.create(&PostParams::default(), &claim.lease(0)).await;
                continue;
            }
            // The API server away: the next tick tries again, three before expiry.
            Err(_) => continue,
        };
        if holder_of(&current) != Some(claim.holder.as_str()) {
            tracing::warn!(
                lease = name,
                holder = holder_of(&current).unwrap_or("nobody"),
                "another runner took over this run's Lease"
            );
            return;
        }
        if let Some(spec) = current.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        let _ = api.replace(&name, &PostParams::default(), &current).await;
    }
}

/// Another run's Lease as a sweeper first saw it (see `abandoned`).
pub struct Observed {
    /// The run.
    pub run_id: String,
    sighting: Sighting,
}

/// Every run's Lease in `namespace` (but `except`'s), as seen now.
pub async fn observe_leases(
    client: &Client,
    namespace: &str,
    except: Option<&str>,
) -> Result<Vec<Observed>, KubeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let leases = api
        .list(&ListParams::default().labels(RUN_LABEL))
        .await
        .map_err(KubeError::api("list the runs' Leases"))?;
    let since = Instant::now();
    Ok(leases
        .into_iter()
        .filter_map(|lease| {
            let run_id = lease.metadata.labels.as_ref()?.get(RUN_LABEL)?.clone();
            (Some(run_id.as_str()) != except).then_some(Observed {
                run_id,
                sighting: Sighting {
                    version: lease.metadata.resource_version,
                    since,
                },
            })
        })
        .collect())
}

/// Takes `observed`'s Lease for `holder` if it has not changed for its duration since it
/// was seen (its runner is gone): true when taken, false when its runner still renews it
/// or it is gone (its runner finished, or another sweeper took it first).
pub async fn take_if_abandoned(
    client: &Client,
    namespace: &str,
    observed: Observed,
    holder: &str,
) -> Result<bool, KubeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let claim = Claim {
        namespace: namespace.to_string(),
        run_id: observed.run_id,
        holder: holder.to_string(),
        anchor: None,
    };
    match take_over(&api, &claim, &mut Some(observed.sighting), IfGone::Leave).await {
        Ok(taken) => Ok(taken),
        Err(KubeError::RunHeld { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// Who this runner is, for a Lease and for the runner it refuses.
pub fn holder_identity() -> String {
    crate::common::host::this_process()
}
