//! A full disk (`ENOSPC`, from [`MemFs::set_capacity`]) is not a failure of the engine: a write
//! that cannot reach the WAL fails with [`Error::NoSpace`] and nothing is poisoned, flushes and
//! compactions that fail for space leave no partial files and are retried by themselves, and
//! once space is freed everything goes on. Nothing acknowledged is lost, before or after a
//! crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lsm::{Db, Error, FileSystem, MemFs, Options};

fn key(i: u64) -> String {
    format!("key{i:06}")
}

fn value(i: u64) -> String {
    format!("value-{i:06}-{}", "x".repeat(40))
}

/// Polls `done` until it holds; fails the test after ten seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn options(fs: &MemFs, wal: bool) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync_writes: wal,
        wal,
        memtable_bytes: 2_000,
        // No write may stall here. On a full disk the flushes wait for space, and a write held
        // back for them would wait with them, by design (`Db::make_room`), until the test frees
        // space after its writes: a hang. And a WAL that ran out of space is replaced by the
        // next write, which freezes the memtable however small, so the tests' writes on a full
        // disk may freeze up to one memtable each (a limit of 4 hung a repeat run).
        max_frozen_memtables: 256,
        ..Options::default()
    }
}

fn tables_on_disk(fs: &MemFs) -> usize {
    fs.list("/db".as_ref()).unwrap().iter().filter(|n| n.ends_with(".sst")).count()
}

/// Every acknowledged key reads back with its value.
fn assert_all_there(db: &Db, acknowledged: &[u64]) {
    for &i in acknowledged {
        let got = db.get(key(i).as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(value(i).as_bytes()), "acknowledged {} is lost", key(i));
    }
}

#[test]
fn a_flush_that_runs_out_of_space_is_retried_once_space_is_back() {
    for wal in [false, true] {
        let fs = MemFs::new();
        let db = Db::open("/db", options(&fs, wal)).unwrap();
        // A memtable just short of full (29 pairs of 66 bytes; it holds 2,000), written while
        // space lasts.
        let mut acknowledged = Vec::new();
        for i in 0..29 {
            db.put(key(i), value(i)).unwrap();
            acknowledged.push(i);
        }
        assert_eq!(db.stats().no_space_errors, 0);
        // Then room for a few WAL records but not for a table: the next puts fill the memtable,
        // and the flush that follows fails for space.
        fs.set_capacity(Some(fs.used_bytes() + if wal { 500 } else { 100 }));
        for i in 29..60 {
            match db.put(key(i), value(i)) {
                Ok(()) => acknowledged.push(i),
                // The WAL shares the disk with the failing flush, which fills it before giving
                // its partial table back: a record may find no room. Refused, not acknowledged.
                Err(Error::NoSpace(why)) if wal => assert!(why.contains("no space left"), "{why}"),
                Err(e) => panic!("put {i} (wal {wal}): {e}"),
            }
        }
        // The flush's failure (a WAL's reads "... ran out of space", and the flush's is the
        // one reported while both are).
        let flush_failed = || db.no_space().is_some_and(|why| why.contains("no space left"));
        eventually("the flush fails for space", flush_failed);
        assert!(db.stats().no_space_errors > 0);
        assert_eq!(db.stats().flushes, 0);
        assert_eq!(tables_on_disk(&fs), 0, "a partial table is removed (wal {wal})");
        assert_all_there(&db, &acknowledged); // Reads go on.

        fs.set_capacity(None);
        db.wait_idle().unwrap();
        assert!(db.stats().flushes > 0);
        assert_eq!(tables_on_disk(&fs), db.table_count(), "no table is left over");
        // A WAL that ran out of space is replaced by the next write.
        db.put(key(1000), value(1000)).unwrap();
        assert_eq!(db.no_space(), None);
        acknowledged.push(1000);
        assert_all_there(&db, &acknowledged);
        db.close().unwrap();
        let db = Db::open("/db", options(&fs, wal)).unwrap();
        assert_all_there(&db, &acknowledged);
    }
}

#[test]
fn a_wal_write_that_runs_out_of_space_fails_alone_and_poisons_nothing() {
    let fs = MemFs::new();
    let db = Db::open("/db", options(&fs, true)).unwrap();
    db.put(key(0), value(0)).unwrap();
    fs.set_capacity(Some(fs.used_bytes() + 30)); // A record of a value(i) does not fit.
    let err = db.put(key(1), value(1)).unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert!(err.is_no_space());
    assert!(err.to_string().contains("writes resume once space is freed"), "{err}");
    assert_eq!(db.get(key(1).as_bytes()).unwrap(), None, "a failed write is not visible");
    // Still full: the next write fails the same way (a new WAL cannot be made).
    assert!(db.put(key(2), value(2)).unwrap_err().is_no_space());
    assert!(db.no_space().is_some());
    fs.set_capacity(None);
    db.put(key(3), value(3)).unwrap();
    assert_all_there(&db, &[0, 3]);
    drop(db);
    fs.crash();
    let db = Db::open("/db", options(&fs, true)).unwrap();
    assert_all_there(&db, &[0, 3]);
    db.put(key(4), value(4)).unwrap();
}

/// The disk fills at every point of the write path in turn (WAL appends and syncs, table
/// writes, the manifest, directory syncs): whatever fails, the database is never poisoned,
/// recovers once space is freed, and keeps every acknowledged write, also across a crash.
#[test]
fn the_disk_filling_anywhere_loses_nothing_acknowledged() {
    let (mut refused, mut background_failures) = (0, 0);
    for wal in [false, true] {
        for room in (0..9_000).step_by(150) {
            let fs = MemFs::new();
            let db = Db::open("/db", options(&fs, wal)).unwrap();
            db.put(key(0), value(0)).unwrap();
            let mut acknowledged = vec![0];
            fs.set_capacity(Some(fs.used_bytes() + room));
            for i in 1..100 {
                match db.put(key(i), value(i)) {
                    Ok(()) => acknowledged.push(i),
                    Err(e) => {
                        assert!(e.is_no_space(), "room {room}, wal {wal}: {e}");
                        refused += 1;
                    }
                }
            }
            // Let the worker meet the full disk too.
            std::thread::sleep(Duration::from_millis(2));
            background_failures += db.stats().no_space_errors;
            fs.set_capacity(None);
            db.wait_idle().unwrap_or_else(|e| panic!("room {room}, wal {wal}: {e}"));
            db.put(key(500), value(500)).unwrap();
            acknowledged.push(500);
            assert_all_there(&db, &acknowledged);
            db.flush().unwrap();
            drop(db);
            fs.crash();
            let db = Db::open("/db", options(&fs, wal))
                .unwrap_or_else(|e| panic!("room {room}, wal {wal}: reopen: {e}"));
            assert_all_there(&db, &acknowledged);
        }
    }
    assert!(refused > 0 && background_failures > refused, "{refused} {background_failures}");
}
