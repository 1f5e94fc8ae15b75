//! A load profile: the shape, the requests, the gates of a `gembatch load` run, without
//! where it goes. `gembatch load` reads it from its flags, a job's `load_verification` from
//! YAML, into this one type; [`LoadProfile::config`] validates it into a run.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, FromArgMatches};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::plan::{Arrivals, Hold, Plan};
use super::slo::{self, Slo};
use super::workload::TokenLengths;
use super::{LoadConfig, LoadError, Prompts};
use crate::capacity::kubernetes::deployment_watch::WatchedDeployment;
use crate::client::tls::Trust;
use crate::common::REPLICA_HEADER;
use crate::common::units::{
    deserialize_duration, deserialize_text, parse_duration, serialize_duration,
};
use crate::results::run_id::{is_valid_run_id, new_run_id};

/// What a load run sends and checks, as flags or as a job's YAML map (the flags' names
/// with `_` for `-`); every field not written takes the flag's default.
#[derive(Debug, Clone, PartialEq, Args, Deserialize, Serialize)]
#[command(group(ArgGroup::new("shape").required(true).args(["max_users", "users", "rate"])))]
#[serde(default, deny_unknown_fields)]
pub struct LoadProfile {
    /// Bearer token for the server.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    // A secret: never written into a run's manifest.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Model name to request [default: the first one the server lists].
    #[arg(long)]
    pub model: Option<String>,
    /// https: trust only server certificates signed by the CA certificates in this PEM
    /// file [default: the system's root certificates].
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<std::path::PathBuf>,
    /// https: accept any server certificate, unverified (self-signed test servers only).
    #[arg(long, conflicts_with = "cacert")]
    pub insecure: bool,

    /// Ramp: step the users up to this many.
    #[arg(long, alias = "max_users", help_heading = "Ramp (closed loop)")]
    pub max_users: Option<u32>,
    /// Ramp: users added per step [default: 10].
    #[arg(long, alias = "step_size", help_heading = "Ramp (closed loop)")]
    pub step_size: Option<u32>,
    /// Ramp: users of the first step [default: the step size].
    #[arg(long, alias = "start_users", help_heading = "Ramp (closed loop)")]
    pub start_users: Option<u32>,
    /// Ramp: how long each step lasts (`90`, `90s`, `5m`) [default: 60s].
    #[arg(long, alias = "step_duration", value_parser = parse_duration,
          conflicts_with = "requests_per_user", help_heading = "Ramp (closed loop)")]
    #[serde(
        deserialize_with = "deserialize_optional_duration",
        serialize_with = "serialize_optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub step_duration: Option<Duration>,
    /// Ramp: instead of a duration, each user sends this many requests per step.
    #[arg(long, alias = "requests_per_user", help_heading = "Ramp (closed loop)")]
    pub requests_per_user: Option<u32>,

    /// Sustained: this many users for `--duration`.
    #[arg(long, help_heading = "Sustained (closed loop)")]
    pub users: Option<u32>,
    /// Sustained and rate: how long the run lasts (`600`, `10m`) [default: 60s].
    #[arg(long, value_parser = parse_duration, help_heading = "Sustained (closed loop)")]
    #[serde(
        deserialize_with = "deserialize_optional_duration",
        serialize_with = "serialize_optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,

    /// Rate: open loop, requests per second whatever the server does.
    #[arg(long, help_heading = "Rate (open loop)")]
    pub rate: Option<f64>,
    /// Rate: Poisson arrivals instead of evenly spaced ones.
    #[arg(long, help_heading = "Rate (open loop)")]
    pub poisson: bool,
    /// Rate: most requests in flight [default: 1024]; the wait beyond counts in the
    /// corrected latencies.
    #[arg(long, help_heading = "Rate (open loop)")]
    pub max_concurrency: Option<u32>,

    /// Load at the first step's level for this long first, left out of the statistics.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub warmup: Duration,
    /// Prompts from a dataset instead of synthetic ones: JSONL (`{"prompt"}` or
    /// `{"messages"}` rows, or OpenAI Batch API input) or Parquet (a `prompt` column).
    #[arg(long, conflicts_with = "prompt_tokens", help_heading = "Requests")]
    pub dataset: Option<PathBuf>,
    /// Synthetic prompt length in words (about one token each): MEAN[,STDDEV] (normal),
    /// MIN..MAX (uniform) or log:MIN..MAX (uniform in the logarithm).
    #[arg(long, default_value = "128", help_heading = "Requests")]
    #[serde(deserialize_with = "deserialize_text")]
    pub prompt_tokens: String,
    /// Output length (`max_tokens`), in the forms of --prompt-tokens; a dataset row's own
    /// max_tokens wins.
    #[arg(long, default_value = "128", help_heading = "Requests")]
    #[serde(deserialize_with = "deserialize_text")]
    pub output_tokens: String,
    /// Ask the server to ignore end-of-sequence so outputs have exactly max_tokens (vLLM,
    /// gembatch serve).
    #[arg(long, help_heading = "Requests")]
    pub ignore_eos: bool,
    /// Sampling temperature to send [default: the server's].
    #[arg(long, help_heading = "Requests")]
    pub temperature: Option<f64>,
    /// Seed of synthetic prompts, lengths and Poisson arrivals.
    #[arg(long, default_value_t = 0, help_heading = "Requests")]
    pub seed: u64,
    /// Longest a request may take before it counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "300s", help_heading = "Requests")]
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub timeout: Duration,
    /// Response header that names the replica serving a request.
    #[arg(long, default_value = REPLICA_HEADER, help_heading = "Requests")]
    pub replica_header: String,

    /// Gates checked on every step, e.g. `p95_ttft<=2s,error_rate<=1%`; the command exits 1
    /// when one fails.
    #[arg(long)]
    pub slo: Option<String>,
    /// Requests a step must have measured before the gates judge it; a step with fewer is
    /// reported as not judged (one with none as not run) instead of passing or failing.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub slo_min_requests: u64,
    /// Record this Deployment's replicas and its HorizontalPodAutoscaler's desired replicas
    /// over the run (replicas.parquet, on the report's timeline); read through KUBECONFIG
    /// or the in-cluster service account.
    #[arg(long, value_name = "NAMESPACE/NAME", help_heading = "Autoscaling")]
    pub watch_deployment: Option<String>,
    /// How often --watch-deployment looks (`5s`, `1m`).
    #[arg(long, value_parser = parse_duration, default_value = "5s", help_heading = "Autoscaling")]
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub watch_interval: Duration,
}

