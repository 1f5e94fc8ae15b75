//! A store URL (`gs://BUCKET/PREFIX`, `s3://...`, `az://CONTAINER/...`) where a job names a
//! path: everything else is a local path, and an unknown `scheme://` is a mistake.

use std::fmt;
use std::path::Path;

/// The object stores gembatch reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Google Cloud Storage.
    Gcs,
    /// Amazon S3 or a store speaking its API.
    S3,
    /// Azure Blob Storage.
    Azure,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::Gcs => "gs",
            Scheme::S3 => "s3",
            Scheme::Azure => "az",
        }
    }
}

/// A bucket and a key prefix in it (no leading or trailing `/`; empty for the whole bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// Which store.
    pub scheme: Scheme,
    /// The bucket (the container, on Azure).
    pub bucket: String,
    /// The key prefix.
    pub prefix: String,
}

impl StoreUrl {
    /// `path` as a store URL; `None` for a local path; an error naming what is wrong for a
    /// URL gembatch cannot use.
    pub fn parse(path: &Path) -> Option<Result<StoreUrl, String>> {
        let text = path.to_str()?;
        let (scheme, rest) = text.split_once("://")?;
        let scheme = match scheme {
            "gs" => Scheme::Gcs,
            "s3" | "s3a" => Scheme::S3,
            "az" | "azure" | "abfs" => Scheme::Azure,
            other => {
                return Some(Err(format!(
                    "{text}: `{other}://` is not a store gembatch knows; use gs://, s3:// or az://, or a local path"
                )));
            }
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("{text}: the URL names no bucket")));
        }
        Some(Ok(StoreUrl {
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }))
    }

    /// The URL of `key` under this one.
    pub fn join(&self, key: &str) -> StoreUrl {
        let prefix = match (self.prefix.as_str(), key.trim_matches('/')) {
            ("", key) => key.to_string(),
            (prefix, "") => prefix.to_string(),
            (prefix, key) => format!("{prefix}/{key}"),
        };
        StoreUrl {
            prefix,
            ..self.clone()
        }
    }

    /// The last part of the key (a dataset's file name).
    pub fn file_name(&self) -> &str {
        self.prefix.rsplit('/').next().unwrap_or_default()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.prefix(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<Result<StoreUrl, String>> {
        StoreUrl::parse(Path::new(text))
    }

    #[test]
    fn store_urls_local_paths_and_mistakes_are_told_apart() {
        let url = parse("gs://results/nightly/").unwrap().unwrap();
        assert_eq!((url.scheme, url.bucket.as_str()), (Scheme::Gcs, "results"));
        assert_eq!(url.prefix, "nightly");
        assert_eq!(url.join("run-1").to_string(), "gs://results/nightly/run-1");
        let bare = parse("s3://bucket").unwrap().unwrap();
        assert_eq!(
            (bare.prefix.as_str(), bare.to_string()),
            ("", "s3://bucket".into())
        );
        assert_eq!(bare.join("a/b.jsonl").file_name(), "b.jsonl");
        assert_eq!(
            parse("az://container/x").unwrap().unwrap().scheme,
            Scheme::Azure
        );
        assert!(parse("/mnt/gcs/results").is_none() && parse("results").is_none());
        let err = parse("http://host/x").unwrap().unwrap_err();
        assert!(err.contains("`http://` is not a store"), "{err}");
        assert!(parse("gs:///x").unwrap().unwrap_err().contains("no bucket"));
    }
}
