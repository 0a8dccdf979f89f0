//! The store's background upkeep, run on the flusher thread between flushes: compaction of a
//! date partition's files into one, the hourly and daily rollups of the dates it touched, and
//! retention.
//!
//! **Compaction** reads a partition's live files, keeps one row per key (the highest
//! generation), writes one file named after the generation range it covers (temp file, fsync,
//! rename, fsync directory) and only then lets the old files go: it moves them at once out of
//! the readings tree, to `<data_dir>/superseded/date=…/`, so a tool globbing `readings/` sees
//! each row once, and removes them there after `compact_grace` seconds (a query of ours that
//! listed them just before still opens them: `query` looks there for a listed file that is
//! gone). Our readers skip a file whose range lies inside another's
//! (`storage::partition_files`), so from the rename on they read the new file only, wherever the
//! old ones are. A crash before the rename leaves a hidden temp file (removed at the next start)
//! and the old files; after it, both or some of the old ones, and the next start removes those
//! and whatever `superseded/` holds. A partition holding a file of a stored layout before 4 is
//! compacted even when it is that one file, so old files are rewritten in layout 4 (the first
//! pass after an upgrade does every such partition). Running on the flusher thread means no
//! flush publishes into a partition while it is being compacted, which is what makes "covers
//! every generation in its range" true.
//!
//! **Rollups** of a date are computed from the raw readings of that date and the first instant
//! of the next (periods are `(start, end]`), so a partition that changed dirties its own date
//! and the one before. They are recomputed when the partition is compacted or, with a single
//! file, when it is due; at start every date whose rollup is older than its raw files is due.
//! Late data (a gateway catching up) lands in its own date's partition and so recomputes the
//! old date's rollups.
//!
//! **Retention** removes raw partitions older than `retention_days` and rollups older than
//! `rollup_retention_days` (by UTC date). A partition is first renamed to a hidden name, so a
//! crash mid-removal never leaves a half-removed date visible. Rollups of dates past the raw
//! retention are never recomputed: there is no raw data left to recompute them from.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use storage::rollup::{
    DAY_MS, FILE as ROLLUP_FILE, MONTHLY, Period, ROLLUPS, month_rollup, month_rollup_dir,
    months_of_day, rollup, rollup_dir, write_month_rollup, write_rollup,
};
use storage::{
    DataFile, READINGS, SUPERSEDED, dedupe_batch, file_layout, file_name, partition_dir,
    partition_files, partitions, read_files, superseded_dir, write_batch,
};
use tracing::{info, warn};

use storage::publish::publish_file;

use super::{StoreError, StoreMetrics};
use crate::config::StorageConfig;

/// What a maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions compacted.
    pub compacted: usize,
    /// Files merged away by those compactions.
    pub files_merged: usize,
    /// Dates whose rollups were recomputed.
    pub rollups: usize,
    /// Date partitions removed by retention (raw and rollups).
    pub expired: usize,
}

#[derive(Debug)]
pub(super) struct Maintenance {
    data_dir: PathBuf,
    config: StorageConfig,
    /// Partitions written to since their last compaction/rollup, and since when (`None`:
    /// found so at start, due at once).
    dirty: BTreeMap<String, Option<Instant>>,
    /// Compacted-away files (in `superseded/`, or where they could not be moved from) and when
    /// they were replaced.
    doomed: Vec<(PathBuf, Instant)>,
    /// Whether the first pass is still to build the monthly rollups of months that have daily
    /// rollups but none of their own (a data directory from before monthly rollups).
    months_missing: bool,
    metrics: Arc<StoreMetrics>,
}

fn dir_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Dir {
        path: path.to_path_buf(),
        source,
    }
}

fn arrow_err(path: &Path) -> impl Fn(arrow::error::ArrowError) -> StoreError + '_ {
    move |source| StoreError::Arrow {
        path: path.to_path_buf(),
        source,
    }
}

fn date_add(date: &str, days: i64) -> Option<String> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(
        (d + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string(),
    )
}

