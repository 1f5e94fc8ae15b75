//! The one place results go: rows are gathered per shard, and a shard whose every row has a
//! result is committed (its file, then its ledger line) before its place in the window is
//! given back. Progress is reported from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::DispatchError;
use super::feeder::ShardPermit;
use super::ledger::Ledger;
use super::worker::PodLink;
use crate::dataset::DatasetError;
use crate::results::batch_record::BatchRecord;

/// What the feeder and the pod workers report.
pub enum Event {
    /// A shard is open: `rows` results are due, `invalid` of them already known.
    ShardOpened {
        /// Its number.
        shard: u64,
        /// Rows in it.
        rows: u64,
        /// Results of its invalid rows.
        invalid: Vec<BatchRecord>,
        /// Its place in the window.
        permit: ShardPermit,
    },
    /// A row's final result.
    Finished(BatchRecord),
    /// The feeder read the whole dataset: this many shards in all.
    FeederDone(Result<u64, DatasetError>),
    /// Every pod is gone; nothing more will finish.
    AllPodsLost,
}

/// Told about progress; implemented by the command's progress bars.
pub trait Observer: Send {
    /// Dispatch starts on these pods.
    fn started(&mut self, pods: &[Arc<PodLink>]);
    /// A row has its result.
    fn row_finished(&mut self, record: &BatchRecord);
    /// A shard was committed.
    fn shard_committed(&mut self, shard: u64, rows: u64);
}

struct OpenShard {
    expected: u64,
    records: Vec<BatchRecord>,
    _permit: ShardPermit,
}

/// Gathers results until every shard is committed (as served by `model`); returns the
/// number of shards.
pub async fn collect(
    mut inbox: mpsc::UnboundedReceiver<Event>,
    ledger: Arc<Mutex<Ledger>>,
    model: &str,
    observer: &mut dyn Observer,
) -> Result<u64, DispatchError> {
    let mut open: HashMap<u64, OpenShard> = HashMap::new();
    let mut total_shards = None;
    loop {
        if total_shards.is_some() && open.is_empty() {
            return Ok(total_shards.unwrap_or_default());
        }
        let Some(event) = inbox.recv().await else {
            return Err(DispatchError::Interrupted);
        };
        let shard = match event {
            Event::ShardOpened {
                shard,
                rows,
                invalid,
                permit,
            } => {
                for record in &invalid {
                    observer.row_finished(record);
                }
                open.insert(
                    shard,
                    OpenShard {
                        expected: rows,
                        records: invalid,
                        _permit: permit,
                    },
                );
                shard
            }
            Event::Finished(record) => {
                observer.row_finished(&record);
                let shard = record.shard;
                match open.get_mut(&shard) {
                    Some(entry) => entry.records.push(record),
                    None => {
                        return Err(DispatchError::Internal(format!(
                            "a result for shard {shard}, which is not open"
                        )));
                    }
                }
                shard
            }
            Event::FeederDone(result) => {
                total_shards = Some(result?);
                continue;
            }
            Event::AllPodsLost => return Err(DispatchError::AllPodsLost),
        };
        let complete = open
            .get(&shard)
            .is_some_and(|entry| entry.records.len() as u64 >= entry.expected);
        if complete && let Some(entry) = open.remove(&shard) {
            let rows = entry.records.len() as u64;
            commit(&ledger, shard, model, entry.records).await?;
            observer.shard_committed(shard, rows);
        }
    }
}

/// Writes a shard on a blocking thread, its rows in dataset order.
async fn commit(
    ledger: &Arc<Mutex<Ledger>>,
    shard: u64,
    model: &str,
    mut records: Vec<BatchRecord>,
) -> Result<(), DispatchError> {
    records.sort_unstable_by_key(|record| record.line);
    let ledger = ledger.clone();
    let model = model.to_string();
    tokio::task::spawn_blocking(move || {
        ledger
            .lock()
            .expect("the ledger lock is not poisoned")
            .commit(shard, &model, records)
    })
    .await
    .map_err(|err| DispatchError::Internal(err.to_string()))?
    .map_err(DispatchError::Commit)
}
