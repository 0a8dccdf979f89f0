//! The dashboard's live tiles as pure functions over what the reports read: an account's
//! totals of a day by category ([`totals_of`]) and its current active power ([`power_meters`],
//! [`current_power`]). `api` serves them as `GET /api/v1/live`.

use reading_model::{AccountCode, Category, Quantity};
use serde::Serialize;

use crate::Account;
use crate::report::status::{CategoryTotal, LatestReading};

/// The meter a channel belongs to: `main:L1` → `main` (per-phase and firmware channels are
/// stored as `<meter>:<channel>`).
pub fn base_meter(meter: &str) -> &str {
    meter.split(':').next().unwrap_or(meter)
}

/// Today's (or any period's) totals of one account, by category, from the report's rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayTotals {
    /// Electricity, kWh.
    pub energy_kwh: f64,
    /// All energy categories (not water), standard coal.
    pub kgce: f64,
    pub kgco2e: f64,
    pub water_m3: Option<f64>,
    pub categories: Vec<TileCategory>,
}

/// A category's line of today's tiles.
#[derive(Debug, Clone, Serialize)]
pub struct TileCategory {
    pub category: String,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub unit: String,
    pub consumption: f64,
    pub kgce: f64,
    pub kgco2e: f64,
}

pub fn totals_of(totals: &[CategoryTotal], account: &AccountCode) -> DayTotals {
    let mut t = DayTotals::default();
    for r in totals.iter().filter(|r| &r.account == account) {
        match r.category {
            Category::Water => *t.water_m3.get_or_insert(0.0) += r.consumption,
            c => {
                if c == Category::Electricity {
                    t.energy_kwh += r.consumption;
                }
                t.kgce += r.kgce;
                t.kgco2e += r.kgco2e;
            }
        }
        t.categories.push(TileCategory {
            category: r.category.code().to_owned(),
            name_zh: r.category.name_zh(),
            name_en: r.category.name_en(),
            unit: r.unit.clone(),
            consumption: r.consumption,
            kgce: r.kgce,
            kgco2e: r.kgco2e,
        });
    }
    t.energy_kwh = round6(t.energy_kwh);
    t.kgce = round6(t.kgce);
    t.kgco2e = round6(t.kgco2e);
    t.water_m3 = t.water_m3.map(round6);
    t
}

pub fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The meters whose power is the account's: configured electricity main meters, else meters on
/// the electricity total item, else every electricity meter.
pub fn power_meters(account: &Account, latest: &[&LatestReading]) -> Vec<String> {
    let configured: Vec<String> = account
        .main_meter
        .iter()
        .filter(|m| m.category == Category::Electricity)
        .map(|m| m.meter.to_string())
        .collect();
    if !configured.is_empty() {
        return configured;
    }
    let electricity = latest
        .iter()
        .filter(|l| l.category == Category::Electricity);
    let total = Category::Electricity.total_code();
    let mut on_total: Vec<String> = electricity
        .clone()
        .filter(|l| l.item == total)
        .map(|l| base_meter(l.meter.as_str()).to_owned())
        .collect();
    if on_total.is_empty() {
        on_total = electricity
            .map(|l| base_meter(l.meter.as_str()).to_owned())
            .collect();
    }
    on_total.sort();
    on_total.dedup();
    on_total
}

/// Current active power of the meters, kW, from readings fresher than the offline limit: a
/// meter's own total where it has one, else the sum of its phases. `None` when none is fresh.
pub fn current_power(
    meters: &[String],
    latest: &[&LatestReading],
    fresh_after: i64,
) -> Option<(f64, i64)> {
    let mut sum = None::<(f64, i64)>;
    for m in meters {
        let fresh = |l: &&&LatestReading| {
            l.quantity == Quantity::PowerActive
                && l.ts > fresh_after
                && base_meter(l.meter.as_str()) == m
        };
        let own: Vec<_> = latest
            .iter()
            .filter(fresh)
            .filter(|l| l.meter.as_str() == m)
            .collect();
        let parts: Vec<_> = if own.is_empty() {
            latest.iter().filter(fresh).collect()
        } else {
            own
        };
        for l in parts {
            let e = sum.get_or_insert((0.0, l.ts));
            e.0 += l.value;
            e.1 = e.1.max(l.ts);
        }
    }
    sum.map(|(kw, ts)| (round6(kw), ts))
}

#[cfg(test)]
mod tests {
    use reading_model::{EnergyCode, MeterId, Quality};

    use super::*;
    use crate::alert::tests::account;

    fn power(meter: &str, item: &str, ts: i64, kw: f64) -> LatestReading {
        LatestReading {
            account: AccountCode::parse("110108D002").unwrap(),
            meter: MeterId::parse(meter).unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse(item).unwrap(),
            quantity: Quantity::PowerActive,
            unit: "kW".into(),
            ts,
            value: kw,
            quality: Quality::Good,
        }
    }

    #[test]
    fn power_is_the_main_meters_own_total_or_the_sum_of_its_phases() {
        let latest = [
            power("main", "01000", 1_000, 12.0),
            power("main:L1", "01000", 1_000, 4.0),
            power("main:L2", "01000", 1_000, 4.0),
            power("main:L3", "01000", 1_000, 4.0),
            power("lighting", "01A10", 1_000, 3.0),
            power("old:L1", "01000", 1_000, 1.5),
            power("old:L2", "01000", 1_000, 2.5),
            power("stale", "01000", 10, 99.0),
        ];
        let refs: Vec<&LatestReading> = latest.iter().collect();
        let a = account("");
        // Meters on the total item are the account's; "lighting" is their sub-meter.
        let meters = power_meters(&a, &refs);
        assert_eq!(meters, ["main", "old", "stale"]);
        // main's own total (not its phases too), old's phases, stale left out.
        assert_eq!(current_power(&meters, &refs, 100), Some((16.0, 1_000)));
        // Configured relations name the main meter.
        let a = account(
            "[[main_meter]]\nmeter = \"main\"\ncategory = \"01\"\nsub_meters = [\"lighting\"]\n",
        );
        assert_eq!(power_meters(&a, &refs), ["main"]);
        assert_eq!(current_power(&power_meters(&a, &refs), &refs, 2_000), None);
    }
}
