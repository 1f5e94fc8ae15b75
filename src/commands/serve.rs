//! `gembatch serve`: load the model, start the engine, serve HTTP until SIGTERM or
//! Ctrl-C, drain, exit 0.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::common::say;
use crate::model::ModelError;
use crate::model::device::device_name;
use crate::server::api::Limits;
use crate::server::engine::{self, EngineConfig};
use crate::server::long_prompts::LongPrompts;
use crate::server::metrics::Metrics;
use crate::server::runner_watch::RunnerWatch;
use crate::server::step_log::StepLog;
use crate::server::{self, AppState};
use crate::shutdown;

/// Runs the subcommand.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    for (name, value) in [
        ("--max-batch", args.max_batch),
        ("--max-batch-tokens", args.max_batch_tokens),
        ("--max-waiting", args.max_waiting),
    ] {
        if value == 0 {
            return Err(ModelError::InvalidParameter {
                name: "serve flag",
                reason: format!("{name} must be at least 1"),
            }
            .into());
        }
    }
    if args.max_batch_tokens < args.max_batch {
        return Err(ModelError::InvalidParameter {
            name: "serve flag",
            reason: format!(
                "--max-batch-tokens {} must be at least --max-batch {}: every decoding \
                 sequence needs one token per step",
                args.max_batch_tokens, args.max_batch
            ),
        }
        .into());
    }
    // Before the model loads: a mistake in the path fails at once.
    let step_log = args
        .step_log
        .as_deref()
        .map(|path| {
            StepLog::create(path).map_err(|err| ModelError::InvalidParameter {
                name: "serve flag",
                reason: format!(
                    "--step-log {}: cannot create the file ({err}); give a path in a \
                     writable directory",
                    path.display()
                ),
            })
        })
        .transpose()?;
    let loaded = Arc::new(args.model.load(|line| say::info(line))?);
    let served_model = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_model_name(&loaded.path));
    let metrics = Arc::new(Metrics::new(&served_model));
    let config = EngineConfig {
        max_batch: args.max_batch,
        max_batch_tokens: args.max_batch_tokens,
        max_waiting: args.max_waiting,
    };
    let engine = engine::start(loaded.clone(), config, metrics.clone(), step_log);
    let replica = server::replica_name();
    let state = Arc::new(AppState {
        limits: Limits {
            context: loaded.model.context(),
        },
        model: loaded,
        engine,
        metrics,
        served_model,
        api_key: args.api_key.clone().filter(|key| !key.is_empty()),
        body_limit: args.max_body_bytes,
        replica: HeaderValue::from_str(&replica).unwrap_or(HeaderValue::from_static("gembatch")),
        // Long prompts one at a time, at the lowest priority: the model keeps the cores.
        long_prompts: LongPrompts::start()?,
        runner_watch: args.exit_without_runner.map(|timeout| {
            let first = args.first_heartbeat_within.unwrap_or(timeout);
            Arc::new(RunnerWatch::new(timeout, first))
        }),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        // Also where the model runs: the one start-up line a pod's log always shows.
        println!(
            "listening on http://{address} (model `{}` on {} with {} weights, replica {replica})",
            state.served_model,
            device_name(state.model.model.device()),
            state.model.weights,
        );
        std::io::stdout().flush()?;
        let shutdown = CancellationToken::new();
        shutdown::cancel_on_signals(shutdown.clone());
        if let (Some(watch), Some(timeout)) = (state.runner_watch.clone(), args.exit_without_runner) {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                watch.until_silent().await;
                say::warning(format!(
                    "gembatch serve: no heartbeat from the batch runner for {:.0} s; shutting down so the GPU is released",
                    timeout.as_secs_f64()
                ));
                shutdown.cancel();
            });
        }
        server::serve(
            listener,
            state,
            shutdown,
            Duration::from_secs(args.drain_seconds),
        )
        .await?;
        say::info("gembatch serve: drained, exiting");
        Ok(())
    })
}

/// The name a model is served under by default: its file name without `.gguf`.
fn default_model_name(path: &std::path::Path) -> String {
    let name = path.file_name().map_or_else(
        || "gemma".to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}
