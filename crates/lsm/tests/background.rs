//! Background flushing and compaction: writes wait (never fail) for a stuck worker, slow down
//! as level 0 fills, `compact_range` and `wait_idle` do what they say, and a failure in the
//! background poisons the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::CountingFs;
use lsm::{CompactionOptions, Db, Error, FileSystem, MemFs, Options};

mod common;

fn key(i: u64) -> String {
    format!("key{i:06}")
}

/// Polls `done` until it holds; fails the test after ten seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn writes_wait_for_a_stuck_flush_and_then_all_succeed() {
    let fs = CountingFs::new();
    let options = Options {
        fs: Arc::new(fs.clone()),
        memtable_bytes: 1_000,
        max_frozen_memtables: 1,
        ..Options::default()
    };
    let db = Db::open("/db", options).unwrap();
    fs.pause_tables(true); // The worker will block writing its first table.
    let done = Arc::new(AtomicU64::new(0));
    const WRITES: u64 = 5_000;
    let writer = {
        let (db, done) = (db.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 0..WRITES {
                db.put(key(i), format!("value{i}")).unwrap();
                done.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    eventually("a write stalls", || db.stats().stalled_writes > 0);
    // Stalled for good: one memtable frozen, one full; nothing moves while tables cannot be
    // written (each write is about 30 bytes, a memtable 1000).
    let stuck = done.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(done.load(Ordering::SeqCst), stuck, "a write got past a full set of memtables");
    assert!(stuck < 100, "{stuck} writes fit in two 1000-byte memtables?");
    fs.pause_tables(false);
    writer.join().unwrap();
    db.wait_idle().unwrap();
    for i in (0..WRITES).step_by(97) {
        assert_eq!(db.get(key(i).as_bytes()).unwrap().unwrap(), format!("value{i}").as_bytes());
    }
    assert!(db.stats().flushes > 100);
}

#[test]
fn writes_slow_down_while_level_zero_is_full_but_do_not_fail() {
    let fs = MemFs::new();
    let compaction = CompactionOptions {
        level0_trigger: 100, // Never compact: level 0 only grows.
        level0_slowdown: 2,
        level0_stop: 3, // Raised to 101: writes must not wait for a compaction that won't come.
        ..CompactionOptions::default()
    };
    let options = Options { fs: Arc::new(fs.clone()), compaction, ..Options::default() };
    let db = Db::open("/db", options).unwrap();
    for round in 0..4u64 {
        db.put(key(round), "v").unwrap();
        db.flush().unwrap();
    }
    assert_eq!(db.stats().slowed_writes, 2, "the writes after the 2nd and 3rd flush");
    assert_eq!(db.table_count(), 4);
    db.put("after", "v").unwrap();
    assert_eq!(db.stats().slowed_writes, 3);
}

#[test]
fn compact_range_leaves_only_live_versions_in_one_level() {
    let fs = MemFs::new();
    let compaction = CompactionOptions { level0_trigger: 50, ..CompactionOptions::default() };
    let options = Options {
        fs: Arc::new(fs.clone()),
        memtable_bytes: 2_000,
        compaction,
        ..Options::default()
    };
    let db = Db::open("/db", options.clone()).unwrap();
    for round in 0..5 {
        for i in 0..200 {
            db.put(key(i), format!("r{round}-{i}")).unwrap();
        }
    }
    for i in (0..200).step_by(2) {
        db.delete(key(i)).unwrap();
    }
    db.flush().unwrap();
    let before = db.table_count();
    assert!(before > 10, "{before} tables");
    // Only part of the range first: level 0 goes down whole, so every table moves.
    db.compact_range(Some(key(50).as_bytes()), Some(key(60).as_bytes())).unwrap();
    let after = db.table_count();
    assert!(after < before, "{after} tables after, {before} before");
    db.compact_range(None, None).unwrap();
    let live = db.scan(b"", None, &db.snapshot()).unwrap();
    assert_eq!(live.len(), 100);
    // Exactly the odd keys, each with its newest value: an older round's value, a deleted key
    // or a lost one all fail here.
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (1..200)
        .step_by(2)
        .map(|i| (key(i).into_bytes(), format!("r4-{i}").into_bytes()))
        .collect();
    assert_eq!(live.len(), expected.len());
    for ((k, v), (want_k, want_v)) in live.iter().zip(&expected) {
        assert_eq!(
            (String::from_utf8_lossy(k), String::from_utf8_lossy(v)),
            (String::from_utf8_lossy(want_k), String::from_utf8_lossy(want_v)),
            "live pair differs from the newest version"
        );
    }
    // 100 live pairs of about 30 bytes: one small table, no tombstones or old versions left.
    assert_eq!(db.table_count(), 1);
    let files = fs.list(std::path::Path::new("/db")).unwrap();
    let table = files.iter().find(|n| n.ends_with(".sst")).unwrap();
    let size = fs.read(&std::path::Path::new("/db").join(table)).unwrap().len();
    assert!(size < 8_000, "a {size}-byte table for 100 pairs");
    drop(db);
    let db = Db::open("/db", options).unwrap();
    assert_eq!(db.scan(b"", None, &db.snapshot()).unwrap(), live);
}

#[test]
fn a_snapshot_keeps_its_versions_through_compact_range() {
    let fs = MemFs::new();
    let options = Options { fs: Arc::new(fs), memtable_bytes: 500, ..Options::default() };
    let db = Db::open("/db", options).unwrap();
    for i in 0..50 {
        db.put(key(i), "old").unwrap();
    }
    let snapshot = db.snapshot();
    for i in 0..50 {
        db.delete(key(i)).unwrap();
    }
    db.compact_range(None, None).unwrap();
    assert_eq!(db.scan(b"", None, &db.snapshot()).unwrap(), vec![]);
    assert_eq!(db.scan(b"", None, &snapshot).unwrap().len(), 50);
    drop(snapshot);
    db.compact_range(None, None).unwrap();
    assert_eq!(db.table_count(), 0, "with no snapshot left, the tombstones go");
}

#[test]
fn a_failed_background_write_poisons_the_database() {
    let fs = CountingFs::new();
    let options = Options { fs: Arc::new(fs.clone()), memtable_bytes: 1_000, ..Options::default() };
    let db = Db::open("/db", options.clone()).unwrap();
    db.put("durable", "yes").unwrap();
    db.close().unwrap();
    let db = Db::open("/db", options.clone()).unwrap();
    fs.pause_tables(true);
    for i in 0..50 {
        db.put(key(i), "0123456789").unwrap(); // Fills the memtable: the worker gets it.
    }
    fs.inner.fail_syncs(true); // The disk fails under the worker's table.
    fs.pause_tables(false);
    let err = db.wait_idle().unwrap_err();
    assert!(err.to_string().contains("background flush or compaction failed"), "{err}");
    fs.inner.fail_syncs(false);
    let err = db.put("k", "v").unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(matches!(db.flush().unwrap_err(), Error::Poisoned(_)));
    drop(db);
    fs.inner.crash();
    let db = Db::open("/db", options).unwrap();
    assert_eq!(db.get(b"durable").unwrap().as_deref(), Some(&b"yes"[..]));
}

#[test]
fn a_failed_sync_while_flushing_poisons_the_database() {
    let fs = MemFs::new();
    let db = Db::open("/db", Options { fs: Arc::new(fs.clone()), ..Options::default() }).unwrap();
    db.put("k", "v").unwrap();
    fs.fail_syncs(true);
    assert!(db.flush().unwrap_err().to_string().contains("injected fsync failure"));
    fs.fail_syncs(false);
    assert!(matches!(db.put("k", "v2").unwrap_err(), Error::Poisoned(_)));
}
