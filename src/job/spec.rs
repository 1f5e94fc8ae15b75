//! The fields of a job file, their defaults and their range checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::ModelSpec;
use crate::common::units::{deserialize_duration, serialize_duration};
use crate::common::{PodAccess, Retries};
use crate::dataset::{Fields, Format};
use crate::loadgen::profile::LoadProfile;

/// One batch job: what to run, on what, and where the results go.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name: the prefix of its run ids.
    pub name: String,
    /// The model the pods serve.
    #[serde(default)]
    pub model: ModelSpec,
    /// The prompts.
    pub dataset: DatasetSpec,
    /// What to reserve and where.
    #[serde(default)]
    pub capacity: Capacity,
    /// Rows per shard: the unit committed to disk and redone after a crash.
    #[serde(default = "default_shard_size")]
    pub shard_size: u32,
    /// Requests in flight on each pod at once.
    #[serde(default = "default_concurrency")]
    pub concurrency_per_pod: u32,
    /// Longest one attempt of a request may take (`300s`, `5m`).
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub request_timeout: Duration,
    /// How failed requests are retried.
    #[serde(default)]
    pub retries: Retries,
    /// Generation parameters of every request; a row's own (a Batch API body's) win.
    #[serde(default)]
    pub generation: Generation,
    /// Where run directories go (`OUTPUT/<run-id>/`).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// A `gembatch load` profile run against the same pods while the batch runs.
    #[serde(default)]
    pub load_verification: Option<LoadProfile>,
}

/// The dataset and how to read it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The file (JSONL or Parquet); relative paths are from the working directory.
    pub path: PathBuf,
    /// Its format [default: by extension].
    #[serde(default)]
    pub format: Format,
    /// Which fields or columns hold the id, the prompt and the messages.
    #[serde(default)]
    pub fields: Fields,
}

/// Where the pods run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `gembatch serve` processes on this machine, one per "GPU".
    #[default]
    Local,
    /// Gemma pods on GPU nodes reserved through a DWS ProvisioningRequest.
    Kubernetes,
}

/// The capacity to reserve.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// Where the pods run.
    pub backend: Backend,
    /// GPUs (pods), 1 to 10, reserved as one atomic block.
    pub gpus: u32,
    /// Longest wait for the reservation to be provisioned.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub provisioning_timeout: Duration,
    /// Longest wait for every pod to answer `/ready`.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub ready_timeout: Duration,
    /// Local backend: CPU threads per pod [default: the cores divided among the pods].
    pub threads_per_pod: Option<usize>,
    /// Servers that already exist (any OpenAI-compatible one): no reservation, no pods.
    pub endpoints: Vec<String>,
    /// The Kubernetes backend's settings.
    pub kubernetes: KubernetesSpec,
}

/// Where and how the Kubernetes backend reserves and runs the pods.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Namespace of every object [default: the kubeconfig context's, in a cluster the
    /// runner pod's own, else `default`]; `gembatch run` settles it before anything uses it.
    pub namespace: Option<String>,
    /// The pods' image (the `gembatch` image, CUDA build).
    pub image: String,
    /// ProvisioningRequest class.
    pub provisioning_class: String,
    /// GKE accelerator of the nodes.
    pub accelerator: String,
    /// The queued-provisioning node pool the pods must land on.
    pub node_pool: Option<String>,
    /// CPU each serve pod requests beside its GPU.
    pub cpu: String,
    /// Memory each serve pod requests and is limited to.
    pub memory: String,
    /// How long the nodes may run (DWS's maxRunDurationSeconds).
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub max_run_duration: Duration,
    /// Requests in all when one fails.
    pub failed_attempts: u32,
    /// How the runner reaches the serve pods: `auto` (pod IPs in a cluster,
    /// port-forwarding outside), `pod_ip` or `port_forward`.
    pub pod_access: PodAccess,
    /// Silence after which a serve pod takes its runner for dead and exits, giving its GPU
    /// back (the runner beats four times within it).
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub runner_timeout: Duration,
    /// A Kueue LocalQueue to submit the serve Job to: Kueue's ProvisioningRequest
    /// admission check then reserves the GPUs (GKE's flex-start with queued provisioning
    /// through Kueue) instead of gembatch's own ProvisioningRequest.
    pub queue: Option<String>,
    /// How long the serve Job stays after its pods ended (their logs with it) when no
    /// runner deleted it; Kubernetes then deletes it and what it owns.
    #[serde(
        deserialize_with = "deserialize_duration",
        serialize_with = "serialize_duration"
    )]
    pub finished_ttl: Duration,
}

impl KubernetesSpec {
    /// The namespace of every object: the one set, else `default` (see `namespace`).
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(crate::capacity::kubernetes::cluster::DEFAULT_NAMESPACE)
    }
}

