//! Stored layouts 1 to 3, the files written before layout 4: read here until compaction rewrites
//! them (a partition holding one is compacted into layout 4), and written only by tests, which
//! need such files to check that.
//!
//! In these layouts a column does not always mean what its name says:
//!
//! - Layout 3 stores `value` per row as one of: a *step* (only `value_scale` set; the row's
//!   decimal is the row before's plus `round(delta × value_scale)`), a *decimal*
//!   (`value_scaled / value_scale`), or the double itself in `value`. A value therefore depends
//!   on the rows before it in its row group: a reader reads whole row groups in order
//!   ([`ValueReader`]).
//! - Layouts 2 and 3 store `kgce` null where `delta * kgce_per_unit` gives the sent bits, likewise
//!   `kgco2e` with `kgco2e_per_unit`. Layout 2 is layout 3 without steps.
//! - Layout 1 (no layout key) has every number given, and none of the extra columns.
//!
//! Readers take columns by name and treat a missing column as null, so [`from_stored`] reads all
//! three alike, and so does the query layer's table over [`stored_schema`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, Float64Array, Float64Builder, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use reading_model::{Category, FactorTables};

use crate::readings_schema;

/// The layout number of these files' key-value metadata.
pub const LAYOUT: &str = "3";

/// The coefficient columns of the stored layout: `kgce = delta × kgce_per_unit` where `kgce` is
/// null and the coefficient is not, likewise for kgCO2e.
pub const KGCE_PER_UNIT: &str = "kgce_per_unit";
pub const KGCO2E_PER_UNIT: &str = "kgco2e_per_unit";

/// The decimal columns of the stored layout: `value = value_scaled / value_scale` where `value`
/// is null.
pub const VALUE_SCALED: &str = "value_scaled";
pub const VALUE_SCALE: &str = "value_scale";

/// The Arrow schema of layout-3 files: [`readings_schema`] with `value` nullable, the decimal
/// columns after it and the coefficient columns after `kgco2e` (see "Stored layout" in the
/// module doc).
pub fn stored_schema() -> SchemaRef {
    let mut fields = Vec::new();
    for f in readings_schema().fields() {
        match f.name().as_str() {
            "value" => {
                fields.push(Field::new("value", DataType::Float64, true));
                fields.push(Field::new(VALUE_SCALED, DataType::Int64, true));
                fields.push(Field::new(VALUE_SCALE, DataType::Float64, true));
            }
            "kgco2e" => {
                fields.push(f.as_ref().clone());
                fields.push(Field::new(KGCE_PER_UNIT, DataType::Float64, true));
                fields.push(Field::new(KGCO2E_PER_UNIT, DataType::Float64, true));
            }
            _ => fields.push(f.as_ref().clone()),
        }
    }
    Arc::new(Schema::new(fields))
}

/// Scales tried for a value: a register resolves whole units down to 0.000001 of one.
const SCALES: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Integers below 2^53 convert to f64 and back exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Rows per row group of a readings file. Each row group starts every series with a full
/// decimal (see "Stored layout"), so a reader may skip row groups but never part of one.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// The step, in units of `1 / scale`, that `delta` stands for: `round(delta × scale)`, where
/// that product lies within a quarter of an integer below 2^53. The margin makes every rounding
/// rule (Rust's half away from zero, NumPy's half to even, DuckDB's) give the same integer, so
/// a peer rebuilding values gets the same bits.
fn decimal_step(delta: f64, scale: f64) -> Option<i64> {
    let x = delta * scale;
    let k = x.round();
    (k.abs() < EXACT && (x - k).abs() <= 0.25).then_some(k as i64)
}

