//! Which cluster and namespace a command works in, chosen as kubectl chooses them: the
//! kubeconfig context `--context` names (else the kubeconfig's current one, else the
//! in-cluster service account), and the namespace given on the command line or in the
//! job, else that context's namespace (in a cluster: the pod's own), else `default`.

use std::sync::OnceLock;

use kube::config::{Config, KubeConfigOptions};

use super::KubeError;

/// The context `--context` named, set once per process by the command.
static CONTEXT: OnceLock<Option<String>> = OnceLock::new();

/// Makes every client of this process use kubeconfig context `context` (`None`: the
/// current one). The first call wins; commands make it once, from their flag.
pub fn use_context(context: Option<String>) {
    let _ = CONTEXT.set(context);
}

fn chosen_context() -> Option<&'static str> {
    CONTEXT.get().and_then(Option::as_deref)
}

async fn config() -> Result<Config, KubeError> {
    match chosen_context() {
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.to_string()),
                ..KubeConfigOptions::default()
            };
            Config::from_kubeconfig(&options)
                .await
                .map_err(|err| KubeError::Config(format!("context {context:?}: {err}")))
        }
        None => Config::infer()
            .await
            .map_err(|err| KubeError::Config(err.to_string())),
    }
}

/// A client of the chosen context (see [`use_context`]).
pub async fn client() -> Result<kube::Client, KubeError> {
    kube::Client::try_from(config().await?).map_err(|err| KubeError::Config(err.to_string()))
}

/// `chosen` (from a flag or the job), else the chosen context's namespace, else `default`.
/// Reads the kubeconfig only, calls no API server: `--dry-run` uses it. Without any
/// configuration it is `default`, unless `--context` named one that cannot be read.
pub async fn namespace(chosen: Option<&str>) -> Result<String, KubeError> {
    if let Some(namespace) = chosen {
        return Ok(namespace.to_string());
    }
    match config().await {
        Ok(config) => Ok(config.default_namespace),
        Err(err) if chosen_context().is_some() => Err(err),
        Err(_) => Ok(DEFAULT_NAMESPACE.to_string()),
    }
}

/// Kubernetes' own default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";
