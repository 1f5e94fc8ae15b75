//! JSON Lines datasets, read one line at a time so a file of millions of rows never sits in
//! memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{DatasetError, Fields, Row, RowRequest, passthrough_text};

/// Longest line read: a row's prompt must fit a model's context, which no model's does at
/// this size, and a file with no line ends must not be read whole into memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Reads rows from a JSONL file in order.
pub struct JsonlReader {
    path: PathBuf,
    reader: BufReader<File>,
    buffer: Vec<u8>,
    line: u64,
    fields: Fields,
}

/// One line of the file.
enum Line {
    /// Its text, without the line end.
    Text,
    /// Over [`MAX_LINE_BYTES`]: skipped to its end.
    TooLong,
}

impl JsonlReader {
    /// Opens `path`, reading its rows' fields as `fields` names them.
    pub fn open(path: &Path, fields: &Fields) -> Result<JsonlReader, DatasetError> {
        let file = File::open(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(JsonlReader {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            buffer: Vec::new(),
            line: 0,
            fields: fields.clone(),
        })
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Row, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let read = match read_line(&mut self.reader, &mut self.buffer) {
                Ok(read) => read?,
                Err(source) => {
                    return Some(Err(DatasetError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            self.line += 1;
            let row_error = |message: String, id: Option<String>| DatasetError::Row {
                path: self.path.clone(),
                line: self.line,
                id,
                message,
            };
            let text = match (read, std::str::from_utf8(&self.buffer)) {
                (Line::TooLong, _) => {
                    return Some(Err(row_error(
                        format!(
                            "the line is over {} MiB; no model's context holds such a row: split or shorten it",
                            MAX_LINE_BYTES >> 20
                        ),
                        None,
                    )));
                }
                (Line::Text, Err(err)) => {
                    return Some(Err(row_error(format!("not UTF-8 text: {err}"), None)));
                }
                (Line::Text, Ok(text)) => text,
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(
                parse_row(text, self.line, &self.fields)
                    .map_err(|message| row_error(message, readable_id(text, &self.fields))),
            );
        }
    }
}

/// Reads the next line into `buffer` without its line end; `None` at the end of the file.
fn read_line(reader: &mut BufReader<File>, buffer: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    buffer.clear();
    let cap = MAX_LINE_BYTES as u64 + 1;
    if reader.by_ref().take(cap).read_until(b'\n', buffer)? == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
        return Ok(Some(Line::Text));
    }
    if buffer.len() <= MAX_LINE_BYTES {
        return Ok(Some(Line::Text));
    }
    buffer.clear();
    // Over the cap: the rest of the line is read and dropped, never kept.
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                break;
            }
            None => {
                let all = available.len();
                reader.consume(all);
            }
        }
    }
    Ok(Some(Line::TooLong))
}

/// Reads one line in either format.
fn parse_row(text: &str, line: u64, fields: &Fields) -> Result<Row, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| format!("not a JSON object: {err}"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object: each line must be one {...} row".into());
    };
    let passthrough = fields
        .passthrough
        .iter()
        .map(|name| object.remove(name).and_then(passthrough_text))
        .collect();
    if object.contains_key("custom_id") || object.contains_key("body") {
        return batch_row(object, line, passthrough);
    }
    let id = take_id(&mut object, &fields.id, line)?;
    let request = take_request(&mut object, "", &fields.prompt, &fields.messages)?;
    Ok(Row {
        id,
        line,
        request,
        params: object,
        passthrough,
    })
}

/// The id of a row that is wrong otherwise, if its JSON holds one.
fn readable_id(text: &str, fields: &Fields) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    [fields.id.as_str(), "custom_id"]
        .into_iter()
        .find_map(|field| match value.get(field)? {
            Value::String(id) if !id.is_empty() => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        })
}

/// A row of the OpenAI Batch API input format, with its passthrough fields' values (taken
/// beside `custom_id`).
fn batch_row(
    mut object: Map<String, Value>,
    line: u64,
    passthrough: Vec<Option<String>>,
) -> Result<Row, String> {
    let id = take_id(&mut object, "custom_id", line)?;
    if let Some(method) = object.get("method")
        && method.as_str() != Some("POST")
    {
        return Err(format!(
            "field `method` is {method}; only \"POST\" is supported"
        ));
    }
    let url = object
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(Value::Object(mut body)) = object.remove("body") else {
        return Err("field `body` is missing or not an object".into());
    };
    let request = take_request(&mut body, "body.", "prompt", "messages")?;
    let expected = match request {
        RowRequest::Prompt(_) => "/v1/completions",
        RowRequest::Messages(_) => "/v1/chat/completions",
    };
    if url != expected {
        return Err(format!(
            "field `url` is {url:?} but the body fits {expected:?}; set `url` to {expected:?}"
        ));
    }
    body.remove("model");
    body.remove("stream");
    body.remove("stream_options");
    Ok(Row {
        id,
        line,
        request,
        params: body,
        passthrough,
    })
}

/// Takes the id field, or falls back to the line number when it is absent.
fn take_id(object: &mut Map<String, Value>, field: &str, line: u64) -> Result<String, String> {
    match object.remove(field) {
        None => Ok(line.to_string()),
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        Some(Value::Number(id)) => Ok(id.to_string()),
        Some(other) => Err(format!(
            "field `{field}` must be a non-empty string or a number, not {other}"
        )),
    }
}

