//! Buckets for tests of runs kept in an object store: S3 served by moto's server (a peer
//! from PyPI, in the project's Python environment), and Cloud Storage played by an
//! in-process fixture speaking the part of GCS's XML API that object_store uses (the PyPI
//! GCS emulator serves its JSON API only). Each says what a child `gembatch` needs in its
//! environment to reach it, and lets the test put, read and list objects itself.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use object_store::path::Path as StoreKey;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::ports::unused_port;
use super::python::venv_bin;

/// A bucket a test and a child `gembatch` share.
pub trait TestBucket {
    /// The store URL of `key` (`s3://bucket/key`).
    fn url(&self, key: &str) -> String;
    /// The environment a child `gembatch` reaches the bucket with.
    fn env(&self) -> Vec<(String, String)>;
    /// Writes the object `key`.
    fn put(&self, key: &str, bytes: Vec<u8>);
    /// The object `key`, if there is one.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// The keys that start with `prefix`, in order.
    fn keys(&self, prefix: &str) -> Vec<String>;
}

/// moto's S3 server on a loopback port with one bucket; killed when dropped.
pub struct MotoS3 {
    child: Child,
    endpoint: String,
    bucket: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl MotoS3 {
    /// Starts the server and creates `bucket`.
    pub fn start(bucket: &str) -> MotoS3 {
        let port = unused_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        gembatch::client::tls::install_crypto_provider();
        let s3 = MotoS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            runtime,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s3.send(s3.http.get(&s3.endpoint)).is_none() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let created = s3.send(s3.http.put(format!("{}/{bucket}", s3.endpoint)));
        assert_eq!(
            created.map(|(status, _)| status),
            Some(200),
            "create the bucket"
        );
        s3
    }

    /// Sends `request`: its status and body, or `None` when the server cannot be reached.
    fn send(&self, request: reqwest::RequestBuilder) -> Option<(u16, Vec<u8>)> {
        self.runtime.block_on(async {
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.bytes().await.ok()?.to_vec()))
        })
    }
}

impl MotoS3 {
    /// The bucket through object_store, signed with the test's keys (moto refuses unsigned
    /// requests to objects a signed request wrote).
    fn store(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("an S3 client for moto")
    }
}

