//! The codec's round trips: what the encoders write, the decoder reads back exactly.

use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

use crate::{StreamEncoder, decode, encode, encode_reference};

fn reading(i: usize) -> Reading {
    Reading {
        ts: 1_767_225_600_000 + i as i64 * 1000,
        account: AccountCode::parse("110108A001").unwrap(),
        meter: MeterId::parse(&format!("m{}", i % 3)).unwrap(),
        category: Category::Electricity,
        item: EnergyCode::parse("01A10").unwrap(),
        quantity: if i.is_multiple_of(2) {
            Quantity::EnergyImport
        } else {
            Quantity::PowerActive
        },
        unit: if i.is_multiple_of(2) {
            Unit::KilowattHour
        } else {
            Unit::Kilowatt
        },
        value: i as f64 * 0.1,
        delta: i.is_multiple_of(2).then_some(0.25),
        kgce: i.is_multiple_of(2).then_some(0.25 * 0.1229),
        kgco2e: i.is_multiple_of(4).then_some(0.25 * 0.6361),
        factor: i
            .is_multiple_of(4)
            .then(|| "mee-nbs-2023/grid/华北".to_owned()),
        quality: if i == 3 { Quality::Gap } else { Quality::Good },
    }
}

#[test]
fn round_trips_exactly() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let readings: Vec<Reading> = (0..50).map(reading).collect();
    let bytes = encode(&gw, None, 42, 1, &readings).unwrap();
    let batch = decode(&bytes).unwrap();
    assert_eq!(batch, Batch::new(gw.clone(), 42, readings));
    // An empty batch is a schema and the end-of-stream marker.
    assert_eq!(
        decode(&encode(&gw, None, 1, 1, &[]).unwrap()).unwrap(),
        Batch::new(gw, 1, vec![])
    );
}

#[test]
fn dictionaries_past_the_scan_limit_keep_every_value() {
    // 40 meters revisited out of order: the meter dictionary starts as a scan and goes on
    // as a hash once it holds more than SCAN_MAX values, so both find earlier values.
    let gw = GatewayId::parse("gw-1").unwrap();
    let readings: Vec<Reading> = (0..400)
        .map(|i| Reading {
            meter: MeterId::parse(&format!("m{}", (i * 7) % 40)).unwrap(),
            ..reading(i)
        })
        .collect();
    let batch = decode(&encode(&gw, None, 7, 1, &readings).unwrap()).unwrap();
    assert_eq!(batch, Batch::new(gw, 7, readings));
}

#[test]
fn a_body_written_in_chunks_reads_back_as_one_batch() {
    // Chunks with different meters (a replaced dictionary) and the same accounts (not
    // written again), one of them empty.
    let gw = GatewayId::parse("gw-1").unwrap();
    let readings: Vec<Reading> = (0..300)
        .map(|i| Reading {
            meter: MeterId::parse(&format!("m{}", i / 7)).unwrap(),
            ..reading(i)
        })
        .collect();
    let mut stream = StreamEncoder::new(&gw, None, 9, 1).unwrap();
    for chunk in [&readings[..100], &readings[100..100], &readings[100..]] {
        stream.write(chunk).unwrap();
    }
    assert_eq!(stream.rows(), 300);
    let batch = decode(&stream.finish().unwrap()).unwrap();
    assert_eq!(batch, Batch::new(gw, 9, readings));
}

#[test]
fn cut_or_damaged_streams_are_errors_not_panics() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let bytes = encode(&gw, None, 1, 1, &(0..20).map(reading).collect::<Vec<_>>()).unwrap();
    for cut in [0, 8, bytes.len() / 2] {
        let _ = decode(&bytes[..cut]);
    }
    assert!(decode(b"{\"gateway\":\"gw\"}").is_err());
}

#[test]
fn the_epoch_travels_in_the_schema_metadata_and_may_be_absent() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let readings: Vec<Reading> = (0..5).map(reading).collect();
    let bytes = encode(&gw, Some(u64::MAX), 3, 1, &readings).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
    assert_eq!(
        reader
            .schema()
            .metadata()
            .get(crate::META_EPOCH)
            .map(String::as_str),
        Some("18446744073709551615")
    );
    let batch = decode(&bytes).unwrap();
    assert_eq!(
        batch,
        Batch::new(gw.clone(), 3, readings.clone()).with_epoch(Some(u64::MAX))
    );
    // A stream without the key (today's gateways) has no epoch; the reference encoder writes it.
    let bytes = encode(&gw, None, 3, 1, &readings).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
    assert!(!reader.schema().metadata().contains_key(crate::META_EPOCH));
    assert_eq!(decode(&bytes).unwrap().epoch, None);
    let with = Batch::new(gw, 3, readings).with_epoch(Some(7));
    assert_eq!(
        decode(&encode_reference(&with, true).unwrap()).unwrap(),
        with
    );
}

#[test]
fn a_bad_epoch_is_malformed_and_named() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let bytes = encode(&gw, Some(1), 3, 1, &[reading(0)]).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
    let mut metadata = reader.schema().metadata().clone();
    for bad in ["-1", "0x10", "", "18446744073709551616"] {
        metadata.insert(crate::META_EPOCH.to_owned(), bad.to_owned());
        let schema = std::sync::Arc::new(
            reader
                .schema()
                .as_ref()
                .clone()
                .with_metadata(metadata.clone()),
        );
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
        w.finish().unwrap();
        let e = decode(&w.into_inner().unwrap()).unwrap_err().to_string();
        assert!(e.contains("jieneng.epoch"), "{bad}: {e}");
    }
}

#[test]
fn the_reference_encoding_reads_back_too() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let batch = Batch::new(gw, 5, (0..30).map(reading).collect());
    for zstd in [false, true] {
        let bytes = encode_reference(&batch, zstd).unwrap();
        assert_eq!(decode(&bytes).unwrap(), batch, "zstd {zstd}");
    }
}

#[test]
fn both_encoders_write_the_contracts_columns_in_order() {
    let gw = GatewayId::parse("gw-1").unwrap();
    let fields = |bytes: Vec<u8>| {
        let reader = arrow_ipc::reader::StreamReader::try_new(&bytes[..], None).unwrap();
        let schema = reader.schema();
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.is_nullable()))
            .collect::<Vec<_>>()
    };
    let expected: Vec<_> = crate::COLUMNS
        .iter()
        .map(|c| (c.name.to_owned(), c.nullable))
        .collect();
    assert_eq!(
        fields(encode(&gw, None, 1, 1, &[reading(0)]).unwrap()),
        expected
    );
    let batch = Batch::new(gw, 1, vec![reading(0)]);
    assert_eq!(fields(encode_reference(&batch, false).unwrap()), expected);
}
