//! How one request ended, in the classes of the load-metric definitions; the batch runner
//! and the load generator classify alike.

/// How a request ended, in the classes of the load-metric definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// A complete stream with at least one token and `[DONE]`.
    Ok,
    /// A 4xx answer other than 429.
    Http4xx,
    /// 429: the server shed load.
    Http429,
    /// A 5xx answer.
    Http5xx,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection could not be made or broke before any answer.
    ConnectError,
    /// The stream was cut or malformed before `[DONE]`.
    StreamBroken,
    /// A complete stream without a single content token (the model ended its turn at
    /// once): a success with 0 output tokens, as vLLM's and guidellm's benchmarks count it,
    /// counted apart so an `empty_rate` gate can bound it.
    EmptyCompletion,
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Http4xx,
        Outcome::Http429,
        Outcome::Http5xx,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::StreamBroken,
        Outcome::EmptyCompletion,
    ];

    /// The class's name in Parquet, JSON and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http429 => "http_429",
            Outcome::Http5xx => "http_5xx",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::StreamBroken => "stream_broken",
            Outcome::EmptyCompletion => "empty_completion",
        }
    }

    /// The class of an HTTP error status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            429 => Outcome::Http429,
            500.. => Outcome::Http5xx,
            _ => Outcome::Http4xx,
        }
    }

    /// Whether the request succeeded: a complete stream, with text or without.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::EmptyCompletion)
    }

    /// Whether a class name (as in `requests.parquet`) is a success.
    pub fn is_success_name(name: &str) -> bool {
        Outcome::ALL
            .iter()
            .any(|outcome| outcome.is_success() && outcome.as_str() == name)
    }

    /// Its index in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
