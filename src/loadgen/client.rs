//! Sends one streaming request and times it: the only code that touches the wire.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::preflight::error_text;
use super::record::{Outcome, RequestRecord, TokenSource};
use super::sse::{Chunk, EventSplitter, Usage, parse_chunk};
use super::workload::{Route, WorkItem};

/// Where and how requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Shared connection pool.
    pub http: reqwest::Client,
    /// `BASE/v1/completions`.
    pub completions_url: String,
    /// `BASE/v1/chat/completions`.
    pub chat_url: String,
    /// `Authorization: Bearer` value, if any.
    pub api_key: Option<String>,
    /// Response header naming the replica that served a request.
    pub replica_header: String,
    /// Longest a request may take, from send to the end of its stream.
    pub timeout: Duration,
}

impl Target {
    /// A target at `base_url` (scheme, host, port, no `/v1`).
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: Option<String>,
        replica_header: String,
        timeout: Duration,
    ) -> Target {
        Target {
            http,
            completions_url: format!("{base_url}{}", Route::Completions.path()),
            chat_url: format!("{base_url}{}", Route::Chat.path()),
            api_key,
            replica_header,
            timeout,
        }
    }

    fn url(&self, route: Route) -> &str {
        match route {
            Route::Completions => &self.completions_url,
            Route::Chat => &self.chat_url,
        }
    }
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

/// What the stream told us so far.
#[derive(Default)]
struct StreamProgress {
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    chunks_with_content: u32,
    gaps: Vec<Duration>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamProgress {
    fn content(&mut self, at: Instant) {
        if let Some(last) = self.last_token {
            self.gaps.push(at - last);
        }
        self.first_token.get_or_insert(at);
        self.last_token = Some(at);
        self.chunks_with_content += 1;
    }
}

/// Sends `item` and reads the stream to its end; never fails, every failure is an outcome.
pub async fn send(
    target: &Target,
    item: &WorkItem,
    ticket: Ticket,
    run_start: Instant,
) -> RequestRecord {
    let start = Instant::now();
    let deadline = start + target.timeout;
    let mut progress = StreamProgress::default();
    let mut request = target
        .http
        .post(target.url(item.route))
        .header("content-type", "application/json")
        .body(item.body.clone());
    if let Some(key) = &target.api_key {
        request = request.bearer_auth(key);
    }
    let mut status = None;
    let mut replica = None;
    let failure = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => Some((
            Outcome::Timeout,
            "no response headers before the timeout".to_string(),
        )),
        Ok(Err(err)) => Some((Outcome::ConnectError, error_text(&err))),
        Ok(Ok(response)) => {
            status = Some(response.status().as_u16());
            replica = response
                .headers()
                .get(&target.replica_header)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            if response.status().is_success() {
                read_stream(response, deadline, &mut progress).await.err()
            } else {
                let code = response.status().as_u16();
                let text = tokio::time::timeout_at(deadline, response.text())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                Some((
                    Outcome::of_status(code),
                    format!("HTTP {code}: {}", clip(&text)),
                ))
            }
        }
    };
    let end = Instant::now();
    finish(
        ticket, run_start, start, end, progress, status, replica, failure,
    )
}

/// Reads events until `[DONE]`; `Err` carries the outcome when the stream fails.
async fn read_stream(
    response: reqwest::Response,
    deadline: Instant,
    progress: &mut StreamProgress,
) -> Result<(), (Outcome, String)> {
    let mut body = response.bytes_stream();
    let mut splitter = EventSplitter::default();
    let mut failure = None;
    while !progress.done {
        let next = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => {
                return Err((
                    Outcome::Timeout,
                    "stream not finished before the timeout".into(),
                ));
            }
            Ok(next) => next,
        };
        let bytes = match next {
            None => break,
            Some(Err(err)) => return Err((Outcome::StreamBroken, error_text(&err))),
            Some(Ok(bytes)) => bytes,
        };
        let now = Instant::now();
        splitter.feed(&bytes, |data| {
            if failure.is_some() || progress.done {
                return;
            }
            match parse_chunk(data) {
                Ok(Chunk::Done) => progress.done = true,
                Ok(Chunk::Data {
                    content_chars,
                    usage,
                }) => {
                    if content_chars > 0 {
                        progress.content(now);
                    }
                    if usage.is_some() {
                        progress.usage = usage;
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
    if progress.done {
        Ok(())
    } else {
        Err((Outcome::StreamBroken, "stream ended without [DONE]".into()))
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    ticket: Ticket,
    run_start: Instant,
    start: Instant,
    end: Instant,
    progress: StreamProgress,
    http_status: Option<u16>,
    replica: Option<String>,
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
    let gaps = progress.gaps;
    let itl_mean = (!gaps.is_empty()).then(|| gaps.iter().sum::<Duration>() / gaps.len() as u32);
    RequestRecord {
        id: ticket.id,
        step: ticket.step,
        warmup: ticket.warmup,
        user: ticket.user,
        intended_start: since_start(ticket.intended_start),
        start: since_start(start),
        first_token: progress.first_token.map(since_start),
        end: since_start(end),
        itl_mean,
        itl_max: gaps.iter().max().copied(),
        itl_gaps: gaps,
        prompt_tokens: progress.usage.map(|usage| usage.prompt_tokens),
        output_tokens,
        token_source,
        outcome,
        http_status,
        error,
        replica,
    }
}

/// At most 200 characters of a response body.
fn clip(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
