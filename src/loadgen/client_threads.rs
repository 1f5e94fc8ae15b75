//! The client's threads: one single-threaded tokio runtime per CPU, each with its own
//! connections and its own buffer of finished records. Requests never hop between threads
//! (the way oha runs), and records reach the collector in batches, so sending a request
//! wakes no other thread.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::client::Target;
use crate::results::request::RequestRecord;

/// One client thread.
pub struct ClientThread {
    /// Its runtime, to spawn requests on.
    pub handle: Handle,
    /// Its connections to the server.
    pub target: Target,
    /// The run's cancellation, as a token of this thread's own: checking it (several times
    /// per request) locks no state the other threads touch.
    pub cancel: CancellationToken,
    finished: Mutex<Vec<RequestRecord>>,
}

impl ClientThread {
    /// Keeps a finished request's record until the next [`ClientThreads::take_finished`].
    pub fn finished(&self, record: RequestRecord) {
        self.finished.lock().expect("record buffer").push(record);
    }
}

/// All client threads; stopped and joined when dropped.
pub struct ClientThreads {
    clients: Vec<Arc<ClientThread>>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl ClientThreads {
    /// Starts `count` threads; `target` makes each one's connection pool; `cancel` stops
    /// the requests of every client.
    pub fn start(
        count: usize,
        target: impl Fn() -> Target,
        cancel: &CancellationToken,
    ) -> std::io::Result<ClientThreads> {
        let stop = CancellationToken::new();
        let mut clients = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            clients.push(Arc::new(ClientThread {
                handle: runtime.handle().clone(),
                target: target(),
                cancel: cancel.child_token(),
                finished: Mutex::new(Vec::new()),
            }));
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("gembatch-load-{index}"))
                    .spawn(move || runtime.block_on(stop.cancelled()))?,
            );
        }
        Ok(ClientThreads {
            clients,
            threads,
            stop,
        })
    }

    /// The client for user or request number `n`.
    pub fn pick(&self, n: u64) -> &Arc<ClientThread> {
        &self.clients[(n % self.clients.len() as u64) as usize]
    }

    /// Every client.
    pub fn all(&self) -> &[Arc<ClientThread>] {
        &self.clients
    }

    /// The records finished since the last call, from every client.
    pub fn take_finished(&self) -> Vec<RequestRecord> {
        let mut all = Vec::new();
        for client in &self.clients {
            all.append(&mut client.finished.lock().expect("record buffer"));
        }
        all
    }
}

impl Drop for ClientThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
