//! Every byte of a manifest and of a WAL flipped in turn: opening either reports the damage
//! ([`Error::Corruption`], naming the file) or recovers a state the database really was in,
//! never a panic and never a wrong value.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lsm::{CompactionOptions, Db, Error, FileSystem, MemFs, Options};

const DIR: &str = "/db";

fn options(fs: &MemFs) -> Options {
    let compaction = CompactionOptions {
        level0_trigger: 2,
        level_base_bytes: 2_000,
        target_table_bytes: 1_000,
        ..CompactionOptions::default()
    };
    Options {
        fs: Arc::new(fs.clone()),
        sync_writes: true,
        memtable_bytes: 600,
        compaction,
        ..Options::default()
    }
}

/// A copy of every file of `fs`, all durable.
fn copy(fs: &MemFs) -> MemFs {
    let out = MemFs::new();
    for name in fs.list(Path::new(DIR)).unwrap() {
        let path = Path::new(DIR).join(&name);
        let mut w = out.create(&path).unwrap();
        w.append(&fs.read(&path).unwrap()).unwrap();
        w.sync().unwrap();
    }
    out.sync_dir(Path::new(DIR)).unwrap();
    out
}

fn contents(db: &Db) -> Vec<(Bytes, Bytes)> {
    db.scan(b"", None, &db.snapshot()).unwrap()
}

/// Writes `rounds` rounds of overwrites, so that flushes and compactions log many edits.
fn build(rounds: u32) -> (MemFs, Vec<Vec<(Bytes, Bytes)>>) {
    let fs = MemFs::new();
    let db = Db::open(DIR, options(&fs)).unwrap();
    let mut states = vec![contents(&db)];
    for round in 0..rounds {
        for i in 0..20 {
            db.put(format!("key{i:02}"), format!("round{round}-{i}")).unwrap();
            states.push(contents(&db));
        }
    }
    db.wait_idle().unwrap();
    drop(db); // The last record of the manifest is a real edit, not an open's checkpoint.
    (fs, states)
}

#[test]
fn every_flipped_manifest_byte_is_reported_or_harmless() {
    let (fs, states) = build(6);
    let last = states.last().unwrap();
    let manifest = Path::new(DIR).join("MANIFEST");
    let len = fs.read(&manifest).unwrap().len();
    assert!(len > 500, "a manifest of {len} bytes is too short to test anything");
    let (mut reported, mut harmless) = (0, 0);
    for offset in 0..len {
        let damaged = copy(&fs);
        let byte = damaged.read(&manifest).unwrap()[offset];
        damaged.corrupt_byte(&manifest, offset, byte ^ 0x5a);
        match Db::open(DIR, options(&damaged)) {
            // A damaged last record is cut off like a torn write; what it retired is still
            // there, so the state is the same.
            Ok(db) => {
                assert_eq!(&contents(&db), last, "wrong contents after flipping byte {offset}");
                harmless += 1;
            }
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, manifest, "byte {offset}");
                reported += 1;
            }
            Err(e) => panic!("byte {offset}: unexpected error {e}"),
        }
    }
    assert!(reported > 0 && harmless > 0, "{reported} reported, {harmless} harmless");
}

#[test]
fn every_flipped_wal_byte_is_reported_or_loses_only_the_last_write() {
    let fs = MemFs::new();
    let db = Db::open(DIR, Options { memtable_bytes: 1 << 20, ..options(&fs) }).unwrap();
    let mut states = vec![contents(&db)];
    for i in 0..30 {
        db.put(format!("key{i:02}"), format!("value{i}")).unwrap();
        states.push(contents(&db));
    }
    drop(db);
    let wal = fs
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".log"))
        .map(|n| Path::new(DIR).join(n))
        .unwrap();
    let len = fs.read(&wal).unwrap().len();
    let (mut reported, mut cut) = (0, 0);
    for offset in 0..len {
        let damaged = copy(&fs);
        let byte = damaged.read(&wal).unwrap()[offset];
        damaged.corrupt_byte(&wal, offset, byte ^ 0x5a);
        match Db::open(DIR, Options { memtable_bytes: 1 << 20, ..options(&damaged) }) {
            // Damage in the last record looks like a torn write: it is cut off (and logged),
            // which loses that one write, as point-in-time recovery does.
            Ok(db) => {
                assert_eq!(contents(&db), states[states.len() - 2], "byte {offset}");
                cut += 1;
            }
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, wal, "byte {offset}");
                reported += 1;
            }
            Err(e) => panic!("byte {offset}: unexpected error {e}"),
        }
    }
    assert!(reported > 0 && cut > 0, "{reported} reported, {cut} cut");
}

/// A record framed as in the WAL and the manifest (docs/formats/wal.md).
fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A version edit adding and removing nothing (docs/formats/manifest.md).
fn edit(log_number: u64, next_file: u64, last_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [log_number, next_file, last_seq] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&[0; 8]); // no tables added, none removed
    out
}

/// A write batch of one put starting at `seq`, or of none (docs/formats/wal.md).
fn batch(seq: u64, puts: u32) -> Vec<u8> {
    let mut out = seq.to_le_bytes().to_vec();
    out.extend_from_slice(&puts.to_le_bytes());
    for _ in 0..puts {
        out.push(1);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(b'k');
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(b'v');
    }
    out
}

fn fs_with(name: &str, bytes: &[u8]) -> MemFs {
    let fs = MemFs::new();
    fs.create_dir_all(Path::new(DIR)).unwrap();
    let mut w = fs.create(&Path::new(DIR).join(name)).unwrap();
    w.append(bytes).unwrap();
    w.sync().unwrap();
    fs
}

/// Found by the `manifest` fuzz target (fuzz/regressions/manifest/): the WAL created at open
/// was numbered below the manifest's log_number, and the next open deleted it as flushed.
#[test]
fn a_manifest_log_number_past_next_file_loses_no_write() {
    let fs = fs_with("MANIFEST", &framed(2, &edit(1_000, 2, 0)));
    let db = Db::open(DIR, options(&fs)).unwrap();
    db.put("k", "v").unwrap();
    drop(db);
    let db = Db::open(DIR, options(&fs)).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Found by the `wal` and `manifest` fuzz targets: numbers near `u64::MAX` overflowed
/// recovery's arithmetic. They are corruption now, and a write past the last sequence number
/// is refused rather than written where the next open would refuse it.
#[test]
fn file_and_sequence_numbers_past_their_bounds_are_corruption() {
    let corrupt = |fs: &MemFs| match Db::open(DIR, options(fs)) {
        Err(Error::Corruption { .. }) => {}
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, the database opened"),
    };
    corrupt(&fs_with("MANIFEST", &framed(2, &edit(0, u64::MAX, 0))));
    corrupt(&fs_with("MANIFEST", &framed(2, &edit(0, 2, u64::MAX))));
    corrupt(&fs_with("wal-00000001.log", &framed(1, &batch(u64::MAX, 1))));
    corrupt(&fs_with("wal-00000001.log", &framed(1, &batch(0, 1))));
    corrupt(&fs_with("wal-00000001.log", &framed(1, &batch(5, 0))));
    corrupt(&fs_with("wal-00000001.log", &framed(1, &batch(0, 0))));

    let last = (1u64 << 56) - 1;
    let fs = fs_with("wal-00000001.log", &framed(1, &batch(last, 1)));
    let db = Db::open(DIR, options(&fs)).unwrap();
    assert!(matches!(db.put("x", "y"), Err(Error::SequenceExhausted { .. })));
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    drop(db);
    Db::open(DIR, options(&fs)).expect("a refused write leaves the database readable");
}
