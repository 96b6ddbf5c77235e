//! The database through its public API: durability, crashes, poisoning, group commit, and a
//! model test against a `BTreeMap`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::CountingFs;
use lsm::{Db, Error, FileSystem, MemFs, Options, WriteBatch, WriteOptions};
use quickcheck::{Arbitrary, Gen, QuickCheck};

mod common;

fn options(fs: &MemFs, sync: bool) -> Options {
    Options { fs: Arc::new(fs.clone()), sync_writes: sync, ..Options::default() }
}

fn get(db: &Db, key: &str) -> Option<String> {
    db.get(key.as_bytes()).unwrap().map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[test]
fn synced_writes_survive_a_crash_and_unsynced_ones_may_not() {
    let fs = MemFs::new();
    let db = Db::open("/db", options(&fs, false)).unwrap();
    db.write_opt(batch(&[("a", "1")]), WriteOptions { sync: true }).unwrap();
    db.put("b", "2").unwrap(); // Not synced.
    drop(db); // A dead process runs no threads: stop the background worker first.
    fs.crash();
    let db = Db::open("/db", options(&fs, false)).unwrap();
    assert_eq!(get(&db, "a").as_deref(), Some("1"));
    assert_eq!(get(&db, "b"), None, "an unsynced write survived a crash");
    // A clean close makes everything durable.
    db.put("c", "3").unwrap();
    db.close().unwrap();
    fs.crash();
    let db = Db::open("/db", options(&fs, false)).unwrap();
    assert_eq!(get(&db, "c").as_deref(), Some("3"));
}

fn batch(pairs: &[(&str, &str)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in pairs {
        b.put(k.to_string(), v.to_string());
    }
    b
}

#[test]
fn a_failed_fsync_poisons_the_database() {
    let fs = MemFs::new();
    let db = Db::open("/db", options(&fs, true)).unwrap();
    db.put("a", "1").unwrap();
    fs.fail_syncs(true);
    let err = db.put("b", "2").unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    fs.fail_syncs(false);
    // Every later write fails too, with a message that says what to do.
    let err = db.put("c", "3").unwrap_err();
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(db.clone().close().is_err());
    // Reads still work; reopening recovers what was durable.
    assert_eq!(get(&db, "a").as_deref(), Some("1"));
    drop(db);
    fs.crash();
    let db = Db::open("/db", options(&fs, true)).unwrap();
    assert_eq!(get(&db, "a").as_deref(), Some("1"));
    db.put("d", "4").unwrap();
}

/// Many threads writing durably share fsyncs: far fewer syncs than writes, nothing lost.
#[test]
fn concurrent_durable_writers_share_fsyncs() {
    let fs = CountingFs::new();
    let db = Db::open(
        "/db",
        Options { fs: Arc::new(fs.clone()), sync_writes: true, ..Options::default() },
    )
    .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    db.put(format!("t{t}-{i}"), format!("v{i}")).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let syncs = fs.syncs.load(Ordering::SeqCst);
    assert!(syncs < 800, "{syncs} syncs for 800 durable writes: no grouping");
    drop(db);
    fs.inner.crash();
    let db = Db::open(
        "/db",
        Options { fs: Arc::new(fs.inner.clone()), sync_writes: true, ..Options::default() },
    )
    .unwrap();
    let all = db.scan(b"", None, &db.snapshot()).unwrap();
    assert_eq!(all.len(), 800, "an acknowledged durable write was lost");
}

#[test]
fn a_damaged_wal_is_reported_not_replayed() {
    let fs = MemFs::new();
    let db = Db::open("/db", options(&fs, true)).unwrap();
    for i in 0..10 {
        db.put(format!("k{i}"), "value").unwrap();
    }
    drop(db);
    let wal = PathBuf::from("/db/wal-00000001.log");
    fs.corrupt_byte(&wal, 20, 0xff);
    match Db::open("/db", options(&fs, true)) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, wal);
            assert_eq!(offset, 0);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a damaged WAL"),
    }
}

#[test]
fn snapshots_see_a_fixed_past_and_batches_are_atomic() {
    let fs = MemFs::new();
    let db = Db::open("/db", options(&fs, false)).unwrap();
    db.write(batch(&[("x", "1"), ("y", "1")])).unwrap();
    let snap = db.snapshot();
    let mut b = batch(&[("x", "2")]);
    b.delete("y");
    db.write(b).unwrap();
    let at = |k: &str| db.get_at(k.as_bytes(), &snap).unwrap();
    assert_eq!(at("x").as_deref(), Some(&b"1"[..]));
    assert_eq!(at("y").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&db, "x").as_deref(), Some("2"));
    assert_eq!(get(&db, "y"), None);
    assert_eq!(db.snapshot().seq(), snap.seq() + 2);
    db.write(WriteBatch::new()).unwrap(); // Empty: nothing happens.
    assert_eq!(db.snapshot().seq(), snap.seq() + 2);
}

