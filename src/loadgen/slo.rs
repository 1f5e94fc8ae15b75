//! SLO gates such as `p95_ttft<=2s,error_rate<=1%`, parsed once and checked on every step
//! that measured enough requests to judge: a step that sent nothing is "not run", one with
//! fewer requests than the stated minimum is "not judged", and both are said, not failed.

use std::fmt;

use crate::common::units::parse_non_negative;
use crate::results::step::{Latency, Stat, StepRow};

/// A figure a gate can check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    /// A latency statistic, in seconds.
    Latency(Stat, Latency),
    /// Share of failed requests, 0..1.
    ErrorRate,
    /// Share of requests that completed without text, 0..1.
    EmptyRate,
    /// Successful requests/s.
    Rps,
    /// Output tokens/s.
    OutputTokensPerS,
}

impl Figure {
    fn parse(name: &str) -> Option<Figure> {
        match name {
            "error_rate" => return Some(Figure::ErrorRate),
            "empty_rate" => return Some(Figure::EmptyRate),
            "rps" | "requests_per_s" => return Some(Figure::Rps),
            "output_tps" | "output_tokens_per_s" => return Some(Figure::OutputTokensPerS),
            _ => {}
        }
        let (stat, latency) = name.split_once('_')?;
        let stat = Stat::ALL.into_iter().find(|s| s.as_str() == stat)?;
        let latency = Latency::ALL.into_iter().find(|l| l.as_str() == latency)?;
        Some(Figure::Latency(stat, latency))
    }

    /// Its value for a step, `None` when the step has no data for it.
    pub fn of(&self, row: &StepRow) -> Option<f64> {
        match *self {
            Figure::Latency(stat, latency) => row.latency(latency, stat),
            Figure::ErrorRate => (row.requests > 0).then_some(row.error_rate),
            Figure::EmptyRate => (row.requests > 0).then_some(row.empty_rate),
            Figure::Rps => Some(row.ok_rate),
            Figure::OutputTokensPerS => Some(row.output_tokens_per_s),
        }
    }

