//! Open a database, write to it, scan it, crash it, and reopen it to find every write.
//!
//! The database runs on [`MemFs`], an in-memory file system that knows which bytes have been
//! synced: [`MemFs::crash_copy`] is what a power cut at this instant would leave on disk. The
//! database is then dropped without a flush or a close, as a killed process would be, and a new
//! one opens the crash copy: recovery replays the write-ahead log into a fresh memtable. Writes
//! are synced before they return (`sync_writes`), so every one of them is found.
//!
//! `cargo run -p raftkv-lsm --example crash`

use std::sync::Arc;

use lsm::{Db, MemFs, Options};

fn main() -> lsm::Result<()> {
    let disk = MemFs::new();
    let options = |fs: &MemFs| Options {
        fs: Arc::new(fs.clone()),
        sync_writes: true,
        // A small memtable, so that some writes reach SSTables and some stay in the log.
        memtable_bytes: 16 << 10,
        ..Options::default()
    };

    let db = Db::open("/db", options(&disk))?;
    for i in 0..1_000u32 {
        db.put(format!("user:{i:04}"), format!("name-{i}"))?;
    }
    db.delete("user:0500")?;
    let now = db.snapshot();
    let range = db.scan(b"user:0498", Some(b"user:0503"), &now)?;
    println!("before the crash, user:0498..user:0503 holds:");
    for (key, value) in &range {
        println!("  {} = {}", String::from_utf8_lossy(key), String::from_utf8_lossy(value));
    }
    println!("tables on disk: {}, memtable bytes: {}", db.table_count(), db.memtable_bytes());

    // The crash: keep only what was synced, and abandon the running database unflushed.
    let after_crash = disk.crash_copy();
    drop(now);
    drop(db);

    let db = Db::open("/db", options(&after_crash))?;
    let now = db.snapshot();
    let all = db.scan(b"", None, &now)?;
    println!("after reopening: {} keys", all.len());
    assert_eq!(all.len(), 999, "every write but the deleted key survived");
    assert_eq!(db.get(b"user:0999")?.as_deref(), Some(&b"name-999"[..]));
    assert_eq!(db.get(b"user:0500")?, None, "the delete survived too");
    println!("user:0999 = name-999 and user:0500 is still deleted: nothing was lost");
    db.close()
}
