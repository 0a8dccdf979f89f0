//! The durable store: one writer thread owns the WAL, the per-gateway marks (`dedupe`: which
//! batches are retries) and the in-memory rows; one flusher thread turns rows into Parquet.
//!
//! Appends are group-committed: the writer takes every batch waiting at that moment, writes
//! them, fsyncs once and only then answers each. Before that, `dedupe` sorts out retries: a
//! batch at or below its (gateway, epoch)'s high-water mark is answered as a duplicate without
//! being stored if it is a retry of what was stored, and refused ([`Appended::Regressed`], 409)
//! if it is not.
//!
//! A flush rotates the WAL, hands the rows and a snapshot of the marks to the flusher, which publishes one Parquet file per date partition (temp file, fsync, rename,
//! fsync directory), then records the marks in `ingest-state.json`, then deletes the closed WAL
//! segments. A crash at any point leaves either the WAL segment or the Parquet file (or both —
//! replay skips batches the state file already covers, and a row published twice is one row to
//! readers: the key dedupes across files, see `storage`).
//!
//! Rows stay visible to queries ([`Store::live`]) from the moment they are acknowledged until
//! their file is published: first in the writer's buffer, then in the flusher's queue.
//! Between flushes the flusher runs the [`maintenance`]: compaction, rollups, retention.

mod columns;
mod dedupe;
mod maintenance;

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maintenance::Maintenance;
pub use maintenance::MaintenanceReport;
use reading_model::Batch;
use storage::LiveReadings;
use storage::publish::{PublishError, publish_file};
use storage::{StoredReading, file_name, partition_dir, write_batch};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::StorageConfig;
use crate::wal::{self, Wal, WalError};
use columns::Rows;
use dedupe::{Marks, State, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A file could not be published (written, fsynced, renamed).
    #[error("publishing {0}")]
    Publish(#[from] PublishError),
    /// A stored file could not be read back (compaction, rollups).
    #[error("reading {0}")]
    Read(#[from] storage::StorageError),
    /// A directory of the data directory could not be listed, renamed or removed.
    #[error("data directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Rows that could not be merged or rolled up (an Arrow error over files that read).
    #[error("{}: {source}", path.display())]
    Arrow {
        path: PathBuf,
        source: arrow::error::ArrowError,
    },
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
    /// At or below the high-water mark of its (gateway, epoch) and not a retry of the batch
    /// stored under that seq (a spool restored from a backup): nothing was written, and the
    /// sender must start a new epoch rather than take it as acknowledged.
    Regressed {
        high_water: u64,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub rows: usize,
    pub files: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub batches: AtomicU64,
    pub duplicates: AtomicU64,
    /// Batches refused as going backwards within their epoch.
    pub regressed: AtomicU64,
    pub rows: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub flush_micros: AtomicU64,
    pub flush_last_micros: AtomicU64,
    pub files_published: AtomicU64,
    pub rows_in_memory: AtomicU64,
    /// Bytes of WAL segments on disk.
    pub wal_size: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    /// Files merged away by compactions.
    pub compaction_files: AtomicU64,
    /// Compacted-away files that could not be moved out of the readings tree, so that a tool
    /// globbing it sees their rows twice until they are removed after the grace period.
    pub superseded_unmoved: AtomicU64,
    pub compaction_micros: AtomicU64,
    pub compaction_last_micros: AtomicU64,
    /// Dates whose rollups were recomputed.
    pub rollups: AtomicU64,
    pub maintenance_failures: AtomicU64,
    /// Date partitions (raw or rollup) removed by retention.
    pub partitions_expired: AtomicU64,
}

enum Command {
    Append(Batch, oneshot::Sender<Result<Appended, StoreError>>),
    Flush(oneshot::Sender<Result<FlushReport, StoreError>>),
}

/// Acknowledged rows not yet in Parquet: what queries read besides the files.
#[derive(Debug, Default)]
struct Memory {
    /// Not yet handed to the flusher, in arrival order.
    active: Rows,
    /// Handed to the flusher and not yet published, oldest first, by flush job.
    flushing: VecDeque<(u64, Arc<Rows>)>,
}

type Shared = Arc<Mutex<Memory>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Memory> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The store's memory as [`LiveReadings`] for the query layer (`query::Query::with_live`).
#[derive(Debug, Clone)]
pub struct LiveMemory(Shared);

impl LiveReadings for LiveMemory {
    fn snapshot(&self) -> Vec<StoredReading> {
        let m = lock(&self.0);
        let n = m.active.len() + m.flushing.iter().map(|(_, r)| r.len()).sum::<usize>();
        let mut out = Vec::with_capacity(n);
        for rows in m.flushing.iter().map(|(_, r)| &**r).chain([&m.active]) {
            out.extend((0..rows.len()).map(|i| rows.stored(i)));
        }
        out
    }
}

enum ToFlusher {
    Flush(FlushJob),
    Maintain {
        force: bool,
        reply: oneshot::Sender<Result<MaintenanceReport, StoreError>>,
    },
}

struct FlushJob {
    id: u64,
    rows: Arc<Rows>,
    marks: Marks,
    /// WAL segments up to this one hold only rows of this job (or of earlier ones); `None`:
    /// no segment was closed for it.
    closed_segment: Option<u64>,
    waiters: Vec<oneshot::Sender<Result<FlushReport, StoreError>>>,
}

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    flusher: std::sync::mpsc::Sender<ToFlusher>,
    memory: Shared,
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
            Self::Append(b, _) => write!(f, "Append({})", dedupe::describe(b)),
            Self::Flush(_) => write!(f, "Flush"),
        }
    }
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ingest-state.json")
}

