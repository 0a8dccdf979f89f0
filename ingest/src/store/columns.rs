//! The store's in-memory rows, column by column: strings (accounts, meters, factor ids,
//! gateways) interned once and referred to by id, timestamps and numbers in plain vectors.
//!
//! A flush sorts an index permutation of these columns by the storage key and keeps the last
//! arrival per key without building a `String` per row. Keeping readings as rows of `String`s
//! and sorting those took more than half of the server's time under load.

use std::collections::{BTreeMap, HashMap};

use arrow::record_batch::RecordBatch;
use reading_model::{
    AccountCode, Batch, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};
use storage::StoredReading;
use storage::{ReadingRowRef, ReadingsBatchBuilder, partition_date};

const DAY_MS: i64 = 86_400_000;

/// The ids the columns intern.
trait Name: Clone {
    fn name(&self) -> &str;
}

impl Name for AccountCode {
    fn name(&self) -> &str {
        self.as_str()
    }
}

impl Name for MeterId {
    fn name(&self) -> &str {
        self.as_str()
    }
}

impl Name for GatewayId {
    fn name(&self) -> &str {
        self.as_str()
    }
}

impl Name for String {
    fn name(&self) -> &str {
        self
    }
}

/// Each distinct value once, by id; `last` remembers the previous lookup, since neighbouring
/// rows mostly repeat the account and factor.
#[derive(Debug, Clone)]
struct Interner<T> {
    index: HashMap<Box<str>, u32>,
    values: Vec<T>,
    last: Option<u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            values: Vec::new(),
            last: None,
        }
    }
}

impl<T: Name> Interner<T> {
    fn id(&mut self, v: &T) -> u32 {
        if let Some(last) = self.last
            && self.values[last as usize].name() == v.name()
        {
            return last;
        }
        let id = match self.index.get(v.name()) {
            Some(&id) => id,
            None => {
                let id = self.values.len() as u32;
                self.values.push(v.clone());
                self.index.insert(v.name().into(), id);
                id
            }
        };
        self.last = Some(id);
        id
    }

    fn get(&self, id: u32) -> &T {
        &self.values[id as usize]
    }

    fn str(&self, id: u32) -> &str {
        self.values[id as usize].name()
    }

    /// Each id's position in the order of the names, so that comparing ranks compares names.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.str(a).cmp(self.str(b)));
        let mut rank = vec![0; order.len()];
        for (r, id) in order.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }
}

/// Readings in columns, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    accounts: Interner<AccountCode>,
    meters: Interner<MeterId>,
    factors: Interner<String>,
    gateways: Interner<GatewayId>,
    ts: Vec<i64>,
    account: Vec<u32>,
    meter: Vec<u32>,
    category: Vec<Category>,
    item: Vec<EnergyCode>,
    quantity: Vec<Quantity>,
    unit: Vec<Unit>,
    value: Vec<f64>,
    delta: Vec<Option<f64>>,
    kgce: Vec<Option<f64>>,
    kgco2e: Vec<Option<f64>>,
    /// `NO_FACTOR` where the reading has none.
    factor: Vec<u32>,
    quality: Vec<Quality>,
    gateway: Vec<u32>,
}

const NO_FACTOR: u32 = u32::MAX;

/// A date partition's rows of a flush: the date and the row indices in key order.
#[derive(Debug)]
pub struct Partition {
    pub date: String,
    pub rows: Vec<u32>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends the readings of `batch`.
    pub fn push_batch(&mut self, batch: Batch) {
        let gateway = self.gateways.id(&batch.gateway);
        self.reserve(batch.readings.len());
        for r in batch.readings {
            let account = self.accounts.id(&r.account);
            let meter = self.meters.id(&r.meter);
            let factor = match &r.factor {
                Some(f) => self.factors.id(f),
                None => NO_FACTOR,
            };
            self.push(account, meter, &r, factor, gateway);
        }
    }

    fn reserve(&mut self, n: usize) {
        self.ts.reserve(n);
        self.account.reserve(n);
        self.meter.reserve(n);
        self.category.reserve(n);
        self.item.reserve(n);
        self.quantity.reserve(n);
        self.unit.reserve(n);
        self.value.reserve(n);
        self.delta.reserve(n);
        self.kgce.reserve(n);
        self.kgco2e.reserve(n);
        self.factor.reserve(n);
        self.quality.reserve(n);
        self.gateway.reserve(n);
    }

    fn push(&mut self, account: u32, meter: u32, r: &Reading, factor: u32, gateway: u32) {
        self.ts.push(r.ts);
        self.account.push(account);
        self.meter.push(meter);
        self.category.push(r.category);
        self.item.push(r.item);
        self.quantity.push(r.quantity);
        self.unit.push(r.unit);
        self.value.push(r.value);
        self.delta.push(r.delta);
        self.kgce.push(r.kgce);
        self.kgco2e.push(r.kgco2e);
        self.factor.push(factor);
        self.quality.push(r.quality);
        self.gateway.push(gateway);
    }

