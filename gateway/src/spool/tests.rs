use proptest::prelude::*;
use reading_model::{
    AccountCode, Category, EnergyCode, GatewayId, MeterId, Quality, Quantity, Reading, Unit,
};

use super::*;

fn reading(i: usize) -> Reading {
    Reading {
        ts: 1_767_225_600_000 + i as i64 * 60_000,
        account: AccountCode::parse("110108A001").unwrap(),
        meter: MeterId::parse("main").unwrap(),
        category: Category::Electricity,
        item: EnergyCode::parse("01000").unwrap(),
        quantity: Quantity::PowerActive,
        unit: Unit::Kilowatt,
        value: i as f64 * 0.5,
        delta: None,
        kgce: None,
        kgco2e: None,
        factor: None,
        quality: Quality::Good,
    }
}

fn batch_of(seq: u64, readings: usize) -> Batch {
    Batch::new(
        GatewayId::parse("gw").unwrap(),
        seq,
        (0..readings).map(reading).collect(),
    )
}

fn encoded(b: &Batch) -> EncodedBatch {
    EncodedBatch::new(&b.gateway, b.epoch, b.seq, b.version, &b.readings).unwrap()
}

fn batch(seq: u64) -> Batch {
    batch_of(seq, 1)
}

const SMALL: SpoolLimits = SpoolLimits {
    max_bytes: u64::MAX,
    segment_bytes: 2048,
};

