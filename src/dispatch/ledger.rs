//! The run directory's record of committed shards. A shard is committed by writing its rows
//! to `shards/NNNNNN.parquet` (write, fsync, rename), then appending one line to
//! `ledger.jsonl` and fsyncing it: the ledger is the truth. A crash between the two leaves
//! an unlisted file that the resumed run rewrites; a torn last line is cut off on open.
//! A run kept in a bucket (`remote_run`) commits there first: the local ledger then
//! follows the bucket's, which is the truth.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::remote_run::{Committed, RemoteRun};
use crate::common::durable::sync_parent;
use crate::results::batch::records_writer;
use crate::results::batch_record::BatchRecord;

/// File name of the ledger in a run directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// Folder of committed shard files in a run directory.
pub const SHARDS_DIR: &str = "shards";

/// One committed shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The shard's number.
    pub shard: u64,
    /// Rows it holds.
    pub rows: u64,
}

/// One line of `ledger.jsonl`: a committed shard and the model that served it.
#[derive(Serialize, Deserialize)]
struct Line {
    shard: u64,
    rows: u64,
    /// Absent in ledgers written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

/// The committed shards of a run, and the file to record more.
pub struct Ledger {
    dir: PathBuf,
    file: File,
    committed: BTreeMap<u64, u64>,
    model: Option<String>,
    passthrough: Vec<String>,
    /// The bucket folder the run is kept in, when it is.
    remote: Option<RemoteRun>,
}

impl Ledger {
    /// Opens (or starts) the ledger of the run in `dir`, whose rows carry the dataset's
    /// `passthrough` fields.
    pub fn open(dir: &Path, passthrough: &[String]) -> std::io::Result<Ledger> {
        std::fs::create_dir_all(dir.join(SHARDS_DIR))?;
        let path = dir.join(LEDGER_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut committed = BTreeMap::new();
        let mut model = None;
        let mut good_bytes = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                break;
            }
            let complete = line.ends_with('\n');
            match serde_json::from_str::<Line>(line.trim_end()) {
                Ok(entry) if complete => {
                    committed.insert(entry.shard, entry.rows);
                    model = entry.model.or(model);
                    good_bytes += read as u64;
                }
                // A line cut short by a crash mid-append: the shard was not committed.
                _ if !complete => break,
                Err(err) => {
                    return Err(std::io::Error::other(format!(
                        "{}: line {} is not a ledger entry ({err}); the run directory is damaged",
                        path.display(),
                        committed.len() + 1
                    )));
                }
                Ok(_) => unreachable!("complete lines are handled above"),
            }
        }
        drop(reader);
        if good_bytes < file.metadata()?.len() {
            file.set_len(good_bytes)?;
            file.seek(SeekFrom::End(0))?;
            file.sync_all()?;
        }
        Ok(Ledger {
            dir: dir.to_path_buf(),
            file,
            committed,
            model,
            passthrough: passthrough.to_vec(),
            remote: None,
        })
    }

    /// This ledger kept in `remote` from now on, after taking in every shard committed
    /// there that it lacks (all of them, on an empty disk). Returns it and how many it
    /// took in.
    pub fn mirrored(mut self, remote: RemoteRun) -> std::io::Result<(Ledger, usize)> {
        let mut fetched = 0;
        for entry in remote.entries().map_err(std::io::Error::other)? {
            if self.is_committed(entry.shard) {
                continue;
            }
            remote
                .fetch_shard(&entry, &self.shard_path(entry.shard))
                .map_err(std::io::Error::other)?;
            self.append(entry.shard, entry.rows, &entry.model)?;
            fetched += 1;
        }
        self.remote = Some(remote);
        Ok((self, fetched))
    }

    /// The bucket folder the run is kept in, when it is.
    pub fn remote(&self) -> Option<&RemoteRun> {
        self.remote.as_ref()
    }

    /// Whether `shard` is committed.
    pub fn is_committed(&self, shard: u64) -> bool {
        self.committed.contains_key(&shard)
    }

