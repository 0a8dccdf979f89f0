//! What jieneng's tests build over and over, in one place: a reading to start from
//! ([`reading`], [`ReadingBuilder`]), seeded random readings ([`random_readings`]), a register's
//! series with the cases the stored layout must survive ([`register_series`]), and a gateway
//! site config ([`SiteConfig`]).
//!
//! It depends on `reading-model` only, so unit tests of every crate above the model (storage,
//! query, ingest, gateway) use it as a dev-dependency without linking a second copy of
//! themselves. Test servers are built by the crates that own their configs
//! (`ingest::IngestConfig::loopback`).

mod site;

pub use site::{ModbusMeter, SiteConfig};

use reading_model::{
    AccountCode, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

/// 2026-01-01 00:00 UTC, the instant most tests start from.
pub const T0: i64 = 1_767_225_600_000;

/// The account most tests use: a Haidian (110108) state-organ office building.
pub const ACCOUNT: &str = "110108A001";

/// The gateway most tests use.
pub fn gateway() -> GatewayId {
    GatewayId::parse("gw").unwrap_or_else(|e| unreachable!("a valid gateway id: {e}"))
}

/// An electricity import reading of `meter` of [`ACCOUNT`] (item 01000, kWh, quality good,
/// no kgce or kgCO2e): the row tests start from and change what they need.
pub fn reading(meter: &str, ts: i64, value: f64, delta: Option<f64>) -> Reading {
    ReadingBuilder::new(meter, ts)
        .value(value)
        .delta(delta)
        .build()
}

/// A [`Reading`] built field by field from [`reading`]'s defaults. Codes are given as text and
/// parsed here: a test that names an invalid code fails at once, naming it.
#[derive(Debug, Clone)]
pub struct ReadingBuilder {
    reading: Reading,
}

fn parsed<T, E: std::fmt::Display>(what: &str, text: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| unreachable!("test {what} {text:?}: {e}"))
}

impl ReadingBuilder {
    pub fn new(meter: &str, ts: i64) -> Self {
        Self {
            reading: Reading {
                ts,
                account: parsed("account", ACCOUNT, AccountCode::parse(ACCOUNT)),
                meter: parsed("meter", meter, MeterId::parse(meter)),
                category: Category::Electricity,
                item: parsed("item", "01000", EnergyCode::parse("01000")),
                quantity: Quantity::EnergyImport,
                unit: Unit::KilowattHour,
                value: 0.0,
                delta: None,
                kgce: None,
                kgco2e: None,
                factor: None,
                quality: Quality::Good,
            },
        }
    }

    pub fn account(mut self, code: &str) -> Self {
        self.reading.account = parsed("account", code, AccountCode::parse(code));
        self
    }

    /// The item, and the category its code belongs to.
    pub fn item(mut self, code: &str) -> Self {
        let item = parsed("item", code, EnergyCode::parse(code));
        self.reading.category = item.category();
        self.reading.item = item;
        self
    }

    pub fn quantity(mut self, quantity: Quantity, unit: Unit) -> Self {
        (self.reading.quantity, self.reading.unit) = (quantity, unit);
        self
    }

    pub fn value(mut self, value: f64) -> Self {
        self.reading.value = value;
        self
    }

    pub fn delta(mut self, delta: Option<f64>) -> Self {
        self.reading.delta = delta;
        self
    }

    pub fn kgce(mut self, kgce: Option<f64>) -> Self {
        self.reading.kgce = kgce;
        self
    }

    pub fn kgco2e(mut self, kgco2e: Option<f64>) -> Self {
        self.reading.kgco2e = kgco2e;
        self
    }

    pub fn quality(mut self, quality: Quality) -> Self {
        self.reading.quality = quality;
        self
    }

    pub fn build(self) -> Reading {
        self.reading
    }
}

/// A seeded xorshift generator: the same seed gives the same numbers on every machine.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number in `0..m` (`m` > 0).
    pub fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m.max(1)
    }
}

/// `n` readings from `seed`, with the gateway that sent each: three accounts, five meters whose
/// ids differ only in case and digits, energy import and export and active power, six
/// timestamps 15 minutes apart, so keys repeat and sorting and deduplication have work to do.
pub fn random_readings(seed: u64, n: usize) -> Vec<(GatewayId, Reading)> {
    let mut rng = Xorshift::new(seed);
    let accounts = [ACCOUNT, "110108A002", "310101B001"];
    let meters = ["m10", "m2", "main", "Main", "ahu-3"];
    let quantities = [
        (Quantity::EnergyImport, Unit::KilowattHour),
        (Quantity::PowerActive, Unit::Kilowatt),
        (Quantity::EnergyExport, Unit::KilowattHour),
    ];
    (0..n)
        .map(|_| {
            let (quantity, unit) = quantities[rng.below(3) as usize];
            let gw = ["gw-a", "gw-b"][rng.below(2) as usize];
            let gateway = parsed("gateway", gw, GatewayId::parse(gw));
            let ts = T0 + rng.below(6) as i64 * 900_000;
            let account = accounts[rng.below(3) as usize];
            let meter = meters[rng.below(5) as usize];
            let reading = ReadingBuilder::new(meter, ts)
                .account(account)
                .quantity(quantity, unit)
                .value(rng.below(1000) as f64)
                .delta(Some(rng.below(10) as f64))
                .build();
            (gateway, reading)
        })
        .collect()
}

/// Three energy registers (`m1`, `m3` in hundredths of a kWh, `m2` in thousandths) read every
/// 15 minutes from [`T0`], 60 readings each, with kgce = delta × 0.1229 — and the cases a
/// stored layout must give back exactly: a counter reset without delta (reading 20), a delta
/// that does not match the register's step (30), a value with no short decimal (40) and a meter
/// swapped for one in tenths (45).
pub fn register_series() -> Vec<Reading> {
    let mut rows = Vec::new();
    for (m, (meter, mut scale)) in [("m1", 100.0), ("m2", 1000.0), ("m3", 100.0)]
        .into_iter()
        .enumerate()
    {
        let mut total: i64 = 1_000_000 + m as i64 * 12_345;
        for k in 0..60_i64 {
            let step = k * 37 % 11 + 3;
            total += step;
            let (mut value, mut delta) = (total as f64 / scale, Some(step as f64 / scale));
            match k {
                20 => (total, delta) = (500, None),
                30 => delta = delta.map(|d| d + 0.01),
                40 => value += 1e-9,
                // The meter is swapped for one in tenths of the unit.
                45 => (total, scale) = (total / 10, scale / 10.0),
                _ => {}
            }
            if matches!(k, 20 | 45) {
                value = total as f64 / scale;
            }
            rows.push(
                ReadingBuilder::new(meter, T0 + k * 900_000)
                    .value(value)
                    .delta(delta)
                    .kgce(delta.map(|d| d * 0.1229))
                    .build(),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builders_make_what_they_say() {
        let r = ReadingBuilder::new("main", T0)
            .item("02000")
            .quantity(Quantity::Volume, Unit::CubicMetre)
            .value(12.5)
            .build();
        assert_eq!(
            (r.category, r.item.as_str(), r.unit, r.value),
            (Category::Water, "02000", Unit::CubicMetre, 12.5)
        );
        assert_eq!(random_readings(7, 50), random_readings(7, 50));
        assert_ne!(random_readings(7, 50), random_readings(8, 50));
        let series = register_series();
        assert_eq!(series.len(), 180);
        assert_eq!(series.iter().filter(|r| r.delta.is_none()).count(), 3);
    }
}
