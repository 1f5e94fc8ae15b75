//! Where requests go: the server's address, resolved once, the header lines every request
//! carries, and a pool of idle keep-alive connections ([`Connection`]). https connections go
//! through rustls (see `tls`); the rest is the same.

use std::net::SocketAddr;
use std::sync::Mutex;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::connection::{Connection, Head, Request, Stream};
use super::preflight::BaseUrl;
use super::tls::{self, TlsError, Trust};

/// Where requests go, and the idle connections to it.
pub struct HttpTarget {
    addr: SocketAddr,
    /// The base URL's path prefix, before every request's path.
    prefix: String,
    /// `host`, `user-agent` and, with a key, `authorization` lines.
    headers: Vec<u8>,
    /// For https: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<Connection>>,
}

/// A target that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {why}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// Why.
        why: String,
    },
    /// The API key cannot be sent as a header.
    #[error("the API key holds characters that cannot go in an HTTP header")]
    ApiKey,
    /// https cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl HttpTarget {
    /// A target for `base`, resolved now; an https one trusts what `trust` says.
    pub async fn resolve(
        base: &BaseUrl,
        api_key: Option<&str>,
        trust: &Trust,
    ) -> Result<HttpTarget, TargetError> {
        let fail = |why: String| TargetError::Resolve {
            host: base.authority.clone(),
            why,
        };
        let addr = tokio::net::lookup_host(&base.authority)
            .await
            .map_err(|err| fail(err.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))?;
        let written = base
            .text
            .split_once("://")
            .map_or(&*base.text, |(_, rest)| rest);
        let headers = header_lines(written, api_key)?;
        let tls = if base.tls {
            Some((
                tls::connector(trust)?,
                tls::server_name(&base.host).map_err(fail)?,
            ))
        } else {
            None
        };
        Ok(HttpTarget {
            addr,
            prefix: base.prefix.clone(),
            headers,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The same server with a pool of its own (connections belong to one runtime).
    pub fn new_pool(&self) -> HttpTarget {
        HttpTarget {
            addr: self.addr,
            prefix: self.prefix.clone(),
            headers: self.headers.clone(),
            tls: self.tls.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The same target whose every request also carries `name: value` (both header-safe
    /// constants of the caller's).
    pub fn with_header(mut self, name: &str, value: &str) -> HttpTarget {
        self.headers
            .extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        self
    }

    /// Whether connections go through TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An idle connection the server has not closed, or a new one.
    async fn checkout(&self) -> std::io::Result<Connection> {
        loop {
            let idle = self.idle.lock().expect("connection pool").pop();
            let Some(mut connection) = idle else {
                return self.connect().await;
            };
            // One the server closed meanwhile (its keep-alive timeout) is dropped.
            if connection.still_open() {
                return Ok(connection);
            }
        }
    }

    /// Returns a connection after its exchange; kept only if it can carry another request.
    pub fn checkin(&self, connection: Connection) {
        if connection.reusable() {
            self.idle.lock().expect("connection pool").push(connection);
        }
    }

    /// A new connection (TLS first for https).
    pub async fn connect(&self) -> std::io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Left(stream),
            Some((connector, name)) => {
                Stream::Right(Box::new(connector.connect(name.clone(), stream).await?))
            }
        };
        Ok(Connection::new(stream))
    }

    /// A request for `path` with `body` (POST, JSON) or none (GET).
    pub fn request<'a>(&'a self, path: &'a str, body: Option<&'a [u8]>) -> Request<'a> {
        Request {
            method: if body.is_some() { "POST" } else { "GET" },
            prefix: &self.prefix,
            path,
            headers: &self.headers,
            body,
        }
    }

    /// Sends `request` on a pooled connection and reads the response head, keeping the
    /// header named `wanted`; the body is then read from the returned connection, which goes
    /// back with [`HttpTarget::checkin`].
    ///
    /// A request is written once, with one exception, curl's and Chromium's: on a reused
    /// connection that dies before a single byte of answer, it goes once more on a new
    /// connection. A server may close an idle keep-alive connection just as the next
    /// request leaves (llama-server does after every streamed answer longer than its 5 s
    /// keep-alive), and that request was never seen through. Any other failure after the
    /// bytes went out may have reached the server (a generation may be running), so
    /// resending is the caller's decision, counted as a retry, never this layer's.
    pub async fn send(
        &self,
        request: &Request<'_>,
        wanted: &str,
    ) -> std::io::Result<(Connection, Head)> {
        let mut connection = self.checkout().await?;
        match connection.send(request, wanted).await {
            Ok(head) => Ok((connection, head)),
            Err(err) if connection.reused() && connection.nothing_received() && died(&err) => {
                let mut fresh = self.connect().await?;
                let head = fresh.send(request, wanted).await?;
                Ok((fresh, head))
            }
            Err(err) => Err(err),
        }
    }

    /// `GET path`: the status and at most `limit` bytes of the body.
    pub async fn get(&self, path: &str, limit: usize) -> std::io::Result<(u16, Vec<u8>)> {
        let (mut connection, head) = self.send(&self.request(path, None), "").await?;
        let body = connection.read_body(limit).await?;
        self.checkin(connection);
        Ok((head.status, body))
    }
}

/// Whether `err` is the connection ending (closed or reset), not a malformed answer.
fn died(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        err.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// The header lines every request carries: `host` as the URL writes it, the user agent and,
/// with an API key, its bearer authorization.
fn header_lines(host: &str, api_key: Option<&str>) -> Result<Vec<u8>, TargetError> {
    if !header_safe(host) {
        return Err(TargetError::Resolve {
            host: host.to_string(),
            why: "characters that cannot go in an HTTP header".into(),
        });
    }
    let mut lines = format!(
        "host: {host}\r\nuser-agent: gembatch/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(key) = api_key {
        if !header_safe(key) {
            return Err(TargetError::ApiKey);
        }
        lines.push_str(&format!("authorization: Bearer {key}\r\n"));
    }
    Ok(lines.into_bytes())
}

/// Whether `text` can be a header value: visible ASCII, spaces and tabs.
fn header_safe(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each connection's requests with the next scripted answers, one
    /// per request, then closes it; returns its URL and the requests it read, per connection.
    async fn scripted(
        connections: Vec<Vec<&'static str>>,
    ) -> (String, tokio::task::JoinHandle<Vec<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answers in connections {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut requests = Vec::new();
                for answer in answers {
                    requests.push(read_request(&mut socket).await);
                    socket.write_all(answer.as_bytes()).await.unwrap();
                }
                seen.push(requests);
            }
            seen
        });
        (url, server)
    }

    /// One request: head, then as many body bytes as its content-length says.
    async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while !bytes.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            bytes.push(byte[0]);
        }
        let head = String::from_utf8(bytes.clone()).unwrap();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).await.unwrap();
        head + &String::from_utf8(body).unwrap()
    }

    async fn target(url: &str, api_key: Option<&str>) -> HttpTarget {
        let base = BaseUrl::parse(url).unwrap();
        HttpTarget::resolve(&base, api_key, &Trust::default())
            .await
            .unwrap()
    }

    /// Sends a POST and reads the answer whole: status, replica header, body.
    async fn post(target: &HttpTarget, body: &str) -> (u16, Option<String>, Vec<u8>) {
        let request = target.request("/v1/completions", Some(body.as_bytes()));
        let (mut connection, head) = target.send(&request, "x-replica").await.unwrap();
        let body = connection.read_body(usize::MAX).await.unwrap();
        target.checkin(connection);
        (head.status, head.wanted, body)
    }

    #[tokio::test]
    async fn a_base_url_with_a_path_prefixes_every_request_path_but_not_the_host() {
        let (url, server) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]])
        .await;
        let target = target(&format!("{url}/openai/v1/"), None).await;
        assert_eq!(post(&target, "{}").await.0, 200);
        assert_eq!(target.get("/v1/models", 16).await.unwrap().0, 200);
        let seen = server.await.unwrap();
        let authority = url.trim_start_matches("http://");
        assert!(
            seen[0][0].starts_with(&format!(
                "POST /openai/v1/completions HTTP/1.1\r\nhost: {authority}\r\n"
            )),
            "{}",
            seen[0][0]
        );
        assert!(seen[0][1].starts_with("GET /openai/v1/models HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn keep_alive_requests_share_one_connection_and_bodies_end_where_framed() {
        let (url, server) = scripted(vec![vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Replica: pod-a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ]])
        .await;
        let target = target(&url, Some("key-1")).await;
        assert_eq!(
            post(&target, "{}").await,
            (200, Some("pod-a".to_string()), b"abc".to_vec())
        );
        assert_eq!(
            post(&target, "{\"a\":1}").await,
            (503, None, b"busy".to_vec())
        );
        assert_eq!(target.get("/health", 16).await.unwrap(), (204, Vec::new()));
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 1, "one connection for all three requests");
        let authority = url.trim_start_matches("http://");
        assert_eq!(
            seen[0][1],
            format!(
                "POST /v1/completions HTTP/1.1\r\nhost: {authority}\r\nuser-agent: gembatch/{}\r\n\
                 authorization: Bearer key-1\r\ncontent-type: application/json\r\n\
                 content-length: 7\r\n\r\n{{\"a\":1}}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(
            seen[0][2].starts_with("GET /health HTTP/1.1\r\n"),
            "{}",
            seen[0][2]
        );
        assert!(!seen[0][2].contains("content-length"), "{}", seen[0][2]);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused_nor_one_it_closed_while_idle() {
        let (url, server) = scripted(vec![
            // Says it closes: the next request must go on a new connection.
            vec!["HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"],
            // HTTP/1.0 without a length: the body ends with the connection.
            vec!["HTTP/1.0 200 OK\r\n\r\nuntil close"],
            // Keep-alive, but the server then closes it while idle.
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"],
        ])
        .await;
        let target = target(&url, None).await;
        assert_eq!(post(&target, "1").await.2, b"a");
        assert_eq!(post(&target, "2").await.2, b"until close");
        assert_eq!(post(&target, "3").await.2, b"b");
        assert_eq!(target.idle.lock().unwrap().len(), 1, "kept for reuse");
        // Lets the server close the pooled connection: it is seen closed before anything is
        // written on it, and the request goes on a new one.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(post(&target, "4").await.2, b"c");
        assert_eq!(server.await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_reused_connection_closed_unanswered_sends_the_request_once_more_on_a_new_one() {
        // The second request is read, then the connection closes unanswered: the server
        // closed its idle keep-alive connection as the request left. A new connection
        // carries it once more.
        let (url, server) = scripted(vec![
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", ""],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"],
        ])
        .await;
        let target = target(&url, None).await;
        assert_eq!(post(&target, "1").await.2, b"a");
        assert_eq!(post(&target, "2").await.2, b"b");
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 2, "a second connection: {seen:?}");
        assert!(seen[0][1].ends_with("\r\n\r\n2") && seen[1][0].ends_with("\r\n\r\n2"));
    }

    #[tokio::test]
    async fn a_request_cut_off_on_a_new_connection_or_after_an_answer_began_is_never_sent_again() {
        // A new connection that closes unanswered: the server may have been working on it.
        let (url, server) = scripted(vec![vec![""]]).await;
        let fresh = target(&url, None).await;
        let request = fresh.request("/v1/completions", Some(b"1"));
        let err = fresh.send(&request, "x-replica").await.err().unwrap();
        assert!(err.to_string().contains("without answering"), "{err}");
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            vec![vec![seen[0][0].clone()]],
            "written once: {seen:?}"
        );
        // A reused connection on which part of an answer came: the server saw it.
        let (url, server) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            "HTTP/1.1 200",
        ]])
        .await;
        let reused = target(&url, None).await;
        assert_eq!(post(&reused, "1").await.2, b"a");
        let request = reused.request("/v1/completions", Some(b"2"));
        assert!(reused.send(&request, "x-replica").await.is_err());
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 1, "no second connection: {seen:?}");
        assert_eq!(seen[0].len(), 2, "each request written once: {seen:?}");
    }

    #[tokio::test]
    async fn content_lengths_that_disagree_are_refused() {
        let (url, _server) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nabcde",
        ]])
        .await;
        let err = target(&url, None).await.get("/", 16).await.unwrap_err();
        assert!(err.to_string().contains("disagree"), "{err}");
        let (url, _server) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab",
        ]])
        .await;
        assert_eq!(
            target(&url, None).await.get("/", 16).await.unwrap(),
            (200, b"ab".to_vec())
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
        let (url, server) = scripted(vec![vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ]])
        .await;
        let target = target(&url, None).await;
        let request = target.request("/v1/completions", Some(b"{}"));
        let (mut connection, head) = target.send(&request, "x-replica").await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(
            connection.body_chunk().await.unwrap(),
            Some(b"ab".as_slice())
        );
        server.await.unwrap();
        let err = connection.body_chunk().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("before the response ended"),
            "{err}"
        );
        target.checkin(connection);
        assert!(target.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn what_is_not_http_is_named() {
        let (url, _server) = scripted(vec![vec!["SSH-2.0-OpenSSH_9.6\r\n\r\n"]]).await;
        let err = target(&url, None)
            .await
            .get("/v1/models", 16)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("not an HTTP/1.1 response"),
            "{err}"
        );
        assert!(matches!(
            HttpTarget::resolve(
                &BaseUrl::parse(&url).unwrap(),
                Some("a\nb"),
                &Trust::default()
            )
            .await,
            Err(TargetError::ApiKey)
        ));
    }
}