    /// Appends every row of `other` after these (re-interning its ids).
    pub fn extend(&mut self, other: &Rows) {
        fn map<T: Name>(to: &mut Interner<T>, from: &Interner<T>) -> Vec<u32> {
            from.values.iter().map(|v| to.id(v)).collect()
        }
        let accounts = map(&mut self.accounts, &other.accounts);
        let meters = map(&mut self.meters, &other.meters);
        let factors = map(&mut self.factors, &other.factors);
        let gateways = map(&mut self.gateways, &other.gateways);
        self.reserve(other.len());
        for i in 0..other.len() {
            self.ts.push(other.ts[i]);
            self.account.push(accounts[other.account[i] as usize]);
            self.meter.push(meters[other.meter[i] as usize]);
            self.category.push(other.category[i]);
            self.item.push(other.item[i]);
            self.quantity.push(other.quantity[i]);
            self.unit.push(other.unit[i]);
            self.value.push(other.value[i]);
            self.delta.push(other.delta[i]);
            self.kgce.push(other.kgce[i]);
            self.kgco2e.push(other.kgco2e[i]);
            self.factor.push(match other.factor[i] {
                NO_FACTOR => NO_FACTOR,
                f => factors[f as usize],
            });
            self.quality.push(other.quality[i]);
            self.gateway.push(gateways[other.gateway[i] as usize]);
        }
    }

    /// Row `i` as a [`StoredReading`] (for queries of the live rows).
    pub fn stored(&self, i: usize) -> StoredReading {
        StoredReading {
            gateway: self.gateways.get(self.gateway[i]).clone(),
            reading: Reading {
                ts: self.ts[i],
                account: self.accounts.get(self.account[i]).clone(),
                meter: self.meters.get(self.meter[i]).clone(),
                category: self.category[i],
                item: self.item[i],
                quantity: self.quantity[i],
                unit: self.unit[i],
                value: self.value[i],
                delta: self.delta[i],
                kgce: self.kgce[i],
                kgco2e: self.kgco2e[i],
                factor: match self.factor[i] {
                    NO_FACTOR => None,
                    f => Some(self.factors.get(f).clone()),
                },
                quality: self.quality[i],
            },
        }
    }

    /// Splits the rows by date partition and orders each partition by the storage key
    /// (account, meter, quantity, ts), keeping of rows with the same key the last to arrive.
    pub fn sorted_partitions(&self) -> Vec<Partition> {
        let (account_rank, meter_rank) = (self.accounts.ranks(), self.meters.ranks());
        // Quantities sort by name, as the key compares them.
        let mut quantities: Vec<Quantity> = Quantity::all().collect();
        quantities.sort_unstable_by_key(|q| q.name());
        let mut quantity_rank = [0u8; 64];
        for (r, q) in quantities.into_iter().enumerate() {
            quantity_rank[q as usize] = r as u8;
        }
        // Dates by name, so partition numbers sort like dates (and a day `partition_date`
        // cannot name shares the partition it falls back to).
        let mut day_date: HashMap<i64, String> = HashMap::new();
        let mut last_day = None;
        for &ts in &self.ts {
            let day = ts.div_euclid(DAY_MS);
            if last_day != Some(day) {
                day_date.entry(day).or_insert_with(|| partition_date(ts));
                last_day = Some(day);
            }
        }
        let dates: BTreeMap<&str, u32> = day_date
            .values()
            .map(|d| (d.as_str(), 0))
            .collect::<BTreeMap<_, _>>()
            .into_keys()
            .enumerate()
            .map(|(i, d)| (d, i as u32))
            .collect();
        let day_part: HashMap<i64, u32> = day_date
            .iter()
            .map(|(&day, date)| (day, dates[date.as_str()]))
            .collect();
        let mut keys: Vec<(u32, u32, u32, u8, i64, u32)> = Vec::with_capacity(self.len());
        let mut last: Option<(i64, u32)> = None;
        for i in 0..self.len() {
            let ts = self.ts[i];
            let day = ts.div_euclid(DAY_MS);
            let part = match last {
                Some((d, p)) if d == day => p,
                _ => {
                    let p = day_part[&day];
                    last = Some((day, p));
                    p
                }
            };
            keys.push((
                part,
                account_rank[self.account[i] as usize],
                meter_rank[self.meter[i] as usize],
                quantity_rank[self.quantity[i] as usize],
                ts,
                i as u32,
            ));
        }
        // The row index last: among equal keys the latest arrival sorts last.
        keys.sort_unstable();
        let mut parts: Vec<Partition> = dates
            .keys()
            .map(|d| Partition {
                date: (*d).to_owned(),
                rows: Vec::new(),
            })
            .collect();
        for (n, k) in keys.iter().enumerate() {
            let superseded = keys.get(n + 1).is_some_and(|next| {
                (next.0, next.1, next.2, next.3, next.4) == (k.0, k.1, k.2, k.3, k.4)
            });
            if !superseded {
                parts[k.0 as usize].rows.push(k.5);
            }
        }
        parts.retain(|p| !p.rows.is_empty());
        parts
    }

