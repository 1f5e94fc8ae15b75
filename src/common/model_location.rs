//! Where a model lives for a pod: the directory the pods mount a model volume at, and a
//! model in a Cloud Storage bucket.

/// Where the pods mount a model volume (a claim or a bucket).
pub const MODEL_MOUNT: &str = "/models";

/// A model in a Cloud Storage bucket: `gs://BUCKET/OBJECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPath {
    /// The bucket.
    pub bucket: String,
    /// The file or directory in it (no leading or trailing `/`).
    pub object: String,
}

impl BucketPath {
    /// The bucket path `text` names, when it starts with `gs://`; `Err` says what is wrong.
    pub fn parse(text: &str) -> Option<Result<BucketPath, String>> {
        let rest = text.strip_prefix("gs://")?;
        let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
        let object = object.trim_matches('/');
        Some(if bucket.is_empty() || object.is_empty() {
            Err(format!(
                "`{text}` needs a bucket and a file or directory in it: gs://BUCKET/PATH"
            ))
        } else {
            Ok(BucketPath {
                bucket: bucket.to_string(),
                object: object.to_string(),
            })
        })
    }
}
