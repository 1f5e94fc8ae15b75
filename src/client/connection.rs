//! One keep-alive HTTP/1.1 connection, driven by the task that sends the request: the
//! request goes out in one write, the response head is parsed in place (httparse) and the
//! body handed out as slices of the read buffer. No connection task, no channels, no copies:
//! a request costs its two syscalls and little else, which is what keeps the generator
//! from being the bottleneck.

use std::io::{self, ErrorKind};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::framing::{BodyDecoder, Framing, Next};

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in a response head.
const MAX_HEADERS: usize = 64;
/// What one read asks the socket for, at least.
const READ_SIZE: usize = 16 * 1024;

/// A plain (http) or TLS (https) byte stream.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// One request, ready to write.
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The server's path prefix (`/openai`, or empty), written before `path`.
    pub prefix: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// The header lines every request to this server carries, each ending in CRLF.
    pub headers: &'a [u8],
    /// The body, for a POST.
    pub body: Option<&'a [u8]>,
}

/// The parts of a response head the load generator uses.
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The value of the header asked for (the replica header), if present.
    pub wanted: Option<String>,
    /// How long the server asked to wait before a retry (`Retry-After`, in seconds or as
    /// an HTTP date), if it did.
    pub retry_after: Option<Duration>,
}

/// An open connection and the state of its current response.
pub struct Connection {
    stream: Stream,
    read: BytesMut,
    write: Vec<u8>,
    body: BodyDecoder,
    /// Body bytes handed out by the last `body_chunk`, still in `read`.
    handed_out: usize,
    keep_alive: bool,
    /// Whether a response has come on this connection: a reused one may be closed by its
    /// server as the next request goes out.
    answered: bool,
    /// Bytes received since the current request was written.
    received: usize,
}

