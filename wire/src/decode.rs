//! The decoder: any stream the contract allows (not only what the gateway writes) into a
//! [`Batch`], with errors that name the row and field.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Cursor;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use arrow_ipc::reader::StreamReader;
use arrow_schema::{ArrowError, DataType, Schema, TimeUnit};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
    WIRE_VERSION,
};

use crate::{COLUMNS, Kind, META_EPOCH, META_GATEWAY, META_SEQ, META_VERSION};

/// Why a stream is not a batch of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an Arrow IPC stream, or it breaks the schema.
    #[error("{0}")]
    Malformed(String),
    /// One reading is wrong; `row` counts from 0 across the stream's record batches.
    #[error("readings[{row}].{field}: {message}")]
    Invalid {
        row: usize,
        field: String,
        message: String,
    },
}

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

fn arrow_error(e: ArrowError) -> DecodeError {
    malformed(format!("Arrow IPC stream: {e}"))
}

/// At most 80 characters of something a client sent, for an error message.
fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(80) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The whole batch of a stream; a missing version is [`VERSION`](crate::VERSION). Checks in
/// the order [`BatchReader`] documents; a receiver that checks something of its own between
/// them (ingest: the gateway is the token's) uses [`BatchReader`] itself.
pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
    let reader = BatchReader::new(bytes)?;
    let gateway = reader.gateway()?;
    let version = reader.version()?.unwrap_or(WIRE_VERSION);
    let epoch = reader.epoch()?;
    let seq = reader.seq()?;
    reader.check_schema()?;
    Ok(Batch {
        version,
        gateway,
        epoch,
        seq,
        readings: reader.readings()?,
    })
}

/// A stream being read, a step at a time: its envelope ([`gateway`](Self::gateway),
/// [`version`](Self::version), [`epoch`](Self::epoch), [`seq`](Self::seq)), then [`check_schema`](Self::check_schema),
/// then its [`readings`](Self::readings).
pub struct BatchReader<'a> {
    reader: StreamReader<Cursor<&'a [u8]>>,
}

impl std::fmt::Debug for BatchReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader")
            .field("schema", &self.reader.schema())
            .finish_non_exhaustive()
    }
}

impl<'a> BatchReader<'a> {
    /// Reads the schema message.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow_error)?;
        Ok(Self { reader })
    }

    fn metadata(&self, key: &str) -> Option<String> {
        self.reader.schema().metadata().get(key).cloned()
    }

    fn required(&self, key: &str) -> Result<String, DecodeError> {
        self.metadata(key)
            .ok_or_else(|| malformed(format!("schema metadata {key} is missing")))
    }

    /// The batch's gateway (`jieneng.gateway`).
    pub fn gateway(&self) -> Result<GatewayId, DecodeError> {
        let gateway = self.required(META_GATEWAY)?;
        GatewayId::parse(&gateway)
            .map_err(|e| malformed(format!("schema metadata {META_GATEWAY}: {e}")))
    }

    /// The batch's wire version (`jieneng.version`), `None` when the stream does not say.
    pub fn version(&self) -> Result<Option<u16>, DecodeError> {
        self.metadata(META_VERSION)
            .map(|v| {
                v.trim().parse::<u16>().map_err(|_| {
                    malformed(format!(
                        "schema metadata {META_VERSION}: {:?} is not a version number",
                        clip(&v)
                    ))
                })
            })
            .transpose()
    }

    /// The batch's sequence number (`jieneng.seq`).
    pub fn seq(&self) -> Result<u64, DecodeError> {
        parse_u64(META_SEQ, &self.required(META_SEQ)?)
    }

    /// The batch's numbering epoch (`jieneng.epoch`), `None` when the stream has none.
    pub fn epoch(&self) -> Result<Option<u64>, DecodeError> {
        self.metadata(META_EPOCH)
            .map(|e| parse_u64(META_EPOCH, &e))
            .transpose()
    }

    /// Every column is one of the contract's, once, of an accepted type; the required ones
    /// are there.
    pub fn check_schema(&self) -> Result<(), DecodeError> {
        check_schema(&self.reader.schema())
    }

    /// The readings of every record batch, in stream order.
    pub fn readings(self) -> Result<Vec<Reading>, DecodeError> {
        let mut readings = Vec::new();
        for batch in self.reader {
            let batch = batch.map_err(arrow_error)?;
            let base = readings.len();
            rows(&batch, base, &mut readings)?;
        }
        Ok(readings)
    }
}

fn parse_u64(key: &str, text: &str) -> Result<u64, DecodeError> {
    text.trim().parse::<u64>().map_err(|_| {
        malformed(format!(
            "schema metadata {key}: {:?} is not an unsigned 64-bit integer",
            clip(text)
        ))
    })
}

