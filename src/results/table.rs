//! Typed rows to Parquet and back: a table is a list of named columns, each a function
//! from a row to a cell. Rows are written in batches as they come, so a table of millions
//! of rows never sits in memory, and the file appears under its name only once complete.
//!
//! The types are the ones warehouses load as they are (BigQuery, Spark, DuckDB): signed
//! 64-bit integers (BigQuery has no unsigned ones), doubles, booleans, UTF-8 text, and
//! instants as `TIMESTAMP(MICROS, UTC)`. The readers also take what earlier versions wrote
//! (unsigned integers, instants as Unix seconds in a double), so a run started by one
//! resumes under the next.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Builder, Int64Builder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
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
    /// `int64`.
    I64,
    /// `double`.
    F64,
    /// `bool`.
    Bool,
    /// `utf8`.
    Str,
    /// `timestamp[us, tz=UTC]`: an instant.
    Time,
}

/// The zone of every instant column.
const UTC: &str = "UTC";

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::I64 => DataType::Int64,
            Kind::F64 => DataType::Float64,
            Kind::Bool => DataType::Boolean,
            Kind::Str => DataType::Utf8,
            Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        }
    }
}

/// One value, borrowed from its row where it can be; `None` is null.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// An `int64` value.
    I64(Option<i64>),
    /// A `double` value.
    F64(Option<f64>),
    /// A `bool` value.
    Bool(Option<bool>),
    /// A `utf8` value.
    Str(Option<Cow<'a, str>>),
    /// An instant, microseconds since the Unix epoch.
    Time(Option<i64>),
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

    /// An `int64` value from any integer that fits one (counts past `i64::MAX` saturate).
    pub fn int<N: TryInto<i64>>(value: Option<N>) -> Cell<'a> {
        Cell::I64(value.map(|n| n.try_into().unwrap_or(i64::MAX)))
    }

    /// An instant given as Unix seconds, to the microsecond.
    pub fn unix_seconds(value: Option<f64>) -> Cell<'a> {
        Cell::Time(value.map(|seconds| (seconds * 1e6).round() as i64))
    }
}