impl LoadProfile {
    /// The profile as a validated run against `url`, its results in `out` [default:
    /// `results/RUN_ID`] under `run_id` [default: a new one]; nothing is sent before this
    /// passes.
    pub fn config(
        self,
        url: String,
        out: Option<PathBuf>,
        run_id: Option<String>,
    ) -> Result<LoadConfig, LoadError> {
        let flags = LoadError::Flags;
        let plan = self.plan().map_err(flags)?;
        let slo = self.slo().map_err(flags)?;
        let lengths = |flag: &str, text: &str| {
            TokenLengths::parse(text).map_err(|why| flags(format!("--{flag}: {why}")))
        };
        let prompts = match &self.dataset {
            Some(path) => Prompts::Dataset(path.clone()),
            None => Prompts::Synthetic {
                prompt: lengths("prompt-tokens", &self.prompt_tokens)?,
            },
        };
        let output = lengths("output-tokens", &self.output_tokens)?;
        if self.timeout.is_zero() {
            return Err(flags("--timeout must be above 0 s".into()));
        }
        let replica_header =
            http::HeaderName::try_from(self.replica_header.as_str()).map_err(|_| {
                flags(format!(
                    "--replica-header {:?} is not a header name",
                    self.replica_header
                ))
            })?;
        let watch = self.watch().map_err(flags)?;
        let run_id = run_id.unwrap_or_else(|| new_run_id("load"));
        if !is_valid_run_id(&run_id) {
            return Err(flags(format!(
                "--run-id {run_id:?}: use letters, digits, '-', '_' and '.'"
            )));
        }
        let trust = match (self.cacert, self.insecure) {
            (_, true) => Trust::AnyCertificate,
            (Some(path), false) => Trust::CaFile(path),
            (None, false) => Trust::SystemRoots,
        };
        Ok(LoadConfig {
            url,
            trust,
            api_key: self.api_key,
            model: self.model,
            plan,
            prompts,
            output,
            ignore_eos: self.ignore_eos,
            temperature: self.temperature,
            seed: self.seed,
            timeout: self.timeout,
            replica_header,
            slo,
            out_dir: out.unwrap_or_else(|| PathBuf::from("results").join(&run_id)),
            run_id,
            watch,
        })
    }

