//! Register decoding and normalization throughput: how many register values one core turns
//! into canonical values (decode) and into readings with deltas, kgce and kgCO2e (normalize).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use device_profiles::decode::Ratios;
use device_profiles::{DecodedValue, decode_register};
use gateway::GatewayConfig;
use gateway::normalize::normalize;
use gateway::source::Sample;
use gateway::spool::SpoolState;
use jieneng_benches::register_dump;

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for profile in ["eastron/sdm630", "abb/b23", "carlogavazzi/em24"] {
        let Some((p, words)) = register_dump(profile) else {
            continue;
        };
        g.throughput(Throughput::Elements(p.registers.len() as u64));
        g.bench_function(profile, |b| {
            b.iter(|| {
                for (r, w) in p.registers.iter().zip(&words) {
                    let _ = black_box(decode_register(
                        r,
                        p.word_order_of(r),
                        black_box(w),
                        Ratios::default(),
                    ));
                }
            })
        });
    }
    g.finish();
}

const SITE: &str = r#"[gateway]
id = "gw-bench"
spool_dir = "/tmp/jieneng-bench-unused"
poll_interval = 1
[forward]
url = "http://127.0.0.1:9/api/v1/batches"
token = "0123456789abcdef0123"
[[device]]
meter = "main"
account = "110108A001"
category = "01"
item = "01A10"
profile = "eastron/sdm630"
source = { type = "modbus-tcp", host = "127.0.0.1" }
"#;

fn normalize_sample(c: &mut Criterion) {
    let Ok(config) = GatewayConfig::parse("bench site", SITE, None) else {
        return;
    };
    let p = &config.devices[0].profile;
    let values: Vec<(usize, DecodedValue)> = p
        .registers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                i,
                DecodedValue {
                    raw: 1.0,
                    value: 1.0,
                    unit: r.quantity.canonical_unit(),
                },
            )
        })
        .collect();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(values.len() as u64));
    let mut state = SpoolState::default();
    let mut ts = 1_767_225_600_000i64;
    let mut energy = 0.0;
    g.bench_function("sdm630 sample", |b| {
        b.iter(|| {
            ts += 1000;
            energy += 0.01;
            let mut v = values.clone();
            for (_, d) in v.iter_mut() {
                d.value = energy;
            }
            let sample = Sample {
                device: 0,
                ts,
                values: v,
            };
            black_box(normalize(&config, &mut state, &sample))
        })
    });
    g.finish();
}

criterion_group!(benches, decode, normalize_sample);
criterion_main!(benches);