fn check_schema(schema: &Schema) -> Result<(), DecodeError> {
    let mut seen = HashMap::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let Some(column) = COLUMNS.iter().find(|c| c.name == name) else {
            let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
            return Err(malformed(format!(
                "column {:?} is not part of wire format v1 ({})",
                clip(name),
                names.join(", ")
            )));
        };
        if seen.insert(name, ()).is_some() {
            return Err(malformed(format!("column {name} appears twice")));
        }
        let dt = field.data_type();
        let ok = match column.kind {
            Kind::Ts => matches!(
                dt,
                DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)
            ),
            Kind::F64 => *dt == DataType::Float64,
            Kind::Str => match dt {
                DataType::Dictionary(key, value) => {
                    key.is_dictionary_key_type() && is_string(value)
                }
                other => is_string(other),
            },
        };
        if !ok {
            let expected = match column.kind {
                Kind::Ts => "timestamp[ms] or int64 (ms since the epoch, UTC)",
                Kind::F64 => "float64",
                Kind::Str => "utf8, large_utf8, utf8_view or a dictionary of them",
            };
            return Err(malformed(format!(
                "column {name}: {dt} is not accepted; expected {expected}"
            )));
        }
    }
    for column in COLUMNS {
        if column.required && !seen.contains_key(column.name) {
            return Err(malformed(format!("column {} is missing", column.name)));
        }
    }
    Ok(())
}

fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The values of a string array of any of the three string types, read in place.
enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(a: &'a ArrayRef) -> Result<Self, DecodeError> {
        if let Some(s) = a.as_string_opt::<i32>() {
            Ok(Self::Utf8(s))
        } else if let Some(s) = a.as_string_opt::<i64>() {
            Ok(Self::Large(s))
        } else if let Some(s) = a.as_string_view_opt() {
            Ok(Self::View(s))
        } else {
            Err(malformed("Arrow IPC stream: a string column is not utf8"))
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Utf8(s) => s.len(),
            Self::Large(s) => s.len(),
            Self::View(s) => s.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn value(&self, i: usize) -> &'a str {
        match self {
            Self::Utf8(s) => s.value(i),
            Self::Large(s) => s.value(i),
            Self::View(s) => s.value(i),
        }
    }
}

/// A string column as UTF-8 values, seen through dictionary keys when it has them.
struct StrCol<'a> {
    values: Strings<'a>,
    keys: Option<Vec<usize>>,
    /// Whether a row is null (through its key or its dictionary value).
    is_null: Box<dyn Fn(usize) -> bool + 'a>,
}

impl<'a> StrCol<'a> {
    fn new(col: &'a ArrayRef) -> Result<Self, DecodeError> {
        let nulls = col.logical_nulls();
        let null_count = nulls.as_ref().map_or(0, |n| n.null_count());
        let is_null = Box::new(move |i| nulls.as_ref().is_some_and(|n| n.is_null(i)));
        match col.as_any_dictionary_opt() {
            Some(d) => {
                let values = Strings::of(d.values())?;
                let keys = if values.is_empty() {
                    // Only valid when every key is null; `normalized_keys` needs a value.
                    if null_count != col.len() {
                        return Err(malformed(
                            "Arrow IPC stream: a dictionary without values has non-null keys",
                        ));
                    }
                    vec![0; col.len()]
                } else {
                    d.normalized_keys()
                };
                Ok(Self {
                    values,
                    keys: Some(keys),
                    is_null,
                })
            }
            None => Ok(Self {
                values: Strings::of(col)?,
                keys: None,
                is_null,
            }),
        }
    }

    /// Parses every row with `parse` (once per dictionary value), `on_null` for nulls.
    fn parse<T: Clone>(
        &self,
        field: &'static str,
        base: usize,
        parse: impl Fn(&str) -> Result<T, String>,
        on_null: impl Fn() -> Result<T, String>,
        len: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let invalid = |i: usize, message: String| DecodeError::Invalid {
            row: base + i,
            field: field.to_owned(),
            message,
        };
        let mut cache: Vec<Option<T>> = match &self.keys {
            Some(_) => vec![None; self.values.len()],
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            if (self.is_null)(i) {
                out.push(on_null().map_err(|m| invalid(i, m))?);
                continue;
            }
            let slot = self.keys.as_ref().map_or(Some(i), |k| k.get(i).copied());
            let Some(slot) = slot.filter(|&s| s < self.values.len()) else {
                return Err(invalid(i, "dictionary key out of range".into()));
            };
            if let Some(Some(v)) = cache.get(slot) {
                out.push(v.clone());
                continue;
            }
            let v = parse(self.values.value(slot)).map_err(|m| invalid(i, m))?;
            if let Some(c) = cache.get_mut(slot) {
                *c = Some(v.clone());
            }
            out.push(v);
        }
        Ok(out)
    }
}

