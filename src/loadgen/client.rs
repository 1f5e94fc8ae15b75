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

/// What the exchange told us so far; kept when a timeout cuts it short.
#[derive(Default)]
struct Exchange {
    status: Option<u16>,
    replica: Option<String>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    chunks_with_content: u32,
    gaps: Vec<Duration>,
    usage: Option<Usage>,
    done: bool,
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
    let start = Instant::now();
    let mut exchange = Exchange::default();
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
    finish(
        item,
        ticket,
        run_start,
        start,
        Instant::now(),
        exchange,
        failure,
    )
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
                    content_chars,
                    usage,
                }) => {
                    if content_chars > 0 {
                        exchange.content(now);
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

fn finish(
    item: &WorkItem,
    ticket: Ticket,
    run_start: Instant,
    start: Instant,
    end: Instant,
    progress: Exchange,
    failure: Option<(Outcome, String)>,
) -> RequestRecord {
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