/// A column of `run_id` on every row, first in the table: a warehouse that loads many
/// runs' files into one table tells their rows apart by it.
pub fn with_run_id<T>(run_id: &str, columns: Vec<Column<T>>) -> Vec<Column<T>> {
    let run_id: Arc<str> = run_id.into();
    let column = Column::new("run_id", Kind::Str, move |_: &T| {
        Cell::owned_text(Some(run_id.to_string()))
    });
    std::iter::once(column).chain(columns).collect()
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
        Kind::I64 => build!(Int64Builder, I64),
        Kind::F64 => build!(Float64Builder, F64),
        Kind::Bool => build!(BooleanBuilder, Bool),
        Kind::Time => {
            let array: ArrayRef = build!(TimestampMicrosecondBuilder, Time);
            let zoned = array.as_primitive::<TimestampMicrosecondType>().clone();
            Arc::new(zoned.with_timezone(UTC))
        }
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

    /// Whether the file has a column `name` (one added in a later version).
    pub fn has_column(&self, name: &str) -> bool {
        self.batches
            .first()
            .is_none_or(|batch| batch.schema().column_with_name(name).is_some())
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every value of column `name`, read from each batch's array by `read` (`None`: the
    /// column is not of a type it takes).
    fn values<T>(
        &self,
        name: &str,
        expected: &'static str,
        read: impl Fn(&dyn Array) -> Option<Vec<Option<T>>>,
    ) -> Result<Vec<Option<T>>, TableError> {
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.batches {
            let values = batch
                .column_by_name(name)
                .and_then(|array| read(array.as_ref()))
                .ok_or_else(|| TableError::Column {
                    path: self.path.clone(),
                    column: name.to_string(),
                    expected,
                })?;
            out.extend(values);
        }
        Ok(out)
    }

    /// An integer column (`int64`, or the `uint32` and `uint64` of earlier files, or any
    /// other integer type); a value `int64` cannot hold reads as null.
    pub fn ints(&self, name: &str) -> Result<Vec<Option<i64>>, TableError> {
        self.values(name, "an integer", |array| {
            array.data_type().is_integer().then_some(())?;
            let ints = arrow::compute::cast(array, &DataType::Int64).ok()?;
            Some(ints.as_primitive::<Int64Type>().iter().collect())
        })
    }

    /// An integer column as `u32`s; a value out of that range reads as null.
    pub fn u32s(&self, name: &str) -> Result<Vec<Option<u32>>, TableError> {
        Ok(narrow(self.ints(name)?))
    }

    /// An integer column as `u64`s; a negative value reads as null.
    pub fn u64s(&self, name: &str) -> Result<Vec<Option<u64>>, TableError> {
        Ok(narrow(self.ints(name)?))
    }

    /// A `double` column.
    pub fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, TableError> {
        self.values(name, "double", |array| {
            let array = array.as_primitive_opt::<Float64Type>()?;
            Some(array.iter().collect())
        })
    }

    /// An instant column as Unix seconds (a timestamp of any unit and zone, or the Unix
    /// seconds in a double of earlier files).
    pub fn instants(&self, name: &str) -> Result<Vec<Option<f64>>, TableError> {
        self.values(name, "a timestamp", |array| {
            let seconds = match array.data_type() {
                DataType::Float64 => {
                    return Some(array.as_primitive::<Float64Type>().iter().collect());
                }
                DataType::Timestamp(unit, _) => match unit {
                    TimeUnit::Second => 1.0,
                    TimeUnit::Millisecond => 1e-3,
                    TimeUnit::Microsecond => 1e-6,
                    TimeUnit::Nanosecond => 1e-9,
                },
                _ => return None,
            };
            let ticks = arrow::compute::cast(array, &DataType::Int64).ok()?;
            let ticks = ticks.as_primitive::<Int64Type>();
            Some(
                ticks
                    .iter()
                    .map(|t| t.map(|t| t as f64 * seconds))
                    .collect(),
            )
        })
    }

    /// A `bool` column.
    pub fn bools(&self, name: &str) -> Result<Vec<Option<bool>>, TableError> {
        self.values(name, "bool", |array| {
            let array = array.as_any().downcast_ref::<BooleanArray>()?;
            Some(array.iter().collect())
        })
    }

    /// A `utf8` column.
    pub fn strs(&self, name: &str) -> Result<Vec<Option<String>>, TableError> {
        self.values(name, "utf8", |array| {
            let array = array.as_any().downcast_ref::<StringArray>()?;
            Some(array.iter().map(|v| v.map(str::to_string)).collect())
        })
    }
}

/// Integers read into a narrower type: one that does not fit is null, not a wrong number.
fn narrow<N: TryFrom<i64>>(values: Vec<Option<i64>>) -> Vec<Option<N>> {
    values
        .into_iter()
        .map(|v| v.and_then(|v| N::try_from(v).ok()))
        .collect()
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

    /// 2026-12-04T00:00:00Z in Unix seconds.
    const AN_INSTANT: f64 = 1_796_342_400.0;

    fn columns() -> Vec<Column<Row>> {
        vec![
            Column::new("id", Kind::I64, |r: &Row| Cell::int(Some(r.id))),
            Column::new("name", Kind::Str, |r: &Row| Cell::text(r.name.as_deref())),
            Column::new("value", Kind::F64, |r: &Row| Cell::F64(Some(r.value))),
            Column::new("even", Kind::Bool, |r: &Row| {
                Cell::Bool(Some(r.id.is_multiple_of(2)))
            }),
            Column::new("at", Kind::Time, |r: &Row| {
                Cell::unix_seconds(Some(AN_INSTANT + r.value))
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
        assert_eq!(table.instants("at").unwrap()[5], Some(AN_INSTANT + 2.5));
        let err = table.f64s("id").err().unwrap().to_string();
        assert!(
            err.contains("column `id` is missing or is not double"),
            "{err}"
        );
    }

    #[test]
    fn integers_are_signed_and_instants_are_utc_microsecond_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_all(
            &path,
            with_run_id("run-7", columns()),
            [Row {
                id: 3,
                name: None,
                value: 0.5,
            }],
        )
        .unwrap();
        let file = File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = reader.schema();
        let types: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|field| (field.name().clone(), field.data_type().to_string()))
            .collect();
        let expected = [
            ("run_id", "Utf8"),
            ("id", "Int64"),
            ("name", "Utf8"),
            ("value", "Float64"),
            ("even", "Boolean"),
            ("at", "Timestamp(µs, \"UTC\")"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect();
        assert_eq!(types, expected);
        let table = Table::read(&path).unwrap();
        assert_eq!(table.strs("run_id").unwrap(), [Some("run-7".to_string())]);
    }

    #[test]
    fn files_of_earlier_versions_read_the_same() {
        use arrow::array::{Float64Array, UInt32Array, UInt64Array};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.parquet");
        let batch = RecordBatch::try_from_iter([
            (
                "line",
                Arc::new(UInt64Array::from(vec![Some(7), None])) as ArrayRef,
            ),
            (
                "attempts",
                Arc::new(UInt32Array::from(vec![1, 2])) as ArrayRef,
            ),
            (
                "finished_at",
                Arc::new(Float64Array::from(vec![AN_INSTANT, 1.5])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let table = Table::read(&path).unwrap();
        assert_eq!(table.u64s("line").unwrap(), [Some(7), None]);
        assert_eq!(table.u32s("attempts").unwrap(), [Some(1), Some(2)]);
        assert_eq!(
            table.instants("finished_at").unwrap(),
            [Some(AN_INSTANT), Some(1.5)]
        );
        let err = table.instants("attempts").err().unwrap().to_string();
        assert!(
            err.contains("`attempts` is missing or is not a timestamp"),
            "{err}"
        );
    }

    #[test]
    fn a_negative_or_oversized_integer_reads_as_null_not_as_a_wrong_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let column = Column::new("n", Kind::I64, |n: &i64| Cell::I64(Some(*n)));
        write_all(&path, vec![column], [-1, 5, i64::from(u32::MAX) + 1]).unwrap();
        let table = Table::read(&path).unwrap();
        assert_eq!(table.u32s("n").unwrap(), [None, Some(5), None]);
        assert_eq!(table.u64s("n").unwrap(), [None, Some(5), Some(1 << 32)]);
        assert_eq!(Cell::int(Some(u64::MAX)), Cell::I64(Some(i64::MAX)));
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