fn open(dir: &Path, limits: SpoolLimits) -> Spool {
    Spool::open(dir, limits, |_, _| {}).unwrap().0
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Bytes of segment files on disk, which `bytes()` must match.
fn disk_bytes(dir: &Path) -> u64 {
    files(dir, "seg")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn quarantined(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn append_read_ack_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, state) = Spool::open(dir.path(), SMALL, |_, _| {}).unwrap();
    assert_eq!(state, SpoolState::default());
    spool.append(&batch(0)).unwrap();
    spool.append(&batch(1)).unwrap();
    assert!(matches!(
        spool.append(&batch(1)),
        Err(SpoolError::Duplicate { seq: 1 })
    ));
    spool
        .save_state(&SpoolState {
            next_seq: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(spool.read(1).unwrap(), batch(1));
    // The spooled bytes as they are, with the reading count from the record header: a small
    // batch as its wire JSON, a large one as an Arrow IPC stream.
    let stored = spool.read_stored(1).unwrap();
    assert_eq!(
        (stored.seq, stored.epoch, stored.encoding, stored.readings),
        (1, None, Encoding::Json, 1)
    );
    assert_eq!(stored.payload, serde_json::to_vec(&batch(1)).unwrap());
    // Batches come in the spool's epoch (these, made without one, are sent under it).
    let epoch = spool.epoch();
    let in_epoch = batch(1).with_epoch(Some(epoch));
    assert_eq!(
        spool.read_encoded(1).unwrap().payload,
        serde_json::to_vec(&in_epoch).unwrap()
    );
    drop(spool);
    // Batch 1 is newer than the state file: it is replayed and next_seq moves past it.
    let mut replayed = vec![];
    let (spool, state) = Spool::open(dir.path(), SMALL, |_, b| replayed.push(b.seq)).unwrap();
    assert_eq!((replayed, state.next_seq), (vec![1], 2));
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    spool.remove(0).unwrap();
    assert!(matches!(
        spool.remove(0),
        Err(SpoolError::NotPending { seq: 0 })
    ));
    assert_eq!(spool.pending().unwrap(), vec![1]);
    assert_eq!(spool.first_pending(), Some(1));
    drop(spool);
    // The ack survives a restart: batch 0 does not come back.
    let spool = open(dir.path(), SMALL);
    assert_eq!(spool.pending().unwrap(), vec![1]);
    // The segment of the previous life goes with its last batch.
    spool.remove(1).unwrap();
    assert_eq!((spool.bytes(), disk_bytes(dir.path())), (0, 0));
    // The active one stays for the next appends once all its batches are acknowledged, and
    // goes at the next open.
    spool.append(&batch(2)).unwrap();
    spool.remove(2).unwrap();
    assert_eq!(files(dir.path(), "seg").len(), 1);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    drop(spool);
    let spool = open(dir.path(), SMALL);
    assert_eq!((spool.bytes(), disk_bytes(dir.path())), (0, 0));
}

#[test]
fn large_batches_are_arrow_streams_sent_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SMALL);
    let large = batch_of(3, 4 * ARROW_MIN_READINGS).with_epoch(Some(spool.epoch()));
    spool.append(&large).unwrap();
    let sent = spool.read_encoded(3).unwrap();
    assert_eq!(sent, spool.read_stored(3).unwrap());
    assert_eq!(spool.stats().reencoded, 0);
    assert_eq!(
        (sent.seq, sent.encoding, sent.readings),
        (3, Encoding::Arrow, 4 * ARROW_MIN_READINGS as u32)
    );
    assert_eq!(
        sent.encoding.content_type(),
        "application/vnd.apache.arrow.stream"
    );
    assert_eq!(crate::wire::decode(&sent.payload).unwrap(), large);
    assert_eq!(spool.read(3).unwrap(), large);
    // Smaller than its JSON by far (the JSON is about 150 bytes a reading).
    assert!(
        sent.payload.len() < serde_json::to_vec(&large).unwrap().len() / 2,
        "{} bytes",
        sent.payload.len()
    );
}

/// A version 2 segment (JSON records, no encoding byte or count) left by an earlier gateway,
/// with its ack file and state snapshot: the pending batch is sent as its JSON, and the
/// counters come back as the newest record says.
#[test]
fn the_version_2_fixture_is_read_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-v2");
    for name in [
        "00000000000000000000.seg",
        "00000000000000000000.ack",
        "state.json",
    ] {
        fs::copy(fixture.join(name), dir.path().join(name)).unwrap();
    }
    let (spool, state) = Spool::open(dir.path(), SMALL, crate::normalize::replay).unwrap();
    // Batch 7 was acknowledged; 8 is pending and newer than the snapshot.
    assert_eq!(spool.pending().unwrap(), vec![8]);
    assert_eq!(state.next_seq, 9);
    let energy = &state.counters["110108A001/main/energy_import"];
    assert_eq!(
        (energy.value, energy.ts),
        (104.0, 1_767_225_600_000 + 8 * 60_000)
    );
    let sent = spool.read_stored(8).unwrap();
    assert_eq!((sent.encoding, sent.readings), (Encoding::Json, 2));
    let batch: Batch = serde_json::from_slice(&sent.payload).unwrap();
    assert_eq!(batch, spool.read(8).unwrap());
    assert_eq!(batch.readings[0].delta, Some(1.5));
    // The spool got an epoch at open, and its old batch is sent in it.
    let sent = spool.read_encoded(8).unwrap();
    let in_epoch: Batch = serde_json::from_slice(&sent.payload).unwrap();
    assert_eq!(in_epoch, batch.with_epoch(Some(spool.epoch())));
    // New batches go to a version 4 segment of their own.
    spool.append(&batch_of(9, ARROW_MIN_READINGS)).unwrap();
    assert_eq!(files(dir.path(), "seg").len(), 2);
    spool.remove(8).unwrap();
    spool
        .save_state(&SpoolState {
            next_seq: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(files(dir.path(), "seg").len(), 1);
}

#[test]
fn segments_rotate_at_the_limit_and_go_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SMALL);
    for seq in 0..12 {
        spool.append(&batch_of(seq, 2)).unwrap();
    }
    let segs = files(dir.path(), "seg");
    assert!(segs.len() >= 3, "{segs:?}");
    for s in &segs {
        // A segment only passes the limit when one record alone does.
        assert!(fs::metadata(s).unwrap().len() <= SMALL.segment_bytes);
    }
    assert_eq!(spool.stats().segments, segs.len() as u64);
    // Acknowledging every batch of the first segment deletes it and its ack file.
    let first = spool.locate(0).unwrap().segment;
    let in_first: Vec<u64> = (0..12)
        .filter(|&s| spool.locate(s).unwrap().segment == first)
        .collect();
    for &s in &in_first[..in_first.len() - 1] {
        spool.remove(s).unwrap();
    }
    assert!(spool.ack_path(first).exists());
    assert!(!spool.state_due());
    spool.remove(in_first[in_first.len() - 1]).unwrap();
    // Settled, but its records are what the counters' state rests on until a snapshot covers
    // them: the segment waits for one.
    assert!(spool.segment_path(first).exists() && spool.state_due());
    spool
        .save_state(&SpoolState {
            next_seq: 12,
            ..Default::default()
        })
        .unwrap();
    assert!(!spool.state_due());
    assert!(!spool.segment_path(first).exists() && !spool.ack_path(first).exists());
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    // A batch larger than a segment gets one of its own.
    spool.append(&batch_of(100, 40)).unwrap();
    assert_eq!(spool.read(100).unwrap(), batch_of(100, 40));
}

