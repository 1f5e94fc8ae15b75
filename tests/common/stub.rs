//! An OpenAI-compatible stub server with exactly programmed behaviour (time to first token,
//! gap between tokens, failures by request number), for measuring the load generator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use tokio::time::Instant;

/// What the stub does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Streams `tokens` one-token chunks, the first after `ttft`, then one every `gap`;
    /// a usage chunk if `usage`, then `[DONE]`.
    Stream {
        ttft: Duration,
        gap: Duration,
        tokens: u32,
        usage: bool,
    },
    /// Answers with this status and an OpenAI error body.
    Status(u16),
    /// Answers 429 with `Retry-After` of this many seconds.
    Shed { retry_after_s: u64 },
    /// Streams `tokens` chunks, then cuts the connection without `[DONE]`.
    Cut { tokens: u32 },
    /// A stream with no content, only `[DONE]`.
    Empty,
    /// Waits this long before answering at all.
    Stall(Duration),
    /// Sends `data: ` and then a line that never ends (bounded: 64 MiB, then 20 s idle).
    EndlessLine,
    /// Sends content chunks of 1 KiB without end (bounded: 64 MiB, then 20 s idle).
    Flood,
    /// Streams one token and `[DONE]`, then keeps the body open (20 s) without its end.
    OpenAfterDone,
}

/// Chooses the behaviour of request number `n` (0-based, in arrival order) with body `body`.
pub type Script = Arc<dyn Fn(u64, &str) -> Behaviour + Send + Sync>;

struct StubState {
    script: Script,
    served: AtomicU64,
    openai: bool,
}

/// A running stub; stops with its runtime when dropped.
pub struct Stub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<StubState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Stub {
    /// An OpenAI-compatible stub following `script`.
    pub fn start(script: impl Fn(u64) -> Behaviour + Send + Sync + 'static) -> Stub {
        Stub::with(Arc::new(move |n, _: &str| script(n)), true)
    }

    /// An OpenAI-compatible stub whose `script` also reads each request's body.
    pub fn start_by_body(script: impl Fn(u64, &str) -> Behaviour + Send + Sync + 'static) -> Stub {
        Stub::with(Arc::new(script), true)
    }

    /// A server that answers `/v1/models` with an HTML page: not OpenAI-compatible.
    pub fn not_openai() -> Stub {
        Stub::with(Arc::new(|_, _: &str| Behaviour::Status(404)), false)
    }

    /// An OpenAI-compatible stub following `script` over https, with the certificate
    /// `server.crt`/`server.key` of `certs` (see `certs::serving_certificate`).
    pub fn start_tls(
        certs: &std::path::Path,
        script: impl Fn(u64) -> Behaviour + Send + Sync + 'static,
    ) -> Stub {
        let acceptor = super::tls_listener::acceptor(certs);
        let mut stub = Stub::with_listener(
            Arc::new(move |n, _: &str| script(n)),
            true,
            Some(acceptor),
            "",
        );
        stub.url = stub.url.replacen("http://", "https://", 1);
        stub
    }

    /// An OpenAI-compatible stub behind a gateway: its routes only under `prefix`
    /// (`/openai/v1/completions`).
    pub fn behind_gateway(
        prefix: &'static str,
        script: impl Fn(u64) -> Behaviour + Send + Sync + 'static,
    ) -> Stub {
        Stub::with_listener(Arc::new(move |n, _: &str| script(n)), true, None, prefix)
    }

    fn with(script: Script, openai: bool) -> Stub {
        Stub::with_listener(script, openai, None, "")
    }

    fn with_listener(
        script: Script,
        openai: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
        prefix: &str,
    ) -> Stub {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("stub runtime");
        let state = Arc::new(StubState {
            script,
            served: AtomicU64::new(0),
            openai,
        });
        let routes = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/completions", post(completion))
            .route("/v1/chat/completions", post(completion))
            .with_state(state.clone());
        let router = match prefix {
            "" => routes,
            prefix => Router::new().nest(prefix, routes),
        };
        let addr: SocketAddr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            match tls {
                None => tokio::spawn(async move { axum::serve(listener, router).await }),
                Some(acceptor) => {
                    let listener = super::tls_listener::TlsListener { listener, acceptor };
                    tokio::spawn(async move { axum::serve(listener, router).await })
                }
            };
            addr
        });
        Stub {
            url: format!("http://{addr}"),
            state,
            runtime: Some(runtime),
        }
    }

    /// Requests received so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Stops the server at once: later requests cannot connect.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn models(State(state): State<Arc<StubState>>) -> Response {
    if !state.openai {
        return (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>hello</body></html>",
        )
            .into_response();
    }
    axum::Json(
        serde_json::json!({"object": "list", "data": [{"id": "stub-model", "object": "model"}]}),
    )
    .into_response()
}

