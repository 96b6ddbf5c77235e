//! `lsmbench`: RocksDB `db_bench`'s workloads, flags and output lines, run against `lsm`.
//!
//! ```text
//! cargo run --release -p benches --bin lsmbench -- \
//!     --benchmarks=fillseq,fillrandom,overwrite,readrandom,readseq,fillsync \
//!     --num=1000000 --key_size=16 --value_size=100
//! ```
//!
//! Each workload prints `name : X micros/op Y ops/sec; Z MB/s` as db_bench does. Values are
//! random bytes of `--value_size`, drawn (like the keys) from `--seed`.
//!
//! Amplification is reported once per database: when a `fill*` workload replaces it, and at the
//! end. First the background work is let finish (`wait_idle`), then it prints write
//! amplification (bytes the engine wrote to files since the database was created, WAL and
//! manifest included / bytes of keys and values written to it, by the workloads listed) and
//! space amplification (bytes of files / bytes of live keys and values).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use labrpc::Rng;
use lsm::{
    Db, FileSystem, Options, OsFs, RandomAccessFile, WritableFile, WriteBatch, WriteOptions,
};

/// Flags named as db_bench names them.
#[derive(Parser, Debug)]
#[command(about = "db_bench's workloads against the lsm engine")]
struct Args {
    /// Comma-separated workloads: fillseq, fillrandom, overwrite, readrandom, readseq,
    /// seekrandom, fillsync, waitforcompaction (wait until no background work is due),
    /// compact (compact the whole key range). fill* start from an empty database.
    #[arg(long, default_value = "fillseq,fillrandom,overwrite,readrandom,readseq")]
    benchmarks: String,
    /// Number of operations (and the key space: keys are 0..num).
    #[arg(long, default_value_t = 1_000_000)]
    num: u64,
    /// Key size in bytes.
    #[arg(long = "key_size", default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long = "value_size", default_value_t = 100)]
    value_size: usize,
    /// Threads running each workload; each does `num` operations (reads) or its share (writes).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Sync the WAL on every write (fillsync always does).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    sync: bool,
    /// Database directory (deleted and recreated by fill workloads).
    #[arg(long, default_value = "/tmp/lsmbench")]
    db: PathBuf,
    /// Seed for keys and values (values are random bytes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Memtable size in bytes before it is written out (db_bench's default is 64 MiB).
    #[arg(long = "write_buffer_size", default_value_t = 64 << 20)]
    write_buffer_size: usize,
}

/// The OS file system, counting the bytes written through it.
#[derive(Clone)]
struct Counting {
    written: Arc<AtomicU64>,
}

struct CountingFile {
    inner: Box<dyn WritableFile>,
    written: Arc<AtomicU64>,
}

impl WritableFile for CountingFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.append(data)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
}

impl FileSystem for Counting {
    fn open_read(&self, path: &Path) -> std::io::Result<Arc<dyn RandomAccessFile>> {
        OsFs.open_read(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(CountingFile { inner: OsFs.create(path)?, written: Arc::clone(&self.written) }))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(CountingFile {
            inner: OsFs.open_append(path)?,
            written: Arc::clone(&self.written),
        }))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        OsFs.read(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        OsFs.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        OsFs.remove(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        OsFs.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        OsFs.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsFs.sync_dir(dir)
    }
}

/// Size of the pool of random bytes that values are cut from (as db_bench's `RandomGenerator`).
const VALUE_POOL_BYTES: usize = 1 << 20;

struct Bench {
    args: Args,
    fs: Counting,
    db: Option<Db>,
    /// Bytes of keys and values written to the current database since it was created.
    user_bytes: u64,
    /// The write workloads that wrote to the current database.
    writers: Vec<String>,
    /// Random bytes from `--seed`; each value is a slice of it at a random offset.
    values: Vec<u8>,
}

impl Bench {
    fn key(&self, k: u64) -> Vec<u8> {
        let mut key = format!("{k:0width$}", width = self.args.key_size).into_bytes();
        key.truncate(self.args.key_size);
        key
    }