#[test]
fn a_torn_tail_is_cut_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolLimits::default());
    spool.append(&batch(0)).unwrap();
    spool.append(&batch(1)).unwrap();
    let seg = files(dir.path(), "seg").remove(0);
    let good = fs::metadata(&seg).unwrap().len();
    drop(spool);
    // The crash: half of batch 2's record reached the disk.
    let rec = encode_record(&encoded(&batch(2)));
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&rec[..rec.len() / 2]).unwrap();
    drop(f);

    let (spool, state) = Spool::open(dir.path(), SpoolLimits::default(), |_, _| {}).unwrap();
    assert_eq!(spool.pending().unwrap(), vec![0, 1]);
    assert_eq!(state.next_seq, 2, "batch 2 never was: its number is free");
    assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    assert_eq!(spool.stats().torn_bytes_cut, (rec.len() / 2) as u64);
    let q = quarantined(dir.path());
    assert!(
        q.iter().any(|n| n.ends_with(&format!("@{good}.torn"))),
        "{q:?}"
    );
    spool.append(&batch(2)).unwrap();
    assert_eq!(spool.read(2).unwrap(), batch(2));
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
}

#[test]
fn a_damaged_record_is_quarantined_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolLimits::default());
    for seq in 0..3 {
        spool.append(&batch(seq)).unwrap();
    }
    let loc = spool.locate(1).unwrap();
    let seg = spool.segment_path(loc.segment);
    drop(spool);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(loc.offset + loc.len) as usize - 3] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();

    let spool = open(dir.path(), SpoolLimits::default());
    assert_eq!(spool.pending().unwrap(), vec![0, 2]);
    assert_eq!(spool.read(2).unwrap(), batch(2));
    let name = format!("{:020}.seg@{}", loc.segment, loc.offset);
    let reason = fs::read_to_string(
        dir.path()
            .join("quarantine")
            .join(format!("{name}.reason.txt")),
    )
    .unwrap();
    assert!(
        reason.contains(&format!("corrupt at byte {}", loc.offset)) && reason.contains("CRC"),
        "{reason}"
    );
    assert_eq!(
        fs::read(dir.path().join("quarantine").join(name))
            .unwrap()
            .len() as u64,
        loc.len
    );
    assert_eq!(spool.stats().quarantined, 1);
}