/// Splits `value` into what the file stores (see "Stored layout" in the module doc): per row a
/// step (only `value_scale` set), a full decimal (`value_scaled` and `value_scale`) or the value
/// itself. `continues[i]` says row `i` is the same series as row `i - 1`; the first row of the
/// batch never does, so a batch written as one row group starts every series in full.
fn split_value(
    value: &Float64Array,
    delta: &Float64Array,
    continues: &[bool],
) -> (Float64Array, Int64Array, Float64Array) {
    let n = value.len();
    let mut stored = Float64Builder::with_capacity(n);
    let mut scaled = arrow::array::Int64Builder::with_capacity(n);
    let mut scale = Float64Builder::with_capacity(n);
    // The previous row's decimal, if it had one.
    let mut previous: Option<(i64, f64)> = None;
    for (i, &same_series) in continues.iter().enumerate().take(n) {
        if value.is_null(i) {
            stored.append_null();
            scaled.append_null();
            scale.append_null();
            previous = None;
            continue;
        }
        let v = value.value(i);
        // The previous row's scale first, so that a series keeps one scale.
        let found = previous
            .map(|(_, s)| s)
            .into_iter()
            .chain(SCALES)
            .find_map(|s| {
                // Checked through the integer, as it is read back: -0.0 has no integer.
                let m = (v * s).round();
                let n = m as i64;
                (m.abs() < EXACT && (n as f64 / s).to_bits() == v.to_bits()).then_some((n, s))
            });
        match found {
            Some((m, s)) => {
                let step =
                    previous
                        .filter(|&(_, ps)| same_series && ps == s)
                        .and_then(|(pm, _)| {
                            let d = (!delta.is_null(i)).then(|| delta.value(i))?;
                            (decimal_step(d, s)? == m.checked_sub(pm)?).then_some(())
                        });
                stored.append_null();
                match step {
                    Some(()) => scaled.append_null(),
                    None => scaled.append_value(m),
                }
                scale.append_value(s);
                previous = Some((m, s));
            }
            None => {
                stored.append_value(v);
                scaled.append_null();
                scale.append_null();
                previous = None;
            }
        }
    }
    (stored.finish(), scaled.finish(), scale.finish())
}

/// Rebuilds the `value` column of a file from its stored form, row after row. One reader per
/// file, fed the file's rows in order: the rows of whole row groups, none skipped inside one.
#[derive(Debug, Default, Clone)]
pub struct ValueReader {
    /// The previous row's decimal, if it had one.
    previous: Option<(i64, f64)>,
}

impl ValueReader {
    /// The values of the next rows. `scaled` and `scale` are the file's decimal columns (absent
    /// in layout-1 files, whose values are all given); `delta` is needed for steps.
    pub fn read(
        &mut self,
        given: &Float64Array,
        scaled: Option<&Int64Array>,
        scale: Option<&Float64Array>,
        delta: Option<&Float64Array>,
    ) -> Result<Float64Array, arrow::error::ArrowError> {
        let (Some(scaled), Some(scale)) = (scaled, scale) else {
            self.previous = None;
            return Ok(given.clone());
        };
        let mut out = Float64Builder::with_capacity(given.len());
        for i in 0..given.len() {
            if given.is_valid(i) {
                out.append_value(given.value(i));
                self.previous = None;
                continue;
            }
            if scale.is_null(i) {
                out.append_null();
                self.previous = None;
                continue;
            }
            let s = scale.value(i);
            let m = if scaled.is_valid(i) {
                scaled.value(i)
            } else {
                // A step from the row before (same series, same scale, by the writer's rule).
                let d = delta.filter(|d| d.is_valid(i)).map(|d| d.value(i));
                self.previous
                    .filter(|&(_, ps)| ps == s)
                    .zip(d.and_then(|d| decimal_step(d, s)))
                    .and_then(|((pm, _), k)| pm.checked_add(k))
                    .ok_or_else(|| {
                        arrow::error::ArrowError::InvalidArgumentError(format!(
                            "row {i} of a batch: value stored as a step from the row before, \
                             but the row before has no decimal of scale {s} or the row no \
                             usable delta (rows of a row group read out of order?)"
                        ))
                    })?
            };
            self.previous = Some((m, s));
            out.append_value(m as f64 / s);
        }
        Ok(out.finish())
    }
}

