//! Where a serve pod finds the weights: in its image, on a PersistentVolumeClaim, or in a
//! Cloud Storage bucket mounted with the Cloud Storage FUSE CSI driver (GKE's
//! `gcsfuse.csi.storage.gke.io`; the pod's service account needs read access to the bucket
//! through Workload Identity).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, Volume, VolumeMount,
};

use crate::common::model_location::{BucketPath, MODEL_MOUNT};

/// The pod volume holding the weights.
const VOLUME: &str = "model";
/// GKE's Cloud Storage FUSE CSI driver, and the pod annotation that injects its sidecar.
const GCS_FUSE_DRIVER: &str = "gcsfuse.csi.storage.gke.io";
const GCS_FUSE_ANNOTATION: &str = "gke-gcsfuse/volumes";

/// Where a serve pod finds the weights.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelMount {
    /// In the image: a path in it, or the image's default model.
    Image(Option<String>),
    /// A claim mounted read-only at [`MODEL_MOUNT`]; the model's path under it.
    Claim {
        /// The PersistentVolumeClaim.
        claim: String,
        /// The model's path as the pod sees it.
        path: String,
    },
    /// A bucket file or directory, its directory mounted read-only at [`MODEL_MOUNT`].
    Bucket(BucketPath),
}

impl ModelMount {
    /// The mount of a (checked) model at `path` (as the pods see it, or `gs://...`), on
    /// `volume_claim` if it names one.
    pub fn of(path: Option<&str>, volume_claim: Option<&str>) -> ModelMount {
        if let Some(Ok(bucket)) = path.and_then(BucketPath::parse) {
            return ModelMount::Bucket(bucket);
        }
        let path = path.map(str::to_string);
        match (volume_claim, path) {
            (Some(claim), Some(path)) => ModelMount::Claim {
                claim: claim.to_string(),
                path,
            },
            (_, path) => ModelMount::Image(path),
        }
    }

    /// Adds the volume, its mount and any annotation it needs to a serve pod; returns the
    /// path to pass as `--model`, if any.
    pub fn apply(
        &self,
        pod: &mut PodSpec,
        annotations: &mut BTreeMap<String, String>,
    ) -> Option<String> {
        let (source, model) = match self {
            ModelMount::Image(path) => return path.clone(),
            ModelMount::Claim { claim, path } => (
                Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: Some(true),
                    }),
                    ..named_volume()
                },
                path.clone(),
            ),
            ModelMount::Bucket(bucket) => {
                // A GGUF file is opened in its mounted directory; anything else is the
                // model directory itself.
                let object = bucket.object.as_str();
                let (dir, file) = if object.ends_with(".gguf") {
                    match object.rsplit_once('/') {
                        Some((dir, file)) => (Some(dir), Some(file)),
                        None => (None, Some(object)),
                    }
                } else {
                    (Some(object), None)
                };
                let mut options = "implicit-dirs".to_string();
                if let Some(dir) = dir {
                    options.push_str(&format!(",only-dir={dir}"));
                }
                annotations.insert(GCS_FUSE_ANNOTATION.into(), "true".into());
                let volume = Volume {
                    csi: Some(CSIVolumeSource {
                        driver: GCS_FUSE_DRIVER.into(),
                        read_only: Some(true),
                        volume_attributes: Some(BTreeMap::from([
                            ("bucketName".to_string(), bucket.bucket.clone()),
                            ("mountOptions".to_string(), options),
                        ])),
                        ..CSIVolumeSource::default()
                    }),
                    ..named_volume()
                };
                let model = match file {
                    Some(file) => format!("{MODEL_MOUNT}/{file}"),
                    None => MODEL_MOUNT.to_string(),
                };
                (volume, model)
            }
        };
        pod.volumes.get_or_insert_default().push(source);
        pod.containers[0]
            .volume_mounts
            .get_or_insert_default()
            .push(VolumeMount {
                name: VOLUME.into(),
                mount_path: MODEL_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        Some(model)
    }
}

fn named_volume() -> Volume {
    Volume {
        name: VOLUME.into(),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str, claim: Option<&str>) -> ModelMount {
        ModelMount::of(Some(path), claim)
    }

    fn applied(mount: &ModelMount) -> (PodSpec, BTreeMap<String, String>, Option<String>) {
        let mut pod = PodSpec {
            containers: vec![Default::default()],
            ..PodSpec::default()
        };
        let mut annotations = BTreeMap::new();
        let model = mount.apply(&mut pod, &mut annotations);
        (pod, annotations, model)
    }

    #[test]
    fn a_path_in_the_image_needs_no_volume() {
        let (pod, annotations, model) = applied(&mount("/opt/gemma-3-4b-it", None));
        assert_eq!(model.as_deref(), Some("/opt/gemma-3-4b-it"));
        assert!(pod.volumes.is_none() && annotations.is_empty());
        let (_, _, model) = applied(&ModelMount::of(None, None));
        assert_eq!(model, None, "the image's default model");
    }

    #[test]
    fn a_claim_is_mounted_read_only() {
        let (pod, _, model) = applied(&mount("/models/gemma-3-4b-it", Some("weights")));
        assert_eq!(model.as_deref(), Some("/models/gemma-3-4b-it"));
        let volume = &pod.volumes.unwrap()[0];
        let claim = volume.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("weights", Some(true))
        );
        let mounted = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mounted.name.as_str(), mounted.mount_path.as_str()),
            (VOLUME, MODEL_MOUNT)
        );
        assert_eq!(mounted.read_only, Some(true));
    }

    #[test]
    fn a_bucket_directory_or_file_is_mounted_with_cloud_storage_fuse() {
        for (path, only_dir, model) in [
            (
                "gs://weights/gemma/gemma-3-4b-it",
                Some("gemma/gemma-3-4b-it"),
                "/models",
            ),
            (
                "gs://weights/gguf/gemma-3-4b.gguf",
                Some("gguf"),
                "/models/gemma-3-4b.gguf",
            ),
            (
                "gs://weights/gemma-3-4b.gguf",
                None,
                "/models/gemma-3-4b.gguf",
            ),
        ] {
            let (pod, annotations, got) = applied(&mount(path, None));
            assert_eq!(got.as_deref(), Some(model), "{path}");
            assert_eq!(annotations[GCS_FUSE_ANNOTATION], "true");
            let csi = pod.volumes.unwrap()[0].csi.clone().unwrap();
            assert_eq!(csi.driver, GCS_FUSE_DRIVER);
            assert_eq!(csi.read_only, Some(true));
            let attributes = csi.volume_attributes.unwrap();
            assert_eq!(attributes["bucketName"], "weights");
            let expected = match only_dir {
                Some(dir) => format!("implicit-dirs,only-dir={dir}"),
                None => "implicit-dirs".into(),
            };
            assert_eq!(attributes["mountOptions"], expected, "{path}");
        }
    }
}
