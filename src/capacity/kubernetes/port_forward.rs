//! Reaching the serve pods from outside the cluster (a runner on a laptop): one listener per
//! pod on loopback, each accepted connection relayed to the pod's serve port through the
//! API server's port-forward (kube's websocket port-forward), as `kubectl port-forward`
//! does. The dispatcher then sends to `http://127.0.0.1:PORT` and nothing else changes.

use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::KubeError;
use super::pods::SERVE_PORT;
use crate::common::Endpoint;

/// The relays of one run; they stop when this is dropped.
pub struct PortForwards {
    stop: CancellationToken,
}

impl Drop for PortForwards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a relay for each pod and returns the pods with their local URLs. Each pod is
/// port-forwarded once first, so a refusal (no `create` on `pods/portforward`, a pod
/// gone) is an error now rather than a connection error per request later.
pub async fn forward(
    client: &Client,
    namespace: &str,
    pods: Vec<Endpoint>,
) -> Result<(Vec<Endpoint>, PortForwards), KubeError> {
    let api: Api<KubePod> = Api::namespaced(client.clone(), namespace);
    let forwards = PortForwards {
        stop: CancellationToken::new(),
    };
    let port = SERVE_PORT as u16;
    let mut local = Vec::with_capacity(pods.len());
    for pod in pods {
        let probe =
            api.portforward(&pod.name, &[port])
                .await
                .map_err(|err| KubeError::PortForward {
                    pod: pod.name.clone(),
                    why: err.to_string(),
                })?;
        probe.abort();
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .and_then(|listener| Ok((listener.local_addr()?, listener)));
        let (address, listener) = listener.map_err(|err| KubeError::Api {
            what: "listen on loopback for a port-forward",
            why: err.to_string(),
        })?;
        tokio::spawn(accept(
            listener,
            api.clone(),
            pod.name.clone(),
            forwards.stop.clone(),
        ));
        local.push(Endpoint {
            name: pod.name,
            url: format!("http://{address}"),
        });
    }
    Ok((local, forwards))
}

/// Relays every connection `listener` accepts to `pod`, until `stop`.
async fn accept(listener: TcpListener, api: Api<KubePod>, pod: String, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((connection, _)) = accepted else {
            continue;
        };
        let (api, pod, stop) = (api.clone(), pod.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = relay(connection, &api, &pod) => {}
            }
        });
    }
}

/// One connection through one port-forward; a failure closes the connection, which the
/// dispatcher sees as that pod's connection error.
async fn relay(mut connection: TcpStream, api: &Api<KubePod>, pod: &str) {
    let port = SERVE_PORT as u16;
    let mut forwarder = match api.portforward(pod, &[port]).await {
        Ok(forwarder) => forwarder,
        Err(err) => {
            tracing::warn!("port-forward to {pod} failed: {err}");
            return;
        }
    };
    if let Some(mut upstream) = forwarder.take_stream(port) {
        let _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
    }
    forwarder.abort();
}