impl Default for KubernetesSpec {
    fn default() -> KubernetesSpec {
        let fit = crate::capacity::kubernetes::objects::PodFit::default();
        KubernetesSpec {
            namespace: None,
            image: "gembatch:latest".into(),
            provisioning_class: "queued-provisioning.gke.io".into(),
            accelerator: "nvidia-l4".into(),
            node_pool: fit.node_pool,
            cpu: fit.cpu,
            memory: fit.memory,
            max_run_duration: Duration::from_secs(8 * 3600),
            failed_attempts: 3,
            pod_access: PodAccess::Auto,
            runner_timeout: Duration::from_secs(5 * 60),
            finished_ttl: Duration::from_secs(10 * 60),
            queue: None,
        }
    }
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            backend: Backend::Local,
            gpus: 1,
            provisioning_timeout: Duration::from_secs(30 * 60),
            ready_timeout: Duration::from_secs(10 * 60),
            threads_per_pod: None,
            endpoints: Vec::new(),
            kubernetes: KubernetesSpec::default(),
        }
    }
}

/// Generation parameters sent with every request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Generation {
    /// Most tokens generated per row.
    pub max_tokens: u32,
    /// Sampling temperature [default: the server's].
    pub temperature: Option<f64>,
    /// Nucleus sampling [default: the server's].
    pub top_p: Option<f64>,
    /// Sampling seed [default: the server's].
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

impl Default for Generation {
    fn default() -> Generation {
        Generation {
            max_tokens: 256,
            temperature: None,
            top_p: None,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl Generation {
    /// The body fields these parameters set.
    pub fn body_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("max_tokens".into(), self.max_tokens.into());
        if let Some(temperature) = self.temperature {
            fields.insert("temperature".into(), temperature.into());
        }
        if let Some(top_p) = self.top_p {
            fields.insert("top_p".into(), top_p.into());
        }
        if let Some(seed) = self.seed {
            fields.insert("seed".into(), seed.into());
        }
        if !self.stop.is_empty() {
            fields.insert("stop".into(), self.stop.clone().into());
        }
        fields
    }
}

impl JobSpec {
    /// Range checks the types cannot express; `Err` names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        if !crate::results::run_id::is_valid_run_id(&self.name) {
            return fail("name", "use letters, digits, '-', '_' and '.'");
        }
        if !(1..=10).contains(&self.capacity.gpus) {
            return fail(
                "capacity.gpus",
                "must be 1 to 10 (one atomic block of at most 10 GPUs)",
            );
        }
        if self.capacity.kubernetes.runner_timeout < Duration::from_secs(1) {
            return fail(
                "capacity.kubernetes.runner_timeout",
                "must be at least 1s (pods exit when the runner is silent this long)",
            );
        }
        if self.capacity.threads_per_pod == Some(0) {
            return fail("capacity.threads_per_pod", "must be at least 1");
        }
        if self.shard_size == 0 {
            return fail("shard_size", "must be at least 1 row");
        }
        for (field, path) in [
            ("dataset.path", &self.dataset.path),
            ("output", &self.output),
        ] {
            if let Some(Err(message)) = crate::store::StoreUrl::parse(path) {
                return fail(field, &message);
            }
        }
        if let Some(message) = passthrough_problem(&self.dataset.fields) {
            return fail("dataset.fields.passthrough", &message);
        }
        if !(1..=1024).contains(&self.concurrency_per_pod) {
            return fail("concurrency_per_pod", "must be 1 to 1024");
        }
        if self.request_timeout.is_zero() {
            return fail("request_timeout", "must be above 0 s");
        }
        if self.retries.max_attempts == 0 {
            return fail("retries.max_attempts", "must be at least 1 (the first try)");
        }
        if self.retries.initial_backoff > self.retries.max_backoff {
            return fail(
                "retries.initial_backoff",
                "must not exceed retries.max_backoff",
            );
        }
        if self.generation.max_tokens == 0 {
            return fail("generation.max_tokens", "must be at least 1");
        }
        if let Some(t) = self.generation.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return fail("generation.temperature", "must be 0 to 2");
        }
        if let Some(p) = self.generation.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return fail("generation.top_p", "must be above 0 and at most 1");
        }
        self.model.check(self.capacity.backend)?;
        if let Some(load) = &self.load_verification {
            // The URL, the directory and the id are the runner's, set once the pods exist.
            load.clone()
                .config(String::new(), None, None)
                .map_err(|err| ("load_verification".to_string(), err.to_string()))?;
        }
        Ok(())
    }
}

fn default_shard_size() -> u32 {
    64
}

