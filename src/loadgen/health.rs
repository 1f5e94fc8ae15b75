//! The load generator's own health: how late its client threads wake and how much CPU it
//! burns. A step where the client was the bottleneck is marked invalid, not reported as
//! the server's limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::results::step::{ClientHealth, micros_histogram};

/// How often the probe task asks to be woken.
const PROBE_PERIOD: Duration = Duration::from_millis(10);
/// A running probe; stops when `cancel` fires.
pub struct HealthMonitor {
    lags: Arc<Mutex<Histogram<u64>>>,
    cpus: f64,
}

/// Where a window began.
pub struct Window {
    cpu: Duration,
    wall: Instant,
}

impl HealthMonitor {
    /// Starts a probe task on each runtime of `handles` (the client threads).
    pub fn start(cancel: CancellationToken, handles: &[tokio::runtime::Handle]) -> HealthMonitor {
        let lags = Arc::new(Mutex::new(micros_histogram()));
        for handle in handles {
            let sink = lags.clone();
            let cancel = cancel.clone();
            handle.spawn(async move {
                let mut ticks = tokio::time::interval(PROBE_PERIOD);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    let scheduled = tokio::select! {
                        () = cancel.cancelled() => break,
                        scheduled = ticks.tick() => scheduled,
                    };
                    let lag = Instant::now().saturating_duration_since(scheduled);
                    let micros = lag.as_micros().min(u64::MAX as u128) as u64;
                    sink.lock()
                        .expect("lag histogram")
                        .saturating_record(micros);
                }
            });
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        HealthMonitor { lags, cpus }
    }

    /// Starts a window (and forgets the lags seen before it).
    pub fn begin(&self) -> Window {
        self.lags.lock().expect("lag histogram").reset();
        Window {
            cpu: process_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// The client's health since `window` began.
    pub fn end(&self, window: &Window) -> ClientHealth {
        let wall = window.wall.elapsed().as_secs_f64().max(1e-9);
        let cpu = process_cpu_time().saturating_sub(window.cpu).as_secs_f64();
        let lags = self.lags.lock().expect("lag histogram");
        let micros = |value: u64| Duration::from_micros(value);
        ClientHealth {
            cpu_share: cpu / wall / self.cpus,
            lag_p99: micros(lags.value_at_quantile(0.99)),
            lag_max: micros(lags.max()),
        }
    }
}

/// User + system CPU time of this process.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_limits() {
        let healthy = ClientHealth {
            cpu_share: 0.3,
            lag_p99: Duration::from_millis(2),
            lag_max: Duration::from_millis(30),
        };
        assert_eq!(healthy.invalid_reason(), None);
        let busy = ClientHealth {
            cpu_share: 0.95,
            ..healthy
        };
        assert!(busy.invalid_reason().unwrap().contains("95% of its CPUs"));
        let late = ClientHealth {
            lag_p99: Duration::from_millis(25),
            ..healthy
        };
        assert!(late.invalid_reason().unwrap().contains("25.0 ms at p99"));
    }

    #[tokio::test]
    async fn measures_cpu_and_lag() {
        let cancel = CancellationToken::new();
        let monitor = HealthMonitor::start(cancel.clone(), &[tokio::runtime::Handle::current()]);
        let window = monitor.begin();
        let spin_until = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < spin_until {}
        tokio::time::sleep(Duration::from_millis(50)).await;
        let health = monitor.end(&window);
        cancel.cancel();
        assert!(health.cpu_share > 0.0, "{health:?}");
        assert!(health.lag_max >= health.lag_p99);
    }
}
