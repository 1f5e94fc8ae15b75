//! Runs a plan: closed-loop users or an open-loop schedule per step, requests spread over
//! the client threads ([`ClientThreads`]), their records batched to the collector over one bounded
//! channel. Every loop ends by itself: at the step's time or count, or when the run is
//! cancelled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client_threads::{ClientThread, ClientThreads};
use super::health::HealthMonitor;
use super::plan::{Arrivals, Hold, Load, Plan, Step};
use super::send::{Ticket, send};
use crate::client::WorkItem;
use crate::results::request::RequestRecord;
use crate::results::step::ClientHealth;

/// What the driver tells the collector, in order.
#[derive(Debug)]
pub enum Event {
    /// A step (or the warm-up before the first step) began.
    StepStarted {
        /// The step.
        step: Step,
        /// Whether this is the warm-up.
        warmup: bool,
    },
    /// Requests that ended.
    Records(Vec<RequestRecord>),
    /// A step ended: every one of its records came before this event.
    StepFinished {
        /// The step.
        step: Step,
        /// Whether this was the warm-up.
        warmup: bool,
        /// When it began, from the run's start.
        began: Duration,
        /// When its last request ended.
        ended: Duration,
        /// The client's health meanwhile.
        health: ClientHealth,
    },
}

/// How often finished records go to the collector.
const FLUSH_PERIOD: Duration = Duration::from_millis(20);

/// Everything a run needs to send requests.
pub struct Driver {
    clients: ClientThreads,
    flush_lock: tokio::sync::Mutex<()>,
    work: Arc<[WorkItem]>,
    next_id: AtomicU64,
    events: mpsc::Sender<Event>,
    run_start: Instant,
    cancel: CancellationToken,
    health: HealthMonitor,
    seed: u64,
}

impl Driver {
    /// A driver sending `work` (cycled) over `clients`, reporting to `events`; its records'
    /// instants count from `run_start`.
    pub fn new(
        clients: ClientThreads,
        work: Arc<[WorkItem]>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
        run_start: Instant,
        seed: u64,
    ) -> Arc<Driver> {
        assert!(!work.is_empty(), "a workload has at least one request");
        let handles: Vec<_> = clients
            .all()
            .iter()
            .map(|client| client.handle.clone())
            .collect();
        Arc::new(Driver {
            clients,
            flush_lock: tokio::sync::Mutex::new(()),
            work,
            next_id: AtomicU64::new(0),
            events,
            run_start,
            health: HealthMonitor::start(cancel.child_token(), &handles),
            cancel,
            seed,
        })
    }

    /// Sends the records finished so far, then `after` if given, in that order.
    async fn flush(&self, after: Option<Event>) {
        let _in_order = self.flush_lock.lock().await;
        let finished = self.clients.take_finished();
        if !finished.is_empty() {
            let _ = self.events.send(Event::Records(finished)).await;
        }
        if let Some(event) = after {
            let _ = self.events.send(event).await;
        }
    }

    /// Runs the warm-up, then every step, until the plan ends or the run is cancelled,
    /// passing finished records on as it goes.
    pub async fn run(self: &Arc<Self>, plan: &Plan) {
        let steps_done = CancellationToken::new();
        let steps = async {
            self.run_steps(plan).await;
            steps_done.cancel();
        };
        // Stops between flushes, never inside one: a flush holds records taken from the
        // clients until the collector has them.
        let flushing = async {
            let mut ticks = tokio::time::interval(FLUSH_PERIOD);
            loop {
                tokio::select! {
                    () = steps_done.cancelled() => break,
                    _ = ticks.tick() => self.flush(None).await,
                }
            }
        };
        tokio::join!(steps, flushing);
        self.flush(None).await;
    }

    async fn run_steps(self: &Arc<Self>, plan: &Plan) {
        if let (Some(warmup), Some(first)) = (plan.warmup, plan.steps.first()) {
            self.run_step(*first, Hold::For(warmup), true).await;
        }
        for step in &plan.steps {
            if self.cancel.is_cancelled() {
                break;
            }
            self.run_step(*step, step.hold, false).await;
        }
    }

    async fn run_step(self: &Arc<Self>, step: Step, hold: Hold, warmup: bool) {
        let window = self.health.begin();
        let began = self.run_start.elapsed();
        let _ = self.events.send(Event::StepStarted { step, warmup }).await;
        match step.load {
            Load::Users(users) => self.closed_loop(step, users, hold, warmup).await,
            Load::Rate {
                per_second,
                arrivals,
                max_concurrency,
            } => {
                let duration = match hold {
                    Hold::For(duration) => duration,
                    Hold::RequestsPerUser(_) => unreachable!("open-loop steps are held for a time"),
                };
                self.open_loop(
                    step,
                    per_second,
                    arrivals,
                    max_concurrency,
                    duration,
                    warmup,
                )
                .await;
            }
        }
        let finished = Event::StepFinished {
            step,
            warmup,
            began,
            ended: self.run_start.elapsed(),
            health: self.health.end(&window),
        };
        self.flush(Some(finished)).await;
    }

