//! The durable store: one writer thread owns the WAL, the per-gateway high-water sequence
//! numbers and the in-memory rows; one flusher thread turns rows into Parquet.
//!
//! Appends are group-committed: the writer takes every batch waiting at that moment, writes
//! them, fsyncs once and only then answers each. A batch whose (gateway, seq) is not above the
//! gateway's high-water mark is a retry and is answered as a duplicate without being stored.
//!
//! A flush rotates the WAL, hands the rows and a snapshot of the high-water marks to the
//! flusher, which publishes one Parquet file per date partition (temp file, fsync, rename,
//! fsync directory), then records the marks in `ingest-state.json`, then deletes the closed WAL
//! segments. A crash at any point leaves either the WAL segment or the Parquet file (or both —
//! replay skips batches the state file already covers).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use query::storage::{
    StoredReading, partition_date, partition_dir, sort_and_dedupe, write_parquet,
};
use reading_model::{Batch, GatewayId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::wal::{self, Wal, WalError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("parquet {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("state {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("the store is shutting down")]
    Closed,
}

/// What became of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored {
        rows: usize,
    },
    /// Already stored (a retry); nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub rows: usize,
    pub files: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    high_water: BTreeMap<String, u64>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub batches: AtomicU64,
    pub duplicates: AtomicU64,
    pub rows: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub flush_micros: AtomicU64,
    pub files_published: AtomicU64,
    pub rows_in_memory: AtomicU64,
}

enum Command {
    Append(Batch, oneshot::Sender<Result<Appended, StoreError>>),
    Flush(oneshot::Sender<Result<FlushReport, StoreError>>),
}

struct FlushJob {
    rows: Vec<StoredReading>,
    high_water: HashMap<GatewayId, u64>,
    closed_segment: u64,
    waiters: Vec<oneshot::Sender<Result<FlushReport, StoreError>>>,
}

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    pub metrics: Arc<StoreMetrics>,
}

/// Threads to join at shutdown.
#[derive(Debug)]
pub struct StoreThreads {
    writer: std::thread::JoinHandle<()>,
    flusher: std::thread::JoinHandle<()>,
}

