use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use reading_model::{Batch, GatewayId, Quality, Reading};

use super::*;

fn gw() -> GatewayId {
    GatewayId::parse("gw-1").unwrap()
}

/// Reading `i` of a mixed batch: two accounts, seven meters, some without delta, factor or
/// good quality.
fn reading(i: usize) -> Reading {
    let delta = (!i.is_multiple_of(3)).then_some(0.25);
    let mut r = test_support::ReadingBuilder::new(
        &format!("m{}", i % 7),
        1_764_547_200_000 + i as i64 * 900_000,
    )
    .account(if i.is_multiple_of(2) {
        "110108A001"
    } else {
        "110108D002"
    })
    .item("01A10")
    .value(1000.0 + i as f64 * 0.25)
    .delta(delta)
    .kgce(delta.map(|d| d * 0.1229))
    .quality(if i.is_multiple_of(11) {
        Quality::Estimated
    } else {
        Quality::Good
    })
    .build();
    r.factor = i
        .is_multiple_of(5)
        .then(|| "mee-nbs-2023/grid/华北".to_owned());
    r
}

fn batch(n: usize) -> Batch {
    Batch::new(gw(), 42, (0..n).map(reading).collect())
}

const MAX: usize = 64 << 20;

#[test]
fn round_trip_plain_and_zstd() {
    let b = batch(100);
    for zstd in [false, true] {
        let bytes = encode(&b, zstd).unwrap();
        assert_eq!(decode(&bytes, &gw(), MAX).unwrap(), b, "zstd {zstd}");
    }
    let empty = batch(0);
    assert_eq!(
        decode(&encode(&empty, true).unwrap(), &gw(), MAX).unwrap(),
        empty
    );
}

/// A stream as a minimal third-party client writes it: plain strings, int64 ts, only the
/// required columns, two record batches, no version key.
// A third-party stream's columns (plain strings, nulls, rows across record batches) are the
// `wire` crate's tests (`wire/tests/decode.rs`); here, what ingest adds: framing, the token's
// gateway, the size caps.

#[test]
fn the_epoch_is_read_from_the_schema_metadata_and_may_be_absent() {
    let with = batch(3).with_epoch(Some(1 << 60));
    assert_eq!(
        decode(&encode(&with, true).unwrap(), &gw(), MAX).unwrap(),
        with
    );
    // Today's gateways send no epoch: the batch decodes as before, without one.
    let without = batch(3);
    assert_eq!(
        decode(&encode(&without, true).unwrap(), &gw(), MAX)
            .unwrap()
            .epoch,
        None
    );
}

#[test]
fn envelope_and_schema_errors() {
    let good = batch(3);
    let other = Batch::new(GatewayId::parse("gw-2").unwrap(), 1, vec![reading(0)]);
    assert!(matches!(
        decode(&encode(&other, false).unwrap(), &gw(), MAX),
        Err(DecodeError::WrongGateway { .. })
    ));
    let mut v2 = good.clone();
    v2.version = 2;
    assert!(matches!(
        decode(&encode(&v2, false).unwrap(), &gw(), MAX),
        Err(DecodeError::Batch {
            field: "version",
            ..
        })
    ));

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
    let e = decode(&stream(f, c, &meta), &gw(), MAX).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.contains("\"extra\" is not part")),
        "{e}"
    );
    let (f, c) = one(Field::new("ts", DataType::Utf8, true));
    let e = decode(&stream(f, c, &meta), &gw(), MAX).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.starts_with("column ts: Utf8")),
        "{e}"
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(&stream(f, c, &meta), &gw(), MAX).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Malformed("column account is missing".into())
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(&stream(f, c, &meta[..1]), &gw(), MAX).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Malformed("schema metadata jieneng.seq is missing".into())
    );
    let (f, c) = one(Field::new("ts", DataType::Int64, true));
    let e = decode(
        &stream(f, c, &[(META_GATEWAY, "gw-1"), (META_SEQ, "-1")]),
        &gw(),
        MAX,
    )
    .unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.contains("jieneng.seq")),
        "{e}"
    );
}

#[test]
fn framing_errors_are_malformed_not_allocations() {
    let bytes = encode(&batch(10), false).unwrap();
    // Trailing bytes after the end-of-stream marker.
    let mut extra = bytes.clone();
    extra.extend_from_slice(b"junk");
    assert!(
        matches!(decode(&extra, &gw(), MAX), Err(DecodeError::Malformed(m)) if m.contains("after the end-of-stream"))
    );
    // A metadata length of 2 GiB.
    let huge = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    assert!(
        matches!(decode(&huge, &gw(), MAX), Err(DecodeError::Malformed(m)) if m.contains("declares 2147483647 metadata bytes"))
    );
    // Truncated anywhere: an error, never a panic or a huge allocation.
    for cut in (0..bytes.len()).step_by(7) {
        assert!(decode(&bytes[..cut], &gw(), MAX).is_err(), "cut at {cut}");
    }
    assert!(matches!(
        decode(b"", &gw(), MAX),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn ipc_compression_is_capped_and_lz4_refused() {
    let b = batch(10_000);
    let z = encode(&b, true).unwrap();
    assert!(decode(&z, &gw(), MAX).is_ok());
    // The buffers declare more than the cap: refused before anything is decompressed.
    let e = decode(&z, &gw(), z.len()).unwrap_err();
    assert!(
        matches!(e, DecodeError::TooLarge { limit, .. } if limit == z.len()),
        "{e}"
    );

    let rb = {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1; 100])) as ArrayRef],
        )
        .unwrap()
    };
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .unwrap();
    let mut w = StreamWriter::try_new_with_options(Vec::new(), &rb.schema(), options).unwrap();
    w.write(&rb).unwrap();
    w.finish().unwrap();
    let e = decode(&w.into_inner().unwrap(), &gw(), MAX).unwrap_err();
    assert!(
        matches!(&e, DecodeError::Malformed(m) if m.contains("LZ4_FRAME")),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, &gw(), MAX);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        cut in 0usize..4096,
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = encode(&batch(5), false).unwrap();
        bytes.truncate(cut.min(bytes.len()));
        bytes.extend_from_slice(&tail);
        let _ = decode(&bytes, &gw(), MAX);
    }

    #[test]
    fn mutated_streams_never_panic(
        zstd in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode(&batch(5), zstd).unwrap();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        // Either a batch that passed the same checks as JSON or an error; never a panic.
        if let Ok(b) = decode(&bytes, &gw(), MAX) {
            prop_assert_eq!(b.gateway, gw());
        }
    }
}
