//! Sends one streaming request and times it: the only code that touches the wire.

use std::time::Duration;

use http::HeaderName;
use tokio::time::Instant;

use super::http::HttpTarget;
use super::request::WorkItem;
use super::sse::{Chunk, EventSplitter, Usage, parse_chunk};
use crate::common::Outcome;
use crate::common::error_text::error_text;

/// Where and how requests go.
pub struct Target {
    /// The server and its connections.
    pub http: HttpTarget,
    /// Response header naming the replica that served a request.
    pub replica_header: HeaderName,
    /// Longest a request may take, from send to the end of its stream.
    pub timeout: Duration,
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
    /// How long the server asked to wait before a retry (`Retry-After` on a 429 or 503).
    pub retry_after: Option<std::time::Duration>,
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
            Err(_) if exchange.done => None,
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
    let request = target.http.request(item.route.path(), Some(&item.body));
    let (mut connection, head) = target
        .http
        .send(&request, target.replica_header.as_str())
        .await
        .map_err(|err| (Outcome::ConnectError, error_text(&err)))?;
    exchange.status = Some(head.status);
    exchange.replica = head.wanted;
    exchange.retry_after = head.retry_after;
    let broken = |err: std::io::Error| (Outcome::StreamBroken, error_text(&err));
    if !(200..300).contains(&head.status) {
        // The status is the outcome, whether or not the error body arrives whole.
        let body = connection
            .read_body(ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        target.http.checkin(connection);
        let text = String::from_utf8_lossy(&body);
        return Err((
            Outcome::of_status(head.status),
            format!("HTTP {}: {}", head.status, clip(&text)),
        ));
    }
    let mut splitter = EventSplitter::default();
    let mut failure = None;
    let mut output_bytes = 0usize;
    while !exchange.done {
        let Some(bytes) = connection.body_chunk().await.map_err(broken)? else {
            return Err((Outcome::StreamBroken, "stream ended without [DONE]".into()));
        };
        let now = Instant::now();
        let fed = splitter.feed(bytes, |data| {
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
                    output_bytes += content.len();
                    if output_bytes > item.output_limit {
                        failure = Some(format!(
                            "the server sent over {} bytes of text, more than the request's max_tokens allow",
                            item.output_limit
                        ));
                        return;
                    }
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
        if let Err(too_long) = fed {
            return Err((Outcome::StreamBroken, too_long.to_string()));
        }
        if let Some(message) = failure {
            return Err((Outcome::StreamBroken, message));
        }
    }
    // `[DONE]` ends the answer. The body's own end usually follows at once; it is awaited
    // briefly, only so the connection can carry the next request, never to finish this one.
    let ended = tokio::time::timeout(DRAIN_AFTER_DONE, drain(&mut connection)).await;
    if matches!(ended, Ok(Ok(()))) {
        target.http.checkin(connection);
    }
    Ok(())
}

/// How long the end of a body is awaited after `[DONE]` to reuse its connection.
const DRAIN_AFTER_DONE: Duration = Duration::from_millis(250);

/// Reads the rest of a body that should hold nothing more than its framing's end.
async fn drain(connection: &mut super::connection::Connection) -> std::io::Result<()> {
    let mut left = ERROR_BODY_BYTES;
    while let Some(bytes) = connection.body_chunk().await? {
        left = left
            .checked_sub(bytes.len())
            .ok_or_else(|| std::io::Error::other("more body after [DONE]"))?;
    }
    Ok(())
}

/// At most 200 characters of a response body.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