impl TestBucket for MotoS3 {
    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .to_vec()
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        let store = self.store();
        self.runtime
            .block_on(store.put(&StoreKey::from(key), PutPayload::from(bytes)))
            .unwrap_or_else(|err| panic!("put {key}: {err}"));
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let store = self.store();
        self.runtime.block_on(async {
            let object = store.get(&StoreKey::from(key)).await.ok()?;
            Some(object.bytes().await.ok()?.to_vec())
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let store = self.store();
        let prefix = StoreKey::from(prefix.trim_end_matches('/'));
        let mut keys: Vec<String> = self.runtime.block_on(async {
            let objects: Vec<_> = store.list(Some(&prefix)).collect().await;
            objects
                .into_iter()
                .map(|meta| meta.expect("list the bucket").location.to_string())
                .collect()
        });
        keys.sort();
        keys
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The objects, and how many more create-only writes are to be made but answered 503.
#[derive(Clone, Default)]
struct Objects {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    answers_to_lose: Arc<AtomicU64>,
}

impl Objects {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.lock().unwrap()
    }
}

/// Cloud Storage's XML API as object_store calls it (PUT with
/// `x-goog-if-generation-match: 0` for create-only writes, GET, HEAD, DELETE, and
/// `?list-type=2` listing), in memory, for one bucket.
pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    bucket: String,
    objects: Objects,
    credentials: tempfile::NamedTempFile,
    /// The test CA and serving certificate, when it serves https.
    certs: Option<tempfile::TempDir>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeGcs {
    /// Serves `bucket` on a loopback port over http.
    pub fn start(bucket: &str) -> FakeGcs {
        FakeGcs::serve(bucket, None)
    }

    /// Serves `bucket` over https, with a certificate signed by a test CA that the child's
    /// environment (`SSL_CERT_FILE`) makes its only trusted root, as the system's roots
    /// vouch for storage.googleapis.com.
    pub fn start_tls(bucket: &str) -> FakeGcs {
        let certs = tempfile::tempdir().unwrap();
        super::certs::serving_certificate(certs.path(), "127.0.0.1");
        FakeGcs::serve(bucket, Some(certs))
    }

    fn serve(bucket: &str, certs: Option<tempfile::TempDir>) -> FakeGcs {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let objects = Objects::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/{bucket}", get(list))
            .route(
                "/{bucket}/{*key}",
                get(read).head(read).put(write).delete(remove),
            )
            .with_state(objects.clone());
        let endpoint = match &certs {
            None => {
                runtime.spawn(async move { axum::serve(listener, app).await });
                format!("http://{address}")
            }
            Some(certs) => {
                let acceptor = super::tls_listener::acceptor(certs.path());
                let listener = super::tls_listener::TlsListener { listener, acceptor };
                runtime.spawn(async move { axum::serve(listener, app).await });
                format!("https://{address}")
            }
        };
        // object_store's service-account form for emulators: its base URL, no OAuth.
        let credentials = tempfile::NamedTempFile::new().unwrap();
        let key = serde_json::json!({
            "private_key": "unused", "private_key_id": "unused", "client_email": "test@example.com",
            "gcs_base_url": endpoint, "disable_oauth": true,
        });
        std::fs::write(credentials.path(), key.to_string()).unwrap();
        FakeGcs {
            endpoint,
            bucket: bucket.to_string(),
            objects,
            credentials,
            certs,
            _runtime: runtime,
        }
    }
}

impl FakeGcs {
    /// Makes the next `count` create-only writes happen but answers them 503, as when a
    /// store's answer is lost: the client tries again and finds the object there.
    pub fn lose_answers_to_creates(&self, count: u64) {
        self.objects.answers_to_lose.store(count, Ordering::SeqCst);
    }

    /// Create-only writes still to be answered 503.
    pub fn answers_left_to_lose(&self) -> u64 {
        self.objects.answers_to_lose.load(Ordering::SeqCst)
    }
}

impl TestBucket for FakeGcs {
    fn url(&self, key: &str) -> String {
        format!("gs://{}/{key}", self.bucket)
    }

    fn env(&self) -> Vec<(String, String)> {
        let path = self.credentials.path().display().to_string();
        let mut env = vec![("GOOGLE_SERVICE_ACCOUNT".to_string(), path)];
        if let Some(certs) = &self.certs {
            let ca = certs.path().join("ca.crt").display().to_string();
            env.push(("SSL_CERT_FILE".to_string(), ca));
        }
        env
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.objects.lock().insert(key.to_string(), bytes);
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().get(key).cloned()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let objects = self.objects.lock();
        objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn list(
    State(objects): State<Objects>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let objects = objects.lock();
    let contents: String = objects
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(key, bytes)| {
            format!(
                "<Contents><Key>{key}</Key><LastModified>2026-12-05T00:00:00.000Z</LastModified>\
                 <ETag>\"{}\"</ETag><Size>{}</Size></Contents>",
                bytes.len(),
                bytes.len()
            )
        })
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>\
         <IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
    );
    ([("content-type", "application/xml")], body).into_response()
}

async fn read(State(objects): State<Objects>, Path((_, key)): Path<(String, String)>) -> Response {
    match objects.lock().get(&key) {
        Some(bytes) => (
            [
                ("last-modified", "Sat, 05 Dec 2026 00:00:00 GMT".to_string()),
                ("etag", format!("\"{}\"", bytes.len())),
            ],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write(
    State(objects): State<Objects>,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let create_only = headers
        .get("x-goog-if-generation-match")
        .is_some_and(|value| value == "0");
    let mut map = objects.lock();
    if create_only && map.contains_key(&key) {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    map.insert(key, body.to_vec());
    let lose = |left: u64| left.checked_sub(1);
    if create_only
        && objects
            .answers_to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, lose)
            .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ([("etag", "\"1\"")], StatusCode::OK).into_response()
}

async fn remove(
    State(objects): State<Objects>,
    Path((_, key)): Path<(String, String)>,
) -> StatusCode {
    match objects.lock().remove(&key) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}