/// Takes the prompt or the messages (exactly one) from a row or a Batch API body.
fn take_request(
    object: &mut Map<String, Value>,
    prefix: &str,
    prompt_field: &str,
    messages_field: &str,
) -> Result<RowRequest, String> {
    let (prompt_name, messages_name) = (
        format!("{prefix}{prompt_field}"),
        format!("{prefix}{messages_field}"),
    );
    match (object.remove(prompt_field), object.remove(messages_field)) {
        (Some(_), Some(_)) => Err(format!(
            "the row has both `{prompt_name}` and `{messages_name}`; keep one"
        )),
        (Some(Value::String(prompt)), None) if !prompt.is_empty() => Ok(RowRequest::Prompt(prompt)),
        (Some(_), None) => Err(format!("field `{prompt_name}` must be a non-empty string")),
        (None, Some(messages)) => {
            check_messages(&messages, &messages_name).map(|()| RowRequest::Messages(messages))
        }
        (None, None) => Err(format!(
            "the row has neither `{prompt_name}` nor `{messages_name}`"
        )),
    }
}

/// Messages must be a non-empty list of objects with a string `role` and a `content`.
pub(super) fn check_messages(messages: &Value, name: &str) -> Result<(), String> {
    let Some(list) = messages.as_array().filter(|list| !list.is_empty()) else {
        return Err(format!("field `{name}` must be a non-empty list"));
    };
    for (index, message) in list.iter().enumerate() {
        let has_role = message.get("role").is_some_and(Value::is_string);
        let has_content = message.get("content").is_some_and(|c| !c.is_null());
        if !has_role || !has_content {
            return Err(format!(
                "field `{name}[{index}]` needs a string `role` and a `content`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<Row, String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, text).unwrap();
        JsonlReader::open(&path, &Fields::default())
            .unwrap()
            .map(|row| row.map_err(|err| err.to_string()))
            .collect()
    }

    #[test]
    fn reads_prompt_messages_and_batch_rows() {
        let rows = read(concat!(
            "{\"id\": \"a\", \"prompt\": \"Hello\", \"max_tokens\": 5}\n",
            "\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n",
            "{\"custom_id\": \"r1\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", ",
            "\"body\": {\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"Yo\"}], \"max_tokens\": 9}}\n",
        ));
        let rows: Vec<Row> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows[0].id, "a");
        assert_eq!(rows[0].request, RowRequest::Prompt("Hello".into()));
        assert_eq!(rows[0].params["max_tokens"], 5);
        assert_eq!(rows[1].id, "3", "no id: the line number");
        assert!(matches!(rows[1].request, RowRequest::Messages(_)));
        assert_eq!(rows[2].id, "r1");
        assert_eq!(rows[2].line, 4);
        assert_eq!(rows[2].params["max_tokens"], 9);
        assert!(!rows[2].params.contains_key("model"));
    }

    #[test]
    fn passthrough_fields_are_kept_as_text_and_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"id\": \"a\", \"prompt\": \"Hi\", \"doc\": 7, \"lang\": \"en\", \"temperature\": 0}\n",
                "{\"custom_id\": \"b\", \"doc\": {\"k\": [1]}, \"method\": \"POST\", ",
                "\"url\": \"/v1/completions\", \"body\": {\"prompt\": \"Yo\"}}\n",
            ),
        )
        .unwrap();
        let fields = Fields {
            passthrough: vec!["doc".into(), "lang".into()],
            ..Fields::default()
        };
        let rows: Vec<Row> = JsonlReader::open(&path, &fields)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows[0].passthrough, [Some("7".into()), Some("en".into())]);
        assert!(!rows[0].params.contains_key("doc") && !rows[0].params.contains_key("lang"));
        assert_eq!(
            rows[0].params["temperature"], 0,
            "other fields still go to the model"
        );
        assert_eq!(rows[1].passthrough, [Some("{\"k\":[1]}".into()), None]);
    }

    #[test]
    fn an_overlong_line_is_one_bad_row_and_the_rows_after_it_are_read() {
        let long = format!("{{\"prompt\": \"{}\"}}", "a".repeat(MAX_LINE_BYTES));
        let rows = read(&format!(
            "{{\"prompt\": \"first\"}}\r\n{long}\n\u{ff}\n{{\"prompt\": \"last\"}}"
        ));
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].as_ref().unwrap().request,
            RowRequest::Prompt("first".into())
        );
        let err = rows[1].as_ref().unwrap_err();
        assert!(
            err.contains("rows.jsonl:2: the line is over 16 MiB"),
            "{err}"
        );
        assert!(rows[2].is_err());
        assert_eq!(rows[3].as_ref().unwrap().line, 4);
        assert_eq!(
            rows[3].as_ref().unwrap().request,
            RowRequest::Prompt("last".into())
        );
    }

    #[test]
    fn bad_rows_name_their_line_and_field() {
        let cases = [
            ("not json", "rows.jsonl:2: not a JSON object"),
            ("[1, 2]", "each line must be one {...} row"),
            ("{\"id\": \"x\"}", "neither `prompt` nor `messages`"),
            ("{\"prompt\": \"\"}", "`prompt` must be a non-empty string"),
            (
                "{\"prompt\": \"a\", \"messages\": []}",
                "both `prompt` and `messages`",
            ),
            (
                "{\"messages\": [{\"content\": \"a\"}]}",
                "`messages[0]` needs a string `role`",
            ),
            ("{\"id\": [], \"prompt\": \"a\"}", "field `id` must be"),
            (
                "{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}}",
                "set `url` to \"/v1/chat/completions\"",
            ),
            (
                "{\"custom_id\": \"c\", \"url\": \"/v1/completions\"}",
                "`body` is missing",
            ),
            (
                "{\"custom_id\": \"c\", \"method\": \"GET\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"a\"}}",
                "only \"POST\"",
            ),
        ];
        for (line, expected) in cases {
            let rows = read(&format!("{{\"prompt\": \"ok\"}}\n{line}\n"));
            assert!(rows[0].is_ok());
            let err = rows[1].as_ref().unwrap_err();
            assert!(err.contains(":2: "), "{err}");
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
