//! The decoder on streams as other clients write them (plain strings, `int64` timestamps,
//! optional columns left out, several record batches) and on streams that break the schema.
//! Ingest runs the same cases through its server-side checks (framing, size caps, the
//! gateway's token) in `ingest/src/decode/ipc/tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

use wire::{DecodeError, META_GATEWAY, META_SEQ, decode, encode_reference};

fn gw() -> GatewayId {
    GatewayId::parse("gw-1").unwrap()
}

fn reading(i: usize) -> Reading {
    Reading {
        ts: 1_764_547_200_000 + i as i64 * 900_000,
        account: AccountCode::parse(if i.is_multiple_of(2) {
            "110108A001"
        } else {
            "110108D002"
        })
        .unwrap(),
        meter: MeterId::parse(&format!("m{}", i % 7)).unwrap(),
        category: Category::Electricity,
        item: EnergyCode::parse("01A10").unwrap(),
        quantity: Quantity::EnergyImport,
        unit: Unit::KilowattHour,
        value: 1000.0 + i as f64 * 0.25,
        delta: (!i.is_multiple_of(3)).then_some(0.25),
        kgce: (!i.is_multiple_of(3)).then_some(0.25 * 0.1229),
        kgco2e: None,
        factor: (i.is_multiple_of(5)).then(|| "mee-nbs-2023/grid/华北".to_owned()),
        quality: if i.is_multiple_of(11) {
            Quality::Estimated
        } else {
            Quality::Good
        },
    }
}

fn batch(n: usize) -> Batch {
    Batch::new(gw(), 42, (0..n).map(reading).collect())
}

#[test]
fn round_trip_plain_and_zstd() {
    let b = batch(100);
    for zstd in [false, true] {
        let bytes = encode_reference(&b, zstd).unwrap();
        assert_eq!(decode(&bytes).unwrap(), b, "zstd {zstd}");
    }
    let empty = batch(0);
    assert_eq!(
        decode(&encode_reference(&empty, true).unwrap()).unwrap(),
        empty
    );
}

/// A stream as a minimal third-party client writes it: plain strings, int64 ts, only the
/// required columns, two record batches, no version key.
fn plain_stream(accounts: [&[&str]; 2], values: [&[Option<f64>]; 2]) -> Vec<u8> {
    let mut fields = vec![Field::new("ts", DataType::Int64, true)];
    for name in ["account", "meter", "category", "item", "quantity", "unit"] {
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    fields.push(Field::new("value", DataType::Float64, true));
    let schema = Arc::new(Schema::new(fields).with_metadata(HashMap::from([
        (META_GATEWAY.to_owned(), "gw-1".to_owned()),
        (META_SEQ.to_owned(), "7".to_owned()),
    ])));
    let mut w = StreamWriter::try_new(Vec::new(), &schema).unwrap();
    for (accounts, values) in accounts.into_iter().zip(values) {
        let n = accounts.len();
        let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1_764_547_200_000; n])),
            Arc::new(StringArray::from(accounts.to_vec())),
            s("water"),
            s("02"),
            s("02000"),
            s("volume"),
            s("m3"),
            Arc::new(Float64Array::from(values.to_vec())),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    w.into_inner().unwrap()
}

#[test]
fn minimal_client_stream_decodes_with_defaults() {
    let bytes = plain_stream(
        [&["110108A001"], &["110108A001", "110108A002"]],
        [&[Some(1.0)], &[Some(2.0), Some(3.5)]],
    );
    let b = decode(&bytes).unwrap();
    assert_eq!((b.version, b.seq, b.readings.len()), (1, 7, 3));
    let r = &b.readings[2];
    assert_eq!(r.account.as_str(), "110108A002");
    assert_eq!(
        (r.unit, r.quality, r.delta, r.factor.as_deref()),
        (Unit::CubicMetre, Quality::Good, None, None)
    );
    assert_eq!(r.value, 3.5);
    b.check().unwrap();
}

#[test]
fn row_errors_count_across_record_batches() {
    let first: Vec<&str> = vec!["110108A001"; 10];
    let mut second: Vec<&str> = vec!["110108A001"; 10];
    second[7] = "11010A001";
    let ones = vec![Some(1.0); 10];
    let e = decode(&plain_stream([&first, &second], [&ones, &ones])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("readings[17].account: \"11010A001\""),
        "{e}"
    );
    let mut nulls = ones.clone();
    nulls[3] = None;
    let e = decode(&plain_stream([&first, &first], [&ones, &nulls])).unwrap_err();
    assert_eq!(e.to_string(), "readings[13].value: null");
}

#[test]
fn metadata_and_schema_errors() {
    let stream = |fields: Vec<Field>, cols: Vec<ArrayRef>, meta: &[(&str, &str)]| {
        let meta = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let schema = Arc::new(Schema::new(fields).with_metadata(meta));
        let mut w = StreamWriter::try_new(Vec::new(), &schema).unwrap();
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    };
    let one = |f: Field| {
        let a: ArrayRef = match f.data_type() {
            DataType::Int64 => Arc::new(Int64Array::from(vec![1])),
            _ => Arc::new(StringArray::from(vec!["x"])),
        };
        (vec![f], vec![a])
    };
    let meta = [(META_GATEWAY, "gw-1"), (META_SEQ, "1")];
    let (f, c) = one(Field::new("extra", DataType::Utf8, true));
    let e = decode(&stream(f, c, &meta)).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.contains("\"extra\" is not part")),
        "{e}"
    );
    let (f, c) = one(Field::new("ts", DataType::Utf8, true));
    let e = decode(&stream(f, c, &meta)).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.starts_with("column ts: Utf8")),
        "{e}"
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(&stream(f, c, &meta)).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Malformed("column account is missing".into())
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(&stream(f, c, &meta[..1])).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Malformed("schema metadata jieneng.seq is missing".into())
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(&stream(f, c, &[(META_GATEWAY, "gw-1"), (META_SEQ, "-1")])).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.contains("jieneng.seq")),
        "{e}"
    );
}