fn chunk(text: &str) -> Bytes {
    let body = serde_json::json!({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": null}]});
    Bytes::from(format!("data: {body}\n\n"))
}

async fn completion(State(state): State<Arc<StubState>>, body: Bytes) -> Response {
    let arrived = Instant::now();
    let n = state.served.fetch_add(1, Ordering::SeqCst);
    let behaviour = (state.script)(n, &String::from_utf8_lossy(&body));
    let replica = [("x-gembatch-replica", format!("stub-{}", n % 2))];
    let sse = [(header::CONTENT_TYPE, "text/event-stream")];
    match behaviour {
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).expect("valid status");
            let body = serde_json::json!({"error": {"message": "scripted failure", "type": "stub", "param": null, "code": null}});
            (status, replica, axum::Json(body)).into_response()
        }
        Behaviour::Shed { retry_after_s } => {
            let body = serde_json::json!({"error": {"message": "shed", "type": "stub", "param": null, "code": null}});
            let wait = [(header::RETRY_AFTER, retry_after_s.to_string())];
            (
                StatusCode::TOO_MANY_REQUESTS,
                replica,
                wait,
                axum::Json(body),
            )
                .into_response()
        }
        Behaviour::Stall(wait) => {
            tokio::time::sleep(wait).await;
            (replica, sse, Body::from("data: [DONE]\n\n")).into_response()
        }
        Behaviour::Empty => (replica, sse, Body::from("data: [DONE]\n\n")).into_response(),
        Behaviour::EndlessLine | Behaviour::Flood | Behaviour::OpenAfterDone => {
            let (first, then): (Bytes, Bytes) = match behaviour {
                Behaviour::EndlessLine => {
                    (Bytes::from("data: "), Bytes::from(vec![b'x'; 64 * 1024]))
                }
                Behaviour::Flood => (chunk("x"), chunk(&"y".repeat(1024))),
                _ => (
                    Bytes::from(format!(
                        "{}data: [DONE]\n\n",
                        String::from_utf8_lossy(&chunk("x"))
                    )),
                    Bytes::new(),
                ),
            };
            let pieces = if then.is_empty() {
                0
            } else {
                (64 << 20) / then.len()
            };
            let stream = futures_util::stream::iter(
                std::iter::once(first).chain(std::iter::repeat_n(then, pieces)),
            )
            .map(Ok::<Bytes, Infallible>)
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(20)).await;
                Ok(Bytes::new())
            }));
            (replica, sse, Body::from_stream(stream)).into_response()
        }
        Behaviour::Cut { tokens } => {
            // The error comes after a pause, so the chunks before it are on the wire first.
            let stream = futures_util::stream::unfold(0u32, move |i| async move {
                if i < tokens {
                    return Some((Ok::<Bytes, std::io::Error>(chunk("x")), i + 1));
                }
                if i > tokens {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Err(std::io::Error::other("scripted cut")), i + 1))
            });
            (replica, sse, Body::from_stream(stream)).into_response()
        }
        Behaviour::Stream {
            ttft,
            gap,
            tokens,
            usage,
        } => {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            let arrived = arrived.into_std();
            // A thread per stream sleeps to each deadline (measured from arrival, so slack
            // never accumulates): the OS timer is exact to tens of microseconds, where tokio's
            // timer rounds to whole milliseconds.
            std::thread::spawn(move || {
                for i in 0..tokens {
                    let deadline = arrived + ttft + gap * i;
                    let now = std::time::Instant::now();
                    if deadline > now {
                        std::thread::sleep(deadline - now);
                    }
                    if sender.send(chunk("tok")).is_err() {
                        return;
                    }
                }
                let mut tail = String::new();
                if usage {
                    let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}});
                    tail.push_str(&format!("data: {usage}\n\n"));
                }
                tail.push_str("data: [DONE]\n\n");
                let _ = sender.send(Bytes::from(tail));
            });
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
                .map(Ok::<Bytes, Infallible>);
            (replica, sse, Body::from_stream(stream)).into_response()
        }
    }
}
