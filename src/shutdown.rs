//! One cancellation root for the process: SIGINT (Ctrl-C) and SIGTERM (a pod being
//! stopped) both cancel it, and every long-running part drains from it. The signal is
//! remembered, so a command it stopped exits as shells expect of it (130, 143).

use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

/// The signal that cancelled the process, 0 while none has.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal (`SIGINT`, `SIGTERM`) that cancelled the process, if one did.
pub fn received_signal() -> Option<i32> {
    Some(RECEIVED.load(Ordering::SeqCst)).filter(|&signal| signal != 0)
}

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
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("Ctrl-C: shutting down");
                libc::SIGINT
            }
            () = terminate => {
                tracing::info!("SIGTERM: shutting down");
                libc::SIGTERM
            }
        };
        RECEIVED.store(signal, Ordering::SeqCst);
        token.cancel();
    });
}