    /// Committed shards and their row counts, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.committed
            .iter()
            .map(|(&shard, &rows)| Entry { shard, rows })
    }

    /// Rows in committed shards.
    pub fn committed_rows(&self) -> u64 {
        self.committed.values().sum()
    }

    /// The model that served the last committed shard (none before any commit, or in a
    /// ledger written before it was recorded).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The dataset fields the rows carry to the outputs.
    pub fn passthrough(&self) -> &[String] {
        &self.passthrough
    }

    /// Where `shard`'s rows are kept.
    pub fn shard_path(&self, shard: u64) -> PathBuf {
        shard_path(&self.dir, shard)
    }

    /// Makes `records` (all of shard `shard`'s rows, served by `model`) durable, then
    /// records the shard.
    pub fn commit(
        &mut self,
        shard: u64,
        model: &str,
        records: Vec<BatchRecord>,
    ) -> std::io::Result<()> {
        let rows = records.len() as u64;
        let path = self.shard_path(shard);
        let mut writer =
            records_writer(&path, None, &self.passthrough).map_err(std::io::Error::other)?;
        for record in records {
            writer.push(record).map_err(std::io::Error::other)?;
        }
        writer.finish().map_err(std::io::Error::other)?;
        let Some(remote) = &self.remote else {
            return self.append(shard, rows, model);
        };
        let committed = remote
            .commit(shard, rows, model, &path)
            .map_err(std::io::Error::other)?;
        match committed {
            Committed::Ours => self.append(shard, rows, model),
            Committed::Theirs(entry) => {
                crate::common::say::notice(format!(
                    "shard {shard} was committed first by another runner of this run: its rows \
                     are kept, this runner's are dropped"
                ));
                remote
                    .fetch_shard(&entry, &path)
                    .map_err(std::io::Error::other)?;
                self.append(shard, entry.rows, &entry.model)
            }
        }
    }

    /// Records the committed shard `shard` (its file in place) in the ledger file.
    fn append(&mut self, shard: u64, rows: u64, model: &str) -> std::io::Result<()> {
        let entry = Line {
            shard,
            rows,
            model: Some(model.to_string()),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        if self.committed.is_empty() {
            sync_parent(&self.dir.join(LEDGER_FILE))?;
        }
        self.committed.insert(shard, rows);
        self.model = entry.model;
        Ok(())
    }
}

/// Where shard `shard` of the run in `dir` is kept.
pub fn shard_path(dir: &Path, shard: u64) -> PathBuf {
    dir.join(SHARDS_DIR).join(format!("{shard:06}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::batch::read_records;

    #[test]
    fn commits_survive_reopening_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), &[]).unwrap();
        ledger
            .commit(0, "gemma", vec![BatchRecord::fixture("a", 0, "p")])
            .unwrap();
        ledger
            .commit(2, "gemma", vec![BatchRecord::fixture("b", 2, "p"); 3])
            .unwrap();
        drop(ledger);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LEDGER_FILE))
            .unwrap();
        file.write_all(b"{\"shard\": 5, \"ro").unwrap();
        drop(file);

        let mut ledger = Ledger::open(dir.path(), &[]).unwrap();
        assert!(ledger.is_committed(0) && ledger.is_committed(2));
        assert!(!ledger.is_committed(1) && !ledger.is_committed(5));
        assert_eq!(ledger.committed_rows(), 4);
        assert_eq!(read_records(&ledger.shard_path(2), &[]).unwrap().len(), 3);
        ledger
            .commit(5, "gemma-2", vec![BatchRecord::fixture("c", 5, "p")])
            .unwrap();
        drop(ledger);
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let reopened = Ledger::open(dir.path(), &[]).unwrap();
        assert!(reopened.is_committed(5));
        assert_eq!(reopened.model(), Some("gemma-2"), "the last shard's model");
    }

    #[test]
    fn a_ledger_written_before_models_were_recorded_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEDGER_FILE),
            "{\"shard\":0,\"rows\":2}\n{\"shard\":1,\"rows\":3}\n",
        )
        .unwrap();
        let ledger = Ledger::open(dir.path(), &[]).unwrap();
        assert_eq!((ledger.committed_rows(), ledger.model()), (5, None));
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEDGER_FILE),
            "garbage\n{\"shard\":1,\"rows\":1}\n",
        )
        .unwrap();
        let err = Ledger::open(dir.path(), &[]).err().unwrap().to_string();
        assert!(err.contains("line 1 is not a ledger entry"), "{err}");
    }
}