impl Store {
    /// Opens the store under `data_dir`: replays the WAL into memory, looks over the files
    /// (leftovers of a crash, due compactions and rollups) and starts the threads.
    pub fn open(
        data_dir: &Path,
        flush_rows: usize,
        storage: StorageConfig,
    ) -> Result<(Self, StoreThreads), StoreError> {
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
        let mut marks = state.into_marks();
        let (wal, replay) = Wal::open(&data_dir.join("wal"))?;
        for (path, offset) in &replay.truncated {
            warn!(segment = %path.display(), kept_bytes = offset, "WAL segment had a torn tail (an unacknowledged write); cut");
        }
        let mut rows = Rows::default();
        let mut replayed = 0usize;
        let mut scratch = Vec::new();
        for b in replay.batches {
            let digest = record_digest(&b, &mut scratch);
            let m = marks.entry(b.gateway.clone()).or_default();
            let covered = m.covers(b.epoch, b.seq);
            // A covered batch's digest is remembered too: its retry is known after a restart.
            m.record(b.epoch, b.seq, digest);
            if covered {
                continue; // already published before the crash
            }
            replayed += 1;
            rows.push_batch(b);
        }
        if replayed > 0 {
            info!(batches = replayed, rows = rows.len(), "replayed WAL");
        }
        let metrics = Arc::new(StoreMetrics::default());
        metrics
            .rows_in_memory
            .store(rows.len() as u64, Ordering::Relaxed);
        metrics
            .wal_size
            .store(wal::disk_bytes(wal.dir()), Ordering::Relaxed);
        let (maintenance, next_gen) = Maintenance::open(data_dir, storage, metrics.clone())?;
        let (tx, rx) = mpsc::channel(4096);
        let (flush_tx, flush_rx) = std::sync::mpsc::channel::<ToFlusher>();
        let memtable: Shared = Arc::new(Mutex::new(Memory {
            active: rows,
            flushing: VecDeque::new(),
        }));
        let writer = {
            let metrics = metrics.clone();
            let memtable = memtable.clone();
            let flush_tx = flush_tx.clone();
            std::thread::Builder::new()
                .name("ingest-writer".into())
                .spawn(move || {
                    Writer {
                        wal,
                        marks,
                        memtable,
                        flush_tx,
                        flush_rows,
                        metrics,
                        buf: Vec::new(),
                        job_id: 0,
                        regressed_logged: None,
                    }
                    .run(rx);
                })
                .map_err(|e| StoreError::State {
                    path: data_dir.to_path_buf(),
                    message: format!("spawn writer: {e}"),
                })?
        };
        let flusher = {
            let metrics = metrics.clone();
            let data_dir = data_dir.to_path_buf();
            let memtable = memtable.clone();
            let flusher = Flusher {
                data_dir,
                memory: memtable,
                metrics,
                maintenance,
                next_gen,
                carry: Vec::new(),
            };
            std::thread::Builder::new()
                .name("ingest-flusher".into())
                .spawn(move || flusher.run(flush_rx))
                .map_err(|e| StoreError::State {
                    path: PathBuf::new(),
                    message: format!("spawn flusher: {e}"),
                })?
        };
        Ok((
            Self {
                tx,
                flusher: flush_tx,
                memory: memtable,
                metrics,
            },
            StoreThreads { writer, flusher },
        ))
    }

    /// The acknowledged rows not yet in Parquet, for queries.
    pub fn live(&self) -> Arc<dyn LiveReadings> {
        Arc::new(LiveMemory(self.memory.clone()))
    }

