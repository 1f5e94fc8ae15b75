//! The OpenAI-compatible HTTP client the load generator, the batch runner and the pod
//! probes share: one HTTP/1.1 stack, https by rustls, Server-Sent Events, timed streams.
//!
//! - `preflight`: the server's base URL, and whether it speaks the OpenAI API, which model;
//! - `http` + `tls`: a server and its pooled keep-alive connections, https by rustls;
//! - `connection` + `framing`: one HTTP/1.1 exchange, driven by the requesting task;
//! - `request`: a ready-to-send streaming request body;
//! - `exchange` + `sse`: one streaming request, timed;
//! - `probe`: is a server up;
//! - `error`: why a server cannot be used.

pub mod connection;
pub mod error;
pub mod exchange;
pub mod framing;
pub mod http;
pub mod preflight;
pub mod probe;
pub mod request;
pub mod sse;
pub mod tls;

pub use error::ClientError;
pub use exchange::{Target, Timed};
pub use http::HttpTarget;
pub use preflight::BaseUrl;
pub use request::WorkItem;

/// Parses `url` and resolves its host: the server's base URL and a connection pool to it.
pub async fn connect(
    url: &str,
    api_key: Option<&str>,
    trust: &tls::Trust,
) -> Result<(BaseUrl, HttpTarget), ClientError> {
    let base = BaseUrl::parse(url)?;
    let http = HttpTarget::resolve(&base, api_key, trust)
        .await
        .map_err(|err| match err {
            http::TargetError::Tls(err) => ClientError::Tls(err),
            err => ClientError::Unreachable {
                url: base.root(),
                why: err.to_string(),
            },
        })?;
    Ok((base, http))
}