/// The coefficients tried first for a category: the built-in factor tables' (see
/// [`FactorTables::per_unit_values`]). A deployment's own factors are found by division.
fn table_coefficients(category: &str) -> &'static [f64] {
    static TABLES: OnceLock<HashMap<&'static str, Vec<f64>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let Ok(t) = FactorTables::builtin() else {
            return HashMap::new();
        };
        Category::ALL
            .into_iter()
            .map(|c| (c.code(), t.per_unit_values(c)))
            .collect()
    });
    tables.get(category).map_or(&[], Vec::as_slice)
}

/// Splits a derived column (`kgce` or `kgco2e`) into what the file stores: per row either the
/// coefficient `c` with `delta × c` bit-identical to the value (and the value null), or the
/// value itself (and no coefficient). Null stays null.
fn split_derived(
    delta: &Float64Array,
    derived: &Float64Array,
    category: &StringArray,
) -> (Float64Array, Float64Array) {
    let n = derived.len();
    let (mut stored, mut coefficient) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut previous: Option<f64> = None;
    for i in 0..n {
        if derived.is_null(i) {
            stored.append_null();
            coefficient.append_null();
            continue;
        }
        let value = derived.value(i);
        let found = (!delta.is_null(i)).then(|| delta.value(i)).and_then(|d| {
            // The previous row's coefficient first (a series keeps its factor), then the
            // tables', then the quotient: whichever reproduces the exact bits.
            // The tables are looked up only when the previous coefficient fails: nearly every
            // row takes the first test, and the lookup hashes the category.
            let exact = |c: &f64| c.is_finite() && (d * c).to_bits() == value.to_bits();
            previous.filter(exact).or_else(|| {
                table_coefficients(category.value(i))
                    .iter()
                    .copied()
                    .chain(std::iter::once(value / d))
                    .find(exact)
            })
        });
        match found {
            Some(c) => {
                stored.append_null();
                coefficient.append_value(c);
                previous = Some(c);
            }
            None => {
                stored.append_value(value);
                coefficient.append_null();
            }
        }
    }
    (stored.finish(), coefficient.finish())
}

