//! Meter status for the dashboard: each meter's latest reading per quantity (is it online, what
//! did it last say) and the data gaps of recent days (readings the gateway flagged `gap`, and
//! silences much longer than the meter's usual interval).
//!
//! Both read the same `readings` view as the reports (files plus the server's unflushed rows),
//! limited to the date partitions of the window asked for, so a meter silent for longer than the
//! window is not listed: the caller picks a window as long as "still worth showing".

use std::collections::BTreeMap;

use arrow::array::Array;
use chrono::NaiveDate;
use reading_model::{AccountCode, Category, EnergyCode, MeterId, Quality, Quantity};
use serde::Serialize;

use super::consumption::{category_total, round6};
use super::scope::{Filter, sql_all};
use super::source::{MeterSum, Prices};
use crate::report::{
    QueryError, Reports, column_floats, column_ints, column_strings, consumption_quantities_sql,
    rfc3339,
};
use reading_model::time::{Granularity, local_midnight_ms};
use storage::{READINGS, partition_date};

/// The latest reading of one (account, meter, quantity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestReading {
    pub account: AccountCode,
    pub meter: MeterId,
    pub category: Category,
    pub item: EnergyCode,
    pub quantity: Quantity,
    pub unit: String,
    /// UTC milliseconds.
    pub ts: i64,
    pub value: f64,
    pub quality: Quality,
}

/// A stretch without the readings a meter usually sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataGap {
    pub account: AccountCode,
    pub meter: MeterId,
    pub quantity: Quantity,
    /// The last reading before the gap, UTC ms (`None` when only the gateway's flag says so and
    /// the reading before lies outside the window).
    pub from_ts: Option<i64>,
    /// The first reading after it.
    pub to_ts: i64,
    /// The gateway flagged the reading `gap` (it knows it missed polls).
    pub flagged: bool,
    /// What the step was judged against, ms: the larger of the meter's median interval in the
    /// window and the interval before the gap.
    pub usual_interval_ms: i64,
}

/// One category's total of one account and period: the figure of the consumption report's total
/// row (main meters, or the sum of the items where there is none), without the item tree and
/// 同比/环比 — for views that need only totals and should not read a year more for them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryTotal {
    pub account: AccountCode,
    /// First local date of the period.
    pub period: NaiveDate,
    pub category: Category,
    pub unit: String,
    pub consumption: f64,
    pub kgce: f64,
    pub kgco2e: f64,
}

/// A silence counts as a gap when it is this many times the meter's median interval.
pub const GAP_FACTOR: i64 = 4;
/// … and at least this long, so a fast-polled meter's scheduling jitter is not a gap.
pub const GAP_MIN_MS: i64 = 5 * 60_000;

