//! Is a server up: one `GET` on a new connection, answered within a deadline. The batch
//! runner asks a pod's `/health` after a failed request (any answer but a server error
//! will do: an OpenAI-compatible server need not have that route); local capacity waits on
//! `/ready` (a 2xx).

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

/// Whether `http` is alive: it answers `GET path` within `timeout` on a new connection with
/// anything but a server error. gembatch's pods answer `/health` 503 once their engine has
/// died; a server without the route (OpenAI's API, a gateway with a path prefix) answers
/// 404 and is up all the same.
pub async fn alive(http: &HttpTarget, path: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut connection = http.connect().await.ok()?;
        let head = connection.send(&http.request(path, None), "").await.ok()?;
        Some(head.status < 500)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::preflight::BaseUrl;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers one request with `status`, or holds it unanswered for `None`.
    async fn answering(status: Option<u16>) -> HttpTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/openai/v1", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(socket.read_u8().await.unwrap());
            }
            assert!(
                head.starts_with(b"GET /openai/health "),
                "the base URL's prefix"
            );
            match status {
                Some(status) => {
                    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    socket.write_all(answer.as_bytes()).await.unwrap();
                }
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
        });
        let base = BaseUrl::parse(&url).unwrap();
        HttpTarget::resolve(&base, None, &Trust::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_server_is_alive_unless_it_answers_a_server_error_or_nothing() {
        let timeout = Duration::from_millis(500);
        for (status, expected) in [
            (Some(200), true),
            (Some(404), true),
            (Some(401), true),
            (Some(503), false),
            (None, false),
        ] {
            let target = answering(status).await;
            assert_eq!(
                alive(&target, "/health", timeout).await,
                expected,
                "{status:?}"
            );
        }
        let target = answering(Some(404)).await;
        assert!(
            !answers(&target, "/health", timeout).await,
            "ready needs a 2xx"
        );
    }
}
