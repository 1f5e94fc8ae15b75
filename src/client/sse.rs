//! Server-sent events from an OpenAI-compatible stream: split the bytes into events, then
//! read each event's JSON as a completion or chat chunk.

use std::borrow::Cow;

use serde::Deserialize;

/// Longest event (or line) accepted: an OpenAI stream event carries a few tokens and
/// their JSON, so this is thousands of times what a sound server sends, and a server that
/// never ends a line cannot grow the client's memory past it.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// An event over [`MAX_EVENT_BYTES`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the server sent a stream event or line over {} KiB without ending it", MAX_EVENT_BYTES / 1024)]
pub struct EventTooLong;

/// Splits a byte stream into the `data` payloads of its events, across arbitrary chunk
/// boundaries. Complete events are read in place: only a partial line or a partial event
/// is copied, to wait for the rest, and neither may grow past [`MAX_EVENT_BYTES`].
#[derive(Debug, Default)]
pub struct EventSplitter {
    /// The start of a line the last bytes did not finish.
    pending: Vec<u8>,
    /// The data of an event the last bytes did not finish.
    data: Vec<u8>,
    has_data: bool,
}

impl EventSplitter {
    /// Feeds the next bytes; calls `on_event` with each complete event's data.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(&[u8]),
    ) -> Result<(), EventTooLong> {
        if self.pending.is_empty() {
            let consumed = self.split(bytes, &mut on_event);
            self.pending.extend_from_slice(&bytes[consumed..]);
        } else {
            let mut input = std::mem::take(&mut self.pending);
            input.extend_from_slice(bytes);
            let consumed = self.split(&input, &mut on_event);
            input.drain(..consumed);
            self.pending = input;
        }
        if self.pending.len() > MAX_EVENT_BYTES || self.data.len() > MAX_EVENT_BYTES {
            return Err(EventTooLong);
        }
        Ok(())
    }

    /// Reads the complete lines of `input`; returns how many bytes they take up.
    fn split(&mut self, input: &[u8], on_event: &mut impl FnMut(&[u8])) -> usize {
        // The current event's only data line so far, as a range of `input` (then `data`
        // is empty): most events have one, and it is passed on without a copy.
        let mut in_place: Option<std::ops::Range<usize>> = None;
        let mut consumed = 0;
        while let Some(newline) = input[consumed..].iter().position(|&b| b == b'\n') {
            let line_end = consumed + newline;
            let line = &input[consumed..line_end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                match in_place.take() {
                    Some(range) => on_event(&input[range]),
                    None if self.has_data => on_event(&self.data),
                    None => {}
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                // `value` ends `line`, which starts at `consumed`.
                let offset = consumed + line.len() - value.len();
                if !self.has_data {
                    in_place = Some(offset..offset + value.len());
                } else {
                    if let Some(range) = in_place.take() {
                        self.data.extend_from_slice(&input[range]);
                    }
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                }
                self.has_data = true;
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we measure.
            consumed = line_end + 1;
        }
        if let Some(range) = in_place {
            // The event goes on in the next bytes: keep what it has so far.
            self.data.extend_from_slice(&input[range]);
        }
        consumed
    }
}

/// What one event says, borrowing its text from the event where it can.
#[derive(Debug, PartialEq)]
pub enum Chunk<'a> {
    /// `[DONE]`: the stream is complete.
    Done,
    /// A completion or chat chunk.
    Data {
        /// Generated text it carries (empty for role-only or usage chunks).
        content: Cow<'a, str>,
        /// Why generation stopped, on the chunk that ends it.
        finish_reason: Option<Cow<'a, str>>,
        /// `usage`, when the chunk carries it.
        usage: Option<Usage>,
    },
    /// An error object in the stream.
    Error(String),
}

/// Token counts a server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(default, borrow)]
    choices: Choices<'a>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<RawDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

impl<'a> RawChoice<'a> {
    fn into_content(self) -> Option<Cow<'a, str>> {
        self.text.or(self.delta.and_then(|delta| delta.content))
    }
}

/// The choices of a chunk, folded as they are read (no list kept): their contents joined,
/// the first finish reason.
#[derive(Default)]
struct Choices<'a> {
    content: Cow<'a, str>,
    finish_reason: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fold<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Fold<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a list of choices")
            }

            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Choices<'a>, S::Error> {
                let mut choices = Choices::default();
                while let Some(mut choice) = seq.next_element::<RawChoice<'a>>()? {
                    choices.finish_reason = choices.finish_reason.or(choice.finish_reason.take());
                    match choice.into_content() {
                        Some(more) if choices.content.is_empty() => choices.content = more,
                        Some(more) => choices.content.to_mut().push_str(&more),
                        None => {}
                    }
                }
                Ok(choices)
            }
        }
        deserializer.deserialize_seq(Fold(std::marker::PhantomData))
    }
}