    /// The steps of the profile's shape (ramp, sustained or rate).
    fn plan(&self) -> Result<Plan, String> {
        if self.max_users.is_none() && self.users.is_none() && self.rate.is_none() {
            return Err(
                "give the run a shape: --max-users (a ramp), --users (sustained) or \
                        --rate (open loop)"
                    .into(),
            );
        }
        check_shape_flags(self)?;
        let warmup = (!self.warmup.is_zero()).then_some(self.warmup);
        let duration = self.duration.unwrap_or(DEFAULT_DURATION);
        if let Some(max_users) = self.max_users {
            let hold = match self.requests_per_user {
                Some(count) => Hold::RequestsPerUser(count),
                None => Hold::For(self.step_duration.unwrap_or(DEFAULT_DURATION)),
            };
            let step_size = self.step_size.unwrap_or(DEFAULT_STEP_SIZE);
            let start = self.start_users.unwrap_or(step_size.min(max_users));
            Plan::ramp(start, step_size, max_users, hold, warmup)
        } else if let Some(users) = self.users {
            Plan::sustained(users, duration, warmup)
        } else {
            let rate = self.rate.unwrap_or(0.0);
            let arrivals = if self.poisson {
                Arrivals::Poisson
            } else {
                Arrivals::Constant
            };
            Plan::rate(rate, arrivals, self.max_concurrency, duration, warmup)
        }
    }

    /// The SLO gates and the requests a step needs before they judge it.
    fn slo(&self) -> Result<Slo, String> {
        let gates = match self.slo.as_deref() {
            Some(text) => slo::parse(text)?,
            None => Vec::new(),
        };
        Ok(Slo {
            gates,
            min_requests: self.slo_min_requests,
        })
    }

    /// The Deployment to watch and how often, if any.
    fn watch(&self) -> Result<Option<(WatchedDeployment, Duration)>, String> {
        let target = self
            .watch_deployment
            .as_deref()
            .map(WatchedDeployment::parse)
            .transpose()?;
        if self.watch_interval.is_zero() {
            return Err("--watch-interval must be above 0 s".into());
        }
        Ok(target.map(|target| (target, self.watch_interval)))
    }
}

/// A ramp step's length and a sustained or rate run's length, unless given.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Users added per ramp step, unless given.
const DEFAULT_STEP_SIZE: u32 = 10;

/// Flags of one shape given to another are mistakes, not something to ignore.
fn check_shape_flags(args: &LoadProfile) -> Result<(), String> {
    const RAMP: &str = "a ramp (--max-users)";
    const OPEN_LOOP: &str = "an open-loop run (--rate)";
    let (ramp, rate) = (args.max_users.is_some(), args.rate.is_some());
    let given = [
        ("--step-size", args.step_size.is_some(), ramp, RAMP),
        ("--start-users", args.start_users.is_some(), ramp, RAMP),
        ("--step-duration", args.step_duration.is_some(), ramp, RAMP),
        (
            "--requests-per-user",
            args.requests_per_user.is_some(),
            ramp,
            RAMP,
        ),
        (
            "--duration",
            args.duration.is_some(),
            !ramp,
            "--users or --rate runs; a ramp step lasts --step-duration",
        ),
        ("--poisson", args.poisson, rate, OPEN_LOOP),
        (
            "--max-concurrency",
            args.max_concurrency.is_some(),
            rate,
            OPEN_LOOP,
        ),
    ];
    match given
        .iter()
        .find(|(_, present, fits, _)| *present && !*fits)
    {
        Some((flag, _, _, shape)) => Err(format!("{flag} is for {shape}")),
        None => Ok(()),
    }
}

impl Default for LoadProfile {
    /// Every flag's default: the one place they are written is the flags' declarations.
    fn default() -> LoadProfile {
        let command = LoadProfile::augment_args(clap::Command::new("load")).ignore_errors(true);
        let matches = command.get_matches_from(["load"]);
        LoadProfile::from_arg_matches(&matches).expect("the flags' defaults parse")
    }
}

