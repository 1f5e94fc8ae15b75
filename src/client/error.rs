//! Why a server cannot be used, in words that say what to do.

use super::tls::TlsError;

/// A server that cannot be used: a bad URL, nothing answering, a certificate not trusted,
/// not an OpenAI-compatible server, or not the model asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("--url {url:?}: {why}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Nothing answers there.
    #[error("cannot reach {url}: {why}; is the server running, and is --url right?")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        why: String,
    },
    /// https cannot be set up (`--cacert`, the system's roots).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server's certificate is not trusted.
    #[error(
        "{url}: the server's certificate is not trusted ({why}); trust its CA with --cacert \
         FILE, or pass --insecure for a test server"
    )]
    Untrusted {
        /// What was asked.
        url: String,
        /// What the TLS check said.
        why: String,
    },
    /// Something answers, but not as an OpenAI-compatible server.
    #[error("{url} does not look like an OpenAI-compatible server: {why}")]
    NotOpenAi {
        /// What was asked.
        url: String,
        /// Why.
        why: String,
    },
    /// The server does not serve the model asked for.
    #[error(
        "the server does not serve model {model:?}; it serves {served:?} (pass one with --model)"
    )]
    UnknownModel {
        /// Asked for.
        model: String,
        /// Served.
        served: Vec<String>,
    },
}
