//! Accepting connections for the router, with the bounds a public port needs: at most
//! [`Bounds::connections`] open at once (more wait in the kernel's listen backlog), and
//! each request head read within [`Bounds::head_read`], so a client that opens connections
//! and trickles their heads (slowloris) holds neither memory nor a slot for long. HTTP/1.1 only,
//! as the OpenAI API is served; on `stop` no connection is accepted any more, open ones
//! finish their responses and close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many connections, and how slow a head.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Open connections at once.
    pub connections: usize,
    /// Longest a request head may take to arrive.
    pub head_read: Duration,
}

impl Default for Bounds {
    /// A pod batches tens of sequences and each client keeps one connection per request
    /// in flight: 1,024 is room for every client of a 10-pod run and more; a head is a few
    /// hundred bytes, 10 s is room for any network.
    fn default() -> Bounds {
        Bounds {
            connections: 1024,
            head_read: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `bounds` until `stop`, then waits for the open
/// connections to finish their responses.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(bounds.connections));
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.head_read)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors or a connection reset before it was accepted:
                // a pause, not the end of the server.
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Serves a one-route router within `bounds`; returns its address and its stop.
    async fn started(bounds: Bounds) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = Router::new().route("/", get(|| async { "hi" }));
        tokio::spawn(serve_connections(listener, router, bounds, stop.clone()));
        (address, stop)
    }

    /// Sends a GET on `stream` and reads the answer to the end of its body ("hi").
    async fn get_on(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 512];
        while !answer.ends_with(b"hi") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn a_head_that_trickles_in_is_cut_off() {
        let bounds = Bounds {
            connections: 8,
            head_read: Duration::from_millis(300),
        };
        let (address, _stop) = started(bounds).await;
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        // The server answers 408 or just closes; either way the connection ends.
        tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection whose head never ends")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        let mut fast = TcpStream::connect(address).await.unwrap();
        assert!(get_on(&mut fast).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let bounds = Bounds {
            connections: 2,
            head_read: Duration::from_secs(10),
        };
        let (address, _stop) = started(bounds).await;
        let mut first = TcpStream::connect(address).await.unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        get_on(&mut first).await;
        get_on(&mut second).await;
        let mut third = TcpStream::connect(address).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), get_on(&mut third)).await;
        assert!(
            waited.is_err(),
            "a third connection is not served while two are open"
        );
        drop(first);
        let answer = tokio::time::timeout(Duration::from_secs(5), get_on(&mut third))
            .await
            .expect("served once a slot is free");
        assert!(answer.starts_with("HTTP/1.1 200"));
    }
}