impl StoreThreads {
    pub fn join(self) {
        let _ = self.writer.join();
        let _ = self.flusher.join();
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append(b, _) => write!(f, "Append({}#{})", b.gateway, b.seq),
            Self::Flush(_) => write!(f, "Flush"),
        }
    }
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ingest-state.json")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens the store under `data_dir`: replays the WAL into memory and starts the threads.
    pub fn open(data_dir: &Path, flush_rows: usize) -> Result<(Self, StoreThreads), StoreError> {
        let sp = state_path(data_dir);
        let state: State = match fs::read(&sp) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::State {
                path: sp.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(StoreError::State {
                    path: sp,
                    message: e.to_string(),
                });
            }
        };
        let mut high_water: HashMap<GatewayId, u64> = state
            .high_water
            .into_iter()
            .filter_map(|(g, s)| Some((GatewayId::parse(&g).ok()?, s)))
            .collect();
        let (wal, replay) = Wal::open(&data_dir.join("wal"))?;
        for (path, offset) in &replay.truncated {
            warn!(segment = %path.display(), kept_bytes = offset, "WAL segment had a torn tail (an unacknowledged write); cut");
        }
        let mut rows = Vec::new();
        let mut replayed = 0usize;
        for b in replay.batches {
            if high_water.get(&b.gateway).is_some_and(|&hw| b.seq <= hw) {
                continue; // already published before the crash
            }
            high_water.insert(b.gateway.clone(), b.seq);
            replayed += 1;
            rows.extend(b.readings.into_iter().map(|reading| StoredReading {
                gateway: b.gateway.clone(),
                reading,
            }));
        }
        if replayed > 0 {
            info!(batches = replayed, rows = rows.len(), "replayed WAL");
        }
        let metrics = Arc::new(StoreMetrics::default());
        metrics
            .rows_in_memory
            .store(rows.len() as u64, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4096);
        let (flush_tx, flush_rx) = std::sync::mpsc::channel::<FlushJob>();
        let memtable = Arc::new(Mutex::new(rows));
        let writer = {
            let metrics = metrics.clone();
            let memtable = memtable.clone();
            std::thread::Builder::new()
                .name("ingest-writer".into())
                .spawn(move || {
                    writer_loop(rx, wal, high_water, memtable, flush_tx, flush_rows, metrics)
                })
                .map_err(|e| StoreError::State {
                    path: data_dir.to_path_buf(),
                    message: format!("spawn writer: {e}"),
                })?
        };
        let flusher = {
            let metrics = metrics.clone();
            let data_dir = data_dir.to_path_buf();
            std::thread::Builder::new()
                .name("ingest-flusher".into())
                .spawn(move || flusher_loop(flush_rx, data_dir, memtable, metrics))
                .map_err(|e| StoreError::State {
                    path: PathBuf::new(),
                    message: format!("spawn flusher: {e}"),
                })?
        };
        Ok((Self { tx, metrics }, StoreThreads { writer, flusher }))
    }

    /// Appends a batch; returns once it is durable (or recognised as a duplicate).
    pub async fn append(&self, batch: Batch) -> Result<Appended, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(batch, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes every acknowledged row to Parquet; returns when published.
    pub async fn flush(&self) -> Result<FlushReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn writer_loop(
    mut rx: mpsc::Receiver<Command>,
    mut wal: Wal,
    mut high_water: HashMap<GatewayId, u64>,
    memtable: Arc<Mutex<Vec<StoredReading>>>,
    flush_tx: std::sync::mpsc::Sender<FlushJob>,
    flush_rows: usize,
    metrics: Arc<StoreMetrics>,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut accepted: Vec<(Batch, oneshot::Sender<Result<Appended, StoreError>>)> = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut group_hw: HashMap<GatewayId, u64> = HashMap::new();
        for cmd in group {
            match cmd {
                Command::Append(b, reply) => {
                    let hw = group_hw
                        .get(&b.gateway)
                        .or_else(|| high_water.get(&b.gateway))
                        .copied();
                    if hw.is_some_and(|hw| b.seq <= hw) {
                        metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Ok(Appended::Duplicate));
                        continue;
                    }
                    group_hw.insert(b.gateway.clone(), b.seq);
                    wal::encode_record(&b, &mut buf);
                    accepted.push((b, reply));
                }
                Command::Flush(reply) => flush_waiters.push(reply),
            }
        }
        if !accepted.is_empty() {
            match wal.append(&buf) {
                Ok(()) => {
                    metrics.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .wal_bytes
                        .fetch_add(buf.len() as u64, Ordering::Relaxed);
                    let mut mem = memtable.lock().unwrap_or_else(|p| p.into_inner());
                    for (b, reply) in accepted {
                        high_water.insert(b.gateway.clone(), b.seq);
                        let n = b.readings.len();
                        mem.extend(b.readings.into_iter().map(|reading| StoredReading {
                            gateway: b.gateway.clone(),
                            reading,
                        }));
                        metrics.batches.fetch_add(1, Ordering::Relaxed);
                        metrics.rows.fetch_add(n as u64, Ordering::Relaxed);
                        let _ = reply.send(Ok(Appended::Stored { rows: n }));
                    }
                    metrics
                        .rows_in_memory
                        .store(mem.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    error!(error = %e, "WAL append failed; batches refused");
                    let msg = e.to_string();
                    for (_, reply) in accepted {
                        let _ = reply.send(Err(StoreError::State {
                            path: wal.dir().to_path_buf(),
                            message: msg.clone(),
                        }));
                    }
                    // The failed write may have left a partial record: continue in a new
                    // segment so later records are not hidden behind it at replay.
                    if let Err(e) = wal.rotate() {
                        error!(error = %e, "cannot open a new WAL segment");
                    }
                }
            }
        }
        let in_memory = metrics.rows_in_memory.load(Ordering::Relaxed) as usize;
        if !flush_waiters.is_empty() || in_memory >= flush_rows {
            let rows = std::mem::take(&mut *memtable.lock().unwrap_or_else(|p| p.into_inner()));
            metrics.rows_in_memory.store(0, Ordering::Relaxed);
            let closed_segment = if rows.is_empty() {
                wal.segment().saturating_sub(1)
            } else {
                match wal.rotate() {
                    Ok(id) => id,
                    Err(e) => {
                        error!(error = %e, "cannot rotate WAL; flush postponed");
                        let mut mem = memtable.lock().unwrap_or_else(|p| p.into_inner());
                        let mut back = rows;
                        back.append(&mut mem);
                        *mem = back;
                        metrics
                            .rows_in_memory
                            .store(mem.len() as u64, Ordering::Relaxed);
                        for w in flush_waiters {
                            let _ = w.send(Err(StoreError::Wal(e.clone_io())));
                        }
                        continue;
                    }
                }
            };
            let job = FlushJob {
                rows,
                high_water: high_water.clone(),
                closed_segment,
                waiters: flush_waiters,
            };
            if flush_tx.send(job).is_err() {
                return;
            }
        }
    }
}

