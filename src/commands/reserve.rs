//! `gembatch reserve` and `gembatch release`: the capacity reservation on its own, as the
//! seed's `capacity_reservation.yaml` flow, with live conditions and nothing left behind on
//! failure or Ctrl-C.

use tokio_util::sync::CancellationToken;

use crate::capacity::kubernetes::objects::ReservePlan;
use crate::capacity::kubernetes::release::{Scope, release};
use crate::capacity::kubernetes::reserve::{FailedRetries, Progress, reserve};
use crate::capacity::kubernetes::{self, KubeError};
use crate::cli::{ReleaseArgs, ReserveArgs};
use crate::results::run_id::new_run_id;
use crate::shutdown::cancel_on_signals;

/// Reserves, or prints what it would create.
pub fn run_reserve(args: ReserveArgs) -> anyhow::Result<()> {
    let plan = ReservePlan {
        run_id: args.run_id.unwrap_or_else(|| new_run_id("reserve")),
        namespace: args.namespace,
        gpus: args.gpus,
        class: args.class,
        max_run_duration: args.max_run_duration,
        timeout: args.timeout,
        image: args.image,
        accelerator: args.accelerator,
        booking: 1,
    };
    plan.check().map_err(KubeError::Plan)?;
    if args.dry_run {
        print!("{}", dry_run_yaml(&plan)?);
        return Ok(());
    }
    let retries = FailedRetries {
        attempts: args.failed_attempts.max(1),
        backoff: args.retry_backoff,
        ..FailedRetries::default()
    };
    runtime()?.block_on(async {
        let client = kubernetes::client().await?;
        let cancel = CancellationToken::new();
        cancel_on_signals(cancel.clone());
        let mut show = |progress: Progress| eprintln!("{}", progress_line(&progress));
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
                let scope = Scope::Run {
                    run_id: plan.run_id.clone(),
                    namespace: plan.namespace.clone(),
                };
                // The reservation's error is the one to report, whatever the cleanup does.
                match release(&client, &scope).await {
                    Ok(deleted) => eprintln!("released: {}", released_words(&deleted)),
                    Err(cleanup) => show(Progress::CleanupFailed {
                        why: cleanup.to_string(),
                        run_id: plan.run_id.clone(),
                        namespace: plan.namespace.clone(),
                    }),
                }
                Err(err)
            }
        }
    })
}

/// Deletes a run's objects, or every object gembatch created.
pub fn run_release(args: ReleaseArgs) -> anyhow::Result<()> {
    let scope = match args.run_id {
        Some(run_id) if !args.all_mine => Scope::Run {
            run_id,
            namespace: args.namespace,
        },
        _ => Scope::AllMine,
    };
    runtime()?.block_on(async {
        let client = kubernetes::client().await?;
        let deleted = release(&client, &scope).await?;
        println!("released: {}", released_words(&deleted));
        Ok::<_, anyhow::Error>(())
    })
}

/// The reservation's objects as one YAML stream, in the order they are created.
pub fn dry_run_yaml(plan: &ReservePlan) -> anyhow::Result<String> {
    let template = serde_saphyr::to_string(&plan.pod_template())?;
    let request = serde_saphyr::to_string(&plan.provisioning_request(0))?;
    Ok(format!("---\n{template}---\n{request}"))
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

/// One line per step: objects created, each new condition with the time waited, retries.
pub(super) fn progress_line(progress: &Progress) -> String {
    match progress {
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
        Progress::Retrying { why, after } => {
            format!("request failed ({why}); a new one in {} s", after.as_secs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_changed_and_how_long_it_took() {
        assert_eq!(released_words(&[]), "nothing was left");
        let line = progress_line(&Progress::Condition {
            kind: "Provisioned".into(),
            status: "False".into(),
            reason: "ResourcePoolExhausted".into(),
            message: "no L4 in us-east1-b".into(),
            waited: std::time::Duration::from_secs(75),
        });
        assert_eq!(
            line,
            "[    75s] Provisioned=False ResourcePoolExhausted: no L4 in us-east1-b"
        );
    }
}
