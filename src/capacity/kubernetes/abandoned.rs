//! Sweeping runs whose runner died outside a cluster. A runner in a cluster anchors its
//! objects to its own Job (see `owners`), so Kubernetes deletes them with it; a runner on a
//! laptop or a CI machine has no such anchor, and one killed while it waits for capacity
//! leaves its ProvisioningRequest queued (capacity it books when it arrives, for nobody),
//! its PodTemplate and its Lease. Every run's Lease is renewed while its runner lives, so
//! the next gembatch runner in the namespace (in the background) or `gembatch release
//! --abandoned` takes over each Lease nobody renewed for its whole duration, as seen on its
//! own clock, and deletes that run's objects with it.

use kube::Client;

use super::KubeError;
use super::release::{Scope, release};
use super::run_lease::{EXPIRY_WAIT, observe_leases, take_if_abandoned};

/// Deletes the objects of every run in `namespace` (but `except`, the caller's own) whose
/// Lease is not renewed over [`EXPIRY_WAIT`] from now (so this takes that long); `holder`
/// takes each such Lease first, so no runner of that run starts while its objects go.
/// Returns what was deleted.
pub async fn sweep_abandoned(
    client: &Client,
    namespace: &str,
    except: Option<&str>,
    holder: &str,
) -> Result<Vec<String>, KubeError> {
    let observed = observe_leases(client, namespace, except).await?;
    if observed.is_empty() {
        return Ok(Vec::new());
    }
    tokio::time::sleep(EXPIRY_WAIT).await;
    let mut deleted = Vec::new();
    for run in observed {
        let run_id = run.run_id.clone();
        if take_if_abandoned(client, namespace, run, holder).await? {
            let scope = Scope::Run {
                run_id,
                namespace: namespace.to_string(),
            };
            deleted.extend(release(client, &scope).await?);
        }
    }
    Ok(deleted)
}
