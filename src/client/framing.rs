//! HTTP/1.1 response bodies: where one ends, from its head (RFC 9112 section 6). A pure
//! decoder over the bytes read so far, so the connection can hand out body bytes in place,
//! without copying, and knows exactly when a body ended and the connection can be reused.

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a 1xx, 204 or 304 answer).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// What to do with the buffered bytes next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Body bytes at `buffer[start..end]`; the first `end` bytes are then used up.
    Data {
        /// First body byte.
        start: usize,
        /// One past the last body byte.
        end: usize,
    },
    /// The first `consumed` bytes were framing; more bytes must be read.
    NeedMore {
        /// Framing bytes used up.
        consumed: usize,
    },
    /// The body ended after the first `consumed` bytes.
    End {
        /// Bytes used up.
        consumed: usize,
    },
}

/// Framing the server got wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// A chunk-size line that is not hexadecimal.
    #[error("bad chunk size line {0:?} in a chunked response")]
    ChunkSize(String),
    /// A chunk not followed by CRLF.
    #[error("a chunk of a chunked response is not followed by CRLF")]
    ChunkEnd,
    /// A framing line longer than any server sends.
    #[error("a chunked response's framing line is over {MAX_LINE} bytes")]
    LineTooLong,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Walks one response body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(remaining) => State::Length { remaining },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    /// Whether the whole body was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the connection closing now ends the body properly.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.state, State::UntilClose | State::Done)
    }

    /// The next step over `buffer`, the bytes read and not yet used up.
    pub fn next(&mut self, buffer: &[u8]) -> Result<Next, FramingError> {
        let mut consumed = 0;
        loop {
            let rest = &buffer[consumed..];
            match self.state {
                State::Done => return Ok(Next::End { consumed }),
                State::Length { remaining } | State::ChunkData { remaining } => {
                    if rest.is_empty() {
                        return Ok(Next::NeedMore { consumed });
                    }
                    let taken = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let left = remaining - taken as u64;
                    self.state = match self.state {
                        State::Length { .. } if left == 0 => State::Done,
                        State::Length { .. } => State::Length { remaining: left },
                        _ if left == 0 => State::ChunkDataEnd,
                        _ => State::ChunkData { remaining: left },
                    };
                    return Ok(Next::Data {
                        start: consumed,
                        end: consumed + taken,
                    });
                }
                State::UntilClose => {
                    if rest.is_empty() {
                        return Ok(Next::NeedMore { consumed });
                    }
                    return Ok(Next::Data {
                        start: consumed,
                        end: buffer.len(),
                    });
                }
                State::ChunkSize => {
                    let Some((line, used)) = line(rest)? else {
                        return Ok(Next::NeedMore { consumed });
                    };
                    let size = chunk_size(line)?;
                    consumed += used;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData { remaining: size }
                    };
                }
                State::ChunkDataEnd => {
                    let Some((line, used)) = line(rest)? else {
                        return Ok(Next::NeedMore { consumed });
                    };
                    if !line.is_empty() {
                        return Err(FramingError::ChunkEnd);
                    }
                    consumed += used;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some((line, used)) = line(rest)? else {
                        return Ok(Next::NeedMore { consumed });
                    };
                    consumed += used;
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

/// The first line of `bytes` without its line end (CRLF, or a bare LF as RFC 9112 allows
/// a recipient to accept) and the bytes it takes up; `None` until the line end arrives.
fn line(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, FramingError> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let text = &bytes[..end];
            Ok(Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1)))
        }
        None if bytes.len() > MAX_LINE => Err(FramingError::LineTooLong),
        None => Ok(None),
    }
}

/// The size on a chunk-size line: hexadecimal digits, then optional extensions after `;`.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    let bad = || FramingError::ChunkSize(String::from_utf8_lossy(line).into_owned());
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `piece` bytes, as reads would deliver it; returns the body
    /// and whether it ended, and how many bytes after the body were left unread.
    fn decode(
        framing: Framing,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, bool, usize), FramingError> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buffer = Vec::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.next(&buffer)? {
                Next::Data { start, end } => {
                    body.extend_from_slice(&buffer[start..end]);
                    buffer.drain(..end);
                }
                Next::NeedMore { consumed } => {
                    buffer.drain(..consumed);
                    if fed == wire.len() {
                        return Ok((body, false, buffer.len()));
                    }
                    let next = (fed + piece).min(wire.len());
                    buffer.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
                Next::End { consumed } => {
                    buffer.drain(..consumed);
                    return Ok((body, true, buffer.len() + wire.len() - fed));
                }
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_the_same_however_the_reads_split_it() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nB\r\nworld again\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for piece in 1..wire.len() {
            let (body, ended, left) = decode(Framing::Chunked, wire, piece).unwrap();
            assert_eq!(body, b"hello world again", "reads of {piece} bytes");
            assert!(ended);
            assert_eq!(left, 4, "the next response's bytes stay unread");
        }
    }

    #[test]
    fn bare_line_feeds_are_accepted_in_chunked_framing() {
        let (body, ended, _) = decode(Framing::Chunked, b"3\nabc\n0\n\n", 64).unwrap();
        assert_eq!((body.as_slice(), ended), (b"abc".as_slice(), true));
    }

    #[test]
    fn a_content_length_body_ends_at_its_length() {
        let (body, ended, left) = decode(Framing::Length(5), b"helloHTTP/1.1", 3).unwrap();
        assert_eq!(
            (body.as_slice(), ended, left),
            (b"hello".as_slice(), true, 8)
        );
        let (body, ended, _) = decode(Framing::Length(0), b"", 1).unwrap();
        assert_eq!((body.len(), ended), (0, true));
    }

    #[test]
    fn a_cut_body_does_not_end_unless_the_close_delimits_it() {
        let (body, ended, _) = decode(Framing::Chunked, b"5\r\nhel", 2).unwrap();
        assert_eq!((body.as_slice(), ended), (b"hel".as_slice(), false));
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        assert!(!decoder.ends_at_close());
        assert_eq!(decoder.next(b"").unwrap(), Next::NeedMore { consumed: 0 });

        let (body, ended, _) = decode(Framing::Length(10), b"hello", 2).unwrap();
        assert_eq!((body.as_slice(), ended), (b"hello".as_slice(), false));

        let mut decoder = BodyDecoder::new(Framing::UntilClose);
        assert_eq!(
            decoder.next(b"abc").unwrap(),
            Next::Data { start: 0, end: 3 }
        );
        assert!(decoder.ends_at_close());
    }

    #[test]
    fn bad_chunked_framing_is_named() {
        assert_eq!(
            decode(Framing::Chunked, b"zz\r\n", 64).unwrap_err(),
            FramingError::ChunkSize("zz".into())
        );
        assert_eq!(
            decode(Framing::Chunked, b"\r\n", 64).unwrap_err(),
            FramingError::ChunkSize(String::new())
        );
        assert_eq!(
            decode(Framing::Chunked, b"3\r\nabcX\r\n", 64).unwrap_err(),
            FramingError::ChunkEnd
        );
        assert_eq!(
            decode(Framing::Chunked, &[b'1'; MAX_LINE + 1], MAX_LINE + 1).unwrap_err(),
            FramingError::LineTooLong
        );
    }

    #[test]
    fn an_empty_body_is_done_at_once() {
        let mut decoder = BodyDecoder::new(Framing::Empty);
        assert!(decoder.is_done());
        assert_eq!(
            decoder.next(b"HTTP/1.1").unwrap(),
            Next::End { consumed: 0 }
        );
    }
}
