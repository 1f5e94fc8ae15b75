//! A run directory kept in a bucket folder (`OUTPUT/RUN/`) when the job's `output` is a
//! store URL. The bucket is the truth and the local run directory a working copy that a
//! runner on an empty disk rebuilds from it. Object stores have no rename or append, so a
//! shard is committed in two create-only writes:
//!
//! 1. its rows go to `shards/NNNNNN-ATTEMPT.parquet`, a name no other runner writes;
//! 2. `ledger/NNNNNN.json` is created naming that object. The store lets one create win:
//!    a runner that loses the race (two runners on one run) adopts the winner's rows and
//!    removes its own, so each shard's rows are kept exactly once.
//!
//! A crash between the two leaves an object no ledger entry names; it is never read and
//! is removed when the run's outputs are published.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ledger::{LEDGER_FILE, SHARDS_DIR};
use super::run_dir::MANIFEST_FILE;
use super::run_lock::LOCK_FILE;
use crate::store::{Bucket, Created, StoreError, StoreUrl};

/// Folder of ledger entries, one object per committed shard.
const LEDGER_FOLDER: &str = "ledger";

/// `ledger/NNNNNN.json`: a committed shard and the object holding its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    /// The shard's number.
    pub shard: u64,
    /// Rows it holds.
    pub rows: u64,
    /// The model that served it.
    pub model: String,
    /// The key of its rows, relative to the run's folder.
    pub object: String,
}

/// Whose rows a shard kept.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// This runner's.
    Ours,
    /// Another runner's, committed first.
    Theirs(RemoteEntry),
}

/// The bucket folder of one run.
pub struct RemoteRun {
    bucket: Bucket,
    /// Names this runner's shard objects apart from any other's.
    attempt: String,
}

impl RemoteRun {
    /// The run folder `url` (`OUTPUT/RUN`).
    pub fn open(url: &StoreUrl) -> Result<RemoteRun, StoreError> {
        Ok(RemoteRun {
            bucket: Bucket::open(url)?,
            attempt: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// The run folder's URL.
    pub fn url(&self) -> &StoreUrl {
        self.bucket.url()
    }

    /// Whether the run exists (its `run.json` is there).
    pub fn exists(&self) -> Result<bool, StoreError> {
        Ok(self.bucket.head(MANIFEST_FILE)?.is_some())
    }

    /// Creates the run: uploads `dir/run.json` unless a run of that id is there already.
    /// Finding the very same manifest there counts as made (a create whose answer was lost
    /// and was tried again).
    pub fn create_manifest(&self, dir: &Path) -> Result<Created, StoreError> {
        let manifest = read(&dir.join(MANIFEST_FILE))?;
        match self.bucket.create(MANIFEST_FILE, manifest.clone())? {
            Created::Exists if self.bucket.get(MANIFEST_FILE)?.as_deref() == Some(&manifest) => {
                Ok(Created::New)
            }
            created => Ok(created),
        }
    }

    /// Fetches the run's `run.json` into `dir`.
    pub fn fetch_manifest(&self, dir: &Path) -> Result<(), StoreError> {
        self.bucket
            .download(MANIFEST_FILE, &dir.join(MANIFEST_FILE))
    }

    /// The committed shards, in order.
    pub fn entries(&self) -> Result<Vec<RemoteEntry>, StoreError> {
        let mut entries = Vec::new();
        for key in self.bucket.list(LEDGER_FOLDER)? {
            entries.extend(self.entry(&key)?);
        }
        Ok(entries)
    }

    /// Fetches the rows of `entry` into the file `to`.
    pub fn fetch_shard(&self, entry: &RemoteEntry, to: &Path) -> Result<(), StoreError> {
        self.bucket.download(&entry.object, to)
    }

    /// Commits shard `shard`, whose `rows` rows served by `model` are in the file `rows_file`.
    pub fn commit(
        &self,
        shard: u64,
        rows: u64,
        model: &str,
        rows_file: &Path,
    ) -> Result<Committed, StoreError> {
        let object = format!("{SHARDS_DIR}/{shard:06}-{}.parquet", self.attempt);
        // Only this runner writes this name (its attempt is random), so finding it there
        // means the store made an earlier try of this create whose answer was lost.
        self.bucket.create(&object, read(rows_file)?)?;
        let entry = RemoteEntry {
            shard,
            rows,
            model: model.to_string(),
            object: object.clone(),
        };
        let key = entry_key(shard);
        let text = serde_json::to_vec(&entry).expect("a ledger entry serializes");
        match self.bucket.create(&key, text)? {
            Created::New => Ok(Committed::Ours),
            Created::Exists => {
                let winner = self.entry(&key)?.ok_or_else(|| StoreError {
                    action: "read",
                    url: self.url().join(&key).to_string(),
                    source: "it was created and then removed by someone else".into(),
                })?;
                // A create the store made but whose answer was lost, then retried, finds
                // this runner's own entry: the shard is committed as ours.
                if winner.object == object {
                    return Ok(Committed::Ours);
                }
                self.bucket.delete(&object)?;
                Ok(Committed::Theirs(winner))
            }
        }
    }

    /// Uploads the run's outputs (every file of `dir` but the working copy's shards, ledger,
    /// manifest and lock, which the bucket has its own way) and removes shard objects no
    /// ledger entry names. Returns how many files went up.
    pub fn publish_outputs(&self, dir: &Path) -> Result<usize, StoreError> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files).map_err(|err| StoreError {
            action: "read",
            url: dir.display().to_string(),
            source: Box::new(err),
        })?;
        let skipped = [LEDGER_FILE, MANIFEST_FILE, LOCK_FILE];
        let outputs: Vec<&String> = files
            .iter()
            .filter(|key| !key.starts_with(&format!("{SHARDS_DIR}/")))
            .filter(|key| !skipped.contains(&key.as_str()))
            .collect();
        for key in &outputs {
            self.bucket.upload(key, &dir.join(key))?;
        }
        let named: Vec<String> = self.entries()?.into_iter().map(|e| e.object).collect();
        for object in self.bucket.list(SHARDS_DIR)? {
            if !named.contains(&object) {
                self.bucket.delete(&object)?;
            }
        }
        Ok(outputs.len())
    }

    fn entry(&self, key: &str) -> Result<Option<RemoteEntry>, StoreError> {
        let Some(bytes) = self.bucket.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| StoreError {
                action: "read",
                url: self.url().join(key).to_string(),
                source: format!("not a ledger entry ({err}); the run's folder is damaged").into(),
            })
    }
}

/// The key of shard `shard`'s ledger entry.
fn entry_key(shard: u64) -> String {
    format!("{LEDGER_FOLDER}/{shard:06}.json")
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|err| StoreError {
        action: "read",
        url: path.display().to_string(),
        source: Box::new(err),
    })
}

/// Every file under `folder`, as `/`-separated paths relative to `root`.
fn collect_files(root: &Path, folder: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for item in std::fs::read_dir(folder)? {
        let path = item?.path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
            files.push(parts.join("/"));
        }
    }
    files.sort();
    Ok(())
}