/// Reads one event's data; `Err` says why it is not an OpenAI stream chunk.
pub fn parse_chunk(data: &[u8]) -> Result<Chunk<'_>, String> {
    if data.trim_ascii() == b"[DONE]" {
        return Ok(Chunk::Done);
    }
    let raw: RawChunk = serde_json::from_slice(data).map_err(|err| {
        let shown = String::from_utf8_lossy(&data[..data.len().min(120)]).into_owned();
        format!("stream event is not a completion chunk ({err}): {shown}")
    })?;
    if let Some(error) = raw.error {
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .map_or_else(|| error.to_string(), str::to_string);
        return Ok(Chunk::Error(message));
    }
    let Choices {
        content,
        finish_reason,
    } = raw.choices;
    Ok(Chunk::Data {
        content,
        finish_reason,
        usage: raw.usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], split_every: usize) -> Vec<String> {
        let mut splitter = EventSplitter::default();
        let mut out = Vec::new();
        for piece in stream.chunks(split_every) {
            splitter
                .feed(piece, |data| {
                    out.push(String::from_utf8(data.to_vec()).unwrap())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn an_endless_line_or_event_is_refused_at_the_cap() {
        let mut splitter = EventSplitter::default();
        let piece = vec![b'x'; 64 * 1024];
        let mut fed = 0;
        let err = loop {
            match splitter.feed(&piece, |_| panic!("no event ends")) {
                Ok(()) => fed += piece.len(),
                Err(err) => break err,
            }
            assert!(fed <= MAX_EVENT_BYTES, "never refused");
        };
        assert_eq!(err, EventTooLong);

        let mut splitter = EventSplitter::default();
        let line = format!("data: {}\n", "y".repeat(1000));
        let refused = (0..2000).any(|_| splitter.feed(line.as_bytes(), |_| {}).is_err());
        assert!(refused, "one event of many data lines is capped too");
    }

    #[test]
    fn splits_events_across_any_boundary() {
        let stream = b": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\ndata:[DONE]\n\n";
        for split in 1..stream.len() {
            assert_eq!(
                events(stream, split),
                ["{\"a\":1}", "one\ntwo", "[DONE]"],
                "split every {split}"
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_not_reported() {
        assert!(events(b"data: {\"a\":1}\n", 4).is_empty());
    }

    #[test]
    fn reads_completion_chat_usage_and_error_chunks() {
        let text = br#"{"choices":[{"index":0,"text":"Paris"}]}"#;
        assert_eq!(
            parse_chunk(text),
            Ok(Chunk::Data {
                content: "Paris".into(),
                finish_reason: None,
                usage: None
            })
        );
        let role = br#"{"choices":[{"delta":{"role":"assistant"}}]}"#;
        let chat = br#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#;
        assert_eq!(
            parse_chunk(role),
            Ok(Chunk::Data {
                content: "".into(),
                finish_reason: None,
                usage: None
            })
        );
        assert_eq!(
            parse_chunk(chat),
            Ok(Chunk::Data {
                content: "café".into(),
                finish_reason: None,
                usage: None
            })
        );
        let usage = br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        assert_eq!(
            parse_chunk(usage),
            Ok(Chunk::Data {
                content: "".into(),
                finish_reason: None,
                usage: Some(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 3
                })
            })
        );
        let last = br#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#;
        assert_eq!(
            parse_chunk(last),
            Ok(Chunk::Data {
                content: "".into(),
                finish_reason: Some("length".into()),
                usage: None
            })
        );
        let two = br#"{"choices":[{"text":"a","finish_reason":"stop"},{"text":"b","finish_reason":"length"}]}"#;
        assert_eq!(
            parse_chunk(two),
            Ok(Chunk::Data {
                content: "ab".into(),
                finish_reason: Some("stop".into()),
                usage: None
            })
        );
        let error = br#"{"error":{"message":"engine died","type":"server_error"}}"#;
        assert_eq!(parse_chunk(error), Ok(Chunk::Error("engine died".into())));
        assert_eq!(parse_chunk(b" [DONE] "), Ok(Chunk::Done));
        assert!(parse_chunk(b"<html>").unwrap_err().contains("<html>"));
    }
}