/// A batch of [`readings_schema`] as the file stores it ([`stored_schema`]).
pub fn to_stored(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    let logical = batch.schema();
    let column = |name: &str| -> Result<&ArrayRef, arrow::error::ArrowError> {
        Ok(batch.column(logical.index_of(name)?))
    };
    let float = |name: &str| -> Result<&Float64Array, arrow::error::ArrowError> {
        column(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "readings column {name} is not float64"
                ))
            })
    };
    let string = |name: &str| -> Result<&StringArray, arrow::error::ArrowError> {
        column(name)?.as_string_opt::<i32>().ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("readings column {name} is not utf8"))
        })
    };
    let category = string("category")?;
    let delta = float("delta")?;
    let (kgce, kgce_per_unit) = split_derived(delta, float("kgce")?, category);
    let (kgco2e, kgco2e_per_unit) = split_derived(delta, float("kgco2e")?, category);
    let series = [string("account")?, string("meter")?, string("quantity")?];
    let continues: Vec<bool> = (0..batch.num_rows())
        .map(|i| i > 0 && series.iter().all(|c| c.value(i) == c.value(i - 1)))
        .collect();
    let (value, value_scaled, value_scale) = split_value(float("value")?, delta, &continues);
    let schema = stored_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(match f.name().as_str() {
                "value" => Arc::new(value.clone()) as ArrayRef,
                VALUE_SCALED => Arc::new(value_scaled.clone()),
                VALUE_SCALE => Arc::new(value_scale.clone()),
                "kgce" => Arc::new(kgce.clone()),
                "kgco2e" => Arc::new(kgco2e.clone()),
                KGCE_PER_UNIT => Arc::new(kgce_per_unit.clone()),
                KGCO2E_PER_UNIT => Arc::new(kgco2e_per_unit.clone()),
                name => column(name)?.clone(),
            })
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// A batch read from a file of either layout as a batch of [`readings_schema`]: values rebuilt
/// by `values` (the file's reader, see [`ValueReader`]), `kgce` and `kgco2e` filled in from their
/// coefficients where the file left them to the derivation. Columns are taken by name; a
/// layout-1 file has no coefficient or decimal columns and every value given.
pub fn from_stored(
    batch: &RecordBatch,
    values: &mut ValueReader,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    let stored = batch.schema();
    let float = |name: &str| -> Option<&Float64Array> {
        let i = stored.index_of(name).ok()?;
        batch.column(i).as_primitive_opt::<Float64Type>()
    };
    let derive = |name: &str, per_unit: &str| -> Option<Float64Array> {
        let (given, per_unit, delta) = (float(name)?, float(per_unit)?, float("delta")?);
        Some(
            (0..batch.num_rows())
                .map(|i| {
                    if given.is_valid(i) {
                        Some(given.value(i))
                    } else if per_unit.is_valid(i) && delta.is_valid(i) {
                        Some(delta.value(i) * per_unit.value(i))
                    } else {
                        None
                    }
                })
                .collect(),
        )
    };
    let given = float("value").ok_or_else(|| {
        arrow::error::ArrowError::SchemaError("readings file has no float64 value column".into())
    })?;
    let scaled = stored
        .index_of(VALUE_SCALED)
        .ok()
        .and_then(|i| batch.column(i).as_primitive_opt::<Int64Type>());
    let value = values.read(given, scaled, float(VALUE_SCALE), float("delta"))?;
    let schema = readings_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let derived = match f.name().as_str() {
                "value" => Some(value.clone()),
                "kgce" => derive("kgce", KGCE_PER_UNIT),
                "kgco2e" => derive("kgco2e", KGCO2E_PER_UNIT),
                _ => None,
            };
            match derived {
                Some(d) => Ok(Arc::new(d) as ArrayRef),
                None => Ok(batch.column(stored.index_of(f.name())?).clone()),
            }
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(schema, columns)
}

/// The writer settings of layout 3.
fn writer_properties(rows: usize) -> WriterProperties {
    let col = |name: &str| parquet::schema::types::ColumnPath::from(name);
    crate::writer_properties()
        .into_builder()
        // Layout 3's value is a double: not layout 4's delta-encoded integer.
        .set_column_dictionary_enabled(col("value"), false)
        .set_column_encoding(col("value"), parquet::basic::Encoding::PLAIN)
        .set_column_dictionary_enabled(col(VALUE_SCALED), false)
        .set_column_encoding(
            col(VALUE_SCALED),
            parquet::basic::Encoding::DELTA_BINARY_PACKED,
        )
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            crate::LAYOUT_KEY.to_owned(),
            LAYOUT.to_owned(),
        )]))
        .set_max_row_group_row_count(Some(rows.max(1)))
        .build()
}

