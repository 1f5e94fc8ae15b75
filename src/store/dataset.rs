//! A dataset kept in a bucket, fetched whole to a local file before it is checked: the
//! run reads it several times (validation, then its shards), and a resume must see the
//! object it started from.

use std::path::{Path, PathBuf};

use super::bucket::{Bucket, StoreError};
use super::url::StoreUrl;

/// A dataset object fetched to a local file.
pub struct FetchedObject {
    /// The local copy (named as the object, so its extension still tells its format).
    pub path: PathBuf,
    /// The object's size.
    pub bytes: u64,
    /// The object's modification time, Unix nanoseconds.
    pub modified_ns: u64,
}

/// Fetches the object `url` into the folder `dir`.
pub fn fetch(url: &StoreUrl, dir: &Path) -> Result<FetchedObject, StoreError> {
    let root = StoreUrl {
        prefix: String::new(),
        ..url.clone()
    };
    let bucket = Bucket::open(&root)?;
    let (bytes, modified_ns) = bucket.head(&url.prefix)?.ok_or_else(|| StoreError {
        action: "read",
        url: url.to_string(),
        source: "no such object".into(),
    })?;
    let path = dir.join(url.file_name());
    bucket.download(&url.prefix, &path)?;
    Ok(FetchedObject {
        path,
        bytes,
        modified_ns,
    })
}
