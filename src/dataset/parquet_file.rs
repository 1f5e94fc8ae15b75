//! Parquet datasets: a `prompt` (or `messages`, as JSON text) column and an optional `id`
//! column, read one record batch at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{DatasetError, Fields, Row, RowRequest};

/// Rows decoded at a time.
const BATCH_ROWS: usize = 1024;

/// Which column holds what is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Prompt,
    Messages,
}

/// Reads rows from a Parquet file in order; a row's "line" is its 1-based row number.
pub struct ParquetReader {
    path: PathBuf,
    batches: ParquetRecordBatchReader,
    kind: RequestKind,
    column: String,
    id_column: String,
    passthrough: Vec<String>,
    batch: Option<RecordBatch>,
    next_in_batch: usize,
    row: u64,
}

impl ParquetReader {
    /// Opens `path` and checks it has the columns `fields` names.
    pub fn open(path: &Path, fields: &Fields) -> Result<ParquetReader, DatasetError> {
        let file = File::open(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let not_parquet = |err: parquet::errors::ParquetError| DatasetError::Format {
            path: path.to_path_buf(),
            message: format!("not a readable Parquet file: {err}"),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(not_parquet)?;
        let schema = builder.schema().clone();
        let has_text = |name: &str| {
            schema
                .field_with_name(name)
                .is_ok_and(|field| field.data_type() == &arrow::datatypes::DataType::Utf8)
        };
        let (kind, column) = if has_text(&fields.prompt) {
            (RequestKind::Prompt, &fields.prompt)
        } else if has_text(&fields.messages) {
            (RequestKind::Messages, &fields.messages)
        } else {
            return Err(DatasetError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "no text column `{}` or `{}` (JSON text); name the prompt column in the job's `dataset.fields`",
                    fields.prompt, fields.messages
                ),
            });
        };
        if let Some(missing) = fields
            .passthrough
            .iter()
            .find(|name| schema.field_with_name(name).is_err())
        {
            return Err(DatasetError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "no column `{missing}`, which the job's `dataset.fields.passthrough` names"
                ),
            });
        }
        let batches = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(not_parquet)?;
        Ok(ParquetReader {
            path: path.to_path_buf(),
            batches,
            kind,
            column: column.clone(),
            id_column: fields.id.clone(),
            passthrough: fields.passthrough.clone(),
            batch: None,
            next_in_batch: 0,
            row: 0,
        })
    }

    fn row_error(&self, message: String) -> DatasetError {
        let id = self.batch.as_ref().and_then(|batch| {
            self.next_in_batch
                .checked_sub(1)
                .and_then(|index| id_of(batch, &self.id_column, index))
        });
        DatasetError::Row {
            path: self.path.clone(),
            line: self.row,
            id,
            message,
        }
    }

    fn read_row(&self, batch: &RecordBatch, index: usize) -> Result<Row, DatasetError> {
        let name = &self.column;
        let text = batch
            .column_by_name(name)
            .and_then(|array| array.as_any().downcast_ref::<StringArray>())
            .filter(|array| !array.is_null(index))
            .map(|array| array.value(index))
            .filter(|text| !text.is_empty())
            .ok_or_else(|| self.row_error(format!("column `{name}` is empty")))?;
        let request = match self.kind {
            RequestKind::Prompt => RowRequest::Prompt(text.to_string()),
            RequestKind::Messages => {
                let messages: serde_json::Value = serde_json::from_str(text)
                    .map_err(|err| self.row_error(format!("column `{name}` is not JSON: {err}")))?;
                super::jsonl::check_messages(&messages, name)
                    .map_err(|message| self.row_error(message))?;
                RowRequest::Messages(messages)
            }
        };
        Ok(Row {
            id: id_of(batch, &self.id_column, index).unwrap_or_else(|| self.row.to_string()),
            line: self.row,
            request,
            params: serde_json::Map::new(),
            passthrough: self
                .passthrough
                .iter()
                .map(|name| cell_text(batch, name, index))
                .collect(),
        })
    }
}

/// A cell of any type as text (as Arrow displays it), `None` when null.
fn cell_text(batch: &RecordBatch, name: &str, index: usize) -> Option<String> {
    let column = batch.column_by_name(name)?;
    if column.is_null(index) {
        return None;
    }
    if let Some(text) = column.as_any().downcast_ref::<StringArray>() {
        return Some(text.value(index).to_string());
    }
    let options = arrow::util::display::FormatOptions::default();
    let formatter =
        arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options).ok()?;
    Some(formatter.value(index).to_string())
}