    /// `users` users, each sending its next request as soon as its last one ended, spread
    /// over the client threads.
    async fn closed_loop(self: &Arc<Self>, step: Step, users: u32, hold: Hold, warmup: bool) {
        let began = Instant::now();
        let tasks = TaskTracker::new();
        for user in 0..users {
            let driver = self.clone();
            let client = self.clients.pick(u64::from(user)).clone();
            let user_loop = async move {
                // One cancellation future per user, not one per request, on the client thread's
                // own token.
                let cancelled = client.cancel.cancelled();
                tokio::pin!(cancelled);
                let mut sent = 0u32;
                loop {
                    let more = match hold {
                        Hold::For(duration) => began.elapsed() < duration,
                        Hold::RequestsPerUser(count) => sent < count,
                    };
                    if !more || client.cancel.is_cancelled() {
                        break;
                    }
                    let now = Instant::now();
                    let ticket = driver.ticket(step, warmup, Some(user), now);
                    if !driver.send_one(&client, ticket, cancelled.as_mut()).await {
                        break;
                    }
                    sent += 1;
                }
            };
            tasks.spawn_on(user_loop, &self.clients.pick(u64::from(user)).handle);
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Requests on a fixed or Poisson schedule, whatever the server does; at most
    /// `max_concurrency` in flight, the rest wait (and the wait counts as latency in the
    /// corrected figures).
    ///
    /// The schedule runs on its own thread: the OS timer wakes it within tens of
    /// microseconds of each departure, where tokio's timer rounds up to the next
    /// millisecond, which would show up as client lag in every corrected figure.
    async fn open_loop(
        self: &Arc<Self>,
        step: Step,
        per_second: f64,
        arrivals: Arrivals,
        max_concurrency: u32,
        duration: Duration,
        warmup: bool,
    ) {
        let runtime = tokio::runtime::Handle::current();
        let requests = TaskTracker::new();
        let mut count = 0u64;
        let driver = self.clone();
        let tracker = requests.clone();
        let schedule = tokio::task::spawn_blocking(move || {
            let began = std::time::Instant::now();
            let slots = Arc::new(Semaphore::new(max_concurrency as usize));
            let mut rng =
                StdRng::seed_from_u64(driver.seed ^ u64::from(step.index) ^ u64::from(warmup));
            let gaps = Exp::new(per_second).expect("a positive rate");
            let mut offset = Duration::ZERO;
            while offset < duration {
                let intended = began + offset;
                offset += match arrivals {
                    Arrivals::Constant => Duration::from_secs_f64(1.0 / per_second),
                    Arrivals::Poisson => Duration::from_secs_f64(gaps.sample(&mut rng)),
                };
                if !sleep_until_precisely(intended, &driver.cancel) {
                    break;
                }
                let slot = runtime.block_on(async {
                    tokio::select! {
                        () = driver.cancel.cancelled() => None,
                        slot = slots.clone().acquire_owned() => slot.ok(),
                    }
                });
                let Some(slot) = slot else { break };
                let sender = driver.clone();
                let client = driver.clients.pick(count).clone();
                count += 1;
                let intended = Instant::from_std(intended);
                let handle = client.handle.clone();
                tracker.spawn_on(
                    async move {
                        let ticket = sender.ticket(step, warmup, None, intended);
                        sender
                            .send_one(&client, ticket, std::pin::pin!(client.cancel.cancelled()))
                            .await;
                        drop(slot);
                    },
                    &handle,
                );
            }
        });
        let _ = schedule.await;
        requests.close();
        requests.wait().await;
    }

    /// The next request's identity.
    fn ticket(
        &self,
        step: Step,
        warmup: bool,
        user: Option<u32>,
        intended_start: Instant,
    ) -> Ticket {
        Ticket {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            step: step.index,
            warmup,
            user,
            intended_start,
        }
    }

    /// Sends the ticket's work item and keeps its record; false when the run was cancelled
    /// meanwhile (the interrupted request is not recorded: it measured nothing about the
    /// server) or nothing collects records any more.
    async fn send_one(
        &self,
        client: &ClientThread,
        ticket: Ticket,
        cancelled: Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let item = &self.work[(ticket.id % self.work.len() as u64) as usize];
        let record = tokio::select! {
            () = cancelled => return false,
            record = send(&client.target, item, ticket, self.run_start) => record,
        };
        client.finished(record);
        !self.events.is_closed()
    }
}

/// Sleeps the thread until `deadline`; false if `cancel` fired first. Sleeps in short
/// slices so a cancelled run does not wait out a long gap.
fn sleep_until_precisely(deadline: std::time::Instant, cancel: &CancellationToken) -> bool {
    const SLICE: Duration = Duration::from_millis(20);
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(SLICE));
    }
}
