//! The last line of defence: a real process writing durably is killed with SIGKILL at a random
//! moment, again and again; after each kill the database must reopen with every acknowledged
//! write present and no value wrong. 10 kills in `test-all`, 100 with `TEST_LONG=1`. Every round
//! proves it tested something: the child acknowledged new writes that round and was still
//! running when the signal landed; the child's stderr is shown with any failure.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
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

/// How long the parent waits for the child's next acknowledgement before it fails the test: a
/// watchdog against a child that hangs, not a premise (a round needs a few milliseconds).
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// One child process, its acknowledgements as they arrive and its stderr, kept for failures.
struct Child {
    process: std::process::Child,
    acks: mpsc::Receiver<u64>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Child {
    fn spawn(dir: &Path, start: u64) -> Child {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, acks) = mpsc::channel();
        let out = process.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // The first ack shares its line with libtest's "test child_writer ... ".
                if let Some((_, i)) = line.split_once("ack ") {
                    let i = i.parse::<u64>().unwrap_or_else(|e| panic!("ack line {line:?}: {e}"));
                    if sender.send(i).is_err() {
                        break;
                    }
                }
            }
        });
        let mut err = process.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Child { process, acks, stdout: Some(stdout), stderr: Some(stderr) }
    }

    /// Kills the child (if it still runs), waits for it and returns how it ended, the
    /// acknowledgements not yet received and its whole stderr.
    fn kill(&mut self) -> (ExitStatus, Vec<u64>, String) {
        let _ = self.process.kill(); // SIGKILL on Unix: no destructors, no flushing, no goodbye.
        let status = self.process.wait().unwrap();
        self.stdout.take().unwrap().join().unwrap();
        let rest = self.acks.try_iter().collect();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, rest, stderr)
    }

    /// Kills the child and fails the test with `what`, how the child ended and its stderr.
    fn fail(&mut self, round: u64, what: &str) -> ! {
        let (status, _, stderr) = self.kill();
        panic!("round {round}: {what}; the child ended with {status}; its stderr:\n{stderr}");
    }
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let kills = if std::env::var_os("TEST_LONG").is_some() { 100 } else { 10 };
    let dir = std::env::temp_dir().join(format!("lsm-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut next: u64 = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Each round must make progress: the kill waits for this many new acknowledgements, a
        // random number so that kills land at different points of flushes and compactions.
        let wanted = 1 + rng % 200;
        let mut child = Child::spawn(&dir, next);
        let mut acknowledged = None;
        while acknowledged.is_none_or(|a| a + 1 < next + wanted) {
            match child.acks.recv_timeout(STALL_LIMIT) {
                Ok(i) => {
                    if i != acknowledged.map_or(next, |a| a + 1) {
                        child.fail(round, &format!("ack {i} out of order after {acknowledged:?}"));
                    }
                    acknowledged = Some(i);
                }
                Err(RecvTimeoutError::Timeout) => child.fail(
                    round,
                    &format!("no acknowledgement for {STALL_LIMIT:?} after {acknowledged:?}"),
                ),
                Err(RecvTimeoutError::Disconnected) => child.fail(
                    round,
                    &format!("the child stopped before {wanted} acks (last {acknowledged:?})"),
                ),
            }
        }
        let (status, rest, stderr) = child.kill();
        // Killed by our signal, so it was still running (and writing) when the kill landed.
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child was not running at the kill: {status}; stderr:\n{stderr}"
        );
        let acknowledged = rest.into_iter().chain(acknowledged).max();
        let before = next;
        next = verify(&dir, acknowledged);
        assert!(
            next >= before + wanted,
            "round {round}: {wanted} new acknowledged writes, but only keys up to {next} are there"
        );
    }
    println!("{kills} kills, {next} keys written and verified");
    let _ = std::fs::remove_dir_all(&dir);
}