// ----- The model test ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8),
    Batch(Vec<(u8, Option<u8>)>),
    Get(u8),
    Scan(u8, u8),
    Snapshot,
    ReadSnapshot(u8),
    Flush,
    CompactRange(u8, u8),
    Reopen,
    Crash,
}

impl Arbitrary for ModelOp {
    fn arbitrary(g: &mut Gen) -> ModelOp {
        let key = |g: &mut Gen| u8::arbitrary(g) % 16;
        match u8::arbitrary(g) % 22 {
            0..=5 => ModelOp::Put(key(g), u8::arbitrary(g)),
            6..=7 => ModelOp::Delete(key(g)),
            8..=9 => ModelOp::Batch(
                (0..u8::arbitrary(g) % 4)
                    .map(|_| {
                        (key(g), if bool::arbitrary(g) { Some(u8::arbitrary(g)) } else { None })
                    })
                    .collect(),
            ),
            10..=12 => ModelOp::Get(key(g)),
            13..=14 => ModelOp::Scan(key(g), key(g)),
            15 => ModelOp::Snapshot,
            16..=17 => ModelOp::ReadSnapshot(key(g)),
            18 => ModelOp::Reopen,
            19 => ModelOp::Flush,
            20 => ModelOp::CompactRange(key(g), key(g)),
            _ => ModelOp::Crash,
        }
    }
}

fn k(x: u8) -> Bytes {
    Bytes::from(format!("key{x:02}"))
}

/// Every read agrees with a `BTreeMap` that saw the same writes, across flush, reopen and crash
/// (all writes synced, so a crash loses nothing). The memtable is tiny, so tables pile up.
fn model_agrees(ops: Vec<ModelOp>) -> bool {
    let fs = MemFs::new();
    let compaction = lsm::CompactionOptions {
        level0_trigger: 2,
        level_base_bytes: 600,
        level_multiplier: 3,
        target_table_bytes: 300,
        levels: 5,
        ..lsm::CompactionOptions::default()
    };
    let opts = Options { memtable_bytes: 200, compaction, ..options(&fs, true) };
    let mut db = Db::open("/m", opts.clone()).unwrap();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut snapshots: Vec<(lsm::Snapshot, BTreeMap<Bytes, Bytes>)> = Vec::new();
    for op in ops {
        match op {
            ModelOp::Put(key, v) => {
                db.put(k(key), vec![v]).unwrap();
                model.insert(k(key), Bytes::from(vec![v]));
            }
            ModelOp::Delete(key) => {
                db.delete(k(key)).unwrap();
                model.remove(&k(key));
            }
            ModelOp::Batch(items) => {
                let mut b = WriteBatch::new();
                for (key, v) in &items {
                    match v {
                        Some(v) => {
                            b.put(k(*key), vec![*v]);
                        }
                        None => {
                            b.delete(k(*key));
                        }
                    }
                }
                db.write(b).unwrap();
                for (key, v) in items {
                    match v {
                        Some(v) => model.insert(k(key), Bytes::from(vec![v])),
                        None => model.remove(&k(key)),
                    };
                }
            }
            ModelOp::Get(key) => {
                if db.get(&k(key)).unwrap() != model.get(&k(key)).cloned() {
                    return false;
                }
            }
            ModelOp::Scan(a, b) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let got = db.scan(&k(lo), Some(&k(hi)), &db.snapshot()).unwrap();
                let want: Vec<(Bytes, Bytes)> =
                    model.range(k(lo)..k(hi)).map(|(k, v)| (k.clone(), v.clone())).collect();
                if got != want {
                    return false;
                }
            }
            ModelOp::Snapshot => snapshots.push((db.snapshot(), model.clone())),
            ModelOp::Flush => db.flush().unwrap(),
            ModelOp::CompactRange(a, b) => {
                db.compact_range(Some(&k(a.min(b))), Some(&k(a.max(b)))).unwrap();
            }
            ModelOp::ReadSnapshot(key) => {
                if let Some((snap, old)) = snapshots.last()
                    && db.get_at(&k(key), snap).unwrap() != old.get(&k(key)).cloned()
                {
                    return false;
                }
            }
            ModelOp::Reopen | ModelOp::Crash => {
                if matches!(op, ModelOp::Crash) {
                    drop(db);
                    fs.crash();
                } else {
                    db.close().unwrap();
                }
                db = Db::open("/m", opts.clone()).unwrap();
                snapshots.clear(); // Snapshots do not outlive the handle that made them.
            }
        }
    }
    db.scan(b"", None, &db.snapshot()).unwrap()
        == model.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
}