impl Reports {
    /// Category totals per account and period for local dates `[from, to)`. Which meters are main
    /// meters is decided over this range (the report decides over its range and the year
    /// before; the two differ only where a main meter of the default relations is silent here).
    pub async fn category_totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        granularity: Granularity,
        filters: &[Filter],
    ) -> Result<Vec<CategoryTotal>, QueryError> {
        let sums = self
            .meter_sums(
                local_midnight_ms(granularity.start(from)),
                local_midnight_ms(to),
                granularity,
                filters,
            )
            .await?;
        let mut groups: BTreeMap<(&AccountCode, NaiveDate, Category, &str), Vec<&MeterSum>> =
            BTreeMap::new();
        for s in &sums {
            groups
                .entry((&s.account, s.period, s.category, s.unit.as_str()))
                .or_default()
                .push(s);
        }
        let mut out = Vec::new();
        let mut prices = Prices::new(self);
        for ((account, period, category, unit), group) in groups {
            let of_category: Vec<&MeterSum> = sums
                .iter()
                .filter(|s| &s.account == account && s.category == category)
                .collect();
            let rel = self.relations(account, category, &of_category);
            let pricing = prices.of(account, category, unit, period);
            if let Some((consumption, kgce, kgco2e)) =
                category_total(category, &group, &rel, pricing)
            {
                out.push(CategoryTotal {
                    account: account.clone(),
                    period,
                    category,
                    unit: unit.to_owned(),
                    consumption: round6(consumption),
                    kgce: round6(kgce),
                    kgco2e: round6(kgco2e),
                });
            }
        }
        Ok(out)
    }

    /// The latest reading of each (account, meter, quantity) in `(since_ms, until_ms]`.
    pub async fn latest_readings(
        &self,
        since_ms: i64,
        until_ms: i64,
        filters: &[Filter],
    ) -> Result<Vec<LatestReading>, QueryError> {
        let (from_date, to_date) = (partition_date(since_ms), partition_date(until_ms));
        let Some(ctx) = self
            .query
            .session_within(Some((from_date.as_str(), to_date.as_str())))
            .await?
        else {
            return Ok(vec![]);
        };
        let sql = format!(
            "SELECT DISTINCT ON (account, meter, quantity) \
                    account, meter, category, item, quantity, unit, \
                    CAST(ts AS BIGINT) AS ts_ms, value, quality \
             FROM {READINGS} \
             WHERE ts > '{from}' AND ts <= '{to}' AND {scope} \
             ORDER BY account, meter, quantity, ts DESC",
            from = rfc3339(since_ms),
            to = rfc3339(until_ms),
            scope = sql_all(filters),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let s = |i, name| column_strings(&b, i, name);
            let (account, meter, category, item, quantity, unit) = (
                s(0, "account")?,
                s(1, "meter")?,
                s(2, "category")?,
                s(3, "item")?,
                s(4, "quantity")?,
                s(5, "unit")?,
            );
            let ts = column_ints(&b, 6, "ts_ms")?;
            let value = column_floats(&b, 7, "value")?;
            let quality = s(8, "quality")?;
            for i in 0..b.num_rows() {
                let parsed = (
                    AccountCode::parse(account.value(i)),
                    MeterId::parse(meter.value(i)),
                    Category::parse(category.value(i)),
                    EnergyCode::parse(item.value(i)),
                    Quantity::parse(quantity.value(i)),
                    Quality::parse(quality.value(i)),
                );
                let (Ok(account), Ok(meter), Ok(category), Ok(item), Ok(quantity), Ok(quality)) =
                    parsed
                else {
                    tracing::warn!(
                        account = account.value(i),
                        meter = meter.value(i),
                        "stored row with an invalid code left out of the meter status"
                    );
                    continue;
                };
                out.push(LatestReading {
                    account,
                    meter,
                    category,
                    item,
                    quantity,
                    unit: unit.value(i).to_owned(),
                    ts: ts.value(i),
                    value: value.value(i),
                    quality,
                });
            }
        }
        Ok(out)
    }

    /// Gaps in the consumption readings of `(since_ms, until_ms]`: steps of at least
    /// [`GAP_MIN_MS`] that the gateway flagged `gap` or that are longer than [`GAP_FACTOR`] × the
    /// meter's usual interval. (A flagged step shorter than that lost no resolution worth a word.)
    pub async fn data_gaps(
        &self,
        since_ms: i64,
        until_ms: i64,
        filters: &[Filter],
    ) -> Result<Vec<DataGap>, QueryError> {
        let (from_date, to_date) = (partition_date(since_ms), partition_date(until_ms));
        let Some(ctx) = self
            .query
            .session_within(Some((from_date.as_str(), to_date.as_str())))
            .await?
        else {
            return Ok(vec![]);
        };
        // A step is compared with the larger of the meter's median step and the step before it,
        // so a meter whose interval changes (hourly history, then 5-second polls) does not turn
        // every old step into a gap.
        let sql = format!(
            "WITH steps AS ( \
                 SELECT account, meter, quantity, quality, CAST(ts AS BIGINT) AS ts_ms, \
                        CAST(ts AS BIGINT) - lag(CAST(ts AS BIGINT)) \
                            OVER (PARTITION BY account, meter, quantity ORDER BY ts) AS step \
                 FROM {READINGS} \
                 WHERE quantity IN ({q}) AND ts > '{from}' AND ts <= '{to}' AND {scope}), \
             paired AS ( \
                 SELECT *, lag(step) OVER (PARTITION BY account, meter, quantity ORDER BY ts_ms) \
                           AS prev_step \
                 FROM steps), \
             usual AS ( \
                 SELECT account, meter, quantity, CAST(median(step) AS BIGINT) AS median_step \
                 FROM steps WHERE step IS NOT NULL GROUP BY account, meter, quantity), \
             judged AS ( \
                 SELECT p.account, p.meter, p.quantity, p.ts_ms, p.step, p.quality, \
                        CASE WHEN p.prev_step IS NOT NULL AND p.prev_step > u.median_step \
                             THEN p.prev_step ELSE coalesce(u.median_step, 0) END AS usual \
                 FROM paired p LEFT JOIN usual u \
                   ON p.account = u.account AND p.meter = u.meter AND p.quantity = u.quantity) \
             SELECT account, meter, quantity, ts_ms - step AS from_ms, ts_ms, \
                    quality = 'gap' AS flagged, usual \
             FROM judged \
             WHERE step >= {GAP_MIN_MS} AND (quality = 'gap' OR step > {GAP_FACTOR} * usual) \
             ORDER BY account, meter, quantity, ts_ms",
            q = consumption_quantities_sql(),
            from = rfc3339(since_ms),
            to = rfc3339(until_ms),
            scope = sql_all(filters),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut out = Vec::new();
        for b in batches {
            let s = |i, name| column_strings(&b, i, name);
            let (account, meter, quantity) = (s(0, "account")?, s(1, "meter")?, s(2, "quantity")?);
            let (from_ms, to_ms) = (column_ints(&b, 3, "from_ms")?, column_ints(&b, 4, "ts_ms")?);
            let flagged = b
                .column(5)
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .ok_or(QueryError::Shape("flagged"))?;
            let usual = column_ints(&b, 6, "usual")?;
            for i in 0..b.num_rows() {
                let (Ok(account), Ok(meter), Ok(quantity)) = (
                    AccountCode::parse(account.value(i)),
                    MeterId::parse(meter.value(i)),
                    Quantity::parse(quantity.value(i)),
                ) else {
                    continue;
                };
                out.push(DataGap {
                    account,
                    meter,
                    quantity,
                    from_ts: (!from_ms.is_null(i)).then(|| from_ms.value(i)),
                    to_ts: to_ms.value(i),
                    flagged: !flagged.is_null(i) && flagged.value(i),
                    usual_interval_ms: usual.value(i),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use chrono::NaiveDate;

    fn reports(dir: &std::path::Path) -> Reports {
        Reports::new(
            crate::Query::new(dir),
            sample::accounts(),
            reading_model::FactorTables::builtin().unwrap(),
        )
    }

    fn ms(y: i32, m: u32, d: u32) -> i64 {
        reading_model::time::local_midnight_ms(NaiveDate::from_ymd_opt(y, m, d).unwrap())
    }

    #[tokio::test]
    async fn latest_reading_per_meter_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        sample::write_days(
            dir.path(),
            NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 2, 4).unwrap(),
        )
        .unwrap();
        let r = reports(dir.path());
        let all = r
            .latest_readings(ms(2026, 2, 1), ms(2026, 2, 10), &[])
            .await
            .unwrap();
        // Nine generated meters and the office's derived main meter, one quantity each.
        assert_eq!(all.len(), 10, "{all:?}");
        // The sample's last reading closes 2026-02-03 at local midnight.
        assert!(all.iter().all(|l| l.ts == ms(2026, 2, 4)), "{all:?}");
        let lighting = all.iter().find(|l| l.meter.as_str() == "lighting").unwrap();
        // 1000 + everything before 2026-02-04 in quarter units.
        let day0 = (NaiveDate::from_ymd_opt(2026, 2, 4).unwrap() - sample::first_day()).num_days();
        let m = sample::METERS[0];
        let q: u32 = (0..day0 as u32)
            .flat_map(|d| (0..4).map(move |s| sample::quarters(&m, d, s)))
            .sum();
        assert_eq!(lighting.value, 1000.0 + f64::from(q) / 4.0);
        let scoped = r
            .latest_readings(
                ms(2026, 2, 1),
                ms(2026, 2, 10),
                &[Filter::Region(
                    super::super::scope::Region::parse("32").unwrap(),
                )],
            )
            .await
            .unwrap();
        assert_eq!(scoped.len(), 2);
        assert!(scoped.iter().all(|l| l.account.as_str() == "320102A004"));
    }

    #[tokio::test]
    async fn a_missing_day_is_a_gap_and_regular_steps_are_not() {
        let dir = tempfile::tempdir().unwrap();
        // Two stretches with 2026-02-03 and 02-04 missing between them: the second starts with
        // a baseline reading, so each meter's step across the hole is 48 h against a usual 6 h.
        // The stretches share no UTC date partition, so both are written as generation 1.
        let d = |day| NaiveDate::from_ymd_opt(2026, 2, day).unwrap();
        sample::write_days(dir.path(), d(1), d(3)).unwrap();
        sample::write_days(dir.path(), d(5), d(7)).unwrap();
        let r = reports(dir.path());
        let gaps = r
            .data_gaps(ms(2026, 2, 1), ms(2026, 2, 8), &[])
            .await
            .unwrap();
        assert_eq!(gaps.len(), 10, "one per meter: {gaps:?}");
        for g in &gaps {
            assert_eq!(g.from_ts, Some(ms(2026, 2, 3)), "{g:?}");
            assert_eq!(g.to_ts, ms(2026, 2, 5), "{g:?}");
            assert_eq!(g.usual_interval_ms, 6 * 3_600_000);
            assert!(!g.flagged);
        }
        // Without the hole, nothing.
        let whole = tempfile::tempdir().unwrap();
        sample::write_days(whole.path(), d(1), d(7)).unwrap();
        let none = reports(whole.path())
            .data_gaps(ms(2026, 2, 1), ms(2026, 2, 8), &[])
            .await
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
    }
}
