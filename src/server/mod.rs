//! `gembatch serve`: the Gemma pod. An OpenAI-compatible HTTP API (axum) in front of the
//! continuous-batching engine, with health, readiness and Prometheus metrics, an optional
//! bearer token, a bounded queue, and a drain on shutdown.
//!
//! - `api`: request bodies, parsed and validated into a `GenerationSpec`.
//! - `chat_template`: chat messages to Gemma's prompt text.
//! - `connections`: accepting connections, bounded in number and in time to send a head.
//! - `engine` / `sequence` / `stop`: the scheduler thread and its per-request state.
//! - `handlers` / `responses` / `token_logprobs`: routes and the OpenAI response shapes.
//! - `error`: every failure and its HTTP mapping, in one place.
//! - `metrics`: the Prometheus metrics; `step_log`: `--step-log`, a line per engine step.
//! - `runner_watch`: a batch pod's watch on its runner's heartbeat.

pub mod api;
pub mod chat_template;
pub mod connections;
pub mod engine;
pub mod error;
mod handlers;
pub mod long_prompts;
pub mod metrics;
pub mod responses;
pub mod runner_watch;
mod sequence;
pub mod step_log;
pub mod stop;
pub mod token_logprobs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use api::Limits;
use engine::EngineHandle;
use error::ApiError;
use metrics::Metrics;

use crate::model::LoadedModel;

pub use crate::common::REPLICA_HEADER;

/// Everything the routes share.
pub struct AppState {
    pub model: Arc<LoadedModel>,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// The model name clients address (`model` field) and `/v1/models` lists.
    pub served_model: String,
    pub limits: Limits,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// This replica's name, sent in [`REPLICA_HEADER`].
    pub replica: HeaderValue,
    /// Where long prompts are tokenized: one thread at the lowest CPU priority, so a flood
    /// of them takes no core the model needs.
    pub long_prompts: long_prompts::LongPrompts,
    /// A batch pod's watch on its runner's heartbeat, when it has one.
    pub runner_watch: Option<Arc<runner_watch::RunnerWatch>>,
}

impl AppState {
    /// Counts a failed request and turns it into its response.
    fn reject(&self, err: ApiError) -> Response {
        self.metrics.count_error(err.class());
        err.into_response()
    }
}

/// The router: every route but `/health` and `/ready` behind the API key when one is set.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/models", get(handlers::models))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    // Probes carry no key: /health and /ready say nothing a client could use.
    Router::new()
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .merge(protected)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), name_replica))
        .with_state(state)
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !presented.is_some_and(|presented| same_key(presented, key)) {
            return state.reject(ApiError::Unauthorized);
        }
    }
    next.run(request).await
}

/// Whether `presented` is `key`, in time that says nothing about either: their digests
/// (equal lengths) compared without an early exit, so timing cannot guess a key byte by
/// byte.
fn same_key(presented: &str, key: &str) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (presented, key) = (
        sha2::Sha256::digest(presented.as_bytes()),
        sha2::Sha256::digest(key.as_bytes()),
    );
    presented.as_slice().ct_eq(key.as_slice()).into()
}

async fn name_replica(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(watch) = &state.runner_watch
        && request
            .headers()
            .contains_key(runner_watch::HEARTBEAT_HEADER)
    {
        watch.beat();
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(REPLICA_HEADER, state.replica.clone());
    response
}

/// Serves on `listener` until `shutdown` is cancelled, then drains: `/ready` turns false
/// and new requests get 503 at once, in-flight requests get up to `drain` to finish (the
/// rest are ended with an error), and the server stops.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let stop_serving = CancellationToken::new();
    let server = connections::serve_connections(
        listener,
        router(state.clone()),
        connections::Bounds::default(),
        stop_serving.clone(),
    );
    let mut server = tokio::spawn(server);
    let drainer = async {
        shutdown.cancelled().await;
        let engine = &state.engine;
        engine.start_draining();
        tracing::info!(in_flight = engine.in_flight(), "draining");
        wait_until_idle(engine, Instant::now() + drain).await;
        if engine.in_flight() > 0 {
            tracing::warn!(
                in_flight = engine.in_flight(),
                "drain period over; ending the rest"
            );
            engine.abort_all();
            wait_until_idle(engine, Instant::now() + FLUSH_GRACE).await;
        }
        stop_serving.cancel();
    };
    tokio::select! {
        joined = &mut server => return joined.map_err(std::io::Error::other),
        () = drainer => {}
    }
    // Let the last responses flush; a connection that lingers does not hold the exit.
    let _ = tokio::time::timeout(FLUSH_GRACE, server).await;
    Ok(())
}

/// How long ended responses get to reach their clients before the server stops.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

async fn wait_until_idle(engine: &EngineHandle, deadline: Instant) {
    while engine.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This replica's name: `$POD_NAME`, else `$HOSTNAME`, else the kernel's host name.
pub fn replica_name() -> String {
    crate::common::host::host_name().unwrap_or_else(|| "gembatch".into())
}
