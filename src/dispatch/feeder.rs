//! Cuts the dataset into shards as it reads it and hands them out: shard `k` is always the
//! `k`-th run of `shard_size` rows, so a resumed run skips exactly the committed ones. At
//! most a window of shards is open at once, so memory stays flat whatever the dataset.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::PendingRow;
use super::collector::Event;
use crate::client::WorkItem;
use crate::dataset::{DatasetError, Rows};
use crate::results::batch_record::BatchRecord;

/// What the feeder needs besides the rows.
pub struct FeedPlan {
    /// Rows per shard.
    pub shard_size: u64,
    /// Invalid rows (line to reason), written as error rows.
    pub invalid: Arc<HashMap<u64, String>>,
    /// Shards already committed, skipped.
    pub committed: Vec<u64>,
    /// Generation fields of every request.
    pub generation: serde_json::Map<String, serde_json::Value>,
    /// The model requests name.
    pub model: String,
}

/// An open shard's hold on the window; released when the shard is committed.
pub type ShardPermit = OwnedSemaphorePermit;

/// Reads `rows` on the calling (blocking) thread, sends each shard's opening to the
/// collector and its rows to the queue. Returns the number of shards, or the reading error.
pub fn feed(
    rows: Rows,
    plan: &FeedPlan,
    window: Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
    queue: &async_channel::Sender<PendingRow>,
) -> Result<u64, DatasetError> {
    let runtime = tokio::runtime::Handle::current();
    let mut shard = 0u64;
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(plan.shard_size as usize).collect();
        if plan.committed.binary_search(&shard).is_err() {
            let Ok(permit) = runtime.block_on(window.clone().acquire_owned()) else {
                // The window is closed: the run is over.
                return Ok(shard);
            };
            if !open_shard(shard, chunk, plan, permit, events, queue)? {
                return Ok(shard);
            }
        }
        shard += 1;
    }
    Ok(shard)
}

/// Sends one shard; `Ok(false)` when nobody listens any more.
fn open_shard(
    shard: u64,
    chunk: Vec<Result<crate::dataset::Row, DatasetError>>,
    plan: &FeedPlan,
    permit: ShardPermit,
    events: &mpsc::UnboundedSender<Event>,
    queue: &async_channel::Sender<PendingRow>,
) -> Result<bool, DatasetError> {
    let rows = chunk.len() as u64;
    let mut invalid = Vec::new();
    let mut jobs = Vec::with_capacity(chunk.len());
    let now = Instant::now();
    for row in chunk {
        match row {
            Ok(row) => match plan.invalid.get(&row.line) {
                Some(reason) => invalid.push(BatchRecord::invalid(
                    row.id,
                    row.line,
                    shard,
                    reason.clone(),
                )),
                None => jobs.push(PendingRow {
                    shard,
                    line: row.line,
                    item: WorkItem::for_row(&row, &plan.generation, &plan.model),
                    passthrough: row.passthrough,
                    attempts: 0,
                    queued: now,
                }),
            },
            Err(DatasetError::Row {
                line, id, message, ..
            }) => {
                let id = id.unwrap_or_else(|| line.to_string());
                invalid.push(BatchRecord::invalid(id, line, shard, message));
            }
            Err(other) => return Err(other),
        }
    }
    let opened = Event::ShardOpened {
        shard,
        rows,
        invalid,
        permit,
    };
    if events.send(opened).is_err() {
        return Ok(false);
    }
    for job in jobs {
        if queue.send_blocking(job).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}