    fn open(&mut self, fresh: bool) -> Db {
        if fresh {
            // The old database's figures, before it goes.
            self.amplification();
            self.db = None;
            let _ = std::fs::remove_dir_all(&self.args.db);
            self.user_bytes = 0;
            self.writers.clear();
            self.fs.written.store(0, Ordering::Relaxed);
        }
        if let Some(db) = &self.db {
            return db.clone();
        }
        let options = Options {
            fs: Arc::new(self.fs.clone()),
            sync_writes: false,
            memtable_bytes: self.args.write_buffer_size,
            ..Options::default()
        };
        let db = Db::open(&self.args.db, options).expect("open the database");
        self.db = Some(db.clone());
        db
    }

    fn write(&mut self, name: &str, fresh: bool, random: bool, sync: bool) {
        let db = self.open(fresh);
        let (num, threads) = (self.args.num, self.args.threads.max(1));
        let value_size = self.args.value_size;
        let offsets = (self.values.len() - value_size + 1) as u64;
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let db = db.clone();
                let this = &*self;
                s.spawn(move || {
                    // Each workload draws its own keys (as db_bench's do), so overwrite does not
                    // just repeat fillrandom's keys.
                    let salt =
                        name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
                    let mut rng = Rng::new(this.args.seed ^ salt ^ ((t + 1) * 0x9e37));
                    let per = num / threads;
                    for i in 0..per {
                        let k = if random { rng.below(num) } else { t * per + i };
                        let at = rng.below(offsets) as usize;
                        let value = this.values[at..at + value_size].to_vec();
                        let mut batch = WriteBatch::new();
                        batch.put(this.key(k), value);
                        db.write_opt(batch, WriteOptions { sync }).expect("write");
                    }
                });
            }
        });
        let ops = (num / threads) * threads;
        self.user_bytes += ops * (self.args.key_size + self.args.value_size) as u64;
        self.writers.push(name.to_owned());
        report(name, ops, started, Some(self.args.key_size + self.args.value_size), "");
    }

    fn read_random(&mut self) {
        let db = self.open(false);
        let (num, threads) = (self.args.num, self.args.threads.max(1));
        let started = Instant::now();
        let found = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (db, this, found) = (db.clone(), &*self, &found);
                s.spawn(move || {
                    let mut rng = Rng::new(this.args.seed ^ ((t + 7) * 0x51ed));
                    let mut hits = 0;
                    for _ in 0..num {
                        if db.get(&this.key(rng.below(num))).expect("read").is_some() {
                            hits += 1;
                        }
                    }
                    found.fetch_add(hits, Ordering::Relaxed);
                });
            }
        });
        let found = found.load(Ordering::Relaxed);
        let ops = num * threads;
        report("readrandom", ops, started, None, &format!(" ({found} of {ops} found)"));
    }

    fn read_seq(&mut self) {
        let db = self.open(false);
        let started = Instant::now();
        let (mut n, mut bytes) = (0u64, 0usize);
        for pair in db.iter(b"", None, &db.snapshot()).expect("iterate") {
            let (k, v) = pair.expect("read");
            bytes += k.len() + v.len();
            n += 1;
            if n == self.args.num {
                break;
            }
        }
        report("readseq", n.max(1), started, Some(bytes / n.max(1) as usize), "");
    }

    fn seek_random(&mut self) {
        let db = self.open(false);
        let num = self.args.num;
        let mut rng = Rng::new(self.args.seed ^ 0x5eec);
        let snapshot = db.snapshot();
        let started = Instant::now();
        let mut found = 0u64;
        for _ in 0..num {
            let key = self.key(rng.below(num));
            let mut it = db.iter(&key, None, &snapshot).expect("seek");
            if let Some(pair) = it.next() {
                pair.expect("read");
                found += 1;
            }
        }
        report("seekrandom", num, started, None, &format!(" ({found} of {num} found)"));
    }

    /// Lets the current database's background work finish, then prints its amplification.
    fn amplification(&self) {
        let Some(db) = &self.db else { return };
        let started = Instant::now();
        db.wait_idle().expect("background work");
        let waited = started.elapsed().as_secs_f64();
        let writers = if self.writers.is_empty() { "none".into() } else { self.writers.join("+") };
        println!(
            "amplification of this database (writes: {writers}; {waited:.3} s waited for \
                  background work):"
        );
        let written = self.fs.written.load(Ordering::Relaxed);
        let files: u64 = std::fs::read_dir(db.dir())
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        let live = db
            .scan(b"", None, &db.snapshot())
            .map(|v| v.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>())
            .unwrap_or(0);
        if self.user_bytes == 0 {
            println!(
                "write amplification: n/a (this run wrote nothing; {written} bytes of metadata)"
            );
        }
        let wa = written as f64 / self.user_bytes.max(1) as f64;
        let sa = files as f64 / live.max(1) as f64;
        let user = self.user_bytes;
        if user > 0 {
            println!(
                "write amplification: {wa:.2} ({written} bytes to files for {user} bytes written)"
            );
        }
        println!("space amplification: {sa:.2} ({files} bytes in files for {live} bytes live)");
    }

    /// `VALUE_POOL_BYTES` (at least one value's worth) of random bytes from `seed`.
    fn value_pool(seed: u64, value_size: usize) -> Vec<u8> {
        let mut rng = Rng::new(seed ^ 0x7661_6c75_6573);
        let len = VALUE_POOL_BYTES.max(value_size);
        let mut pool = Vec::with_capacity(len + 8);
        while pool.len() < len {
            pool.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        pool.truncate(len);
        pool
    }
}

