//! What one request measured: the row `requests.parquet` holds and the statistics pool.

use std::sync::Arc;

use std::time::Duration;

use crate::common::{Outcome, Route};

/// Where the token counts of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The server's `usage` object.
    Usage,
    /// Streamed content chunks counted by the client (the server sent no usage).
    Counted,
}

impl TokenSource {
    /// The name in Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Usage => "usage",
            TokenSource::Counted => "counted",
        }
    }
}

/// One request, timed. Instants are offsets from the run's start.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Sequence number in the run.
    pub id: u64,
    /// The step it belongs to (0-based); warm-up requests carry the first step's index.
    pub step: u32,
    /// Sent during the warm-up, so left out of every statistic.
    pub warmup: bool,
    /// The virtual user that sent it (closed loop); none in open loop.
    pub user: Option<u32>,
    /// The route it went to.
    pub route: Route,
    /// The dataset row it came from, if any.
    pub row_id: Option<Arc<str>>,
    /// When the schedule wanted it sent.
    pub intended_start: Duration,
    /// When it was sent.
    pub start: Duration,
    /// When the first content token arrived.
    pub first_token: Option<Duration>,
    /// When the answer ended (complete, failed or timed out).
    pub end: Duration,
    /// Every gap between successive content chunks.
    pub itl_gaps: Vec<Duration>,
    /// Prompt tokens (from `usage` only: the client does not tokenize).
    pub prompt_tokens: Option<u32>,
    /// Output tokens.
    pub output_tokens: u32,
    /// Where `output_tokens` came from.
    pub token_source: TokenSource,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// The wait a refusal (429, 503) asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
    /// What went wrong, for every failed outcome.
    pub error: Option<String>,
    /// The replica that served it (from a response header), when the server says.
    pub replica: Option<String>,
}

impl RequestRecord {
    /// First token − start.
    pub fn ttft(&self) -> Option<Duration> {
        self.first_token.map(|t| t.saturating_sub(self.start))
    }

    /// First token − intended start: includes the time the request waited to go out.
    pub fn ttft_corrected(&self) -> Option<Duration> {
        self.first_token
            .map(|t| t.saturating_sub(self.intended_start))
    }

    /// End − start.
    pub fn e2e(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// End − intended start.
    pub fn e2e_corrected(&self) -> Duration {
        self.end.saturating_sub(self.intended_start)
    }

    /// (End − first token) / (output tokens − 1), for requests with two tokens or more.
    pub fn tpot(&self) -> Option<Duration> {
        let first = self.first_token?;
        (self.output_tokens >= 2).then(|| self.end.saturating_sub(first) / (self.output_tokens - 1))
    }

    /// Mean gap between successive content chunks.
    pub fn itl_mean(&self) -> Option<Duration> {
        let gaps = &self.itl_gaps;
        (!gaps.is_empty()).then(|| gaps.iter().sum::<Duration>() / gaps.len() as u32)
    }

    /// Longest gap between successive content chunks.
    pub fn itl_max(&self) -> Option<Duration> {
        self.itl_gaps.iter().max().copied()
    }

    /// A successful one-token request at the run's start, for tests to adjust.
    #[cfg(test)]
    pub(crate) fn fixture() -> RequestRecord {
        RequestRecord {
            id: 0,
            step: 0,
            warmup: false,
            user: Some(0),
            route: Route::Completions,
            row_id: None,
            intended_start: Duration::ZERO,
            start: Duration::ZERO,
            first_token: Some(Duration::ZERO),
            end: Duration::ZERO,
            itl_gaps: Vec::new(),
            prompt_tokens: Some(1),
            output_tokens: 1,
            token_source: TokenSource::Usage,
            outcome: Outcome::Ok,
            http_status: Some(200),
            retry_after: None,
            error: None,
            replica: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(Outcome::of_status(429), Outcome::Http429);
        assert_eq!(Outcome::of_status(404), Outcome::Http4xx);
        assert_eq!(Outcome::of_status(503), Outcome::Http5xx);
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), index);
        }
        let successes: Vec<&str> = Outcome::ALL
            .iter()
            .filter(|o| o.is_success())
            .map(|o| o.as_str())
            .collect();
        assert_eq!(successes, ["ok", "empty_completion"]);
        assert!(Outcome::is_success_name("empty_completion"));
        assert!(!Outcome::is_success_name("timeout"));
    }

    #[test]
    fn latencies_from_instants() {
        let ms = Duration::from_millis;
        let record = RequestRecord {
            intended_start: ms(100),
            start: ms(150),
            first_token: Some(ms(250)),
            end: ms(1250),
            itl_gaps: vec![ms(80), ms(120), ms(100)],
            output_tokens: 11,
            ..RequestRecord::fixture()
        };
        assert_eq!(record.ttft(), Some(ms(100)));
        assert_eq!(record.ttft_corrected(), Some(ms(150)));
        assert_eq!(record.e2e(), ms(1100));
        assert_eq!(record.e2e_corrected(), ms(1150));
        assert_eq!(record.tpot(), Some(ms(100)));
        assert_eq!(record.itl_mean(), Some(ms(100)));
        assert_eq!(record.itl_max(), Some(ms(120)));
        let no_gaps = RequestRecord::fixture();
        assert_eq!((no_gaps.itl_mean(), no_gaps.itl_max()), (None, None));
    }
}
