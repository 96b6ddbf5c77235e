//! The last line of defence: a real process writing durably is killed with SIGKILL at a random
//! moment, again and again; after each kill the database must reopen with every acknowledged
//! write present and no value wrong. 10 kills in `test-all`, 100 with `TEST_LONG=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lsm::{CompactionOptions, Db, Options, OsFs};

const CHILD_DIR: &str = "LSM_KILL_CHILD_DIR";
const CHILD_START: &str = "LSM_KILL_CHILD_START";

fn options() -> Options {
    // A small memtable and small levels, so kills land in flushes and compactions too.
    let compaction = CompactionOptions {
        level0_trigger: 3,
        level_base_bytes: 64 << 10,
        level_multiplier: 4,
        target_table_bytes: 32 << 10,
        levels: 5,
        ..lsm::CompactionOptions::default()
    };
    Options {
        fs: Arc::new(OsFs),
        sync_writes: true,
        memtable_bytes: 16 << 10,
        compaction,
        ..Options::default()
    }
}

fn key(i: u64) -> String {
    format!("key-{i:08}")
}

fn value(i: u64) -> String {
    format!("value-{i}-").repeat(4)
}

/// The child: writes keys from `start` on, printing each index once its write returned.
#[test]
#[ignore = "child process of every_acknowledged_write_survives_sigkill"]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let db = Db::open(PathBuf::from(dir), options()).unwrap();
    let stdout = std::io::stdout();
    for i in start.. {
        db.put(key(i), value(i)).unwrap();
        let mut out = stdout.lock();
        std::io::Write::write_all(&mut out, format!("ack {i}\n").as_bytes()).unwrap();
        std::io::Write::flush(&mut out).unwrap();
    }
}

/// Checks the database at `dir` after a kill; returns the next index to write.
fn verify(dir: &Path, acknowledged: Option<u64>) -> u64 {
    let db = Db::open(dir, options()).expect("reopen after SIGKILL");
    let last = acknowledged.map_or(0, |a| a + 1);
    for i in 0..last {
        let got = db.get(key(i).as_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(value(i).as_bytes()), "acknowledged key {i} lost or wrong");
    }
    // Writes after the last acknowledgement may or may not have landed, but never wrongly.
    let mut next = last;
    while let Some(v) = db.get(key(next).as_bytes()).unwrap() {
        assert_eq!(v.as_ref(), value(next).as_bytes(), "unacknowledged key {next} is wrong");
        next += 1;
    }
    db.close().unwrap();
    next
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let kills = if std::env::var_os("TEST_LONG").is_some() { 100 } else { 10 };
    let dir = std::env::temp_dir().join(format!("lsm-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut next: u64 = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_START, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.strip_prefix("ack ") {
                    last = Some(i.parse::<u64>().unwrap());
                }
            }
            last
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 300));
        child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flushing, no goodbye.
        child.wait().unwrap();
        let acknowledged = reader.join().unwrap().or(next.checked_sub(1));
        let before = next;
        next = verify(&dir, acknowledged);
        assert!(next >= before, "round {round}: keys went missing");
    }
    assert!(next > 0, "the child never wrote anything");
    println!("{kills} kills, {next} keys written and verified");
    let _ = std::fs::remove_dir_all(&dir);
}