    fn show(&self, value: f64) -> String {
        match self {
            Figure::Latency(..) if value < 1.0 => format!("{:.1}ms", value * 1e3),
            Figure::Latency(..) => format!("{value:.3}s"),
            Figure::ErrorRate | Figure::EmptyRate => format!("{:.2}%", value * 100.0),
            Figure::Rps | Figure::OutputTokensPerS => format!("{value:.2}"),
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<=`
    AtMost,
    /// `<`
    Below,
    /// `>=`
    AtLeast,
    /// `>`
    Above,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::AtMost => actual <= limit,
            Op::Below => actual < limit,
            Op::AtLeast => actual >= limit,
            Op::Above => actual > limit,
        }
    }
}

/// One gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// As the user wrote it.
    pub text: String,
    /// What it checks.
    pub figure: Figure,
    /// How.
    pub op: Op,
    /// Against what (seconds, a 0..1 share or a rate).
    pub limit: f64,
}

/// The gates and how many requests a step needs before they judge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The gates; none means nothing is judged.
    pub gates: Vec<Gate>,
    /// Requests a step must have measured for its gates to be checked (at least 1).
    pub min_requests: u64,
}

impl Default for Slo {
    fn default() -> Slo {
        Slo {
            gates: Vec::new(),
            min_requests: 1,
        }
    }
}

impl Slo {
    /// What the gates make of `row`.
    pub fn judge(&self, row: &StepRow) -> Judgement {
        if row.requests == 0 || (!self.gates.is_empty() && row.requests < self.min_requests) {
            return Judgement::Unjudged(Unjudged {
                step: row.step,
                load: row.load_label(),
                requests: row.requests,
                min_requests: self.min_requests,
            });
        }
        Judgement::Judged(check(&self.gates, row))
    }
}

/// What the gates made of one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Every gate was checked; these failed (none: all held).
    Judged(Vec<Violation>),
    /// The step sent nothing, or too few requests to judge: no gate was checked.
    Unjudged(Unjudged),
}

impl Judgement {
    /// The failed gates (none for an unjudged step).
    pub fn violations(&self) -> &[Violation] {
        match self {
            Judgement::Judged(violations) => violations,
            Judgement::Unjudged(_) => &[],
        }
    }
}

/// A step the gates did not judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Unjudged {
    /// The step's index.
    pub step: u32,
    /// The step's load ("20 users").
    pub load: String,
    /// Requests it measured.
    pub requests: u64,
    /// Requests the gates needed.
    pub min_requests: u64,
}

impl Unjudged {
    /// The step sent no request at all (the run ended before it).
    pub fn not_run(&self) -> bool {
        self.requests == 0
    }
}

impl fmt::Display for Unjudged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({}): ", self.step + 1, self.load)?;
        if self.not_run() {
            write!(f, "not run (no request was measured)")
        } else {
            write!(
                f,
                "not judged: {} request(s), fewer than the {} the SLO gates need (--slo-min-requests)",
                self.requests, self.min_requests
            )
        }
    }
}

/// A gate that failed on a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The step's index.
    pub step: u32,
    /// The step's load ("20 users").
    pub load: String,
    /// The gate as written.
    pub gate: String,
    /// The measured figure, or why there is none.
    pub actual: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} ({}): {} failed, measured {}",
            self.step + 1,
            self.load,
            self.gate,
            self.actual
        )
    }
}

/// Parses a comma-separated list of gates.
pub fn parse(text: &str) -> Result<Vec<Gate>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_gate)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|gates| {
            if gates.is_empty() {
                Err(format!(
                    "--slo {text:?} holds no gate; write e.g. \"p95_ttft<=2s,error_rate<=1%\""
                ))
            } else {
                Ok(gates)
            }
        })
}

fn parse_gate(text: &str) -> Result<Gate, String> {
    const OPS: [(&str, Op); 4] = [
        ("<=", Op::AtMost),
        (">=", Op::AtLeast),
        ("<", Op::Below),
        (">", Op::Above),
    ];
    let (at, symbol, op) = OPS
        .iter()
        .filter_map(|&(symbol, op)| text.find(symbol).map(|at| (at, symbol, op)))
        .min_by_key(|&(at, symbol, _)| (at, std::cmp::Reverse(symbol.len())))
        .ok_or_else(|| {
            format!(
                "SLO gate {text:?} has no comparison; write METRIC<=VALUE, e.g. \"p95_ttft<=2s\""
            )
        })?;
    let name = text[..at].trim();
    let value = text[at + symbol.len()..].trim();
    let figure = Figure::parse(name).ok_or_else(|| {
        format!(
            "SLO gate {text:?}: unknown metric {name:?}; use STAT_LATENCY (STAT: mean, p50, p90, p95, p99, max; \
             LATENCY: ttft, ttft_corrected, itl, tpot, e2e, e2e_corrected), error_rate, empty_rate, rps or output_tps"
        )
    })?;
    let limit = parse_value(figure, value).map_err(|why| format!("SLO gate {text:?}: {why}"))?;
    Ok(Gate {
        text: text.to_string(),
        figure,
        op,
        limit,
    })
}

fn parse_value(figure: Figure, value: &str) -> Result<f64, String> {
    let number = |digits: &str| -> Result<f64, String> {
        parse_non_negative(digits).ok_or_else(|| format!("{value:?} is not a non-negative number"))
    };
    match figure {
        Figure::Latency(..) => {
            if let Some(ms) = value.strip_suffix("ms") {
                Ok(number(ms)? / 1e3)
            } else if let Some(s) = value.strip_suffix('s') {
                number(s)
            } else {
                Err(format!("{value:?} needs a unit: s or ms"))
            }
        }
        Figure::ErrorRate | Figure::EmptyRate => match value.strip_suffix('%') {
            Some(percent) => Ok(number(percent)? / 100.0),
            None => number(value).and_then(|share| {
                if share <= 1.0 {
                    Ok(share)
                } else {
                    Err(format!("{value:?} is above 1; write a percentage with %"))
                }
            }),
        },
        Figure::Rps | Figure::OutputTokensPerS => number(value),
    }
}

/// The gates that fail on `row`.
pub fn check(gates: &[Gate], row: &StepRow) -> Vec<Violation> {
    gates
        .iter()
        .filter_map(|gate| {
            let actual = match gate.figure.of(row) {
                Some(actual) if gate.op.holds(actual, gate.limit) => return None,
                Some(actual) => gate.figure.show(actual),
                None => "nothing (no successful request)".to_string(),
            };
            Some(Violation {
                step: row.step,
                load: row.load_label(),
                gate: gate.text.clone(),
                actual,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Outcome;
    use crate::results::step::ClientHealth;
    use std::time::Duration;

    fn row(p95_ttft: Option<f64>, error_rate: f64) -> StepRow {
        row_of(10, p95_ttft, error_rate)
    }

    fn row_of(requests: u64, p95_ttft: Option<f64>, error_rate: f64) -> StepRow {
        let mut latencies = vec![[None; Stat::ALL.len()]; Latency::ALL.len()];
        latencies[Latency::Ttft as usize][Stat::P95 as usize] = p95_ttft;
        StepRow {
            step: 1,
            users: Some(20),
            offered_rate: None,
            started_s: 0.0,
            duration_s: 1.0,
            requests,
            counts: [0; Outcome::ALL.len()],
            retry_asked: Default::default(),
            error_rate,
            empty_rate: 0.25,
            achieved_rate: 10.0,
            ok_rate: 9.0,
            output_tokens_per_s: 90.0,
            total_tokens_per_s: 100.0,
            mean_concurrency: 1.0,
            latencies,
            health: ClientHealth {
                cpu_share: 0.0,
                lag_p99: Duration::ZERO,
                lag_max: Duration::ZERO,
            },
        }
    }

    #[test]
    fn parses_the_issue_example_and_units() {
        let gates = parse("p95_ttft<=2s, error_rate<=1%").unwrap();
        assert_eq!(gates[0].figure, Figure::Latency(Stat::P95, Latency::Ttft));
        assert_eq!((gates[0].op, gates[0].limit), (Op::AtMost, 2.0));
        assert_eq!((gates[1].figure, gates[1].limit), (Figure::ErrorRate, 0.01));
        let gates =
            parse("p99_e2e_corrected<1500ms,error_rate<=0.05,rps>=3,output_tps>100,empty_rate<=2%")
                .unwrap();
        assert_eq!(
            gates[0].figure,
            Figure::Latency(Stat::P99, Latency::E2eCorrected)
        );
        assert_eq!((gates[0].op, gates[0].limit), (Op::Below, 1.5));
        assert_eq!(gates[1].limit, 0.05);
        assert_eq!((gates[2].figure, gates[2].op), (Figure::Rps, Op::AtLeast));
        assert_eq!(
            (gates[3].figure, gates[3].op),
            (Figure::OutputTokensPerS, Op::Above)
        );
        assert_eq!((gates[4].figure, gates[4].limit), (Figure::EmptyRate, 0.02));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let cases = [
            ("", "holds no gate"),
            ("p95_ttft", "no comparison"),
            ("p42_ttft<=2s", "unknown metric \"p42_ttft\""),
            ("latency<=2s", "unknown metric"),
            ("p95_ttft<=2", "needs a unit"),
            ("p95_ttft<=fasts", "not a non-negative number"),
            ("error_rate<=5", "write a percentage"),
            ("error_rate<=-1%", "not a non-negative number"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn checks_steps() {
        let gates = parse("p95_ttft<=2s,error_rate<=1%").unwrap();
        assert!(check(&gates, &row(Some(1.5), 0.0)).is_empty());
        let violations = check(&gates, &row(Some(2.5), 0.02));
        assert_eq!(violations.len(), 2);
        assert_eq!(
            violations[0].to_string(),
            "step 2 (20 users): p95_ttft<=2s failed, measured 2.500s"
        );
        assert_eq!(violations[1].actual, "2.00%");
        let none = check(&gates, &row(None, 0.0));
        assert_eq!(none[0].actual, "nothing (no successful request)");
        let empty = check(&parse("empty_rate<=10%").unwrap(), &row(None, 0.0));
        assert_eq!(empty[0].actual, "25.00%");
    }

    #[test]
    fn steps_with_too_few_requests_are_said_not_failed() {
        let slo = Slo {
            gates: parse("error_rate<=5%").unwrap(),
            min_requests: 5,
        };
        let Judgement::Unjudged(nothing) = slo.judge(&row_of(0, None, 0.0)) else {
            panic!("a step without requests is not judged");
        };
        assert!(nothing.not_run());
        assert_eq!(
            nothing.to_string(),
            "step 2 (20 users): not run (no request was measured)"
        );
        let Judgement::Unjudged(few) = slo.judge(&row_of(4, None, 0.5)) else {
            panic!("4 requests are fewer than 5");
        };
        assert!(!few.not_run());
        assert_eq!(
            few.to_string(),
            "step 2 (20 users): not judged: 4 request(s), fewer than the 5 the SLO gates need (--slo-min-requests)"
        );
        assert_eq!(slo.judge(&row_of(4, None, 0.5)).violations(), &[]);
        let judged = slo.judge(&row_of(5, None, 0.2));
        assert_eq!(judged.violations().len(), 1, "5 requests are enough");
        assert_eq!(
            slo.judge(&row_of(5, None, 0.0)),
            Judgement::Judged(Vec::new())
        );
        // Without gates a step with requests is judged (nothing to fail); one without is not run.
        let no_gates = Slo::default();
        assert_eq!(
            no_gates.judge(&row_of(1, None, 1.0)),
            Judgement::Judged(Vec::new())
        );
        assert!(matches!(
            no_gates.judge(&row_of(0, None, 0.0)),
            Judgement::Unjudged(_)
        ));
    }
}
