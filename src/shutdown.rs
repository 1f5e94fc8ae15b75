//! One cancellation root for the process: SIGINT (Ctrl-C) and SIGTERM (a pod being
//! stopped) both cancel it, and every long-running part drains from it.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM. Must be called inside a tokio runtime.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
            () = terminate => tracing::info!("SIGTERM: shutting down"),
        }
        token.cancel();
    });
}