#[test]
fn damage_found_when_sending_is_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolLimits::default());
    spool.append(&batch(5)).unwrap();
    spool.append(&batch(6)).unwrap();
    let loc = spool.locate(5).unwrap();
    let seg = spool.segment_path(loc.segment);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[loc.offset as usize + RECORD_HEADER + 4] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let e = spool.read(5).unwrap_err().to_string();
    assert!(
        e.contains("CRC mismatch") && e.contains(&format!("byte {}", loc.offset + 8)),
        "{e}"
    );
    spool.quarantine(5, &e).unwrap();
    assert_eq!(spool.pending().unwrap(), vec![6]);
    assert!(quarantined(dir.path()).contains(&format!("{:020}.record", 5)));
}

#[test]
fn a_bad_segment_header_quarantines_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolLimits::default());
    spool.append(&batch(0)).unwrap();
    drop(spool);
    let seg = files(dir.path(), "seg").remove(0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8] = 9;
    fs::write(&seg, &bytes).unwrap();
    let (spool, state) = Spool::open(dir.path(), SpoolLimits::default(), |_, _| {}).unwrap();
    assert!(spool.pending().unwrap().is_empty());
    // Batch 0 may have reached ingest: its number is not given out again.
    assert_eq!(state.next_seq, 1);
    let q = quarantined(dir.path());
    assert!(q.iter().any(|n| n.ends_with(".seg")), "{q:?}");
    let reason = fs::read_to_string(dir.path().join("quarantine").join(format!(
        "{}.reason.txt",
        seg.file_name().unwrap().to_string_lossy()
    )))
    .unwrap();
    assert!(
        reason.contains("unsupported version 9 at byte 8"),
        "{reason}"
    );
}

#[test]
fn a_version_1_spool_is_migrated_and_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    // What a gateway of the file-per-batch version left behind: batches 3..=5 with the state
    // file saved after batch 4, a damaged file, and a half-written temp file.
    for seq in 3..=5 {
        fs::write(
            dir.path().join(format!("{seq:020}.batch")),
            legacy::encode(&batch_of(seq, 2)),
        )
        .unwrap();
    }
    let mut broken = legacy::encode(&batch(9));
    broken.truncate(broken.len() - 1);
    fs::write(dir.path().join(format!("{:020}.batch", 9)), broken).unwrap();
    fs::write(dir.path().join(".00000000000000000010.batch.tmp"), b"x").unwrap();
    fs::write(
        dir.path().join("state.json"),
        br#"{"next_seq":5,"counters":{}}"#,
    )
    .unwrap();

    let mut replayed = vec![];
    let (spool, state) = Spool::open(dir.path(), SMALL, |_, b| replayed.push(b.seq)).unwrap();
    assert_eq!(spool.pending().unwrap(), vec![3, 4, 5]);
    for seq in 3..=5 {
        assert_eq!(spool.read(seq).unwrap(), batch_of(seq, 2));
    }
    assert_eq!((replayed, state.next_seq), (vec![5], 6));
    assert!(files(dir.path(), "batch").is_empty());
    assert!(!dir.path().join(".00000000000000000010.batch.tmp").exists());
    let q = quarantined(dir.path());
    assert!(q.contains(&format!("{:020}.batch", 9)), "{q:?}");
    assert_eq!(spool.stats().migrated, 3);

    // A migration interrupted after copying but before deleting the old file does not send
    // the batch twice.
    fs::write(
        dir.path().join(format!("{:020}.batch", 4)),
        legacy::encode(&batch_of(4, 2)),
    )
    .unwrap();
    drop(spool);
    let spool = open(dir.path(), SMALL);
    assert_eq!(spool.pending().unwrap(), vec![3, 4, 5]);
    assert!(files(dir.path(), "batch").is_empty());
}

/// A batch file in the file-per-batch format (version 1) that gateways before the segment
/// spool wrote, checked in so the migration keeps reading what they left on disk.
#[test]
fn the_version_1_fixture_still_decodes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spool-v1/00000000000000000007.batch");
    let bytes = fs::read(&path).unwrap();
    let batch = legacy::decode(&path, &bytes).unwrap();
    assert_eq!((batch.gateway.as_str(), batch.seq), ("gw-01", 7));
    assert_eq!(batch.readings.len(), 2);
    assert_eq!(batch.readings[0].delta, Some(2.5));
}

