//! Long prompts are tokenized on one thread of the lowest CPU priority (`SCHED_IDLE`), one
//! at a time, with a bounded queue. The costliest prompt within the body limit takes about a
//! second of a core to tokenize; on the model's threads' priority a flood of them would
//! take cores the model needs (measured: the p95 time to first token of normal clients
//! four times as long). At the idle policy the kernel gives the thread only CPU time the
//! model leaves idle, and a full queue is answered 429 at once rather than holding more
//! multi-megabyte prompts in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// Long prompts admitted at once (the one being tokenized and those waiting).
pub const QUEUE: usize = 8;

type Work = Box<dyn FnOnce() + Send>;

/// The long-prompt thread and its queue.
pub struct LongPrompts {
    work: mpsc::Sender<Work>,
    admitted: Arc<AtomicUsize>,
}

/// Why long-prompt work did not run.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// [`QUEUE`] long prompts are already admitted.
    Full,
    /// The thread is gone (it panicked).
    Stopped,
}

impl LongPrompts {
    /// Starts the thread.
    pub fn start() -> std::io::Result<LongPrompts> {
        let (work, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("long-prompts".into())
            .spawn(move || {
                lower_priority();
                for work in queue {
                    work();
                }
            })?;
        Ok(LongPrompts {
            work,
            admitted: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `work` on the thread after the long prompts admitted before it; refused at
    /// once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.admitted.clone());
        if admitted >= QUEUE {
            return Err(Refused::Full);
        }
        let (done, result) = oneshot::channel();
        let job: Work = Box::new(move || {
            // A client gone while it waited (its request dropped) costs nothing more.
            let result = (!done.is_closed()).then(work);
            // Its place is free before the answer goes out: a client that sends its next
            // long prompt the moment it has the answer finds it free.
            drop(slot);
            if let Some(result) = result {
                let _ = done.send(result);
            }
        });
        self.work.send(job).map_err(|_| Refused::Stopped)?;
        result.await.map_err(|_| Refused::Stopped)
    }
}

/// One admitted long prompt: its place in the queue is given back when the work is done
/// or dropped (its client gone).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lowers the calling thread (alone: on Linux a thread id names one thread) to the
/// `SCHED_IDLE` policy, which runs only when no other thread wants the core and is
/// preempted the moment one does, and to nice 19 where that policy is refused. Both are
/// unprivileged; where both fail the thread keeps its priority and the queue still bounds
/// the work.
fn lower_priority() {
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread's own id (0: the caller).
    let lowered = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) == 0
            || libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) == 0
    };
    if !lowered {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the long-prompt thread's priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_at_the_lowest_priority_one_at_a_time_and_refuses_past_its_queue() {
        let lane = Arc::new(LongPrompts::start().unwrap());
        let policy = lane
            .run(|| unsafe { libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);

        // QUEUE slow jobs fill the queue; the next is refused at once.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut admitted = Vec::new();
        for _ in 0..QUEUE {
            let (lane, gate) = (lane.clone(), gate.clone());
            let (running, most) = (running.clone(), most.clone());
            admitted.push(tokio::spawn(async move {
                lane.run(move || {
                    most.fetch_max(running.fetch_add(1, Ordering::AcqRel) + 1, Ordering::AcqRel);
                    gate.lock().unwrap().recv().unwrap();
                    running.fetch_sub(1, Ordering::AcqRel);
                })
                .await
            }));
        }
        while lane.admitted.load(Ordering::Acquire) < QUEUE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(lane.run(|| ()).await, Err(Refused::Full));
        for _ in 0..QUEUE {
            release.send(()).unwrap();
        }
        for job in admitted {
            assert_eq!(job.await.unwrap(), Ok(()));
        }
        assert_eq!(most.load(Ordering::Acquire), 1, "one long prompt at a time");
        // Their slots are given back.
        assert_eq!(lane.run(|| 7).await, Ok(7));
    }
}