/// Writes a batch of [`readings_schema`] (already sorted) as a layout-3 file with row groups of
/// `rows` rows, each stored on its own ([`to_stored`]) so that its series start in full. For
/// tests and fixtures: the server writes layout 4.
pub fn write_row_groups<W: std::io::Write + Send>(
    w: W,
    batch: &RecordBatch,
    rows: usize,
) -> Result<W, parquet::errors::ParquetError> {
    let mut writer = ArrowWriter::try_new(w, stored_schema(), Some(writer_properties(rows)))?;
    let mut start = 0;
    loop {
        let len = rows.max(1).min(batch.num_rows() - start);
        writer.write(&to_stored(&batch.slice(start, len))?)?;
        // Ends the row group here, whatever the writer's own limits would do.
        writer.flush()?;
        start += len;
        if start >= batch.num_rows() {
            break;
        }
    }
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::tests::{bits, derived_rows, register_rows};
    use crate::{file_name, partition_files, read_files, to_record_batch};

    #[test]
    fn stored_layout_gives_back_every_kgce_and_kgco2e_bit_for_bit() {
        let rows = derived_rows();
        let logical = to_record_batch(&rows, 3).unwrap();
        let stored = to_stored(&logical).unwrap();
        assert_eq!(stored.schema(), stored_schema());
        // Most values are left to the derivation; the ones it cannot express are kept.
        let given = |name: &str| {
            let c = stored.column(stored.schema().index_of(name).unwrap());
            c.len() - c.null_count()
        };
        assert!(
            given("kgce") > 0 && given("kgce") < rows.len() / 3,
            "{}",
            given("kgce")
        );
        assert!(given(KGCE_PER_UNIT) > rows.len() / 2);
        assert!(given(VALUE_SCALED) > rows.len() / 3);
        // Through a real file and back.
        let file =
            write_row_groups(tempfile::tempfile().unwrap(), &logical, ROW_GROUP_ROWS).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == crate::LAYOUT_KEY))
                .and_then(|k| k.value.clone())
                .as_deref(),
            Some(LAYOUT)
        );
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let back = from_stored(
            &arrow::compute::concat_batches(&stored_schema(), &batches).unwrap(),
            &mut ValueReader::default(),
        )
        .unwrap();
        for name in ["kgce", "kgco2e", "delta", "value"] {
            assert_eq!(bits(&back, name), bits(&logical, name), "{name}");
        }
        assert_eq!(back, logical);
    }

    #[test]
    fn values_stored_as_steps_read_back_bit_for_bit_from_any_row_group() {
        let logical = to_record_batch(&register_rows(), 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(2, 2));
        write_row_groups(std::fs::File::create(&path).unwrap(), &logical, 7).unwrap();
        // Most rows are steps: neither the value nor its decimal is in the file.
        let stored = to_stored(&logical).unwrap();
        let column = |name: &str| {
            stored
                .column(stored.schema().index_of(name).unwrap())
                .clone()
        };
        let steps = (0..stored.num_rows())
            .filter(|&i| {
                column("value").is_null(i)
                    && column(VALUE_SCALED).is_null(i)
                    && column(VALUE_SCALE).is_valid(i)
            })
            .count();
        assert!(steps > logical.num_rows() * 3 / 4, "{steps}");
        // The whole file.
        let (files, _) = partition_files(dir.path()).unwrap();
        let back = read_files(&files).unwrap();
        assert_eq!(bits(&back, "value"), bits(&logical, "value"));
        assert_eq!(back, logical);
        // Each row group on its own, read in small batches: every one starts its series in full.
        let open = || {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap()
        };
        let groups = open().metadata().num_row_groups();
        assert_eq!(groups, logical.num_rows().div_ceil(7));
        for g in 0..groups {
            let mut values = ValueReader::default();
            let read: Vec<RecordBatch> = open()
                .with_row_groups(vec![g])
                .with_batch_size(3)
                .build()
                .unwrap()
                .map(|b| from_stored(&b.unwrap(), &mut values).unwrap())
                .collect();
            let read = arrow::compute::concat_batches(&readings_schema(), &read).unwrap();
            assert_eq!(read, logical.slice(g * 7, read.num_rows()), "row group {g}");
        }
    }

    #[test]
    fn a_step_without_the_row_before_is_an_error_not_a_guess() {
        let logical = to_record_batch(&register_rows(), 2).unwrap();
        let stored = to_stored(&logical).unwrap();
        // Rows 1.. of a series, without row 0 that holds its decimal.
        let err = from_stored(&stored.slice(1, 10), &mut ValueReader::default()).unwrap_err();
        assert!(
            err.to_string().contains("step from the row before"),
            "{err}"
        );
    }

    #[test]
    fn a_layout_1_file_reads_as_given() {
        // Today's schema with every column full, as files before the stored layout were.
        let logical = to_record_batch(&derived_rows(), 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1, 1));
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            readings_schema(),
            None,
        )
        .unwrap();
        w.write(&logical).unwrap();
        w.close().unwrap();
        let (files, _) = partition_files(dir.path()).unwrap();
        assert_eq!(read_files(&files).unwrap(), logical);
    }
}