/// The id column's value as text, if the column exists and the cell is set.
fn id_of(batch: &RecordBatch, name: &str, index: usize) -> Option<String> {
    let column = batch.column_by_name(name)?;
    if column.is_null(index) {
        return None;
    }
    let any = column.as_any();
    if let Some(text) = any.downcast_ref::<StringArray>() {
        return Some(text.value(index).to_string());
    }
    if let Some(number) = any.downcast_ref::<Int64Array>() {
        return Some(number.value(index).to_string());
    }
    if let Some(number) = any.downcast_ref::<Int32Array>() {
        return Some(number.value(index).to_string());
    }
    if let Some(number) = any.downcast_ref::<UInt64Array>() {
        return Some(number.value(index).to_string());
    }
    any.downcast_ref::<UInt32Array>()
        .map(|number| number.value(index).to_string())
}

impl Iterator for ParquetReader {
    type Item = Result<Row, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = &self.batch
                && self.next_in_batch < batch.num_rows()
            {
                let index = self.next_in_batch;
                self.next_in_batch += 1;
                self.row += 1;
                return Some(self.read_row(batch, index));
            }
            match self.batches.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.next_in_batch = 0;
                }
                Err(err) => {
                    return Some(Err(
                        self.row_error(format!("unreadable Parquet data: {err}"))
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn write(path: &Path, columns: Vec<(&str, Arc<dyn Array>)>) {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn reads_prompts_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let prompts: Vec<Option<String>> = (0..2500).map(|i| Some(format!("prompt {i}"))).collect();
        let ids: Vec<i64> = (0..2500).map(|i| 1000 + i).collect();
        write(
            &path,
            vec![
                ("id", Arc::new(Int64Array::from(ids))),
                ("prompt", Arc::new(StringArray::from(prompts))),
            ],
        );
        let rows: Vec<Row> = ParquetReader::open(&path, &Fields::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2500, "across record batches");
        assert_eq!(rows[2000].id, "3000");
        assert_eq!(rows[2000].line, 2001);
        assert_eq!(rows[2000].request, RowRequest::Prompt("prompt 2000".into()));
        assert!(rows[2000].passthrough.is_empty());
    }

    #[test]
    fn passthrough_columns_of_any_type_are_read_as_text_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        write(
            &path,
            vec![
                ("prompt", Arc::new(StringArray::from(vec!["a", "b"]))),
                ("doc", Arc::new(Int64Array::from(vec![Some(7), None]))),
                ("lang", Arc::new(StringArray::from(vec!["en", "fr"]))),
            ],
        );
        let fields = |names: &[&str]| Fields {
            passthrough: names.iter().map(|name| name.to_string()).collect(),
            ..Fields::default()
        };
        let rows: Vec<Row> = ParquetReader::open(&path, &fields(&["doc", "lang"]))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows[0].passthrough, [Some("7".into()), Some("en".into())]);
        assert_eq!(rows[1].passthrough, [None, Some("fr".into())]);
        let err = ParquetReader::open(&path, &fields(&["nope"]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no column `nope`"), "{err}");
    }

    #[test]
    fn messages_as_json_and_bad_rows_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.parquet");
        let messages = StringArray::from(vec![
            Some(r#"[{"role": "user", "content": "Hi"}]"#),
            Some("not json"),
            None,
        ]);
        write(&path, vec![("messages", Arc::new(messages))]);
        let rows: Vec<_> = ParquetReader::open(&path, &Fields::default())
            .unwrap()
            .collect();
        assert!(matches!(
            rows[0].as_ref().unwrap().request,
            RowRequest::Messages(_)
        ));
        assert_eq!(rows[0].as_ref().unwrap().id, "1");
        let second = rows[1].as_ref().unwrap_err().to_string();
        assert!(
            second.contains("m.parquet:2: column `messages` is not JSON"),
            "{second}"
        );
        let third = rows[2].as_ref().unwrap_err().to_string();
        assert!(third.contains(":3: column `messages` is empty"), "{third}");

        let other = dir.path().join("o.parquet");
        write(
            &other,
            vec![(
                "text",
                Arc::new(StringArray::from(vec!["a"])) as Arc<dyn Array>,
            )],
        );
        let err = ParquetReader::open(&other, &Fields::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no text column `prompt` or `messages`"),
            "{err}"
        );
    }
}