    /// Runs a maintenance pass now: compaction and rollups of every partition written to since
    /// the last one (`force`) or only of those due, retention, removal of compacted-away files
    /// (all of them if `force`, else those past their grace).
    pub async fn maintain(&self, force: bool) -> Result<MaintenanceReport, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.flusher
            .send(ToFlusher::Maintain { force, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
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

/// Where the answer to a flush goes.
type FlushWaiter = oneshot::Sender<Result<FlushReport, StoreError>>;

/// A batch waiting for the WAL, and where its answer goes.
type Pending = (Batch, oneshot::Sender<Result<Appended, StoreError>>);

/// The digest of `batch`'s WAL record (what `dedupe` tells retries by), encoded in `scratch`;
/// zeros for a batch without an epoch, whose dedupe needs none.
fn record_digest(batch: &Batch, scratch: &mut Vec<u8>) -> dedupe::Digest {
    if batch.epoch.is_none() {
        return dedupe::Digest::default();
    }
    scratch.clear();
    let payload = wal::encode_record(batch, scratch);
    dedupe::digest(&scratch[payload])
}

/// The writer thread's state: the one owner of the WAL and of the per-gateway marks.
struct Writer {
    wal: Wal,
    marks: Marks,
    memtable: Shared,
    flush_tx: std::sync::mpsc::Sender<ToFlusher>,
    flush_rows: usize,
    metrics: Arc<StoreMetrics>,
    /// The WAL records of the group being written.
    buf: Vec<u8>,
    job_id: u64,
    /// When a refused regression was last logged: at most one line per [`REGRESSED_LOG_EVERY`]
    /// (each is counted), so a client stuck sending old seqs cannot flood the log.
    regressed_logged: Option<Instant>,
}

const REGRESSED_LOG_EVERY: Duration = Duration::from_secs(10);

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < 4096 {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            let (accepted, group_marks, flush_waiters) = self.sort_group(group);
            if !accepted.is_empty() {
                self.commit(accepted, group_marks);
            }
            let in_memory = self.metrics.rows_in_memory.load(Ordering::Relaxed) as usize;
            if (!flush_waiters.is_empty() || in_memory >= self.flush_rows)
                && !self.start_flush(flush_waiters)
            {
                return;
            }
        }
    }

    /// Answers retries (duplicates) and regressions (refusals) at once and encodes the new
    /// batches into one WAL write; returns them, the marks they lead to (of the gateways they
    /// touch; applied only once the group is durable, so a failed write leaves the marks as they
    /// were and the resend is stored) and the flushes asked for.
    fn sort_group(&mut self, group: Vec<Command>) -> (Vec<Pending>, Marks, Vec<FlushWaiter>) {
        self.buf.clear();
        let mut accepted: Vec<Pending> = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut group_marks = Marks::new();
        for cmd in group {
            match cmd {
                Command::Append(b, reply) => {
                    let start = self.buf.len();
                    // Encoded first: the record's digest tells a retry from another batch.
                    let payload = wal::encode_record(&b, &mut self.buf);
                    let digest = match b.epoch {
                        Some(_) => dedupe::digest(&self.buf[payload]),
                        None => dedupe::Digest::default(),
                    };
                    let marks = group_marks
                        .entry(b.gateway.clone())
                        .or_insert_with(|| self.marks.get(&b.gateway).cloned().unwrap_or_default());
                    match marks.verdict(b.epoch, b.seq, &digest) {
                        Verdict::New => {
                            marks.record(b.epoch, b.seq, digest);
                            accepted.push((b, reply));
                        }
                        Verdict::Retry => {
                            self.buf.truncate(start);
                            self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                            let _ = reply.send(Ok(Appended::Duplicate));
                        }
                        Verdict::Regressed { high_water } => {
                            self.buf.truncate(start);
                            let n = self.metrics.regressed.fetch_add(1, Ordering::Relaxed) + 1;
                            if self
                                .regressed_logged
                                .is_none_or(|t| t.elapsed() >= REGRESSED_LOG_EVERY)
                            {
                                self.regressed_logged = Some(Instant::now());
                                warn!(
                                    batch = %dedupe::describe(&b),
                                    high_water,
                                    regressed_total = n,
                                    "batch goes back within its epoch and is not a retry of what was stored; refused with 409 (the sender must start a new epoch)"
                                );
                            }
                            let _ = reply.send(Ok(Appended::Regressed { high_water }));
                        }
                    }
                }
                Command::Flush(reply) => flush_waiters.push(reply),
            }
        }
        (accepted, group_marks, flush_waiters)
    }

    /// Appends the group's records with one fsync; then, and only then, takes `group_marks`
    /// as the marks, puts the batches in memory and acknowledges them. On failure every batch
    /// of the group is refused and the marks stay as they were.
    fn commit(&mut self, accepted: Vec<Pending>, group_marks: Marks) {
        let metrics = &self.metrics;
        match self.wal.append(&self.buf) {
            Ok(()) => {
                metrics.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
                let bytes = self.buf.len() as u64;
                metrics.wal_bytes.fetch_add(bytes, Ordering::Relaxed);
                metrics.wal_size.fetch_add(bytes, Ordering::Relaxed);
                self.marks.extend(group_marks);
                let mut mem = lock(&self.memtable);
                for (b, reply) in accepted {
                    let n = b.readings.len();
                    // Into memory before the answer: a query right after the 2xx sees it.
                    mem.active.push_batch(b);
                    metrics.batches.fetch_add(1, Ordering::Relaxed);
                    metrics.rows.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = reply.send(Ok(Appended::Stored { rows: n }));
                }
                metrics
                    .rows_in_memory
                    .store(mem.active.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                error!(error = %e, "WAL append failed; batches refused");
                for (_, reply) in accepted {
                    let _ = reply.send(Err(StoreError::Wal(e.clone_io())));
                }
                // `Wal::append` leaves no partial record behind a failed write (or moves to a
                // new segment before the next one), so later records are never hidden behind
                // a torn one at replay.
            }
        }
    }

    /// Hands the rows in memory to the flusher (closing the WAL segment they are in);
    /// `false` once the flusher is gone.
    fn start_flush(
        &mut self,
        flush_waiters: Vec<oneshot::Sender<Result<FlushReport, StoreError>>>,
    ) -> bool {
        let empty = lock(&self.memtable).active.is_empty();
        let closed_segment = if empty {
            // Nothing to publish, so nothing to close: the open segment may get rows the
            // moment this job is sent. (`segment() - 1` here once deleted segment 0 while
            // it was being written to: the crash test lost a first life's batches.)
            self.wal.segment().checked_sub(1)
        } else {
            match self.wal.rotate() {
                Ok(id) => Some(id),
                Err(e) => {
                    error!(error = %e, "cannot rotate WAL; flush postponed");
                    for w in flush_waiters {
                        let _ = w.send(Err(StoreError::Wal(e.clone_io())));
                    }
                    return true;
                }
            }
        };
        self.job_id += 1;
        let rows = {
            // Moved to `flushing` under the lock, so queries see every row at every moment.
            let mut mem = lock(&self.memtable);
            let rows = Arc::new(std::mem::take(&mut mem.active));
            mem.flushing.push_back((self.job_id, rows.clone()));
            rows
        };
        self.metrics.rows_in_memory.store(0, Ordering::Relaxed);
        let job = FlushJob {
            id: self.job_id,
            rows,
            marks: self.marks.clone(),
            closed_segment,
            waiters: flush_waiters,
        };
        self.flush_tx.send(ToFlusher::Flush(job)).is_ok()
    }
}

impl WalError {
    fn clone_io(&self) -> WalError {
        match self {
            WalError::Io { path, source } => WalError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            WalError::Version { path, version } => WalError::Version {
                path: path.clone(),
                version: *version,
            },
        }
    }
}

/// The flusher thread's state: publishes flush jobs and runs the maintenance between them.
struct Flusher {
    data_dir: PathBuf,
    memory: Shared,
    metrics: Arc<StoreMetrics>,
    maintenance: Maintenance,
    /// The generation the next flush stamps on its rows and files.
    next_gen: u64,
    /// Rows of failed flushes, published with the next job: their WAL segments are deleted
    /// only once a later flush, which covers them, succeeds.
    carry: Vec<Arc<Rows>>,
}

/// How often the flusher looks for due maintenance when no flush comes.
const MAINTENANCE_TICK: Duration = Duration::from_secs(1);

impl Flusher {
    fn run(mut self, rx: std::sync::mpsc::Receiver<ToFlusher>) {
        let mut last_error_log: Option<Instant> = None;
        loop {
            let msg = match rx.recv_timeout(MAINTENANCE_TICK) {
                Ok(m) => Some(m),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let (force, reply) = match msg {
                Some(ToFlusher::Flush(job)) => {
                    self.flush(job);
                    (false, None)
                }
                Some(ToFlusher::Maintain { force, reply }) => (force, Some(reply)),
                None => (false, None),
            };
            let result = self.maintenance.run(force);
            if let Err(e) = &result {
                self.metrics
                    .maintenance_failures
                    .fetch_add(1, Ordering::Relaxed);
                // Retried every tick: say it once a minute, not every second.
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    error!(error = %e, "compaction/rollup/retention failed; will retry");
                    last_error_log = Some(Instant::now());
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    fn flush(&mut self, job: FlushJob) {
        let started = Instant::now();
        let FlushJob {
            id,
            rows,
            marks,
            closed_segment,
            waiters,
        } = job;
        self.carry.push(rows);
        let generation = self.next_gen;
        let result =
            publish(&self.data_dir, &self.carry, generation).and_then(|(report, dates)| {
                let state = State::of(&marks);
                let sp = state_path(&self.data_dir);
                storage::publish::publish_bytes(
                    &sp,
                    &serde_json::to_vec_pretty(&state).unwrap_or_default(),
                )
                .map_err(|e| StoreError::State {
                    path: sp.clone(),
                    message: e.to_string(),
                })?;
                let wal_dir = self.data_dir.join("wal");
                if let Some(closed) = closed_segment {
                    wal::remove_upto(&wal_dir, closed)?;
                }
                self.metrics
                    .wal_size
                    .store(wal::disk_bytes(&wal_dir), Ordering::Relaxed);
                Ok((report, dates))
            });
        // A generation is used up even by a failed flush: a file it left behind must not
        // share its generation with a later one.
        self.next_gen += 1;
        let micros = started.elapsed().as_micros() as u64;
        let m = &self.metrics;
        match &result {
            Ok((r, dates)) => {
                self.carry.clear();
                lock(&self.memory).flushing.retain(|(job, _)| *job > id);
                self.maintenance.touched(dates.iter().cloned());
                m.flushes.fetch_add(1, Ordering::Relaxed);
                m.files_published
                    .fetch_add(r.files as u64, Ordering::Relaxed);
                m.flush_micros.fetch_add(micros, Ordering::Relaxed);
                m.flush_last_micros.store(micros, Ordering::Relaxed);
                if r.rows > 0 {
                    info!(
                        rows = r.rows,
                        files = r.files,
                        generation,
                        ms = micros / 1000,
                        "published Parquet"
                    );
                }
            }
            Err(e) => {
                m.flush_failures.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "flush failed; rows kept in memory and in the WAL, retried with the next flush");
            }
        }
        for w in waiters {
            let _ = w.send(match &result {
                Ok((r, _)) => Ok(*r),
                Err(e) => Err(StoreError::State {
                    path: self.data_dir.clone(),
                    message: e.to_string(),
                }),
            });
        }
    }
}

/// Writes rows as one Parquet file per date partition, each published atomically, all of
/// generation `generation`; returns what was written and the dates it wrote to.
fn publish(
    data_dir: &Path,
    sets: &[Arc<Rows>],
    generation: u64,
) -> Result<(FlushReport, BTreeSet<String>), StoreError> {
    let merged;
    let rows: &Rows = match sets {
        [one] => one,
        // Only after a failed flush: its rows come again with the next job's.
        _ => {
            let mut all = Rows::default();
            for s in sets {
                all.extend(s);
            }
            merged = all;
            &merged
        }
    };
    let mut report = FlushReport::default();
    let mut dates = BTreeSet::new();
    for part in rows.sorted_partitions() {
        let dir = partition_dir(data_dir, &part.date);
        publish_file(&dir, &file_name(generation, generation), |w| {
            write_batch(w, &rows.record_batch(&part.rows, generation as i64)?)
        })?;
        report.rows += part.rows.len();
        report.files += 1;
        dates.insert(part.date);
    }
    Ok((report, dates))
}

#[cfg(test)]
mod tests {
    use reading_model::{
        AccountCode, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
    };

    use std::fs::File;

    use storage::partition_date;

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

    /// Rows in the live files (what readers see); compaction may run meanwhile.
    fn parquet_rows(dir: &Path) -> usize {
        let mut n = 0;
        for date in storage::partitions(&dir.join("readings")).unwrap() {
            let (live, _) = storage::partition_files(&partition_dir(dir, &date)).unwrap();
            for f in live {
                let file = File::open(&f.path).unwrap();
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
            let (store, threads) =
                Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
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
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
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

    fn reading(meter: &str, ts: i64, value: f64, delta: f64) -> Reading {
        Reading {
            meter: MeterId::parse(meter).unwrap(),
            value,
            delta: Some(delta),
            ..batch(0, ts).readings.remove(0)
        }
    }

    fn gw_batch(seq: u64, readings: Vec<Reading>) -> Batch {
        Batch::new(GatewayId::parse("gw").unwrap(), seq, readings)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_flush_does_not_delete_the_open_wal_segment() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000;
        {
            let (store, threads) =
                Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
            // A timer flush before the first batch: nothing to publish, no segment closed.
            assert_eq!(store.flush().await.unwrap().rows, 0);
            store.append(batch(1, t0)).await.unwrap();
            drop(store);
            threads.join();
        }
        // Killed before the next flush: the acknowledged batch must come back from the WAL.
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        assert_eq!(
            store.append(batch(1, t0)).await.unwrap(),
            Appended::Duplicate
        );
        assert_eq!(store.flush().await.unwrap().rows, 1);
        drop(store);
        threads.join();
    }

    /// (file names, rows) of a date partition.
    fn partition(dir: &Path, date: &str) -> (Vec<String>, usize) {
        let mut names: Vec<String> = fs::read_dir(partition_dir(dir, date))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let (live, _) = storage::partition_files(&partition_dir(dir, date)).unwrap();
        let rows = storage::read_files(&live).unwrap().num_rows();
        (names, rows)
    }

    async fn consumption(q: &query::Query, from: i64, to: i64) -> Vec<(String, f64, i64)> {
        q.consumption(from, to)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.item, r.consumption, r.intervals))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_one_row_per_key_the_latest_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        // Three flushes whose batches overlap: the same (meter, ts) comes again in later
        // batches (new seq numbers, so not retries), the last time with a corrected value.
        store
            .append(gw_batch(
                1,
                vec![
                    reading("m1", t0 + 60_000, 10.0, 1.0),
                    reading("m1", t0 + 120_000, 11.0, 1.0),
                ],
            ))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store
            .append(gw_batch(
                2,
                vec![
                    reading("m1", t0 + 120_000, 11.0, 1.0),
                    reading("m2", t0 + 60_000, 5.0, 2.0),
                ],
            ))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store
            .append(gw_batch(3, vec![reading("m1", t0 + 120_000, 11.5, 1.5)]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let date = partition_date(t0);
        let (names, rows) = partition(dir.path(), &date);
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(rows, 5, "before compaction the files hold every copy");
        // Queries dedupe across files already: the latest copy counts.
        let q = query::Query::new(dir.path());
        let before = consumption(&q, t0, t0 + 3_600_000).await;
        assert_eq!(before, vec![("01000".to_owned(), 4.5, 3)]);

        let report = store.maintain(true).await.unwrap();
        assert_eq!((report.compacted, report.files_merged), (1, 3));
        let (names, rows) = partition(dir.path(), &date);
        assert_eq!(names, vec![storage::file_name(1, 3)]);
        assert_eq!(rows, 3);
        assert_eq!(consumption(&q, t0, t0 + 3_600_000).await, before);
        assert_eq!(store.metrics.compactions.load(Ordering::Relaxed), 1);

        // A later flush into the compacted partition is a new, uncovered generation.
        store
            .append(gw_batch(4, vec![reading("m2", t0 + 120_000, 6.0, 1.0)]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let (names, _) = partition(dir.path(), &date);
        assert_eq!(
            names,
            vec![storage::file_name(1, 3), storage::file_name(4, 4)]
        );
        store.maintain(true).await.unwrap();
        let (names, rows) = partition(dir.path(), &date);
        assert_eq!((names, rows), (vec![storage::file_name(1, 4)], 4));
        drop(store);
        threads.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_publishing_and_removing_leaves_readers_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000;
        let date = partition_date(t0);
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        for seq in 1..=3 {
            store
                .append(gw_batch(
                    seq,
                    vec![reading("m1", t0 + seq as i64 * 60_000, seq as f64, 1.0)],
                ))
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        drop(store);
        threads.join();
        // What a crash right after the compacted file's rename leaves: old and new side by side.
        let part = partition_dir(dir.path(), &date);
        let (live, _) = storage::partition_files(&part).unwrap();
        let merged = storage::dedupe_batch(&storage::read_files(&live).unwrap()).unwrap();
        publish_file(&part, &storage::file_name(1, 3), |w| {
            storage::write_batch(w, &merged)
        })
        .unwrap();
        // And a temp file of a write that never finished.
        fs::write(
            part.join(".part-000000000009-000000000009.parquet.tmp"),
            b"PAR1 torn",
        )
        .unwrap();
        assert_eq!(partition(dir.path(), &date).0.len(), 5);
        let q = query::Query::new(dir.path());
        assert_eq!(
            consumption(&q, t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 3.0, 3)]
        );

        let config = StorageConfig {
            compact_grace: 0.0,
            ..StorageConfig::default()
        };
        let (store, threads) = Store::open(dir.path(), 1_000_000, config).unwrap();
        store.maintain(false).await.unwrap();
        let (names, rows) = partition(dir.path(), &date);
        assert_eq!((names, rows), (vec![storage::file_name(1, 3)], 3));
        // The next flush does not reuse a generation the old files had.
        store
            .append(gw_batch(4, vec![reading("m1", t0 + 240_000, 4.0, 1.0)]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(
            partition(dir.path(), &date)
                .0
                .contains(&storage::file_name(4, 4))
        );
        drop(store);
        threads.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_moves_the_replaced_files_out_of_the_tree_and_a_crash_mid_move_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000;
        let date = partition_date(t0);
        let config = StorageConfig {
            compact_grace: 3600.0,
            ..StorageConfig::default()
        };
        let (store, threads) = Store::open(dir.path(), 1_000_000, config.clone()).unwrap();
        for seq in 1..=3 {
            store
                .append(gw_batch(
                    seq,
                    vec![reading("m1", t0 + seq as i64 * 60_000, seq as f64, 1.0)],
                ))
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        store.maintain(true).await.unwrap();
        drop(store);
        threads.join();
        // Stopped with `force`, so the grace is over: nothing left anywhere but the new file.
        assert_eq!(
            partition(dir.path(), &date).0,
            vec![storage::file_name(1, 3)]
        );
        let away = storage::superseded_dir(dir.path(), &date);
        assert!(!away.exists() || fs::read_dir(&away).unwrap().next().is_none());

        // During the grace period the replaced files are outside readings/, where a glob looks.
        let due = StorageConfig {
            compact_after: 0.0,
            ..config.clone()
        };
        let (store, threads) = Store::open(dir.path(), 1_000_000, due).unwrap();
        store
            .append(gw_batch(4, vec![reading("m1", t0 + 240_000, 4.0, 1.0)]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.maintain(false).await.unwrap();
        let (names, rows) = partition(dir.path(), &date);
        assert_eq!((names, rows), (vec![storage::file_name(1, 4)], 4));
        let mut moved: Vec<String> = fs::read_dir(&away)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        moved.sort();
        assert_eq!(moved, [storage::file_name(1, 3), storage::file_name(4, 4)]);
        drop(store);
        threads.join();

        // A crash mid-move of a later compaction: the new file published, one replaced file
        // moved, one still in the partition; and a moved file of a high generation elsewhere.
        let part = partition_dir(dir.path(), &date);
        let (live, _) = storage::partition_files(&part).unwrap();
        let rows = storage::read_files(&live).unwrap();
        publish_file(&part, &storage::file_name(1, 5), |w| {
            storage::write_batch(w, &rows)
        })
        .unwrap();
        fs::copy(
            part.join(storage::file_name(1, 4)),
            part.join(storage::file_name(5, 5)),
        )
        .unwrap();
        let other = storage::superseded_dir(dir.path(), "2026-01-09");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(storage::file_name(9, 9)), b"PAR1 replaced").unwrap();
        let q = query::Query::new(dir.path());
        assert_eq!(
            consumption(&q, t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 4.0, 4)],
            "our reader reads one copy at every point"
        );
        let (store, threads) = Store::open(dir.path(), 1_000_000, config).unwrap();
        assert_eq!(
            partition(dir.path(), &date),
            (vec![storage::file_name(1, 5)], 4)
        );
        assert!(
            !dir.path()
                .join(storage::SUPERSEDED)
                .join("date=2026-01-09")
                .exists()
        );
        // Generations keep counting past every file seen, moved ones too.
        store
            .append(gw_batch(5, vec![reading("m1", t0 + 300_000, 5.0, 1.0)]))
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(
            partition(dir.path(), &date)
                .0
                .contains(&storage::file_name(10, 10))
        );
        drop(store);
        threads.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_rows_are_visible_to_queries_before_any_flush() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_767_225_600_000;
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        let q = query::Query::new(dir.path()).with_live(store.live());
        assert!(consumption(&q, t0, t0 + 3_600_000).await.is_empty());
        store
            .append(gw_batch(
                1,
                vec![
                    reading("m1", t0 + 60_000, 1.0, 1.0),
                    reading("m1", t0 + 120_000, 3.0, 2.0),
                ],
            ))
            .await
            .unwrap();
        // No flush: only the memory has these rows.
        assert!(!partition_dir(dir.path(), &partition_date(t0)).exists());
        assert_eq!(
            consumption(&q, t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 3.0, 2)]
        );
        store.flush().await.unwrap();
        // Flushed rows are read from the file, exactly once.
        assert_eq!(
            consumption(&q, t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 3.0, 2)]
        );
        // A correction not yet flushed replaces the file's row at once.
        store
            .append(gw_batch(2, vec![reading("m1", t0 + 120_000, 4.0, 3.0)]))
            .await
            .unwrap();
        assert_eq!(
            consumption(&q, t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 4.0, 2)]
        );
        // Without the live rows, a query sees only the files.
        assert_eq!(
            consumption(&query::Query::new(dir.path()), t0, t0 + 3_600_000).await,
            vec![("01000".to_owned(), 3.0, 2)]
        );
        drop(store);
        threads.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_removes_old_raw_dates_and_keeps_their_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let today = chrono::Utc::now().timestamp_millis() / day * day;
        let old = today - 10 * day;
        let old_date = partition_date(old);
        // A rollup of the old date, made while it was within retention.
        let rollup =
            storage::rollup::rollup_dir(dir.path(), storage::rollup::Period::Daily, &old_date);
        fs::create_dir_all(&rollup).unwrap();
        fs::write(rollup.join(storage::rollup::FILE), b"kept").unwrap();
        let config = StorageConfig {
            retention_days: 3,
            ..StorageConfig::default()
        };
        let (store, threads) = Store::open(dir.path(), 1_000_000, config).unwrap();
        store
            .append(gw_batch(
                1,
                vec![
                    reading("m1", old + 3_600_000, 1.0, 1.0),
                    reading("m1", today + 60_000, 2.0, 1.0),
                ],
            ))
            .await
            .unwrap();
        store.flush().await.unwrap();
        // The flush wrote the old date's partition; the pass after it removed it again.
        store.maintain(true).await.unwrap();
        assert!(!partition_dir(dir.path(), &old_date).exists());
        assert!(partition_dir(dir.path(), &partition_date(today)).exists());
        assert_eq!(store.metrics.partitions_expired.load(Ordering::Relaxed), 1);
        // The old rollup was neither recomputed from the late rows nor removed.
        assert_eq!(
            fs::read(rollup.join(storage::rollup::FILE)).unwrap(),
            b"kept"
        );
        // Today's rollups were computed.
        let today_rollup = storage::rollup::rollup_dir(
            dir.path(),
            storage::rollup::Period::Hourly,
            &partition_date(today),
        );
        assert!(today_rollup.join(storage::rollup::FILE).exists());
        drop(store);
        threads.join();
    }

    /// The month's energy in its monthly rollup, if it is current.
    fn month_energy(dir: &Path, month: chrono::NaiveDate) -> Option<f64> {
        use arrow::array::AsArray;
        if !storage::rollup::month_rollup_current(dir, month, &mut |_| true) {
            return None;
        }
        let file = File::open(storage::rollup::month_rollup_path(dir, month)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
        let mut total = 0.0;
        for b in reader {
            let b = b.unwrap();
            total += b
                .column_by_name("energy")
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .flatten()
                .sum::<f64>();
        }
        Some(total)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn maintenance_builds_a_months_rollup_and_rebuilds_it_after_a_late_reading() {
        let dir = tempfile::tempdir().unwrap();
        let march = chrono::NaiveDate::from_ymd_opt(2025, 3, 1).unwrap();
        let hour = 3_600_000;
        // Hourly readings from 2025-02-28 00:00 UTC to 2025-04-01 00:00 UTC: March in Beijing
        // time, (02-28 16:00, 03-31 16:00] UTC, holds 31 × 24 of them.
        let from = chrono::NaiveDate::from_ymd_opt(2025, 2, 28)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let rows: Vec<Reading> = (0..=32 * 24)
            .map(|h| reading("m1", from + h * hour, h as f64, 1.0))
            .collect();
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        store.append(gw_batch(1, rows)).await.unwrap();
        store.flush().await.unwrap();
        store.maintain(true).await.unwrap();
        assert_eq!(month_energy(dir.path(), march), Some(744.0));
        // February and April are not wholly rolled up: no monthly rollup.
        for m in [(2025, 2), (2025, 4)] {
            let m = chrono::NaiveDate::from_ymd_opt(m.0, m.1, 1).unwrap();
            assert!(!storage::rollup::month_rollup_path(dir.path(), m).exists());
        }
        // A late reading in March: the monthly rollup is stale until maintenance has rolled up
        // its date again and rebuilt the month.
        std::thread::sleep(std::time::Duration::from_millis(20));
        store
            .append(gw_batch(
                2,
                vec![reading("m2", from + 15 * 24 * hour + 30_000, 1.0, 5.0)],
            ))
            .await
            .unwrap();
        store.flush().await.unwrap();
        let (mut newest, dir_path) = (
            |d| storage::rollup::newest_readings(dir.path(), d),
            dir.path(),
        );
        let late_day = (from + 15 * 24 * hour).div_euclid(storage::rollup::DAY_MS);
        assert!(!storage::rollup::rollups_current(
            dir_path,
            late_day,
            &mut newest
        ));
        store.maintain(true).await.unwrap();
        assert_eq!(month_energy(dir.path(), march), Some(749.0));
        drop(store);
        threads.join();
        // A data directory from before monthly rollups: the first pass builds them.
        fs::remove_dir_all(storage::rollup::month_rollup_dir(dir.path(), march)).unwrap();
        let (store, threads) =
            Store::open(dir.path(), 1_000_000, StorageConfig::default()).unwrap();
        store.maintain(false).await.unwrap();
        assert_eq!(month_energy(dir.path(), march), Some(749.0));
        drop(store);
        threads.join();
    }
}
