//! The gateway writes a poll cycle's batch as one Arrow IPC stream of several record batches
//! (4,096 readings each, `gateway::wire::StreamEncoder`), whose meter dictionary is replaced
//! from one record batch to the next while the others are written once. Ingest's own decoder,
//! the contract, must read every row of such a body back exactly.

use gateway::wire::StreamEncoder;
use ingest::decode::{Encoding, Format, decode};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

fn reading(i: usize) -> anyhow::Result<Reading> {
    let energy = i % 40 == 38;
    Ok(Reading {
        ts: 1_767_225_600_000 + (i / 40) as i64 * 1000,
        account: AccountCode::parse(if i.is_multiple_of(3) {
            "110108A001"
        } else {
            "110108A002"
        })?,
        // Forty registers per meter, as the load run's meters have.
        meter: MeterId::parse(&format!("m{:04}", i / 40))?,
        category: Category::Electricity,
        item: EnergyCode::parse("01000")?,
        quantity: if energy {
            Quantity::EnergyImport
        } else {
            Quantity::Voltage
        },
        unit: if energy {
            Unit::KilowattHour
        } else {
            Unit::Volt
        },
        value: i as f64 * 0.5,
        delta: energy.then_some(0.01),
        kgce: energy.then_some(0.01 * 0.1229),
        kgco2e: energy.then_some(0.01 * 0.6361),
        factor: energy.then(|| "mee-nbs-2023/grid/华北".to_owned()),
        quality: if i == 77 { Quality::Gap } else { Quality::Good },
    })
}

#[test]
fn a_body_of_several_record_batches_is_read_whole_by_ingest() -> anyhow::Result<()> {
    let gw = GatewayId::parse("gw-chunks")?;
    let readings: Vec<Reading> = (0..10_000).map(reading).collect::<Result<_, _>>()?;
    let mut stream = StreamEncoder::new(&gw, None, 12, 1)?;
    for chunk in readings.chunks(4096) {
        stream.write(chunk)?;
    }
    let body = stream.finish()?;
    let batch = decode(
        &body,
        Format::ArrowStream,
        Encoding::Identity,
        &gw,
        64 * 1024 * 1024,
    )?;
    assert_eq!(batch, Batch::new(gw, 12, readings));
    Ok(())
}