#[test]
fn the_bound_raises_the_full_gauge_once_per_episode() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits {
        max_bytes: 4096,
        segment_bytes: 2048,
    };
    let spool = open(dir.path(), limits);
    let mut seq = 0;
    while spool.has_room() {
        spool.append(&batch_of(seq, 2)).unwrap();
        seq += 1;
    }
    assert!(spool.bytes() >= 4096);
    assert!(!spool.has_room());
    let s = spool.stats();
    assert!(s.full && s.times_full == 1, "{s:?}");
    for s in 0..seq {
        spool.remove(s).unwrap();
    }
    assert!(
        !spool.has_room(),
        "settled segments wait for the state snapshot"
    );
    spool
        .save_state(&SpoolState {
            next_seq: seq,
            ..Default::default()
        })
        .unwrap();
    assert!(spool.has_room());
    assert!(!spool.stats().full);
    while spool.has_room() {
        spool.append(&batch_of(seq, 2)).unwrap();
        seq += 1;
    }
    assert_eq!(spool.stats().times_full, 2);
}

#[derive(Debug, Clone)]
enum Op {
    /// The normalizer spools a batch of this many readings.
    Append(usize),
    /// The forwarder looks at the oldest pending batch and reads it.
    TakeNext,
    /// Ingest acknowledges the oldest pending batch.
    AckNext,
    /// A batch other than the oldest is acknowledged (the index is into the pending list).
    Ack(usize),
    /// Ingest refuses a batch: it goes to quarantine.
    Quarantine(usize),
    /// The gateway stops and starts again.
    Reopen,
    /// The gateway crashes while appending: this fraction (in 1/256) of the record is written.
    Torn(u8),
    /// The normalizer saves a state snapshot (it does when the spool asks, and may at any time).
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..6).prop_map(Op::Append),
        // Arrow records, each larger than a SMALL segment.
        1 => (ARROW_MIN_READINGS..ARROW_MIN_READINGS + 8).prop_map(Op::Append),
        2 => Just(Op::TakeNext),
        4 => Just(Op::AckNext),
        1 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Quarantine),
        1 => Just(Op::Reopen),
        1 => any::<u8>().prop_map(Op::Torn),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The spool against a map of pending batches: nothing acknowledged comes back, nothing
    /// pending is lost (across restarts and torn appends), batches come out oldest first, the
    /// byte count matches the files, and the state a restart recovers (the snapshot with the
    /// records after it replayed) is the state after the last batch spooled: the next seq, and
    /// a counter that each batch with readings sets to its seq.
    #[test]
    fn behaves_like_a_map_of_pending_batches(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path(), SMALL);
        let mut model: BTreeMap<u64, Batch> = BTreeMap::new();
        let mut gone: BTreeSet<u64> = BTreeSet::new();
        let mut next_seq = 0u64;
        let mut quarantines = 0u64;
        // What the normalizer's committed state is: the seq of the last batch with readings.
        let mut last: Option<u64> = None;
        let state_of = |next_seq: u64, last: Option<u64>| SpoolState {
            next_seq,
            counters: last
                .map(|l| ("last".to_owned(), Counter::new(l as f64, 0)))
                .into_iter()
                .collect(),
        };
        let replay = |state: &mut SpoolState, b: &Batch| {
            if !b.readings.is_empty() {
                state.counters.insert("last".into(), Counter::new(b.seq as f64, 0));
            }
        };
        for op in ops {
            match op {
                Op::Append(n) => {
                    // As the normalizer does before each append.
                    if spool.state_due() {
                        spool.save_state(&state_of(next_seq, last)).unwrap();
                    }
                    let b = batch_of(next_seq, n);
                    spool.append(&b).unwrap();
                    model.insert(next_seq, b);
                    if n > 0 {
                        last = Some(next_seq);
                    }
                    next_seq += 1;
                }
                Op::Snapshot => spool.save_state(&state_of(next_seq, last)).unwrap(),
                Op::TakeNext => {
                    let first = model.first_key_value();
                    prop_assert_eq!(spool.first_pending(), first.map(|(s, _)| *s));
                    if let Some((&seq, b)) = first {
                        prop_assert_eq!(&spool.read(seq).unwrap(), b);
                    }
                }
                Op::AckNext => {
                    if let Some((seq, _)) = model.pop_first() {
                        spool.remove(seq).unwrap();
                        gone.insert(seq);
                    }
                }
                Op::Ack(i) | Op::Quarantine(i) if !model.is_empty() => {
                    let seq = *model.keys().nth(i % model.len()).unwrap();
                    model.remove(&seq);
                    gone.insert(seq);
                    if matches!(op, Op::Quarantine(_)) {
                        spool.quarantine(seq, "refused").unwrap();
                        quarantines += 1;
                    } else {
                        spool.remove(seq).unwrap();
                    }
                }
                Op::Ack(_) | Op::Quarantine(_) => {}
                Op::Reopen => {
                    drop(spool);
                    let (reopened, state) = Spool::open(dir.path(), SMALL, replay).unwrap();
                    spool = reopened;
                    for (seq, b) in &model {
                        prop_assert_eq!(&spool.read(*seq).unwrap(), b);
                    }
                    // Counters come back as the last spooled batch left them, and no seq is
                    // used twice (ingest would drop the second as a duplicate).
                    prop_assert_eq!(&state, &state_of(next_seq, last));
                    quarantines = spool.stats().quarantined;
                }
                Op::Torn(frac) => {
                    let active = lock(&spool.index).active;
                    drop(spool);
                    if let Some(id) = active {
                        let rec = encode_record(&encoded(&batch_of(next_seq, 3)));
                        let cut = (rec.len() * usize::from(frac) / 256).max(1);
                        let mut f = OpenOptions::new()
                            .append(true)
                            .open(dir.path().join(format!("{id:020}.seg")))
                            .unwrap();
                        f.write_all(&rec[..cut]).unwrap();
                    }
                    let (reopened, state) = Spool::open(dir.path(), SMALL, replay).unwrap();
                    spool = reopened;
                    // The torn batch was never spooled; its number is used again.
                    prop_assert_eq!(&state, &state_of(next_seq, last));
                    quarantines = spool.stats().quarantined;
                }
            }
            let pending = spool.pending().unwrap();
            prop_assert_eq!(&pending, &model.keys().copied().collect::<Vec<_>>());
            prop_assert!(pending.iter().all(|s| !gone.contains(s)));
            prop_assert_eq!(spool.bytes(), disk_bytes(dir.path()));
            prop_assert_eq!(spool.stats().segments, files(dir.path(), "seg").len() as u64);
            prop_assert_eq!(spool.stats().quarantined, quarantines);
            if model.is_empty() {
                // Only the segment appends go to may outlive its batches, once the state
                // snapshot the spool asks for is saved.
                if spool.state_due() {
                    spool.save_state(&state_of(next_seq, last)).unwrap();
                }
                prop_assert!(!spool.state_due());
                let active = lock(&spool.index).active;
                let kept: Vec<PathBuf> = active.map(|id| spool.segment_path(id)).into_iter().collect();
                prop_assert!(files(dir.path(), "seg").iter().all(|p| kept.contains(p)));
            }
        }
    }
}