impl WalError {
    fn clone_io(&self) -> WalError {
        match self {
            WalError::Io { path, source } => WalError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}

fn flusher_loop(
    rx: std::sync::mpsc::Receiver<FlushJob>,
    data_dir: PathBuf,
    memtable: Arc<Mutex<Vec<StoredReading>>>,
    metrics: Arc<StoreMetrics>,
) {
    let mut file_counter = 0u64;
    while let Ok(job) = rx.recv() {
        let started = Instant::now();
        let FlushJob {
            mut rows,
            high_water,
            closed_segment,
            waiters,
        } = job;
        let result = publish(&data_dir, &mut rows, &mut file_counter).and_then(|files| {
            let state = State {
                high_water: high_water
                    .iter()
                    .map(|(g, s)| (g.to_string(), *s))
                    .collect(),
            };
            let sp = state_path(&data_dir);
            write_atomic(&sp, &serde_json::to_vec_pretty(&state).unwrap_or_default()).map_err(
                |e| StoreError::State {
                    path: sp.clone(),
                    message: e.to_string(),
                },
            )?;
            wal::remove_upto(&data_dir.join("wal"), closed_segment)?;
            Ok(FlushReport {
                rows: rows.len(),
                files,
            })
        });
        match &result {
            Ok(r) => {
                metrics.flushes.fetch_add(1, Ordering::Relaxed);
                metrics
                    .files_published
                    .fetch_add(r.files as u64, Ordering::Relaxed);
                metrics
                    .flush_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if r.rows > 0 {
                    info!(
                        rows = r.rows,
                        files = r.files,
                        ms = started.elapsed().as_millis() as u64,
                        "published Parquet"
                    );
                }
            }
            Err(e) => {
                metrics.flush_failures.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "flush failed; rows kept in memory and in the WAL");
                // The rows are still in the WAL (its segments were not deleted); put them back
                // in memory so the next flush writes them.
                let mut mem = memtable.lock().unwrap_or_else(|p| p.into_inner());
                let mut back = std::mem::take(&mut rows);
                back.append(&mut mem);
                *mem = back;
                metrics
                    .rows_in_memory
                    .store(mem.len() as u64, Ordering::Relaxed);
            }
        }
        for w in waiters {
            let _ = w.send(match &result {
                Ok(r) => Ok(*r),
                Err(e) => Err(StoreError::State {
                    path: data_dir.clone(),
                    message: e.to_string(),
                }),
            });
        }
    }
}

/// Writes rows as one Parquet file per date partition, each published atomically.
fn publish(
    data_dir: &Path,
    rows: &mut Vec<StoredReading>,
    counter: &mut u64,
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    sort_and_dedupe(rows);
    let mut by_date: BTreeMap<String, Vec<StoredReading>> = BTreeMap::new();
    for r in rows.iter() {
        by_date
            .entry(partition_date(r.reading.ts))
            .or_default()
            .push(r.clone());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
    let mut files = 0;
    for (date, part) in by_date {
        let dir = partition_dir(data_dir, &date);
        let perr = |message: String| StoreError::Parquet {
            path: dir.clone(),
            message,
        };
        fs::create_dir_all(&dir).map_err(|e| perr(e.to_string()))?;
        *counter += 1;
        let name = format!("part-{stamp}-{:06}.parquet", *counter);
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| perr(e.to_string()))?;
        let w = write_parquet(BufWriter::new(file), &part).map_err(|e| perr(e.to_string()))?;
        let file = w.into_inner().map_err(|e| perr(e.to_string()))?;
        file.sync_all().map_err(|e| perr(e.to_string()))?;
        fs::rename(&tmp, dir.join(&name)).map_err(|e| perr(e.to_string()))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| perr(e.to_string()))?;
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use reading_model::{
        AccountCode, Category, EnergyCode, MeterId, Quality, Quantity, Reading, Unit,
    };

    use super::*;

    fn batch(seq: u64, ts: i64) -> Batch {
        let r = Reading {
            ts,
            account: AccountCode::parse("110108A001").unwrap(),
            meter: MeterId::parse("m").unwrap(),
            category: Category::Electricity,
            item: EnergyCode::parse("01000").unwrap(),
            quantity: Quantity::EnergyImport,
            unit: Unit::KilowattHour,
            value: 1.0,
            delta: Some(0.5),
            kgce: None,
            kgco2e: None,
            factor: None,
            quality: Quality::Good,
        };
        Batch::new(GatewayId::parse("gw").unwrap(), seq, vec![r])
    }

    fn parquet_rows(dir: &Path) -> usize {
        let mut n = 0;
        for part in fs::read_dir(dir.join("readings"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in fs::read_dir(part.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                assert!(!name.starts_with('.'), "a temp file is left: {name}");
                let file = File::open(f.path()).unwrap();
                let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
                n += parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows() as usize;
            }
        }
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_are_deduplicated_and_a_crash_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000;
        {
            let (store, threads) = Store::open(dir.path(), 1_000_000).unwrap();
            assert_eq!(
                store.append(batch(1, t0)).await.unwrap(),
                Appended::Stored { rows: 1 }
            );
            assert_eq!(
                store.append(batch(1, t0)).await.unwrap(),
                Appended::Duplicate
            );
            assert_eq!(
                store.append(batch(2, t0 + 1000)).await.unwrap(),
                Appended::Stored { rows: 1 }
            );
            assert_eq!(
                store.flush().await.unwrap(),
                FlushReport { rows: 2, files: 1 }
            );
            // Acknowledged but never flushed: only the WAL has it when the "crash" comes.
            assert_eq!(
                store.append(batch(3, t0 + 2000)).await.unwrap(),
                Appended::Stored { rows: 1 }
            );
            drop(store);
            threads.join();
        }
        assert_eq!(parquet_rows(dir.path()), 2);
        let (store, threads) = Store::open(dir.path(), 1_000_000).unwrap();
        // The high-water mark survived: old batches are still recognised as retries.
        assert_eq!(
            store.append(batch(2, t0 + 1000)).await.unwrap(),
            Appended::Duplicate
        );
        assert_eq!(
            store.append(batch(3, t0 + 2000)).await.unwrap(),
            Appended::Duplicate
        );
        assert_eq!(store.flush().await.unwrap().rows, 1);
        assert_eq!(parquet_rows(dir.path()), 3);
        // Published segments are gone; only the open one remains.
        assert_eq!(wal::segments(&dir.path().join("wal")).unwrap().len(), 1);
        drop(store);
        threads.join();
    }
}