/// An optional duration written as [`deserialize_duration`] reads it.
fn deserialize_optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(deserializer).map(Some)
}

/// An optional duration as [`serialize_duration`] writes it (`None` is skipped).
fn serialize_optional_duration<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => serialize_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_map_takes_every_flag_default() {
        let profile: LoadProfile = serde_json::from_str("{}").unwrap();
        assert_eq!(profile, LoadProfile::default());
        assert_eq!(profile.prompt_tokens, "128");
        assert_eq!(profile.timeout, Duration::from_secs(300));
        assert_eq!(profile.slo_min_requests, 1);
        assert_eq!(profile.replica_header, REPLICA_HEADER);
    }

    #[test]
    fn yaml_and_flags_give_the_same_profile() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            profile: LoadProfile,
        }
        let from_flags = <Flags as clap::Parser>::try_parse_from([
            "load",
            "--users",
            "2",
            "--duration",
            "90s",
            "--prompt-tokens",
            "32",
            "--ignore-eos",
            "--slo",
            "error_rate<=5%",
        ])
        .unwrap()
        .profile;
        let from_yaml: LoadProfile = serde_json::from_value(serde_json::json!({
            "users": 2, "duration": "90s", "prompt_tokens": 32, "ignore_eos": true,
            "slo": "error_rate<=5%",
        }))
        .unwrap();
        assert_eq!(from_yaml, from_flags);
        assert_eq!(from_yaml.duration, Some(Duration::from_secs(90)));
        // A run's manifest writes the profile and reads it back on --resume.
        let written = serde_json::to_value(&from_yaml).unwrap();
        assert_eq!(
            serde_json::from_value::<LoadProfile>(written).unwrap(),
            from_yaml
        );
    }

    #[test]
    fn unknown_keys_and_the_runners_own_are_refused() {
        for key in ["warp", "url", "out", "run_id"] {
            let err = serde_json::from_value::<LoadProfile>(serde_json::json!({ key: 1 }))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
    }

    #[test]
    fn a_profile_becomes_a_validated_run() {
        let profile = LoadProfile {
            users: Some(3),
            ..LoadProfile::default()
        };
        let config = profile
            .clone()
            .config("http://127.0.0.1:1".into(), None, Some("r1".into()))
            .unwrap();
        assert_eq!(config.out_dir, PathBuf::from("results/r1"));
        assert_eq!(config.plan.steps.len(), 1);
        let shapeless = LoadProfile::default().config("http://x".into(), None, None);
        assert!(shapeless.is_err());
        let mixed = LoadProfile {
            poisson: true,
            ..profile
        };
        let err = mixed.config("http://x".into(), None, None).unwrap_err();
        assert!(err.to_string().contains("--poisson is for"), "{err}");
    }

    /// The run the profile of `flags` gives.
    fn config(flags: &[&str]) -> Result<LoadConfig, LoadError> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            profile: LoadProfile,
        }
        let flags = <Flags as clap::Parser>::try_parse_from([&["load"][..], flags].concat());
        flags
            .unwrap()
            .profile
            .config("http://127.0.0.1:1".into(), None, None)
    }

    #[test]
    fn flags_of_another_shape_are_refused() {
        let cases = [
            (
                &["--users", "2", "--step-size", "3"][..],
                "--step-size is for a ramp",
            ),
            (
                &["--rate", "2", "--step-duration", "5s"],
                "--step-duration is for a ramp",
            ),
            (
                &["--max-users", "4", "--duration", "5s"],
                "--duration is for --users or --rate",
            ),
            (
                &["--users", "4", "--poisson"],
                "--poisson is for an open-loop run",
            ),
            (
                &["--max-users", "4", "--max-concurrency", "3"],
                "--max-concurrency is for an open-loop",
            ),
        ];
        for (flags, expected) in cases {
            let err = config(flags).unwrap_err().to_string();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
        let plan = config(&["--max_users", "30", "--step_size", "10"])
            .unwrap()
            .plan;
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.steps[0].hold, Hold::For(DEFAULT_DURATION));
        assert!(config(&["--rate", "5", "--poisson", "--duration", "2s"]).is_ok());
    }
}
