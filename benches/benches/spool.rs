//! Spool throughput: batches appended (fsync), read back and acknowledged per second, against
//! what the file-per-batch spool cost (an fsynced create + rename + directory fsync per batch),
//! and how long opening a spool takes (every record checked) after a long ingest outage.
//!
//! The spool lives under `JIENENG_BENCH_DIR` (default `/var/tmp`), on a real disk: fsync is
//! the cost being measured.

// Setup failing should stop a benchmark run loudly, not be worked around.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::spool::{Spool, SpoolLimits, write_atomic};
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

fn bench_dir() -> PathBuf {
    std::env::var_os("JIENENG_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

fn batch(seq: u64, readings: usize) -> Batch {
    let r = |i: usize| Reading {
        ts: 1_767_225_600_000 + i as i64 * 1000,
        account: AccountCode::parse("110108A001").unwrap(),
        meter: MeterId::parse("main").unwrap(),
        category: Category::Electricity,
        item: EnergyCode::parse("01A10").unwrap(),
        quantity: Quantity::EnergyImport,
        unit: Unit::KilowattHour,
        value: 1000.0 + i as f64 * 0.25,
        delta: Some(0.25),
        kgce: Some(0.25 * 0.1229),
        kgco2e: Some(0.25 * 0.6361),
        factor: Some("mee-nbs-2023/grid/华北".into()),
        quality: Quality::Good,
    };
    Batch::new(
        GatewayId::parse("gw-bench").unwrap(),
        seq,
        (0..readings).map(r).collect(),
    )
}

fn append_read_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for readings in [100, 1000] {
        let b = batch(0, readings);
        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolLimits::default(), |_, _| {}).unwrap();
        let mut seq = 0u64;
        g.bench_function(
            format!("segments append+read+ack/{readings} readings"),
            |bench| {
                bench.iter(|| {
                    let mut b = b.clone();
                    b.seq = seq;
                    spool.append(&b).unwrap();
                    black_box(spool.read(seq).unwrap());
                    spool.remove(seq).unwrap();
                    seq += 1;
                })
            },
        );

        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let mut seq = 0u64;
        g.bench_function(
            format!("file per batch append+read+delete/{readings} readings"),
            |bench| {
                bench.iter(|| {
                    let path = dir.path().join(format!("{seq:020}.batch"));
                    write_atomic(&path, &serde_json::to_vec(&b).unwrap()).unwrap();
                    let bytes = std::fs::read(&path).unwrap();
                    black_box(serde_json::from_slice::<Batch>(&bytes).unwrap());
                    std::fs::remove_file(&path).unwrap();
                    seq += 1;
                })
            },
        );
    }
    g.finish();
}

fn open_after_outage(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool open");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // A day of one batch a minute, 100 readings each, none acknowledged.
    let batches = 1440;
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    {
        let (spool, _) = Spool::open(dir.path(), SpoolLimits::default(), |_, _| {}).unwrap();
        for seq in 0..batches {
            spool.append(&batch(seq, 100)).unwrap();
        }
    }
    g.throughput(Throughput::Elements(batches));
    g.bench_function("1440 batches of 100 readings", |bench| {
        bench.iter(|| {
            let (spool, _) = Spool::open(dir.path(), SpoolLimits::default(), |_, _| {}).unwrap();
            black_box(spool.pending_count())
        })
    });
    g.finish();
}

criterion_group!(benches, append_read_ack, open_after_outage);
criterion_main!(benches);