    /// Rows `indices` (in that order) as a batch of [`storage::readings_schema`], every row of
    /// generation `generation`.
    pub fn record_batch(
        &self,
        indices: &[u32],
        generation: i64,
    ) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut batch = ReadingsBatchBuilder::with_capacity(indices.len());
        for &i in indices {
            let i = i as usize;
            batch.push(ReadingRowRef {
                ts: self.ts[i],
                account: self.accounts.str(self.account[i]),
                meter: self.meters.str(self.meter[i]),
                category: self.category[i].code(),
                item: self.item[i].as_str(),
                quantity: self.quantity[i].name(),
                unit: self.unit[i].symbol(),
                value: self.value[i],
                delta: self.delta[i],
                kgce: self.kgce[i],
                kgco2e: self.kgco2e[i],
                factor: (self.factor[i] != NO_FACTOR).then(|| self.factors.str(self.factor[i])),
                quality: self.quality[i].name(),
                gateway: self.gateways.str(self.gateway[i]),
            });
        }
        batch.finish(generation)
    }
}

#[cfg(test)]
mod tests {
    use storage::{sort_and_dedupe, to_record_batch};

    use super::*;

    /// Readings with repeated keys across batches and gateways, dates and quantities mixed.
    fn batches() -> Vec<Batch> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let accounts = ["110108A001", "110108A002", "310101B001"];
        let meters = ["m10", "m2", "main", "ahu-3", "L2-lighting"];
        let quantities = [
            (Quantity::EnergyImport, Unit::KilowattHour),
            (Quantity::PowerActive, Unit::Kilowatt),
            (Quantity::EnergyExport, Unit::KilowattHour),
        ];
        let t0 = 1_767_225_600_000 - 3 * 900_000;
        (0..40)
            .map(|seq| {
                let gateway = GatewayId::parse(["gw-a", "gw-b"][seq % 2]).unwrap();
                let readings = (0..50)
                    .map(|_| {
                        let (quantity, unit) = quantities[next(3) as usize];
                        let cumulative = quantity.is_cumulative();
                        Reading {
                            ts: t0 + next(8) as i64 * 900_000,
                            account: AccountCode::parse(accounts[next(3) as usize]).unwrap(),
                            meter: MeterId::parse(meters[next(5) as usize]).unwrap(),
                            category: Category::Electricity,
                            item: EnergyCode::parse("01000").unwrap(),
                            quantity,
                            unit,
                            value: next(1000) as f64 / 4.0,
                            delta: cumulative.then(|| next(100) as f64),
                            kgce: (next(2) == 0).then(|| next(100) as f64 * 0.1229),
                            kgco2e: None,
                            factor: (next(2) == 0).then(|| format!("f{}", next(3))),
                            quality: [Quality::Good, Quality::Estimated][next(2) as usize],
                        }
                    })
                    .collect();
                Batch::new(gateway, seq as u64, readings)
            })
            .collect()
    }

    #[test]
    fn partitions_are_sorted_and_deduplicated_like_the_row_rule() {
        let mut rows = Rows::default();
        let mut stored = Vec::new();
        for b in batches() {
            stored.extend(b.readings.iter().map(|r| StoredReading {
                gateway: b.gateway.clone(),
                reading: r.clone(),
            }));
            rows.push_batch(b);
        }
        assert_eq!(rows.len(), stored.len());
        assert_eq!(rows.stored(17), stored[17]);
        let parts = rows.sorted_partitions();
        let dates: Vec<&str> = parts.iter().map(|p| p.date.as_str()).collect();
        assert_eq!(dates, vec!["2025-12-31", "2026-01-01"]);
        let mut total = 0;
        for p in &parts {
            let mut expected: Vec<StoredReading> = stored
                .iter()
                .filter(|r| partition_date(r.reading.ts) == p.date)
                .cloned()
                .collect();
            sort_and_dedupe(&mut expected);
            assert!(expected.len() < stored.len() / 2, "keys repeat");
            assert_eq!(
                rows.record_batch(&p.rows, 7).unwrap(),
                to_record_batch(&expected, 7).unwrap()
            );
            total += p.rows.len();
        }
        // The same after merging in two halves (the path of a flush retried after a failure).
        let mut halves = [Rows::default(), Rows::default()];
        for (n, b) in batches().into_iter().enumerate() {
            halves[n / 20].push_batch(b);
        }
        let mut merged = Rows::default();
        merged.extend(&halves[0]);
        merged.extend(&halves[1]);
        let again = merged.sorted_partitions();
        assert_eq!(again.iter().map(|p| p.rows.len()).sum::<usize>(), total);
        for (a, b) in parts.iter().zip(&again) {
            assert_eq!(
                rows.record_batch(&a.rows, 1).unwrap(),
                merged.record_batch(&b.rows, 1).unwrap()
            );
        }
    }
}