/// A version 3 record (no epoch bytes), as the gateway before epochs wrote it.
fn v3_record(b: &Batch) -> Vec<u8> {
    let e = encoded(b);
    let g = b.gateway.as_str().as_bytes();
    let mut body = vec![g.len() as u8];
    body.extend_from_slice(g);
    body.extend_from_slice(&b.seq.to_le_bytes());
    body.push(1); // JSON
    body.extend_from_slice(&e.readings.to_le_bytes());
    body.extend_from_slice(&e.payload);
    let mut out = RECORD_MARKER.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_new_spool_gets_an_epoch_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SMALL);
    let epoch = spool.epoch();
    assert!(epoch < 1 << 53, "{epoch}");
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("epoch.json")).unwrap()).unwrap();
    assert_eq!(file["epoch"], epoch);
    spool.append(&batch(0).with_epoch(Some(epoch))).unwrap();
    drop(spool);
    let spool = open(dir.path(), SMALL);
    assert_eq!(spool.epoch(), epoch);
    let stored = spool.read_stored(0).unwrap();
    assert_eq!(stored.epoch, Some(epoch));
    assert_eq!(spool.read(0).unwrap().epoch, Some(epoch));
    // Another spool (a gateway reinstalled with an empty one) numbers in another epoch.
    let other = tempfile::tempdir().unwrap();
    assert_ne!(open(other.path(), SMALL).epoch(), epoch);
}