fn day_start_ms(date: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Whether any of `files` is of a stored layout before 4, which compaction rewrites.
fn older_layout(files: &[DataFile]) -> Result<bool, StoreError> {
    for f in files {
        if file_layout(&f.path)? < 4 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Removes the hidden temp files a crash mid-write left in `dir`.
fn remove_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(".tmp")
            && let Err(err) = fs::remove_file(e.path())
        {
            warn!(file = %e.path().display(), error = %err, "cannot remove a temp file");
        }
    }
}

impl Maintenance {
    /// Looks at what is on disk: leftovers of a crash, partitions due for compaction, stale
    /// rollups. Returns the next free generation too.
    pub(super) fn open(
        data_dir: &Path,
        config: StorageConfig,
        metrics: Arc<StoreMetrics>,
    ) -> Result<(Self, u64), StoreError> {
        let table = data_dir.join(READINGS);
        let now = Instant::now();
        let mut m = Self {
            data_dir: data_dir.to_path_buf(),
            config,
            dirty: BTreeMap::new(),
            doomed: Vec::new(),
            months_missing: true,
            metrics,
        };
        for period in Period::ALL {
            let table = data_dir.join(ROLLUPS).join(period.name());
            for date in partitions(&table).map_err(dir_err(&table))? {
                remove_temp_files(&rollup_dir(data_dir, period, &date));
            }
        }
        let mut next_gen = 1;
        // Nobody can be reading what compactions before a crash replaced: this process has only
        // just started. Their generations still count (a superseded file may be the highest).
        let left = data_dir.join(SUPERSEDED);
        for date in partitions(&left).map_err(dir_err(&left))? {
            let dir = superseded_dir(data_dir, &date);
            let (files, more) = partition_files(&dir).map_err(dir_err(&dir))?;
            for f in files.iter().chain(&more) {
                next_gen = next_gen.max(f.hi + 1);
            }
            fs::remove_dir_all(&dir).map_err(dir_err(&dir))?;
        }
        for date in partitions(&table).map_err(dir_err(&table))? {
            let dir = partition_dir(data_dir, &date);
            remove_temp_files(&dir);
            let (live, superseded) = partition_files(&dir).map_err(dir_err(&dir))?;
            for f in live.iter().chain(&superseded) {
                next_gen = next_gen.max(f.hi + 1);
            }
            for f in superseded {
                match fs::remove_file(&f.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => m.doomed.push((f.path, now)),
                }
            }
            let newest = live.iter().map(|f| f.modified).max();
            let rollup = modified(&rollup_dir(data_dir, Period::Daily, &date).join(ROLLUP_FILE));
            if live.len() > 1 || newest > rollup || older_layout(&live)? {
                m.dirty.insert(date, None);
            }
        }
        Ok((m, next_gen))
    }

    /// Partitions a flush just wrote to.
    pub(super) fn touched(&mut self, dates: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        for d in dates {
            self.dirty.entry(d).or_insert(Some(now));
        }
    }

    /// One pass: compacts and rolls up the partitions that are due (all dirty ones if
    /// `force`), removes compacted-away files past their grace (all if `force`), applies
    /// retention.
    pub(super) fn run(&mut self, force: bool) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        report.expired = self.expire(&today)?;
        let raw_cutoff = self.cutoff(&today, self.config.retention_days);
        let after = Duration::from_secs_f64(self.config.compact_after);
        let mut rollup_dates = BTreeSet::new();
        let dirty: Vec<(String, Option<Instant>)> =
            self.dirty.iter().map(|(d, t)| (d.clone(), *t)).collect();
        for (date, since) in dirty {
            let dir = partition_dir(&self.data_dir, &date);
            let (live, _) = partition_files(&dir).map_err(dir_err(&dir))?;
            let due = force
                || since.is_none_or(|t| t.elapsed() >= after)
                || live.len() >= self.config.compact_files;
            if !due {
                continue;
            }
            if live.len() > 1 || older_layout(&live)? {
                let merged = self.compact(&date, &live)?;
                report.compacted += 1;
                report.files_merged += merged;
            }
            self.dirty.remove(&date);
            rollup_dates.insert(date.clone());
            if let Some(before) = date_add(&date, -1) {
                rollup_dates.insert(before);
            }
        }
        let mut months = BTreeSet::new();
        if std::mem::take(&mut self.months_missing) {
            let daily = self.data_dir.join(ROLLUPS).join(Period::Daily.name());
            for date in partitions(&daily).map_err(dir_err(&daily))? {
                if let Some(day) = day_start_ms(&date).map(|ms| ms.div_euclid(DAY_MS)) {
                    months.extend(months_of_day(day).into_iter().filter(|&m| {
                        !month_rollup_dir(&self.data_dir, m)
                            .join(ROLLUP_FILE)
                            .exists()
                    }));
                }
            }
        }
        for date in rollup_dates {
            if raw_cutoff.as_deref().is_some_and(|c| date.as_str() < c) {
                warn!(
                    date,
                    "readings arrived for a date past the retention; its rollups are kept as they were and the readings are removed"
                );
                continue;
            }
            self.rollup(&date)?;
            report.rollups += 1;
            if let Some(day) = day_start_ms(&date).map(|ms| ms.div_euclid(DAY_MS)) {
                months.extend(months_of_day(day));
            }
        }
        // The months those dates feed, once each of their dates is rolled up: a late reading
        // rebuilds its month here, right after its date.
        for month in months {
            self.month_rollup(month)?;
        }
        let grace = Duration::from_secs_f64(self.config.compact_grace);
        let mut kept = Vec::new();
        for (path, since) in std::mem::take(&mut self.doomed) {
            if !force && since.elapsed() < grace {
                kept.push((path, since));
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot remove a compacted-away file; retrying later");
                    kept.push((path, since));
                }
            }
        }
        self.doomed = kept;
        Ok(report)
    }

    /// Merges `live` (at least two files, or one of an older layout) of partition `date` into
    /// one layout-4 file; returns how many files it replaced.
    fn compact(&mut self, date: &str, live: &[DataFile]) -> Result<usize, StoreError> {
        let dir = &partition_dir(&self.data_dir, date);
        let started = Instant::now();
        let result = (|| {
            let all = read_files(live)?;
            let rows_in = all.num_rows();
            let merged = dedupe_batch(&all).map_err(arrow_err(dir))?;
            let lo = live.iter().map(|f| f.lo).min().unwrap_or(0);
            let hi = live.iter().map(|f| f.hi).max().unwrap_or(0);
            let name = file_name(lo, hi);
            publish_file(dir, &name, |w| write_batch(w, &merged))?;
            Ok::<_, StoreError>((rows_in, merged.num_rows(), name))
        })();
        let micros = started.elapsed().as_micros() as u64;
        let m = &self.metrics;
        match result {
            Ok((rows_in, rows_out, name)) => {
                m.compactions.fetch_add(1, Ordering::Relaxed);
                m.compaction_files
                    .fetch_add(live.len() as u64, Ordering::Relaxed);
                m.compaction_micros.fetch_add(micros, Ordering::Relaxed);
                m.compaction_last_micros.store(micros, Ordering::Relaxed);
                info!(
                    partition = %dir.display(),
                    files = live.len(),
                    rows_in,
                    rows_out,
                    ms = micros / 1000,
                    "compacted"
                );
                // A file of the same name was replaced by the rename itself.
                let replaced = live.iter().filter(|f| f.path != dir.join(&name));
                self.move_out(date, replaced);
                Ok(live.len())
            }
            Err(e) => {
                m.compaction_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Moves compacted-away files of partition `date` out of the readings tree into
    /// `superseded/`, where they wait out the grace period. A file that cannot be moved stays
    /// (our readers skip it as superseded) and is removed after the grace period where it is.
    fn move_out<'a>(&mut self, date: &str, files: impl Iterator<Item = &'a DataFile>) {
        let now = Instant::now();
        let to = superseded_dir(&self.data_dir, date);
        if let Err(e) = fs::create_dir_all(&to) {
            warn!(dir = %to.display(), error = %e, "cannot create the directory of compacted-away files");
        }
        for f in files {
            let target = f.path.file_name().map(|n| to.join(n));
            match target.map(|t| fs::rename(&f.path, &t).map(|()| t)) {
                Some(Ok(moved)) => self.doomed.push((moved, now)),
                Some(Err(e)) => {
                    warn!(file = %f.path.display(), error = %e, "cannot move a compacted-away file out of the readings tree");
                    self.metrics
                        .superseded_unmoved
                        .fetch_add(1, Ordering::Relaxed);
                    self.doomed.push((f.path.clone(), now));
                }
                None => self.doomed.push((f.path.clone(), now)),
            }
        }
        // So that after a power loss the moves are what a glob sees; a move undone by one is
        // still a superseded file to our readers, and the next start removes it.
        let dir = partition_dir(&self.data_dir, date);
        if let Err(e) = storage::publish::sync_dir(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot fsync a partition directory");
        }
    }

    /// Recomputes the hourly and daily rollups of `date` from the raw readings.
    fn rollup(&self, date: &str) -> Result<(), StoreError> {
        let (Some(from), Some(next)) = (day_start_ms(date), date_add(date, 1)) else {
            return Ok(());
        };
        let mut batches: Vec<RecordBatch> = Vec::new();
        for d in [date, next.as_str()] {
            let dir = partition_dir(&self.data_dir, d);
            let (live, _) = partition_files(&dir).map_err(dir_err(&dir))?;
            let all = read_files(&live)?;
            batches.push(dedupe_batch(&all).map_err(arrow_err(&dir))?);
        }
        for period in Period::ALL {
            let dir = rollup_dir(&self.data_dir, period, date);
            let rows = rollup(&batches, from, period).map_err(arrow_err(&dir))?;
            if rows.num_rows() == 0 && !dir.join(ROLLUP_FILE).exists() {
                continue;
            }
            publish_file(&dir, ROLLUP_FILE, |w| write_rollup(w, &rows))?;
        }
        self.metrics.rollups.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Rebuilds the monthly rollup of the Beijing month starting at `month` from its daily and
    /// hourly rollups, if every date of it has current ones (see [`storage::rollup::month_rollup`]).
    fn month_rollup(&self, month: NaiveDate) -> Result<(), StoreError> {
        let dir = month_rollup_dir(&self.data_dir, month);
        let Some((rows, inputs)) = month_rollup(&self.data_dir, month)? else {
            return Ok(());
        };
        Ok(publish_file(&dir, ROLLUP_FILE, |w| {
            write_month_rollup(w, &rows, &inputs)
        })?)
    }

    fn cutoff(&self, today: &str, days: u32) -> Option<String> {
        (days > 0)
            .then(|| date_add(today, -i64::from(days) + 1))
            .flatten()
    }

    /// Removes raw partitions and rollups past their retention; returns how many.
    fn expire(&mut self, today: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        let rollups = self.data_dir.join(ROLLUPS);
        let mut tables = vec![(self.data_dir.join(READINGS), self.config.retention_days)];
        for p in Period::ALL {
            tables.push((rollups.join(p.name()), self.config.rollup_retention_days));
        }
        for (table, days) in tables {
            let Some(cutoff) = self.cutoff(today, days) else {
                continue;
            };
            for date in partitions(&table).map_err(dir_err(&table))? {
                if date.as_str() >= cutoff.as_str() {
                    break;
                }
                let dir = table.join(format!("date={date}"));
                let hidden = table.join(format!(".expired-date={date}"));
                // Renamed first: a crash halfway through the removal leaves no half of a date
                // visible to readers.
                fs::rename(&dir, &hidden).map_err(dir_err(&dir))?;
                fs::remove_dir_all(&hidden).map_err(dir_err(&hidden))?;
                self.dirty.remove(&date);
                removed += 1;
                info!(partition = %dir.display(), "removed by retention");
            }
            // Leftovers of a removal a crash interrupted.
            for e in fs::read_dir(&table).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(".expired-") {
                    fs::remove_dir_all(e.path()).map_err(dir_err(&e.path()))?;
                }
            }
        }
        // A monthly rollup goes with the last of its dates' rollups: before that it is what
        // month and year reports read.
        if let Some(cutoff) = self.cutoff(today, self.config.rollup_retention_days) {
            let table = rollups.join(MONTHLY);
            for e in fs::read_dir(&table).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let next_month = name
                    .strip_prefix("month=")
                    .and_then(|m| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok())
                    .and_then(|m| m.checked_add_months(chrono::Months::new(1)))
                    .map(|next| next.format("%Y-%m-%d").to_string());
                if next_month.is_some_and(|d| d.as_str() < cutoff.as_str()) {
                    fs::remove_dir_all(e.path()).map_err(dir_err(&e.path()))?;
                    removed += 1;
                    info!(partition = %e.path().display(), "removed by retention");
                }
            }
        }
        self.metrics
            .partitions_expired
            .fetch_add(removed as u64, Ordering::Relaxed);
        Ok(removed)
    }
}
