//! What can go wrong while loading or running a model, as values a caller can branch on.

use thiserror::Error;

use crate::common::blame::Blame;

/// Errors of the model layer. The variants a user can fix (bad path, wrong file, bad
/// prompt) carry the offending file or value and say what to do.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The model path does not exist.
    #[error(
        "model not found: {path} (pass --model PATH to a Gemma 3 GGUF file or safetensors directory, or run `gembatch fetch-model`)"
    )]
    NotFound {
        /// The path that was tried.
        path: String,
    },
    /// The file exists but cannot be read as a model.
    #[error(
        "{path}: not a usable model file: {reason} (re-download it, e.g. `gembatch fetch-model --force`)"
    )]
    Corrupt {
        /// The file that failed.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The file is a valid model of an architecture gembatch does not run.
    #[error(
        "{path}: architecture `{architecture}` is not supported, gembatch runs Gemma 3 (`gemma3`) models only"
    )]
    UnsupportedArchitecture {
        /// The file that was loaded.
        path: String,
        /// The architecture it declares.
        architecture: String,
    },
    /// The prompt encodes to no tokens.
    #[error("the prompt is empty: give at least one character of text")]
    EmptyPrompt,
    /// The prompt does not fit the context.
    #[error(
        "the prompt has {tokens} tokens but the context holds {context}: shorten it or raise --context"
    )]
    PromptTooLong {
        /// Prompt length in tokens (BOS included).
        tokens: usize,
        /// The context length in use.
        context: usize,
    },
    /// A generation parameter is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The flag or field name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The device asked for cannot be used.
    #[error("--device cuda: {reason}")]
    DeviceUnavailable {
        /// Why, and what to do.
        reason: String,
    },
    /// The tokenizer could not be built or run.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error inside candle (a bug or an out-of-memory, not a user mistake).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Blame for ModelError {
    /// A bad path, file, prompt or flag; not candle's or the tokenizer's failures.
    fn is_user_error(&self) -> bool {
        !matches!(self, Self::Candle(_) | Self::Tokenizer(_))
    }
}

impl ModelError {
    /// The flag or field an [`InvalidParameter`](Self::InvalidParameter) error is about.
    pub fn parameter(&self) -> Option<&'static str> {
        match self {
            Self::InvalidParameter { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// The message of a candle error without the backtrace candle appends when
/// `RUST_BACKTRACE` is set, for one-line user-facing messages.
pub fn one_line(err: &candle_core::Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Result alias of the model layer.
pub type Result<T> = std::result::Result<T, ModelError>;
