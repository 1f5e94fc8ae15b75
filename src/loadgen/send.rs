//! One load request: sent through the client, then recorded as a row of `requests.parquet`.

use tokio::time::Instant;

use crate::client::exchange::{Target, Timed, exchange};
use crate::client::request::WorkItem;
use crate::common::Outcome;
use crate::results::request::{RequestRecord, TokenSource};

/// The identity of one request in the run.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    /// Sequence number.
    pub id: u64,
    /// Step index.
    pub step: u32,
    /// Whether it belongs to the warm-up.
    pub warmup: bool,
    /// The user that sends it (closed loop only).
    pub user: Option<u32>,
    /// When the schedule wanted it out.
    pub intended_start: Instant,
}

/// Sends `item` and reads the stream to its end; never fails, every failure is an outcome.
pub async fn send(
    target: &Target,
    item: &WorkItem,
    ticket: Ticket,
    run_start: Instant,
) -> RequestRecord {
    let timed = exchange(target, item, false).await;
    finish(item, ticket, run_start, timed)
}

/// The record of `timed`, the exchange of `item`, as `ticket` asked for it.
fn finish(item: &WorkItem, ticket: Ticket, run_start: Instant, timed: Timed) -> RequestRecord {
    let Timed {
        start,
        end,
        exchange: progress,
        failure,
    } = timed;
    let since_start = |at: Instant| at.saturating_duration_since(run_start);
    let (output_tokens, token_source) = match progress.usage {
        Some(usage) => (usage.completion_tokens, TokenSource::Usage),
        None => (progress.chunks_with_content, TokenSource::Counted),
    };
    let (outcome, error) = match failure {
        Some((outcome, message)) => (outcome, Some(message)),
        None if progress.chunks_with_content == 0 => (Outcome::EmptyCompletion, None),
        None => (Outcome::Ok, None),
    };
    RequestRecord {
        id: ticket.id,
        step: ticket.step,
        warmup: ticket.warmup,
        user: ticket.user,
        route: item.route,
        row_id: item.row_id.clone(),
        intended_start: since_start(ticket.intended_start),
        start: since_start(start),
        first_token: progress.first_token.map(since_start),
        end: since_start(end),
        itl_gaps: progress.gaps,
        prompt_tokens: progress.usage.map(|usage| usage.prompt_tokens),
        output_tokens,
        token_source,
        outcome,
        http_status: progress.status,
        retry_after: progress.retry_after,
        error,
        replica: progress.replica,
    }
}
