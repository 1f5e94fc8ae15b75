//! Sends one streaming request and times it: the only code that touches the wire.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::HeaderName;
use tokio::time::Instant;

use super::http::HttpTarget;
use super::preflight::error_text;
use super::record::{Outcome, RequestRecord, TokenSource};
use super::sse::{Chunk, EventSplitter, Usage, parse_chunk};
use super::workload::WorkItem;

/// Where and how requests go.
pub struct Target {
    /// The server and its connections.
    pub http: HttpTarget,
    /// Response header naming the replica that served a request.
    pub replica_header: HeaderName,
    /// Longest a request may take, from send to the end of its stream.
    pub timeout: Duration,
}

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

/// What an exchange told us; kept as far as it got when a timeout cuts it short.
#[derive(Debug, Default)]
pub struct Exchange {
    /// The response's HTTP status.
    pub status: Option<u16>,
    /// The replica header's value.
    pub replica: Option<String>,
    /// When the first content arrived.
    pub first_token: Option<Instant>,
    /// When the last content arrived.
    pub last_token: Option<Instant>,
    /// Chunks that carried content.
    pub chunks_with_content: u32,
    /// Gaps between content chunks.
    pub gaps: Vec<Duration>,
    /// The server's token counts.
    pub usage: Option<Usage>,
    /// Whether `[DONE]` arrived.
    pub done: bool,
    /// The generated text, when asked to keep it.
    pub text: Option<String>,
    /// Why generation stopped, as the server said.
    pub finish_reason: Option<String>,
}

/// One finished exchange: when it ran, what came back, and why it failed if it did.
#[derive(Debug)]
pub struct Timed {
    /// When it was sent.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// What came back.
    pub exchange: Exchange,
    /// The failure's class and words, `None` when the stream completed.
    pub failure: Option<(Outcome, String)>,
}

impl Exchange {
    fn content(&mut self, at: Instant) {
        if let Some(last) = self.last_token {
            self.gaps.push(at - last);
        }
        self.first_token.get_or_insert(at);
        self.last_token = Some(at);
        self.chunks_with_content += 1;
    }
}

/// Longest error body kept from a failed response.
const ERROR_BODY_BYTES: usize = 4096;

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

/// Sends `item` and reads its stream to the end or the timeout, keeping the generated text
/// when `keep_text`.
pub async fn exchange(target: &Target, item: &WorkItem, keep_text: bool) -> Timed {
    let start = Instant::now();
    let mut exchange = Exchange {
        text: keep_text.then(String::new),
        ..Exchange::default()
    };
    let failure =
        match tokio::time::timeout_at(start + target.timeout, run(target, item, &mut exchange))
            .await
        {
            Ok(result) => result.err(),
            Err(_) if exchange.status.is_none() => Some((
                Outcome::Timeout,
                "no response headers before the timeout".to_string(),
            )),
            Err(_) => Some((
                Outcome::Timeout,
                "stream not finished before the timeout".to_string(),
            )),
        };
    Timed {
        start,
        end: Instant::now(),
        exchange,
        failure,
    }
}

/// Sends, then reads events until `[DONE]`; `Err` carries the outcome when it fails.
async fn run(
    target: &Target,
    item: &WorkItem,
    exchange: &mut Exchange,
) -> Result<(), (Outcome, String)> {
    let connect_error = |err: &dyn std::error::Error| (Outcome::ConnectError, error_text(err));
    let (mut connection, reused) = target
        .http
        .checkout()
        .await
        .map_err(|err| connect_error(&err))?;
    let request = || {
        target
            .http
            .request(item.route.path(), Some(item.body.clone()))
    };
    let response = match connection.send_request(request()).await {
        Ok(response) => response,
        // An idle connection the server closed meanwhile: once more on a new one.
        Err(_) if reused => {
            connection = target
                .http
                .connect()
                .await
                .map_err(|err| connect_error(&err))?;
            connection
                .send_request(request())
                .await
                .map_err(|err| connect_error(&err))?
        }
        Err(err) => return Err(connect_error(&err)),
    };
    let status = response.status();
    exchange.status = Some(status.as_u16());
    exchange.replica = response
        .headers()
        .get(&target.replica_header)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut body = response.into_body();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(
                    &data[..data
                        .len()
                        .min(ERROR_BODY_BYTES - text.len().min(ERROR_BODY_BYTES))],
                );
            }
        }
        target.http.checkin(connection);
        let text = String::from_utf8_lossy(&text);
        return Err((
            Outcome::of_status(status.as_u16()),
            format!("HTTP {}: {}", status.as_u16(), clip(&text)),
        ));
    }
    let mut splitter = EventSplitter::default();
    let mut failure = None;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Err(err)) => return Err((Outcome::StreamBroken, error_text(&err))),
            Some(Ok(frame)) => frame,
        };
        let Ok(bytes) = frame.into_data() else {
            continue;
        };
        if exchange.done {
            continue;
        }
        let now = Instant::now();
        splitter.feed(&bytes, |data| {
            if failure.is_some() || exchange.done {
                return;
            }
            match parse_chunk(data) {
                Ok(Chunk::Done) => exchange.done = true,
                Ok(Chunk::Data {
                    content,
                    finish_reason,
                    usage,
                }) => {
                    if !content.is_empty() {
                        exchange.content(now);
                        if let Some(text) = &mut exchange.text {
                            text.push_str(&content);
                        }
                    }
                    if let Some(reason) = finish_reason {
                        exchange.finish_reason = Some(reason.into_owned());
                    }
                    if usage.is_some() {
                        exchange.usage = usage;
                    }
                }
                Ok(Chunk::Error(message)) => failure = Some(format!("error in stream: {message}")),
                Err(message) => failure = Some(message),
            }
        });
        if let Some(message) = failure {
            return Err((Outcome::StreamBroken, message));
        }
    }
    if exchange.done {
        // The body was read to its end: the connection can serve the next request.
        target.http.checkin(connection);
        Ok(())
    } else {
        Err((Outcome::StreamBroken, "stream ended without [DONE]".into()))
    }
}

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
        None if progress.chunks_with_content == 0 => (
            Outcome::EmptyCompletion,
            Some("the stream completed without any content".to_string()),
        ),
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
        error,
        replica: progress.replica,
    }
}

/// At most 200 characters of a response body.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