fn default_concurrency() -> u32 {
    8
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_output() -> PathBuf {
    PathBuf::from("results")
}

/// What is wrong with the fields named to pass through, if anything: each becomes a column
/// of `requests.parquet` under its own name, so it may not repeat, be the row's id, prompt
/// or messages, or take the name of a result column.
fn passthrough_problem(fields: &Fields) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    for name in &fields.passthrough {
        if name.is_empty() || !seen.insert(name) {
            return Some(format!("{name:?} is empty or named twice"));
        }
        if [&fields.id, &fields.prompt, &fields.messages].contains(&name) {
            return Some(format!(
                "`{name}` is the row's id, prompt or messages, which the outputs hold already"
            ));
        }
        if !crate::results::batch::is_free_column_name(name) {
            return Some(format!(
                "`{name}` is already a column of requests.parquet; rename the field in the dataset"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: t\ndataset:\n  path: d.jsonl\n";

    #[test]
    fn a_minimal_job_takes_the_defaults() {
        let spec = JobSpec::parse(MINIMAL).unwrap();
        assert_eq!(spec.capacity, Capacity::default());
        assert_eq!(spec.shard_size, 64);
        assert_eq!(spec.dataset.fields, Fields::default());
        assert_eq!(spec.request_timeout, Duration::from_secs(300));
        assert!(spec.check().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        for (text, field) in [
            ("name: t\ndataset: {path: d}\nshards: 3\n", "shards"),
            ("name: t\ndataset: {path: d, colum: x}\n", "colum"),
            ("name: t\ndataset: {path: d}\ncapacity: {gpu: 2}\n", "gpu"),
            ("name: t\ndataset: {path: d, fields: {text: p}}\n", "text"),
        ] {
            let err = JobSpec::parse(text).unwrap_err();
            assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
        }
    }

    #[test]
    fn durations_and_out_of_range_values() {
        let spec = JobSpec::parse(&format!(
            "{MINIMAL}request_timeout: 2m\nretries: {{initial_backoff: 250ms, max_backoff: 10}}\n"
        ))
        .unwrap();
        assert_eq!(spec.request_timeout, Duration::from_secs(120));
        assert_eq!(spec.retries.initial_backoff, Duration::from_millis(250));
        assert_eq!(spec.retries.max_backoff, Duration::from_secs(10));
        let err = JobSpec::parse(&format!("{MINIMAL}request_timeout: soon\n")).unwrap_err();
        assert!(err.contains("not a duration"), "{err}");

        for (extra, field) in [
            ("capacity: {gpus: 11}", "capacity.gpus"),
            ("capacity: {gpus: 0}", "capacity.gpus"),
            ("shard_size: 0", "shard_size"),
            ("concurrency_per_pod: 0", "concurrency_per_pod"),
            ("generation: {temperature: 3}", "generation.temperature"),
            ("retries: {max_attempts: 0}", "retries.max_attempts"),
            (
                "load_verification: {users: 2, poisson: true}",
                "load_verification",
            ),
        ] {
            let spec = JobSpec::parse(&format!("{MINIMAL}{extra}\n")).unwrap();
            assert_eq!(spec.check().unwrap_err().0, field, "{extra}");
        }
    }

    #[test]
    fn load_verification_is_a_typed_load_profile() {
        let spec = JobSpec::parse(&format!(
            "{MINIMAL}load_verification:\n  users: 2\n  duration: 30s\n  poisson: false\n  ignore_eos: true\n"
        ))
        .unwrap();
        let profile = spec.load_verification.unwrap();
        assert_eq!(profile.users, Some(2));
        assert_eq!(profile.duration, Some(Duration::from_secs(30)));
        assert!(profile.ignore_eos && !profile.poisson);
        // The URL, the directory and the id are the runner's.
        for key in ["url", "out", "run_id"] {
            let err =
                JobSpec::parse(&format!("{MINIMAL}load_verification: {{{key}: x}}\n")).unwrap_err();
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
    }

    #[test]
    fn passthrough_fields_may_not_clash_with_the_outputs_columns() {
        let with = |names: &str| {
            let spec = JobSpec::parse(&format!(
                "name: t\ndataset:\n  path: d.jsonl\n  fields: {{passthrough: [{names}]}}\n"
            ))
            .unwrap();
            spec.check()
                .err()
                .map(|(field, message)| format!("{field}: {message}"))
        };
        assert_eq!(with("doc_id, lang"), None);
        for (names, words) in [
            ("doc_id, doc_id", "named twice"),
            ("prompt", "the row's id, prompt or messages"),
            ("status", "already a column of requests.parquet"),
            ("run_id", "already a column of requests.parquet"),
        ] {
            let err = with(names).expect(names);
            assert!(err.starts_with("dataset.fields.passthrough: "), "{err}");
            assert!(err.contains(words), "{names}: {err}");
        }
    }
}
