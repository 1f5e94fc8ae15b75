//! What the benchmarks share: loopback OpenAI endpoints that answer at once (axum, and a
//! raw one that costs as little as HTTP allows), a child's
//! own CPU time and peak memory, and flag reading.

#![allow(dead_code, reason = "each benchmark uses part of it")]

pub mod flood;
pub mod raw_stub;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Instant;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// One generated token, its usage and `[DONE]`: the cheapest complete answer.
pub const STREAM: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"text\":\"x\",\"finish_reason\":\"length\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n",
    "data: [DONE]\n\n",
);

/// A trivial OpenAI endpoint on a loopback port (completions and chat), on its own runtime.
pub fn start_stub() -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = Router::new()
        .route(
            "/v1/models",
            get(|| async { axum::Json(serde_json::json!({"data": [{"id": "stub-model"}]})) }),
        )
        .route(
            "/v1/completions",
            post(|| async {
                ([(header::CONTENT_TYPE, "text/event-stream")], STREAM).into_response()
            }),
        );
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    });
    (runtime, addr)
}

/// Waits for `child`, returning its wall time, its own CPU time and whether it exited 0.
pub fn wait_with_cpu(child: Child, started: Instant) -> (f64, f64, bool) {
    let usage = wait_with_usage(child, started);
    (usage.wall, usage.cpu, usage.success)
}

/// A finished child's resource use.
pub struct Usage {
    /// Wall seconds from `started`.
    pub wall: f64,
    /// User + system CPU seconds of the child itself.
    pub cpu: f64,
    /// Its peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Whether it exited 0.
    pub success: bool,
}

/// Waits for `child` and reads its own resource use from `wait4`.
pub fn wait_with_usage(mut child: Child, started: Instant) -> Usage {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child; rusage is plain data written by the kernel.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::wait4(pid, &mut status, 0, &mut usage);
        usage
    };
    let wall = started.elapsed().as_secs_f64();
    let _ = child.try_wait();
    let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        wall,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

/// The value after `name` in `args`, else `default`.
pub fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
