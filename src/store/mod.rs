//! Datasets and results on an object store (Cloud Storage `gs://`, S3 `s3://`, Azure Blob
//! `az://`) through the object_store crate, with the credentials each cloud's own tools
//! use: application default credentials and GKE workload identity, `AWS_*`, `AZURE_*`.
//!
//! - `url`: a job's `dataset.path` or `output` read as a store URL, or as a local path;
//! - `bucket`: one folder of a bucket, read and written synchronously (create-only writes
//!   for what must be written once);
//! - `dataset`: a dataset object fetched to a local file, with the fingerprint of the object.

pub mod bucket;
pub mod dataset;
pub mod url;

pub use bucket::{Bucket, Created, StoreError};
pub use url::StoreUrl;
