//! Is a server up: one `GET` on a new connection, answered 2xx within a deadline. The batch
//! runner asks a pod's `/health` after a failed request; local capacity waits on `/ready`.

use std::time::Duration;

use super::http::HttpTarget;
use super::tls::Trust;

/// Whether `http` answers `GET path` with a 2xx within `timeout`, on a new connection (an
/// idle pooled one proves nothing about the server now).
pub async fn answers(http: &HttpTarget, path: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut connection = http.connect().await.ok()?;
        let head = connection.send(&http.request(path, None), "").await.ok()?;
        Some((200..300).contains(&head.status))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

/// Whether the server at `url` answers `GET path` with a 2xx within `timeout`.
pub async fn url_answers(url: &str, path: &str, timeout: Duration) -> bool {
    match super::connect(url, None, &Trust::default()).await {
        Ok((_, http)) => answers(&http, path, timeout).await,
        Err(_) => false,
    }
}
