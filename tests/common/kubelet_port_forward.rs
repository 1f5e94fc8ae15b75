//! The test kubelet's port-forward endpoint, as the API server reaches it: it registers a
//! Node whose kubelet address is 127.0.0.1 and a port of its own, then serves
//! `/portForward/NAMESPACE/POD` over TLS (the API server does not verify a kubelet it has
//! no CA for) as a websocket speaking `v4.channel.k8s.io`: first the port on the data and
//! error channels, then the pod's bytes on channel 0, relayed to the pod's process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// The Node every test pod is bound to.
pub const NODE: &str = "gembatch-test-node";

/// Pod name to its loopback IP, filled in by the kubelet as it starts pods.
pub type PodIps = Arc<Mutex<HashMap<String, String>>>;

/// Listens on loopback, registers [`NODE`] with that port, and serves until the runtime
/// it was started on ends, counting the sessions it relays in `sessions`.
pub async fn start(client: kube::Client, certs: &Path, ips: PodIps, sessions: Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    register_node(client, address).await;
    let acceptor = super::tls_listener::acceptor(certs);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, ips, sessions) = (acceptor.clone(), ips.clone(), sessions.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve(stream, ips, sessions).await;
                }
            });
        }
    });
}

/// Creates the Node (Ready, kubelet at 127.0.0.1:PORT) if this cluster has none yet.
async fn register_node(client: kube::Client, kubelet: SocketAddr) {
    let nodes: Api<Node> = Api::all(client);
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NODE}})).unwrap();
    if nodes.create(&PostParams::default(), &node).await.is_err() {
        return;
    }
    let now = "2026-11-30T10:00:00Z";
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port()}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the test node's status");
}

/// One port-forward session: the websocket handshake, then the relay to the pod.
async fn serve<S>(stream: S, ips: PodIps, sessions: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut target: Option<(String, u16)> = None;
    // The error type is tungstenite's callback contract, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let handshake = |request: &Request, mut response: Response| {
        target = route(request.uri(), &ips);
        if request.headers().get("sec-websocket-protocol").is_some() {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                "v4.channel.k8s.io".parse().unwrap(),
            );
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, handshake).await else {
        return;
    };
    let Some((ip, port)) = target else {
        eprintln!("port-forward: no such pod or port");
        let _ = socket.close(None).await;
        return;
    };
    sessions.fetch_add(1, Ordering::SeqCst);
    let Ok(mut pod) = tokio::net::TcpStream::connect((ip.as_str(), port)).await else {
        let _ = socket
            .send(Message::binary(
                [&[1u8][..], b"connection refused"].concat(),
            ))
            .await;
        return;
    };
    let header = port.to_le_bytes();
    for channel in [0u8, 1] {
        if socket
            .send(Message::binary(vec![channel, header[0], header[1]]))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = pod.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = [&[0u8][..], &buffer[..n]].concat();
                    if socket.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
            },
            message = socket.next() => match message {
                Some(Ok(Message::Binary(data))) if data.len() > 1 && data[0] == 0 => {
                    if pod.write_all(&data[1..]).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.close(None).await;
}

/// The pod's IP and port from `/portForward/NAMESPACE/POD?port=P` (or `ports=P`).
fn route(uri: &tokio_tungstenite::tungstenite::http::Uri, ips: &PodIps) -> Option<(String, u16)> {
    let pod = uri
        .path()
        .strip_prefix("/portForward/")?
        .split('/')
        .nth(1)?;
    let port = uri
        .query()?
        .split('&')
        .find_map(|pair| {
            pair.strip_prefix("port=")
                .or_else(|| pair.strip_prefix("ports="))
        })?
        .parse()
        .ok()?;
    let ip = ips.lock().unwrap().get(pod)?.clone();
    Some((ip, port))
}