fn report(name: &str, ops: u64, started: Instant, entry_bytes: Option<usize>, extra: &str) {
    let secs = started.elapsed().as_secs_f64();
    let micros = secs * 1e6 / ops as f64;
    let rate = ops as f64 / secs;
    let mb = entry_bytes
        .map_or(String::new(), |b| format!("; {:>6.1} MB/s", rate * b as f64 / 1_048_576.0));
    println!("{name:<12} : {micros:>10.3} micros/op {rate:>9.0} ops/sec{mb}{extra}");
}

fn main() {
    let args = Args::parse();
    println!(
        "lsmbench: num={} key_size={} value_size={} threads={} sync={} write_buffer_size={} db={}",
        args.num,
        args.key_size,
        args.value_size,
        args.threads,
        args.sync,
        args.write_buffer_size,
        args.db.display()
    );
    let sync = args.sync;
    let benchmarks: Vec<String> = args.benchmarks.split(',').map(|s| s.trim().to_owned()).collect();
    let values = Bench::value_pool(args.seed, args.value_size);
    let fs = Counting { written: Arc::default() };
    let mut bench = Bench { args, fs, db: None, user_bytes: 0, writers: Vec::new(), values };
    for name in &benchmarks {
        match name.as_str() {
            "fillseq" => bench.write("fillseq", true, false, sync),
            "fillrandom" => bench.write("fillrandom", true, true, sync),
            "overwrite" => bench.write("overwrite", false, true, sync),
            "fillsync" => bench.write("fillsync", true, true, true),
            "readrandom" => bench.read_random(),
            "readseq" => bench.read_seq(),
            "seekrandom" => bench.seek_random(),
            "waitforcompaction" => {
                let started = Instant::now();
                bench.open(false).wait_idle().expect("background work");
                println!("{name:<12} : {:>10.3} seconds", started.elapsed().as_secs_f64());
            }
            "compact" => {
                let started = Instant::now();
                bench.open(false).compact_range(None, None).expect("compact");
                println!("{name:<12} : {:>10.3} seconds", started.elapsed().as_secs_f64());
            }
            other => {
                eprintln!("lsmbench: unknown benchmark {other:?}");
                std::process::exit(2);
            }
        }
    }
    bench.amplification();
    if let Some(db) = bench.db.take() {
        let stats = db.stats();
        println!(
            "background: {} flushes, {} compactions; writes slowed {} times, stalled {} times",
            stats.flushes, stats.compactions, stats.slowed_writes, stats.stalled_writes
        );
        db.close().expect("close");
    }
}
