//! A lean HTTP/1.1 client for load: hyper connections kept in a pool and reused, the
//! server's address resolved once, requests built without URL parsing. Per request it does
//! a fraction of the work of a general-purpose client, so the generator is not the
//! bottleneck. https connections go through rustls (see `tls`); the rest is the same.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::preflight::BaseUrl;
use super::tls::{self, TlsError, Trust};

/// One open connection.
pub type Connection = SendRequest<Full<Bytes>>;

/// Where requests go, and the idle connections to it.
pub struct HttpTarget {
    addr: SocketAddr,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
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
        let host = HeaderValue::from_str(written).map_err(|err| fail(err.to_string()))?;
        let authorization = api_key
            .map(|key| {
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| TargetError::ApiKey)
            })
            .transpose()?;
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
            host,
            authorization,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The same server with a pool of its own (connections belong to one runtime).
    pub fn new_pool(&self) -> HttpTarget {
        HttpTarget {
            addr: self.addr,
            host: self.host.clone(),
            authorization: self.authorization.clone(),
            tls: self.tls.clone(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether connections go through TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An idle connection (and `true`), or a new one (and `false`).
    pub async fn checkout(&self) -> std::io::Result<(Connection, bool)> {
        loop {
            let idle = self.idle.lock().expect("connection pool").pop();
            let Some(mut connection) = idle else { break };
            if connection.ready().await.is_ok() {
                return Ok((connection, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// Returns a connection whose last response was read to its end.
    pub fn checkin(&self, connection: Connection) {
        if !connection.is_closed() {
            self.idle.lock().expect("connection pool").push(connection);
        }
    }

    /// A new connection (TLS first for https).
    pub async fn connect(&self) -> std::io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => handshake(stream).await,
            Some((connector, name)) => {
                handshake(connector.connect(name.clone(), stream).await?).await
            }
        }
    }

    /// A request for `path` with `body` (POST) or none (GET).
    pub fn request(&self, path: &'static str, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let mut request = Request::new(Full::new(body.unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = hyper::Uri::from_static(path);
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        request
    }
}

/// An HTTP/1.1 connection over `io`, driven by a task of its own.
async fn handshake<T>(io: T) -> std::io::Result<Connection>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the server closes or the sender is dropped; errors reach the request.
        let _ = connection.await;
    });
    Ok(sender)
}
