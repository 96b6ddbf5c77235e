//! Ten million keys through a small memtable (hundreds of flushes, many compactions), every
//! key checked afterwards, with the process's peak memory printed. Runs with
//! `cargo xtask test-all --long` (or `TEST_LONG=1 cargo test -p raftkv-lsm --test large --
//! --include-ignored --nocapture`); `LSM_LARGE_KEYS=<n>` changes the count.

use std::sync::Arc;
use std::time::Instant;

use lsm::{CompactionOptions, Db, Options, OsFs, WriteBatch};

/// Spreads the keys, so that writes land all over the key space, not in order.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

fn key(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(SPREAD))
}

fn value(i: u64) -> String {
    format!("value-{i}")
}

/// `VmHWM`, `RssAnon` and `RssFile` from /proc/self/status, in MiB.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or("?".to_owned(), |kb| format!("{} MiB", kb / 1024))
    };
    format!(
        "peak resident {} (now: heap and other anonymous {}, mapped files {})",
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:")
    )
}

#[test]
#[ignore = "long: ten million keys; run with --include-ignored (test-all --long)"]
fn ten_million_keys_through_a_small_memtable() {
    let n: u64 =
        std::env::var("LSM_LARGE_KEYS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let dir = std::env::temp_dir().join(format!("lsm-large-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let compaction = CompactionOptions {
        level_base_bytes: 8 << 20,
        target_table_bytes: 2 << 20,
        ..CompactionOptions::default()
    };
    let options =
        Options { fs: Arc::new(OsFs), memtable_bytes: 1 << 20, compaction, ..Options::default() };
    let db = Db::open(&dir, options.clone()).unwrap();
    let started = Instant::now();
    for chunk in 0..n.div_ceil(100) {
        let mut batch = WriteBatch::new();
        for i in chunk * 100..((chunk + 1) * 100).min(n) {
            batch.put(key(i), value(i));
        }
        db.write(batch).unwrap();
    }
    db.wait_idle().unwrap();
    let stats = db.stats();
    println!("wrote {n} keys in {:.1} s; {stats:?}; {}", started.elapsed().as_secs_f64(), memory());
    assert!(stats.flushes >= n / 100_000 && stats.compactions > 0, "{stats:?}");
    db.close().unwrap();

    // Reopen, walk everything in order, and read every key.
    let db = Db::open(&dir, options).unwrap();
    let started = Instant::now();
    // Keys are `i × SPREAD` in hex, so their order is the products' order, and the inverse of
    // SPREAD (odd, so invertible modulo 2^64) recovers `i`: no list of keys in memory.
    let mut inverse = SPREAD;
    for _ in 0..6 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(SPREAD.wrapping_mul(inverse)));
    }
    let (mut seen, mut previous) = (0u64, None);
    for pair in db.iter(b"", None, &db.snapshot()).unwrap() {
        let (k, v) = pair.unwrap();
        let product = u64::from_str_radix(std::str::from_utf8(&k).unwrap(), 16).unwrap();
        assert!(previous < Some(product), "keys out of order at {k:?}");
        previous = Some(product);
        let i = product.wrapping_mul(inverse);
        assert!(i < n && v.as_ref() == value(i).as_bytes(), "{k:?} -> {v:?}");
        seen += 1;
    }
    assert_eq!(seen, n, "the scan saw {seen} of {n} distinct keys");
    for i in 0..n {
        let got = db.get(key(i).as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(value(i).as_bytes()), "key {i}");
    }
    println!(
        "checked {n} keys (one scan, then one get each) in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        memory()
    );
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}
