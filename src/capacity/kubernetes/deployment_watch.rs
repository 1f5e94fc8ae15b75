//! `gembatch load --watch-deployment NAMESPACE/NAME`: samples a Deployment's replica counts
//! and the wishes of the HorizontalPodAutoscaler that targets it, at a fixed interval for
//! as long as the load runs, so the report can set the autoscaler's reaction beside the
//! load. Reads only: `get` on the Deployment, `list` on autoscalers in its namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::ListParams;
use tokio_util::sync::CancellationToken;

use super::KubeError;
use crate::results::replicas::ReplicaSample;

/// The Deployment to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDeployment {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl WatchedDeployment {
    /// Parses `NAMESPACE/NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "--watch-deployment {text:?}: expected NAMESPACE/NAME, e.g. default/gemma-serve"
            )),
        }
    }
}

impl std::fmt::Display for WatchedDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A watch that found its Deployment and samples it until told to stop.
pub struct DeploymentWatch {
    deployments: Api<Deployment>,
    autoscalers: Api<HorizontalPodAutoscaler>,
    target: WatchedDeployment,
}

impl DeploymentWatch {
    /// Checks, before any load is sent, that the Deployment exists and can be read.
    pub async fn connect(
        client: kube::Client,
        target: WatchedDeployment,
    ) -> Result<Self, KubeError> {
        let deployments = Api::<Deployment>::namespaced(client.clone(), &target.namespace);
        let autoscalers = Api::namespaced(client, &target.namespace);
        let found = deployments
            .get_opt(&target.name)
            .await
            .map_err(KubeError::api("read the watched Deployment"))?;
        if found.is_none() {
            return Err(KubeError::Missing(format!(
                "--watch-deployment {target}: no Deployment {} in namespace {}",
                target.name, target.namespace
            )));
        }
        Ok(Self {
            deployments,
            autoscalers,
            target,
        })
    }

    /// One sample at `t_s`; a field the API did not give (or an API error) is a gap.
    pub async fn sample(&self, t_s: f64) -> ReplicaSample {
        let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
        let mut sample = ReplicaSample {
            t_s,
            ..ReplicaSample::default()
        };
        if let Ok(deployment) = self.deployments.get(&self.target.name).await {
            sample.spec_replicas = count(deployment.spec.replicas);
            if let Some(status) = deployment.status {
                sample.replicas = count(status.replicas).or(Some(0));
                sample.ready_replicas = count(status.ready_replicas).or(Some(0));
            }
        }
        if let Ok(list) = self.autoscalers.list(&ListParams::default()).await {
            let targets_it = |hpa: &&HorizontalPodAutoscaler| {
                let target = &hpa.spec.scale_target_ref;
                target.kind == "Deployment" && target.name == self.target.name
            };
            if let Some(status) = list
                .items
                .iter()
                .find(targets_it)
                .and_then(|h| h.status.as_ref())
            {
                sample.hpa_current = count(Some(status.current_replicas));
                sample.hpa_desired = count(Some(status.desired_replicas));
            }
        }
        sample
    }

    /// Samples every `interval` from `started` until `stop`, then once more.
    pub async fn run(
        self,
        started: Instant,
        interval: Duration,
        stop: CancellationToken,
    ) -> Vec<ReplicaSample> {
        let mut samples = Vec::new();
        loop {
            samples.push(self.sample(started.elapsed().as_secs_f64()).await);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        samples.push(self.sample(started.elapsed().as_secs_f64()).await);
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_and_name_and_names_the_flag_otherwise() {
        assert_eq!(
            WatchedDeployment::parse("prod/gemma-serve").unwrap(),
            WatchedDeployment {
                namespace: "prod".into(),
                name: "gemma-serve".into()
            }
        );
        for bad in ["gemma-serve", "/x", "x/", "a/b/c", ""] {
            let err = WatchedDeployment::parse(bad).unwrap_err();
            assert!(
                err.contains("--watch-deployment") && err.contains("NAMESPACE/NAME"),
                "{err}"
            );
        }
    }
}