fn code<T, E: std::fmt::Display>(
    parse: impl Fn(&str) -> Result<T, E>,
) -> impl Fn(&str) -> Result<T, String> {
    move |s| parse(s).map_err(|e| format!("{:?}: {e}", clip(s)))
}

fn null<T>() -> Result<T, String> {
    Err("null".into())
}

/// The `ts` column: `timestamp[ms]` or `int64`, no nulls.
fn timestamps(batch: &RecordBatch, base: usize) -> Result<Vec<i64>, DecodeError> {
    let ts_col = batch
        .column_by_name("ts")
        .ok_or_else(|| malformed("column ts is missing"))?;
    let ts_values: &[i64] = match ts_col.as_primitive_opt::<Int64Type>() {
        Some(a) => a.values(),
        None => ts_col
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| malformed("column ts: not timestamp[ms]"))?
            .values(),
    };
    (0..batch.num_rows())
        .map(|i| {
            if ts_col.is_null(i) {
                Err(DecodeError::Invalid {
                    row: base + i,
                    field: "ts".into(),
                    message: "null".into(),
                })
            } else {
                Ok(ts_values[i])
            }
        })
        .collect()
}

/// A `float64` column; an absent optional one is all nulls.
fn floats(
    batch: &RecordBatch,
    base: usize,
    name: &'static str,
    required: bool,
) -> Result<Vec<Option<f64>>, DecodeError> {
    let n = batch.num_rows();
    let Some(c) = batch.column_by_name(name) else {
        return Ok(vec![None; n]);
    };
    let a = c
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| malformed(format!("column {name}: not float64")))?;
    (0..n)
        .map(|i| {
            if a.is_valid(i) {
                Ok(Some(a.value(i)))
            } else if required {
                Err(DecodeError::Invalid {
                    row: base + i,
                    field: name.into(),
                    message: "null".into(),
                })
            } else {
                Ok(None)
            }
        })
        .collect()
}

/// The readings of one record batch, appended to `out`; `base` is the stream row of its first.
fn rows(batch: &RecordBatch, base: usize, out: &mut Vec<Reading>) -> Result<(), DecodeError> {
    let n = batch.num_rows();
    let col = |name: &str| batch.column_by_name(name);
    let required =
        |name: &str| col(name).ok_or_else(|| malformed(format!("column {name} is missing")));
    let strings = |name: &str| required(name).and_then(StrCol::new);

    let ts = timestamps(batch, base)?;
    let account = strings("account")?.parse("account", base, code(AccountCode::parse), null, n)?;
    let meter = strings("meter")?.parse("meter", base, code(MeterId::parse), null, n)?;
    let category = strings("category")?.parse("category", base, code(Category::parse), null, n)?;
    let item = strings("item")?.parse("item", base, code(EnergyCode::parse), null, n)?;
    let quantity = strings("quantity")?.parse("quantity", base, code(Quantity::parse), null, n)?;
    let unit = strings("unit")?.parse("unit", base, code(Unit::parse), null, n)?;
    let factor = match col("factor") {
        None => vec![None; n],
        Some(c) => {
            StrCol::new(c)?.parse("factor", base, |s| Ok(Some(s.to_owned())), || Ok(None), n)?
        }
    };
    let quality = match col("quality") {
        None => vec![Quality::Good; n],
        Some(c) => StrCol::new(c)?.parse(
            "quality",
            base,
            code(Quality::parse),
            || Ok(Quality::Good),
            n,
        )?,
    };
    let value = floats(batch, base, "value", true)?;
    let delta = floats(batch, base, "delta", false)?;
    let kgce = floats(batch, base, "kgce", false)?;
    let kgco2e = floats(batch, base, "kgco2e", false)?;

    out.reserve(n);
    let mut factor = factor.into_iter();
    for i in 0..n {
        out.push(Reading {
            ts: ts[i],
            account: account[i].clone(),
            meter: meter[i].clone(),
            category: category[i],
            item: item[i],
            quantity: quantity[i],
            unit: unit[i],
            value: value[i].unwrap_or(f64::NAN),
            delta: delta[i],
            kgce: kgce[i],
            kgco2e: kgco2e[i],
            factor: factor.next().flatten(),
            quality: quality[i],
        });
    }
    Ok(())
}