impl Connection {
    /// A connection over `stream`, ready for its first request.
    pub fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(1024),
            body: BodyDecoder::new(Framing::Empty),
            handed_out: 0,
            keep_alive: true,
            answered: false,
            received: 0,
        }
    }

    /// Whether the last response was read to its end and the server keeps the connection
    /// open: then it can carry another request.
    pub fn reusable(&self) -> bool {
        self.keep_alive && self.body.is_done()
    }

    /// Whether a response has already come on this connection.
    pub fn reused(&self) -> bool {
        self.answered
    }

    /// Whether not one byte has come back since the current request was written.
    pub fn nothing_received(&self) -> bool {
        self.received == 0
    }

    /// Whether an idle connection is still fit to send on: the server has neither closed
    /// it nor sent anything unasked. Asked before a request goes out, because once its
    /// bytes may have reached the server a request is sent again only in the one case
    /// `HttpTarget::send` names.
    pub fn still_open(&mut self) -> bool {
        use std::task::{Context, Waker};
        let mut context = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = tokio::io::ReadBuf::new(&mut byte);
        let polled = tokio::io::AsyncRead::poll_read(
            std::pin::Pin::new(&mut self.stream),
            &mut context,
            &mut probe,
        );
        // Pending: nothing to read and not closed. Anything else (end of stream, stray
        // bytes, an error) makes the connection unfit.
        polled.is_pending()
    }

    /// Sends `request` and reads the response head, keeping the value of the header named
    /// `wanted` (lowercase). The body follows through [`Connection::body_chunk`].
    pub async fn send(&mut self, request: &Request<'_>, wanted: &str) -> io::Result<Head> {
        if !self.reusable() {
            return Err(io::Error::other(
                "the connection's last response was not read to its end",
            ));
        }
        self.write_request(request);
        self.received = 0;
        self.stream.write_all(&self.write).await?;
        self.stream.flush().await?;
        self.read_head(wanted).await
    }

    fn write_request(&mut self, request: &Request<'_>) {
        let out = &mut self.write;
        out.clear();
        out.extend_from_slice(request.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(request.prefix.as_bytes());
        out.extend_from_slice(request.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(request.headers);
        if let Some(body) = request.body {
            out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }

    async fn read_head(&mut self, wanted: &str) -> io::Result<Head> {
        loop {
            if let Some(head) = self.parse_head(wanted)? {
                return Ok(head);
            }
            if self.read.len() > MAX_HEAD {
                return Err(invalid(format!(
                    "the response head is over {} KiB",
                    MAX_HEAD / 1024
                )));
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the server closed the connection without answering",
                ));
            }
        }
    }

    /// Parses a complete head from the buffer and sets up the body's framing; `None` while
    /// the head is incomplete. Interim 1xx answers are skipped.
    fn parse_head(&mut self, wanted: &str) -> io::Result<Option<Head>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let length = match response.parse(&self.read) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(err) => return Err(invalid(format!("not an HTTP/1.1 response: {err}"))),
            };
            let status = response.code.unwrap_or_default();
            if (100..200).contains(&status) && status != 101 {
                self.read.advance(length);
                continue;
            }
            let http10 = response.version == Some(0);
            let mut framing = None;
            let mut content_lengths = 0;
            let mut chunked = false;
            let mut close = http10;
            let mut value_wanted = None;
            let mut retry_after = None;
            for header in response.headers.iter() {
                let name = header.name;
                if name.eq_ignore_ascii_case("content-length") {
                    let length = content_length(header.value)?;
                    // Two lengths that differ: which one frames the body is anyone's
                    // guess (RFC 9112 section 6.3), and guessing is how responses get split.
                    if framing.is_some_and(|seen| seen != Framing::Length(length)) {
                        return Err(invalid("Content-Length headers that disagree".into()));
                    }
                    framing = Some(Framing::Length(length));
                    content_lengths += 1;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = last_token(header.value).eq_ignore_ascii_case(b"chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    for token in header.value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                            close = false;
                        }
                    }
                } else if name.eq_ignore_ascii_case("retry-after") {
                    retry_after = wait_asked(header.value);
                } else if name.eq_ignore_ascii_case(wanted) {
                    value_wanted = Some(String::from_utf8_lossy(header.value).into_owned());
                }
            }
            let framing = if status == 204 || status == 304 {
                Framing::Empty
            } else if chunked {
                Framing::Chunked
            } else {
                framing.unwrap_or(Framing::UntilClose)
            };
            // Both Transfer-Encoding and Content-Length: chunked frames this body, but the
            // connection may be out of step with the server, so it is not reused.
            let ambiguous = chunked && content_lengths > 0;
            self.keep_alive = !close && !ambiguous && framing != Framing::UntilClose;
            self.body = BodyDecoder::new(framing);
            self.read.advance(length);
            self.answered = true;
            return Ok(Some(Head {
                status,
                wanted: value_wanted,
                retry_after,
            }));
        }
    }

    /// The next piece of the body, as it arrived; `None` at its end. A connection closed
    /// before the end is an `UnexpectedEof` error.
    pub async fn body_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.read.advance(std::mem::take(&mut self.handed_out));
        loop {
            match self
                .body
                .next(&self.read)
                .map_err(|err| invalid(err.to_string()))?
            {
                Next::Data { start, end } => {
                    self.handed_out = end;
                    return Ok(Some(&self.read[start..end]));
                }
                Next::End { consumed } => {
                    self.read.advance(consumed);
                    return Ok(None);
                }
                Next::NeedMore { consumed } => {
                    self.read.advance(consumed);
                    if self.fill().await? == 0 {
                        if self.body.ends_at_close() {
                            self.keep_alive = false;
                            return Ok(None);
                        }
                        return Err(io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "the server closed the connection before the response ended",
                        ));
                    }
                }
            }
        }
    }

    /// The rest of the body: at most `limit` bytes of it kept, the others read and dropped.
    pub async fn read_body(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(bytes) = self.body_chunk().await? {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Ok(body)
    }

    /// Reads more bytes from the socket; 0 when the server closed it.
    async fn fill(&mut self) -> io::Result<usize> {
        self.read.reserve(READ_SIZE);
        let count = self.stream.read_buf(&mut self.read).await?;
        self.received += count;
        Ok(count)
    }
}

/// A Content-Length value: a number, or a list of one number repeated (RFC 9110 section
/// 8.6); anything else is refused.
fn content_length(value: &[u8]) -> io::Result<u64> {
    let mut lengths = value.split(|&b| b == b',').map(|part| {
        std::str::from_utf8(part.trim_ascii())
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok())
    });
    let first = lengths.next().flatten();
    match first {
        Some(length) if lengths.all(|other| other == Some(length)) => Ok(length),
        Some(_) => Err(invalid("Content-Length headers that disagree".into())),
        None => Err(invalid("a Content-Length that is not a number".into())),
    }
}

/// The last comma-separated token of a header value.
fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

fn invalid(why: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why)
}

/// A `Retry-After` value as a wait: delay-seconds (`120`) or an HTTP date (`Fri, 04 Dec
/// 2026 19:00:00 GMT`, a past one waits nothing); `None` when it is neither.
fn wait_asked(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let wait = date.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        assert_eq!(wait_asked(b"120"), Some(Duration::from_secs(120)));
        assert_eq!(wait_asked(b" 0 "), Some(Duration::ZERO));
        assert_eq!(
            wait_asked(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date past waits nothing"
        );
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        let wait = wait_asked(date.as_bytes()).unwrap();
        assert!(
            wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
        for wrong in [&b"soon"[..], b"-5", b"1.5", b"\xff"] {
            assert_eq!(wait_asked(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn a_content_length_is_one_number_however_often_repeated() {
        assert_eq!(content_length(b" 42 ").unwrap(), 42);
        assert_eq!(content_length(b"7, 7").unwrap(), 7);
        for bad in ["1, 2", "-1", "+2", "", "0x10"] {
            assert!(content_length(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
