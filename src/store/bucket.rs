//! One folder of a bucket, read and written synchronously: the run directory's code is
//! synchronous (its commits run on blocking threads), so the folder owns a small runtime
//! of its own for the store's HTTP calls.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::buffered::BufWriter;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

use super::url::{Scheme, StoreUrl};

/// Where the credentials come from, for messages about a store that refused them.
const CREDENTIALS_HINT: &str = "check the credentials (Cloud Storage: application default \
     credentials, GKE workload identity or GOOGLE_APPLICATION_CREDENTIALS; S3: AWS_* variables; \
     Azure: AZURE_STORAGE_* variables) and that the bucket exists";

/// A store call that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {url}: {source}")]
pub struct StoreError {
    /// What was being done (`read`, `write`, `list`).
    pub action: &'static str,
    /// The object or folder.
    pub url: String,
    /// The store's answer.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The outcome of a create-only write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object is new: this write made it.
    New,
    /// The object was there already and is unchanged.
    Exists,
}

/// A folder (`StoreUrl`) of a bucket.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    url: StoreUrl,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bucket {
    /// The folder `url`, with the store's credentials from the environment.
    pub fn open(url: &StoreUrl) -> Result<Bucket, StoreError> {
        crate::client::tls::install_crypto_provider();
        let built: object_store::Result<Arc<dyn ObjectStore>> = match url.scheme {
            Scheme::Gcs => GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .build()
                .map(|store| Arc::new(store) as _),
            Scheme::S3 => AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .build()
                .map(|store| Arc::new(store) as _),
            Scheme::Azure => MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .build()
                .map(|store| Arc::new(store) as _),
        };
        let store = built.map_err(|err| StoreError {
            action: "open",
            url: url.to_string(),
            source: format!("{err}; {CREDENTIALS_HINT}").into(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gembatch-store")
            .enable_all()
            .build()
            .map_err(|err| StoreError {
                action: "open",
                url: url.to_string(),
                source: Box::new(err),
            })?;
        Ok(Bucket {
            store,
            url: url.clone(),
            runtime: Some(runtime),
        })
    }

    /// The folder's URL.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// Writes `bytes` to `key` unless an object is there already.
    pub fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created, StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let location = self.key(key);
        let put = self
            .store
            .put_opts(&location, PutPayload::from(bytes), options);
        match self.block_on(put) {
            Ok(_) => Ok(Created::New),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Created::Exists),
            Err(err) => Err(self.error("write", key, err)),
        }
    }

    /// Streams the file `from` to `key`, replacing what is there (in parts, for files past
    /// 10 MB, so a large output is never held in memory whole).
    pub fn upload(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        let mut writer = BufWriter::new(self.store.clone(), self.key(key));
        let send = async {
            let mut file = tokio::fs::File::open(from).await?;
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await
        };
        self.block_on(send).map_err(|err| StoreError {
            action: "write",
            url: self.url.join(key).to_string(),
            source: format!("from {}: {err}; {CREDENTIALS_HINT}", from.display()).into(),
        })
    }

    /// The object `key`, or `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let location = self.key(key);
        let read = async {
            match self.store.get(&location).await {
                Ok(object) => object.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(err),
            }
        };
        self.block_on(read)
            .map_err(|err| self.error("read", key, err))
    }

    /// The object `key`'s size and modification time (Unix nanoseconds), or `None`.
    pub fn head(&self, key: &str) -> Result<Option<(u64, u64)>, StoreError> {
        match self.block_on(self.store.head(&self.key(key))) {
            Ok(meta) => {
                let modified_ns = meta.last_modified.timestamp_nanos_opt().unwrap_or(0);
                Ok(Some((meta.size, u64::try_from(modified_ns).unwrap_or(0))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("read", key, err)),
        }
    }

    /// Streams the object `key` into the file `to` (written whole, then renamed in place).
    pub fn download(&self, key: &str, to: &Path) -> Result<(), StoreError> {
        let partial = to.with_extension("partial");
        let fetch = async {
            let object = self.store.get(&self.key(key)).await?;
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(io_error(&partial))?;
            let mut chunks = object.into_stream();
            while let Some(chunk) = chunks.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?)
                    .await
                    .map_err(io_error(&partial))?;
            }
            file.sync_all().await.map_err(io_error(&partial))?;
            tokio::fs::rename(&partial, to).await.map_err(io_error(to))
        };
        self.block_on(fetch)
            .map_err(|err| self.error("read", key, err))
    }

    /// The keys under `folder` (relative to this folder), in order.
    pub fn list(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let base = self.key("");
        let under = self.key(folder);
        let listing = async {
            let mut keys = Vec::new();
            let mut objects = self.store.list(Some(&under));
            while let Some(meta) = objects.next().await {
                let location = meta?.location;
                let relative = location
                    .prefix_match(&base)
                    .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>());
                if let Some(parts) = relative {
                    keys.push(parts.join("/"));
                }
            }
            keys.sort();
            Ok(keys)
        };
        self.block_on(listing)
            .map_err(|err| self.error("list", folder, err))
    }

    /// Removes the object `key` (gone already is fine).
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.block_on(self.store.delete(&self.key(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.error("delete", key, err)),
        }
    }

    fn key(&self, key: &str) -> Key {
        Key::from(self.url.join(key).prefix)
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the bucket is dropped")
            .block_on(future)
    }

    fn error(&self, action: &'static str, key: &str, err: object_store::Error) -> StoreError {
        StoreError {
            action,
            url: self.url.join(key).to_string(),
            source: format!("{err}; {CREDENTIALS_HINT}").into(),
        }
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        // Dropping a runtime inside another's task panics; this one may go there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A local file error as the store's, so one download reports either.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> object_store::Error + '_ {
    move |err| object_store::Error::Generic {
        store: "local file",
        source: format!("{}: {err}", path.display()).into(),
    }
}
