//! Typed rows to Parquet and back: a table is a list of named columns, each a function
//! from a row to a cell. Rows are written in batches as they come, so a table of millions
//! of rows never sits in memory, and the file appears under its name only once complete.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, RecordBatch,
    StringArray, StringBuilder, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::common::durable::{commit, partial_path};

/// Rows buffered before they are encoded.
const BATCH_ROWS: usize = 4096;
/// Rows per row group: bounds the writer's memory.
const ROW_GROUP_ROWS: usize = 65_536;

/// A column's Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `uint32`.
    U32,
    /// `uint64`.
    U64,
    /// `double`.
    F64,
    /// `bool`.
    Bool,
    /// `utf8`.
    Str,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::U32 => DataType::UInt32,
            Kind::U64 => DataType::UInt64,
            Kind::F64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Str => DataType::Utf8,
        }
    }
}

/// One value, borrowed from its row where it can be; `None` is null.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// A `uint32` value.
    U32(Option<u32>),
    /// A `uint64` value.
    U64(Option<u64>),
    /// A `double` value.
    F64(Option<f64>),
    /// A `bool` value.
    Bool(Option<bool>),
    /// A `utf8` value.
    Str(Option<Cow<'a, str>>),
}

impl<'a> Cell<'a> {
    /// A `utf8` value borrowed from the row.
    pub fn text(value: Option<&'a str>) -> Cell<'a> {
        Cell::Str(value.map(Cow::Borrowed))
    }

    /// A `utf8` value made for the cell.
    pub fn owned_text(value: Option<String>) -> Cell<'a> {
        Cell::Str(value.map(Cow::Owned))
    }
}

/// A named column of rows of type `T`.
pub struct Column<T> {
    /// Its name in the file.
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Reads the cell from a row.
    pub get: Box<dyn for<'r> Fn(&'r T) -> Cell<'r> + Send + Sync>,
}

impl<T> Column<T> {
    /// A column named `name` of `kind`, read by `get`.
    pub fn new(
        name: impl Into<String>,
        kind: Kind,
        get: impl for<'r> Fn(&'r T) -> Cell<'r> + Send + Sync + 'static,
    ) -> Column<T> {
        Column {
            name: name.into(),
            kind,
            get: Box::new(get),
        }
    }
}

/// Writes rows of `T` to a Parquet file.
pub struct TableWriter<T> {
    columns: Vec<Column<T>>,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    buffer: Vec<T>,
    partial: PathBuf,
    path: PathBuf,
}

