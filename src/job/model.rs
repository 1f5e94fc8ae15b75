//! The job's `model`: where the weights are (a path the pods see, a bucket, a volume claim)
//! and the checks of those against the backend.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::Backend;
use crate::common::model_location::{BucketPath, MODEL_MOUNT};

/// The model served.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// A Gemma 3 GGUF file or safetensors directory, as the pods see it [default: the cached
    /// Gemma 3 270M]; or, on the Kubernetes backend, `gs://BUCKET/PATH`, which the pods
    /// mount with Cloud Storage FUSE.
    pub path: Option<PathBuf>,
    /// Kubernetes backend: a PersistentVolumeClaim holding the weights, mounted read-only at
    /// [`MODEL_MOUNT`]; `path` is then under it.
    pub volume_claim: Option<String>,
    /// The name requests carry [default: what the server lists first].
    pub name: Option<String>,
    /// Most positions (prompt + output) per sequence [default: the model's context]; rows
    /// whose prompt and `max_tokens` do not fit are refused before any capacity is reserved.
    pub context: Option<u32>,
}

impl ModelSpec {
    /// The bucket path, when `path` is `gs://...`; `Err` says what is wrong with it.
    pub fn bucket_path(&self) -> Option<Result<BucketPath, String>> {
        let text = self.path.as_ref()?.to_str()?;
        BucketPath::parse(text)
    }

    /// Range checks of the model's location; `Err` names the field.
    pub(super) fn check(&self, backend: Backend) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        let remote = backend == Backend::Kubernetes;
        if let Some(bucket) = self.bucket_path() {
            bucket.map_err(|message| ("model.path".to_string(), message))?;
            if !remote {
                return fail(
                    "model.path",
                    "a bucket path needs capacity.backend: kubernetes (the pods mount it); \
                     copy the model to this machine for the local backend"
                        .into(),
                );
            }
            if self.volume_claim.is_some() {
                return fail(
                    "model.volume_claim",
                    "give either a bucket path or a volume claim, not both".into(),
                );
            }
        }
        if self.volume_claim.is_some() {
            if !remote {
                return fail(
                    "model.volume_claim",
                    "a volume claim needs capacity.backend: kubernetes".into(),
                );
            }
            if !self
                .path
                .as_ref()
                .is_some_and(|path| path.starts_with(MODEL_MOUNT) && path != Path::new(MODEL_MOUNT))
            {
                return fail(
                    "model.path",
                    format!(
                        "with a volume claim, give the model's path under {MODEL_MOUNT}/, where the claim is mounted"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::JobSpec;

    const MINIMAL: &str = "name: t\ndataset:\n  path: d.jsonl\n";

    #[test]
    fn model_locations_are_checked_against_the_backend() {
        let kubernetes = "capacity: {backend: kubernetes}";
        for (extra, field) in [
            ("model: {path: gs://weights/gemma}", Some("model.path")),
            (
                "model: {path: gs://weights/gemma}\ncapacity: {backend: kubernetes}",
                None,
            ),
            (
                "model: {path: gs://weights}\ncapacity: {backend: kubernetes}",
                Some("model.path"),
            ),
            (
                "model: {path: gs:///gemma}\ncapacity: {backend: kubernetes}",
                Some("model.path"),
            ),
            (
                "model: {path: /models/g, volume_claim: w}",
                Some("model.volume_claim"),
            ),
            (
                &format!("model: {{path: /models/g, volume_claim: w}}\n{kubernetes}"),
                None,
            ),
            (
                &format!("model: {{path: /opt/g, volume_claim: w}}\n{kubernetes}"),
                Some("model.path"),
            ),
            (
                &format!("model: {{volume_claim: w}}\n{kubernetes}"),
                Some("model.path"),
            ),
            (
                &format!("model: {{path: gs://b/g, volume_claim: w}}\n{kubernetes}"),
                Some("model.volume_claim"),
            ),
        ] {
            let spec = JobSpec::parse(&format!("{MINIMAL}{extra}\n")).unwrap();
            assert_eq!(
                spec.check().err().map(|e| e.0),
                field.map(str::to_string),
                "{extra}"
            );
        }
        let spec =
            JobSpec::parse(&format!("{MINIMAL}model: {{path: gs://weights/a/b/}}\n")).unwrap();
        let bucket = spec.model.bucket_path().unwrap().unwrap();
        assert_eq!(
            (bucket.bucket.as_str(), bucket.object.as_str()),
            ("weights", "a/b")
        );
    }
}
