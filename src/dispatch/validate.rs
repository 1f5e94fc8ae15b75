//! The dataset checked as a whole before any capacity is reserved: every malformed line,
//! missing field, duplicate id and over-long prompt, by line number, read as a stream.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};

use crate::dataset::{DatasetError, Row, RowRequest, Rows};
use crate::model::GemmaTokenizer;
use crate::server::api::Message;

/// What the check found.
#[derive(Debug, Default)]
pub struct Validation {
    /// Rows in the dataset, valid or not.
    pub rows: u64,
    /// Invalid rows: line to reason.
    pub invalid: HashMap<u64, String>,
}

impl Validation {
    /// The first `limit` problems, by line, as `LINE: reason`.
    pub fn first_problems(&self, limit: usize) -> Vec<(u64, &str)> {
        let mut lines: Vec<(u64, &str)> = self
            .invalid
            .iter()
            .map(|(line, reason)| (*line, reason.as_str()))
            .collect();
        lines.sort_unstable();
        lines.truncate(limit);
        lines
    }
}

/// Checks one row beyond its shape (e.g. its length in tokens).
pub type RowCheck<'a> = &'a (dyn Fn(&Row) -> Result<(), String> + Sync);

/// Reads every row of `rows`; only an unreadable file is an `Err`, a bad row is recorded.
/// Ids are remembered as 64-bit hashes, so a million rows cost megabytes, not the ids.
pub fn validate(rows: Rows, check: Option<RowCheck>) -> Result<Validation, DatasetError> {
    let mut validation = Validation::default();
    let mut first_line_of_id: HashMap<u64, u64> = HashMap::new();
    for row in rows {
        validation.rows += 1;
        let row = match row {
            Ok(row) => row,
            Err(DatasetError::Row { line, message, .. }) => {
                validation.invalid.insert(line, message);
                continue;
            }
            Err(other) => return Err(other),
        };
        match first_line_of_id.entry(id_hash(&row.id)) {
            Entry::Occupied(first) => {
                validation.invalid.insert(
                    row.line,
                    format!(
                        "duplicate id {:?} (first on line {}); ids must be unique",
                        row.id,
                        first.get()
                    ),
                );
                continue;
            }
            Entry::Vacant(slot) => {
                slot.insert(row.line);
            }
        }
        if let Some(check) = check
            && let Err(reason) = check(&row)
        {
            validation.invalid.insert(row.line, reason);
        }
    }
    Ok(validation)
}

fn id_hash(id: &str) -> u64 {
    // A fixed-key SipHash: the same in every run, so a resumed run agrees with the first.
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Refuses rows whose prompt plus `max_tokens` do not fit the model's context.
pub struct LengthLimit {
    /// The model's tokenizer.
    pub tokenizer: GemmaTokenizer,
    /// Most positions per sequence.
    pub context: usize,
    /// `max_tokens` of rows that do not set their own.
    pub max_tokens: u32,
}

impl LengthLimit {
    /// `Err` says how long the row is and what fits.
    pub fn check(&self, row: &Row) -> Result<(), String> {
        let prompt_tokens = match &row.request {
            RowRequest::Prompt(prompt) => self.tokens(prompt, true)?,
            RowRequest::Messages(messages) => {
                let messages: Vec<Message> = serde_json::from_value(messages.clone())
                    .map_err(|err| format!("messages are not chat messages: {err}"))?;
                let text = crate::server::chat_template::render(&messages)
                    .map_err(|err| format!("messages cannot be rendered: {err}"))?;
                self.tokens(&text, false)?
            }
        };
        let max_tokens = match row.params.get("max_tokens") {
            None => u64::from(self.max_tokens),
            Some(value) => value
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("max_tokens {value} is not a whole number of at least 1"))?,
        };
        // Saturating: a max_tokens near u64::MAX must not wrap around into "fits".
        if (prompt_tokens as u64).saturating_add(max_tokens) > self.context as u64 {
            return Err(format!(
                "prompt of {prompt_tokens} tokens (with BOS) plus max_tokens {max_tokens} exceeds \
                 the model's context of {} tokens; shorten the prompt or lower max_tokens",
                self.context
            ));
        }
        Ok(())
    }

    fn tokens(&self, text: &str, add_bos: bool) -> Result<usize, String> {
        self.tokenizer
            .encode(text, add_bos, !add_bos)
            .map(|ids| ids.len())
            .map_err(|err| format!("cannot tokenize: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Fields, Format, open_with};

    fn validate_text(text: &str, check: Option<RowCheck>) -> Validation {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, text).unwrap();
        let rows = open_with(&path, Format::Auto, &Fields::default()).unwrap();
        validate(rows, check).unwrap()
    }

    #[test]
    fn finds_malformed_missing_and_duplicate_rows_by_line() {
        let validation = validate_text(
            concat!(
                "{\"id\": \"a\", \"prompt\": \"x\"}\n",
                "{\"id\": \"b\"}\n",
                "not json\n",
                "{\"id\": \"a\", \"prompt\": \"y\"}\n",
                "{\"id\": \"c\", \"prompt\": \"z\"}\n",
            ),
            None,
        );
        assert_eq!(validation.rows, 5);
        let problems = validation.first_problems(10);
        assert_eq!(problems.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(problems[0].1.contains("neither `prompt`"), "{problems:?}");
        assert!(problems[1].1.contains("not a JSON object"), "{problems:?}");
        assert!(
            problems[2]
                .1
                .contains("duplicate id \"a\" (first on line 1)"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_row_check_refuses_rows() {
        let long = |row: &Row| match &row.request {
            RowRequest::Prompt(p) if p.len() > 3 => Err("too long".to_string()),
            _ => Ok(()),
        };
        let validation = validate_text(
            "{\"prompt\": \"abc\"}\n{\"prompt\": \"abcdef\"}\n",
            Some(&long),
        );
        assert_eq!(validation.first_problems(5), [(2, "too long")]);
    }
}