impl<T> TableWriter<T> {
    /// Starts `path` (written as `path.partial` until [`TableWriter::finish`]).
    pub fn create(
        path: &Path,
        columns: Vec<Column<T>>,
    ) -> Result<TableWriter<T>, parquet::errors::ParquetError> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|column| Field::new(&column.name, column.kind.data_type(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let partial = partial_path(path);
        let file = File::create(&partial)?;
        // Dictionaries only for text (outcome classes, replicas: a handful of values):
        // numbers are mostly distinct, and hashing each into a dictionary that overflows
        // cost a load run ~4 % of its CPU.
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_dictionary_enabled(false);
        for column in columns.iter().filter(|column| column.kind == Kind::Str) {
            properties = properties
                .set_column_dictionary_enabled(ColumnPath::from(column.name.as_str()), true);
        }
        let properties = properties.build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
        Ok(TableWriter {
            columns,
            schema,
            writer,
            buffer: Vec::with_capacity(BATCH_ROWS),
            partial,
            path: path.to_path_buf(),
        })
    }

    /// Adds a row.
    pub fn push(&mut self, row: T) -> Result<(), parquet::errors::ParquetError> {
        self.buffer.push(row);
        if self.buffer.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let arrays = self
            .columns
            .iter()
            .map(|column| build_array(column, &self.buffer))
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.writer.write(&batch)?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered, closes the file, makes it durable (fsync) and moves it to
    /// its name, so after a crash the name holds a whole file or nothing.
    pub fn finish(mut self) -> Result<(), parquet::errors::ParquetError> {
        self.flush()?;
        let file = self.writer.into_inner()?;
        commit(file, &self.partial, &self.path)?;
        Ok(())
    }
}

fn build_array<T>(column: &Column<T>, rows: &[T]) -> ArrayRef {
    macro_rules! build {
        ($builder:ty, $variant:ident) => {{
            let mut builder = <$builder>::with_capacity(rows.len());
            for row in rows {
                match (column.get)(row) {
                    Cell::$variant(value) => builder.append_option(value),
                    other => panic!(
                        "column {} holds {:?}, not {}",
                        column.name,
                        other,
                        stringify!($variant)
                    ),
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    match column.kind {
        Kind::U32 => build!(UInt32Builder, U32),
        Kind::U64 => build!(UInt64Builder, U64),
        Kind::F64 => build!(Float64Builder, F64),
        Kind::Bool => build!(BooleanBuilder, Bool),
        Kind::Str => {
            let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
            for row in rows {
                match (column.get)(row) {
                    Cell::Str(value) => builder.append_option(value),
                    other => panic!("column {} holds {other:?}, not Str", column.name),
                }
            }
            Arc::new(builder.finish())
        }
    }
}

/// Writes all `rows` to `path` at once.
pub fn write_all<T>(
    path: &Path,
    columns: Vec<Column<T>>,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), parquet::errors::ParquetError> {
    let mut writer = TableWriter::create(path, columns)?;
    for row in rows {
        writer.push(row)?;
    }
    writer.finish()
}

/// A Parquet file read back, column by column.
pub struct Table {
    path: PathBuf,
    batches: Vec<RecordBatch>,
}

/// A table that cannot be read as expected.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Not a readable Parquet file.
    #[error("cannot read {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: parquet::errors::ParquetError,
    },
    /// A column is missing or of another type.
    #[error("{path}: column `{column}` is missing or is not {expected}")]
    Column {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The type it should have.
        expected: &'static str,
    },
}

impl Table {
    /// Reads a whole file.
    pub fn read(path: &Path) -> Result<Table, TableError> {
        let fail = |source| TableError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|err| fail(err.into()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(fail)?
            .build()
            .map_err(fail)?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| fail(parquet::errors::ParquetError::ArrowError(err.to_string())))?;
        Ok(Table {
            path: path.to_path_buf(),
            batches,
        })
    }

    /// Rows in the table.
    pub fn len(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value of column `name`, read from arrays of type `A` by `value`.
    fn values<A: Array + 'static, T>(
        &self,
        name: &str,
        expected: &'static str,
        value: impl Fn(&A, usize) -> T,
    ) -> Result<Vec<Option<T>>, TableError> {
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.batches {
            let array = batch
                .column_by_name(name)
                .and_then(|array| array.as_any().downcast_ref::<A>())
                .ok_or_else(|| TableError::Column {
                    path: self.path.clone(),
                    column: name.to_string(),
                    expected,
                })?;
            out.extend((0..array.len()).map(|i| (!array.is_null(i)).then(|| value(array, i))));
        }
        Ok(out)
    }

    /// A `uint32` column.
    pub fn u32s(&self, name: &str) -> Result<Vec<Option<u32>>, TableError> {
        self.values(name, "uint32", |a: &UInt32Array, i| a.value(i))
    }

    /// A `uint64` column.
    pub fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>, TableError> {
        self.values(name, "uint64", |a: &UInt64Array, i| a.value(i))
    }

    /// A `double` column.
    pub fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, TableError> {
        self.values(name, "double", |a: &Float64Array, i| a.value(i))
    }

    /// A `bool` column.
    pub fn bools(&self, name: &str) -> Result<Vec<Option<bool>>, TableError> {
        self.values(name, "bool", |a: &BooleanArray, i| a.value(i))
    }

    /// A `utf8` column.
    pub fn strs(&self, name: &str) -> Result<Vec<Option<String>>, TableError> {
        self.values(name, "utf8", |a: &StringArray, i| a.value(i).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    struct Row {
        id: u64,
        name: Option<String>,
        value: f64,
    }

    fn columns() -> Vec<Column<Row>> {
        vec![
            Column::new("id", Kind::U64, |r: &Row| Cell::U64(Some(r.id))),
            Column::new("name", Kind::Str, |r: &Row| Cell::text(r.name.as_deref())),
            Column::new("value", Kind::F64, |r: &Row| Cell::F64(Some(r.value))),
            Column::new("even", Kind::Bool, |r: &Row| {
                Cell::Bool(Some(r.id.is_multiple_of(2)))
            }),
            Column::new("small", Kind::U32, |r: &Row| {
                Cell::U32(u32::try_from(r.id).ok())
            }),
        ]
    }

    #[test]
    fn round_trips_across_batches_and_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut writer = TableWriter::create(&path, columns()).unwrap();
        let rows = BATCH_ROWS as u64 * 2 + 7;
        for id in 0..rows {
            let name = (id % 3 != 0).then(|| format!("row {id}"));
            writer
                .push(Row {
                    id,
                    name,
                    value: id as f64 / 2.0,
                })
                .unwrap();
        }
        assert!(
            !path.exists(),
            "written under a partial name until finished"
        );
        writer.finish().unwrap();
        let table = Table::read(&path).unwrap();
        assert_eq!(table.len(), rows as usize);
        let ids = table.u64s("id").unwrap();
        assert_eq!(ids[8000], Some(8000));
        assert_eq!(table.strs("name").unwrap()[3], None);
        assert_eq!(table.strs("name").unwrap()[4].as_deref(), Some("row 4"));
        assert_eq!(table.f64s("value").unwrap()[5], Some(2.5));
        assert_eq!(table.bools("even").unwrap()[2], Some(true));
        assert_eq!(table.u32s("small").unwrap()[1], Some(1));
        let err = table.f64s("id").err().unwrap().to_string();
        assert!(
            err.contains("column `id` is missing or is not double"),
            "{err}"
        );
    }

    #[test]
    fn only_text_columns_are_dictionary_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut writer = TableWriter::create(&path, columns()).unwrap();
        for id in 0..100 {
            let name = Some(["ok", "5xx"][id as usize % 2].to_string());
            writer
                .push(Row {
                    id,
                    name,
                    value: 0.5,
                })
                .unwrap();
        }
        writer.finish().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        for column in row_group.columns() {
            let dictionary = column.dictionary_page_offset().is_some();
            let text = column.column_path().string() == "name";
            assert_eq!(dictionary, text, "{}", column.column_path());
        }
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        std::fs::write(&path, "not parquet").unwrap();
        let err = Table::read(&path).err().unwrap().to_string();
        assert!(err.contains("bad.parquet"), "{err}");
    }
}
