//! A load run's shape as a validated plan: its steps, each a load held for a time or a
//! number of requests. Built from the flags before any request goes out.

use std::time::Duration;

/// How long a step lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hold {
    /// Sends until this much time has passed since the step began, then lets the requests
    /// in flight finish.
    For(Duration),
    /// Each user sends exactly this many requests.
    RequestsPerUser(u32),
}

/// How arrivals are spaced in open-loop mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps (a Poisson process), seeded.
    Poisson,
}

/// The load of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Closed loop: this many users, each sending its next request when the last one ends.
    Users(u32),
    /// Open loop: requests go out on a schedule whatever the server does.
    Rate {
        /// Requests per second.
        per_second: f64,
        /// Spacing.
        arrivals: Arrivals,
        /// Most requests in flight; beyond it a request waits, and the wait counts in the
        /// corrected latencies.
        max_concurrency: u32,
    },
}

impl Load {
    /// In words, as the terminal and the report show it: "20 users", "5 req/s".
    pub fn label(&self) -> String {
        match self {
            Load::Users(users) => format!("{users} users"),
            Load::Rate { per_second, .. } => format!("{per_second} req/s"),
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 0-based.
    pub index: u32,
    /// Its load.
    pub load: Load,
    /// Its length.
    pub hold: Hold,
}

/// The run's shape, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeKind {
    /// Users stepping up.
    Ramp,
    /// A fixed number of users for a duration.
    Sustained,
    /// Open loop at a fixed rate.
    Rate,
}

impl ShapeKind {
    /// Its name in the summary and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            ShapeKind::Ramp => "ramp",
            ShapeKind::Sustained => "sustained",
            ShapeKind::Rate => "rate",
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Which shape.
    pub kind: ShapeKind,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Load at the first step's level before it, left out of the statistics.
    pub warmup: Option<Duration>,
}

/// Open-loop runs without `--max-concurrency` still cap what is in flight, so memory stays
/// bounded when the server stalls.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 1024;

impl Plan {
    /// Ramp: `start`, `start + step`, ... up to `max` users (the last step is `max` even
    /// when the steps do not land on it).
    pub fn ramp(
        start: u32,
        step: u32,
        max: u32,
        hold: Hold,
        warmup: Option<Duration>,
    ) -> Result<Plan, String> {
        if step == 0 {
            return Err("--step-size must be at least 1".into());
        }
        if start == 0 || start > max {
            return Err(format!(
                "--start-users ({start}) must be between 1 and --max-users ({max})"
            ));
        }
        check_hold(hold)?;
        let mut users: Vec<u32> = (start..=max).step_by(step as usize).collect();
        if users.last() != Some(&max) {
            users.push(max);
        }
        let steps = users
            .into_iter()
            .enumerate()
            .map(|(index, users)| Step {
                index: index as u32,
                load: Load::Users(users),
                hold,
            })
            .collect();
        Ok(Plan {
            kind: ShapeKind::Ramp,
            steps,
            warmup,
        })
    }

    /// Sustained: `users` users for `duration`.
    pub fn sustained(
        users: u32,
        duration: Duration,
        warmup: Option<Duration>,
    ) -> Result<Plan, String> {
        if users == 0 {
            return Err("--users must be at least 1".into());
        }
        check_hold(Hold::For(duration))?;
        Ok(Plan {
            kind: ShapeKind::Sustained,
            steps: vec![Step {
                index: 0,
                load: Load::Users(users),
                hold: Hold::For(duration),
            }],
            warmup,
        })
    }

    /// Open loop at `per_second` requests/s for `duration`.
    pub fn rate(
        per_second: f64,
        arrivals: Arrivals,
        max_concurrency: Option<u32>,
        duration: Duration,
        warmup: Option<Duration>,
    ) -> Result<Plan, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "--rate {per_second} must be a positive number of requests/s"
            ));
        }
        if max_concurrency == Some(0) {
            return Err("--max-concurrency must be at least 1".into());
        }
        check_hold(Hold::For(duration))?;
        Ok(Plan {
            kind: ShapeKind::Rate,
            steps: vec![Step {
                index: 0,
                load: Load::Rate {
                    per_second,
                    arrivals,
                    max_concurrency: max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
                },
                hold: Hold::For(duration),
            }],
            warmup,
        })
    }
}

fn check_hold(hold: Hold) -> Result<(), String> {
    match hold {
        Hold::For(duration) if duration.is_zero() => {
            Err("a step's duration must be above 0 s".into())
        }
        Hold::RequestsPerUser(0) => Err("--requests-per-user must be at least 1".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(plan: &Plan) -> Vec<u32> {
        plan.steps
            .iter()
            .map(|step| match step.load {
                Load::Users(users) => users,
                Load::Rate { .. } => 0,
            })
            .collect()
    }

    #[test]
    fn ramp_steps_from_the_step_size_to_the_maximum() {
        let hold = Hold::For(Duration::from_secs(60));
        let plan = Plan::ramp(10, 10, 50, hold, None).unwrap();
        assert_eq!(users(&plan), [10, 20, 30, 40, 50]);
        assert_eq!(plan.steps[4].index, 4);
        assert_eq!(
            users(&Plan::ramp(5, 10, 30, hold, None).unwrap()),
            [5, 15, 25, 30]
        );
        assert_eq!(users(&Plan::ramp(7, 3, 7, hold, None).unwrap()), [7]);
    }

    #[test]
    fn bad_shapes_say_which_flag() {
        let hold = Hold::For(Duration::from_secs(1));
        assert!(
            Plan::ramp(1, 0, 5, hold, None)
                .unwrap_err()
                .contains("--step-size")
        );
        assert!(
            Plan::ramp(6, 1, 5, hold, None)
                .unwrap_err()
                .contains("--start-users")
        );
        assert!(
            Plan::ramp(1, 1, 5, Hold::RequestsPerUser(0), None)
                .unwrap_err()
                .contains("--requests-per-user")
        );
        assert!(
            Plan::sustained(0, Duration::from_secs(1), None)
                .unwrap_err()
                .contains("--users")
        );
        assert!(
            Plan::sustained(1, Duration::ZERO, None)
                .unwrap_err()
                .contains("duration")
        );
        let second = Duration::from_secs(1);
        assert!(
            Plan::rate(0.0, Arrivals::Constant, None, second, None)
                .unwrap_err()
                .contains("--rate")
        );
        assert!(Plan::rate(f64::NAN, Arrivals::Constant, None, second, None).is_err());
        assert!(
            Plan::rate(1.0, Arrivals::Poisson, Some(0), second, None)
                .unwrap_err()
                .contains("--max-concurrency")
        );
        let rate = Plan::rate(5.0, Arrivals::Poisson, None, second, None).unwrap();
        assert!(matches!(
            rate.steps[0].load,
            Load::Rate {
                max_concurrency: DEFAULT_MAX_CONCURRENCY,
                ..
            }
        ));
        assert_eq!(rate.steps[0].load.label(), "5 req/s");
        assert_eq!(Load::Users(20).label(), "20 users");
    }
}