#[test]
fn a_new_epoch_is_saved_and_pending_batches_are_sent_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SMALL);
    let old = spool.epoch();
    for seq in 0..3 {
        spool
            .append(
                &batch_of(seq, 2 * ARROW_MIN_READINGS * (seq as usize % 2) + 1)
                    .with_epoch(Some(old)),
            )
            .unwrap();
    }
    let new = spool.new_epoch().unwrap();
    assert_ne!(new, old);
    for seq in 0..3 {
        // On disk as written; sent as the same readings under the new epoch.
        assert_eq!(spool.read_stored(seq).unwrap().epoch, Some(old));
        let sent = spool.read_encoded(seq).unwrap();
        assert_eq!(sent.epoch, Some(new));
        let batch = match sent.encoding {
            Encoding::Json => serde_json::from_slice::<Batch>(&sent.payload).unwrap(),
            Encoding::Arrow => crate::wire::decode(&sent.payload).unwrap(),
        };
        assert_eq!(batch, spool.read(seq).unwrap().with_epoch(Some(new)));
    }
    assert_eq!(spool.stats().reencoded, 3);
    drop(spool);
    // The new epoch outlives a restart.
    assert_eq!(open(dir.path(), SMALL).epoch(), new);
}

#[test]
fn an_old_spool_without_an_epoch_gets_one_at_open_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    // A version 3 segment with batches 4 and 5 pending, and no epoch file.
    let mut seg = MAGIC.to_vec();
    seg.extend_from_slice(&3u16.to_le_bytes());
    seg.extend_from_slice(&v3_record(&batch(4)));
    seg.extend_from_slice(&v3_record(&batch_of(5, 3)));
    fs::write(dir.path().join(format!("{:020}.seg", 0)), &seg).unwrap();
    let spool = open(dir.path(), SMALL);
    assert_eq!(spool.pending().unwrap(), vec![4, 5]);
    let epoch = spool.epoch();
    assert!(dir.path().join("epoch.json").exists());
    assert_eq!(spool.read_stored(5).unwrap().epoch, None);
    assert_eq!(spool.read(5).unwrap(), batch_of(5, 3));
    let sent = spool.read_encoded(5).unwrap();
    assert_eq!(
        serde_json::from_slice::<Batch>(&sent.payload).unwrap(),
        batch_of(5, 3).with_epoch(Some(epoch))
    );
    drop(spool);
    let spool = open(dir.path(), SMALL);
    assert_eq!(spool.epoch(), epoch);
    // A damaged epoch file is replaced by a new epoch rather than stopping the gateway.
    drop(spool);
    fs::write(dir.path().join("epoch.json"), b"{\"epo").unwrap();
    let spool = open(dir.path(), SMALL);
    assert_ne!(spool.epoch(), epoch);
    assert_eq!(spool.pending().unwrap(), vec![4, 5]);
}
