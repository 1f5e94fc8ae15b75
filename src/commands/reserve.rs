//! `gembatch reserve` and `gembatch release`: the capacity reservation on its own, as the
//! seed's `capacity_reservation.yaml` flow, with live conditions and nothing left behind on
//! failure or Ctrl-C.

use tokio_util::sync::CancellationToken;

use crate::capacity::kubernetes::abandoned::sweep_abandoned;
use crate::capacity::kubernetes::objects::{PodFit, ReservePlan};
use crate::capacity::kubernetes::release::{Scope, release, release_after_failure};
use crate::capacity::kubernetes::reserve::{FailedRetries, Progress, reserve};
use crate::capacity::kubernetes::run_lease::{EXPIRY_WAIT, holder_identity};
use crate::capacity::kubernetes::{self, KubeError, cluster};
use crate::cli::{ReleaseArgs, ReserveArgs};
use crate::common::say;
use crate::results::run_id::new_run_id;
use crate::shutdown::cancel_on_signals;

/// Reserves, or prints what it would create.
pub fn run_reserve(args: ReserveArgs) -> anyhow::Result<()> {
    cluster::use_context(args.cluster.context);
    let runtime = runtime()?;
    let plan = ReservePlan {
        run_id: args.run_id.unwrap_or_else(|| new_run_id("reserve")),
        namespace: runtime.block_on(cluster::namespace(args.namespace.as_deref()))?,
        gpus: args.gpus,
        class: args.class,
        max_run_duration: args.max_run_duration,
        timeout: args.timeout,
        image: args.image,
        accelerator: args.accelerator,
        booking: 1,
        anchor: kubernetes::owners::runner_job(),
        queue: None,
        fit: PodFit {
            node_pool: args.node_pool,
            cpu: args.cpu,
            memory: args.memory,
        },
    };
    plan.check().map_err(KubeError::Plan)?;
    if args.dry_run {
        print!("{}", plan.dry_run_yaml()?);
        return Ok(());
    }
    let retries = FailedRetries {
        attempts: args.failed_attempts.max(1),
        backoff: args.retry_backoff,
        ..FailedRetries::default()
    };
    runtime.block_on(async {
        let client = kubernetes::client().await?;
        let cancel = CancellationToken::new();
        cancel_on_signals(cancel.clone());
        let mut show = |progress: Progress| say::info(progress);
        let result = tokio::select! {
            result = reserve(&client, &plan, retries, &mut show) => result.map_err(anyhow::Error::from),
            () = cancel.cancelled() => Err(anyhow::anyhow!("interrupted")),
        };
        match result {
            Ok(reserved) => {
                println!(
                    "provisioned: ProvisioningRequest {}/{} ({}) for {} GPU(s); the booking holds for 10 minutes: \
                     start the consuming pods now; `gembatch release {} --namespace {}` gives it back",
                    plan.namespace, reserved.request, reserved.api_version, plan.gpus, plan.run_id, plan.namespace
                );
                Ok(())
            }
            Err(err) => {
                // The reservation's error is the one to report, whatever the cleanup does.
                let released =
                    release_after_failure(&client, &plan.run_id, &plan.namespace, &mut show).await;
                if let Some(deleted) = released {
                    say::info(format!("released: {}", released_words(&deleted)));
                }
                Err(err)
            }
        }
    })
}

/// Deletes a run's objects, every abandoned run's, or every object gembatch created.
pub fn run_release(args: ReleaseArgs) -> anyhow::Result<()> {
    cluster::use_context(args.cluster.context);
    runtime()?.block_on(async {
        let client = kubernetes::client().await?;
        let namespace = cluster::namespace(args.namespace.as_deref()).await?;
        if args.abandoned {
            say::info(format!(
                "watching the runs' Leases in {namespace} for {} s",
                EXPIRY_WAIT.as_secs()
            ));
            let holder = holder_identity();
            let deleted = sweep_abandoned(&client, &namespace, None, &holder).await?;
            println!("released: {}", released_words(&deleted));
            return Ok(());
        }
        let scope = match args.run_id {
            Some(run_id) if !args.all_mine => Scope::Run { run_id, namespace },
            _ => Scope::AllMine,
        };
        let deleted = release(&client, &scope).await?;
        println!("released: {}", released_words(&deleted));
        Ok::<_, anyhow::Error>(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn released_words(deleted: &[String]) -> String {
    if deleted.is_empty() {
        "nothing was left".into()
    } else {
        deleted.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_release_says_so() {
        assert_eq!(released_words(&[]), "nothing was left");
    }
}