#[test]
fn model_test_against_a_btreemap() {
    // 400 cases by default; QUICKCHECK_TESTS=<n> or `cargo xtask test-all --long` for more.
    let long = std::env::var_os("TEST_LONG").is_some();
    let tests = std::env::var("QUICKCHECK_TESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long { 10_000 } else { 400 });
    QuickCheck::new().tests(tests).quickcheck(model_agrees as fn(Vec<ModelOp>) -> bool);
}

#[test]
fn flushed_tables_serve_reads_after_reopen_and_crash() {
    let fs = MemFs::new();
    let opts = Options { memtable_bytes: 1000, ..options(&fs, true) };
    let db = Db::open("/db", opts.clone()).unwrap();
    for i in 0..200 {
        db.put(format!("key{i:04}"), format!("value{i}")).unwrap();
    }
    db.delete("key0005").unwrap();
    db.wait_idle().unwrap();
    // Many flushes happened; level 0 was compacted into level 1 whenever it reached 4 tables.
    let stats = db.stats();
    assert!(stats.flushes >= 5, "the small memtable should have been flushed: {stats:?}");
    assert!(stats.compactions >= 1, "level 0 reached its trigger: {stats:?}");
    assert!(db.table_count() >= 1);
    let count = |suffix: &str| {
        let names = fs.list(Path::new("/db")).unwrap();
        names.iter().filter(|n| n.ends_with(suffix)).count()
    };
    // Retired files go once a later manifest edit is durable: all but the last edit's.
    assert!(count(".sst") <= db.table_count() + 8, "compacted-away tables are deleted");
    assert!(count(".log") <= 2, "flushed WALs are deleted");
    drop(db);
    fs.crash();
    let db = Db::open("/db", opts).unwrap();
    // Opening logs a checkpoint edit, then deletes the rest.
    assert_eq!(count(".sst"), db.table_count());
    assert_eq!(count(".log"), 1);
    assert_eq!(get(&db, "key0000").as_deref(), Some("value0"));
    assert_eq!(get(&db, "key0199").as_deref(), Some("value199"));
    assert_eq!(get(&db, "key0005"), None);
    assert_eq!(db.scan(b"", None, &db.snapshot()).unwrap().len(), 199);
    assert!(db.memtable_bytes() < 1000);
}

/// A crash after a flush wrote its table but before the manifest said so: the table is not
/// live (its WAL still holds the data), and it is cleaned up.
#[test]
fn an_orphan_table_from_a_crashed_flush_is_removed() {
    let fs = MemFs::new();
    let opts = options(&fs, true);
    let db = Db::open("/db", opts.clone()).unwrap();
    db.put("k", "v").unwrap();
    drop(db);
    let mut orphan = fs.create(Path::new("/db/00000099.sst")).unwrap();
    orphan.append(b"half a table").unwrap();
    orphan.sync().unwrap();
    fs.sync_dir(Path::new("/db")).unwrap();
    let db = Db::open("/db", opts).unwrap();
    assert_eq!(get(&db, "k").as_deref(), Some("v"));
    assert!(!fs.list(Path::new("/db")).unwrap().iter().any(|n| n.ends_with(".sst")));
    db.flush().unwrap();
    assert_eq!(db.table_count(), 1);
}

/// Iterators merge the memtable and every level correctly, within bounds, lazily.
#[test]
fn iterators_merge_every_level_within_bounds() {
    let fs = MemFs::new();
    let compaction = lsm::CompactionOptions {
        level0_trigger: 3,
        level_base_bytes: 4_000,
        level_multiplier: 4,
        target_table_bytes: 2_000,
        levels: 5,
        ..lsm::CompactionOptions::default()
    };
    let opts = Options { memtable_bytes: 1_500, compaction, ..options(&fs, false) };
    let db = Db::open("/db", opts).unwrap();
    let mut model = BTreeMap::new();
    let mut state = 11u64;
    let mut below = |n: u64| {
        // xorshift64: enough randomness for a workload, and fixed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for i in 0..5_000u64 {
        let key = Bytes::from(format!("k{:04}", below(1_000)));
        if below(5) == 0 {
            db.delete(key.clone()).unwrap();
            model.remove(&key);
        } else {
            let value = Bytes::from(format!("v{i}"));
            db.put(key.clone(), value.clone()).unwrap();
            model.insert(key, value);
        }
    }
    assert!(db.table_count() > 3);
    let snap = db.snapshot();
    let all: Vec<(Bytes, Bytes)> = db.iter(b"", None, &snap).unwrap().map(Result::unwrap).collect();
    let want: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, want);
    let some: Vec<(Bytes, Bytes)> =
        db.iter(b"k0250", Some(b"k0260"), &snap).unwrap().map(Result::unwrap).collect();
    let want: Vec<(Bytes, Bytes)> = model
        .range(Bytes::from("k0250")..Bytes::from("k0260"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(some, want);
    // A seek: the first live key at or after a probe.
    let first = db.iter(b"k0500x", None, &snap).unwrap().next().unwrap().unwrap();
    let want = model.range(Bytes::from("k0500x")..).next().unwrap();
    assert_eq!((&first.0, &first.1), want);
}

/// A key overwritten thousands of times (in the memtable and in tables) costs an iterator one
/// search, not a step per version; the answers are the same, at any snapshot.
#[test]
fn iterators_skip_long_runs_of_old_versions() {
    let fs = MemFs::new();
    let db = Db::open("/db", Options { memtable_bytes: 64 << 10, ..options(&fs, false) }).unwrap();
    let mut snapshots = Vec::new();
    for round in 0..3000u32 {
        db.put("a", format!("a{round}")).unwrap();
        db.put("m", format!("m{round}")).unwrap();
        if round % 1000 == 500 {
            snapshots.push((round, db.snapshot()));
        }
    }
    db.put("b", "b").unwrap();
    db.put("z", "z").unwrap();
    let s = |x: &str| Bytes::from(x.to_owned());
    let now = db.scan(b"", None, &db.snapshot()).unwrap();
    assert_eq!(
        now,
        vec![(s("a"), s("a2999")), (s("b"), s("b")), (s("m"), s("m2999")), (s("z"), s("z"))]
    );
    for (round, snap) in &snapshots {
        let then = db.scan(b"", None, snap).unwrap();
        let (a, m) = (format!("a{round}"), format!("m{round}"));
        assert_eq!(then, vec![(s("a"), s(&a)), (s("m"), s(&m))], "at round {round}");
    }
    assert_eq!(db.scan(b"b", Some(b"n"), &db.snapshot()).unwrap().len(), 2);
}

/// Without a WAL, a write lives in the memtable: readable at once, lost in a crash unless a
/// synced write (or a close) flushed it, and then kept with everything written before it.
#[test]
fn without_a_wal_only_flushed_writes_survive_a_crash() {
    let fs = MemFs::new();
    let options = || Options { fs: Arc::new(fs.clone()), wal: false, ..Options::default() };
    let db = Db::open("/db", options()).unwrap();
    db.put("a", "1").unwrap();
    assert_eq!(get(&db, "a").as_deref(), Some("1"));
    drop(db);
    fs.crash();
    let db = Db::open("/db", options()).unwrap();
    assert_eq!(get(&db, "a"), None, "nothing was flushed");
    db.put("b", "2").unwrap();
    db.write_opt(batch(&[("c", "3")]), WriteOptions { sync: true }).unwrap();
    db.put("d", "4").unwrap();
    drop(db);
    fs.crash();
    let db = Db::open("/db", options()).unwrap();
    assert_eq!(get(&db, "b").as_deref(), Some("2"), "flushed by the synced write after it");
    assert_eq!(get(&db, "c").as_deref(), Some("3"));
    assert_eq!(get(&db, "d"), None);
    db.put("e", "5").unwrap();
    db.close().unwrap();
    fs.crash();
    let db = Db::open("/db", options()).unwrap();
    assert_eq!(get(&db, "e").as_deref(), Some("5"), "a clean close flushes");
    let wal_bytes: u64 = fs
        .list(Path::new("/db"))
        .unwrap()
        .iter()
        .filter(|name| name.ends_with(".wal") || name.ends_with(".log"))
        .map(|name| fs.open_read(&Path::new("/db").join(name)).unwrap().len())
        .sum();
    assert_eq!(wal_bytes, 0, "nothing was written to a log");
}
