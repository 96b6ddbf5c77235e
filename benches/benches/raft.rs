//! Raft throughput, release build (`cargo bench -p benches --bench raft`).
//!
//! * `raft/in_process_3_nodes`: three `RawNode`s in one thread on `MemStorage`, messages moved
//!   through an in-memory queue; each element is one 16-byte command proposed on the leader,
//!   committed, and applied on all three nodes. Proposals come in batches of 1024, as a busy
//!   server's do; the service snapshots after each batch so memory stays flat.
//! * `raft/file_storage_append/N`: one `FileStorage::persist` of N 16-byte entries plus a hard
//!   state, which is one write and one fdatasync; each element is one entry made durable.
//! * `disk/fsync_4k_append`: the disk's own floor on the same filesystem, measured as fio's
//!   `fsync-4k-append` job in `../shared/anchors/disk.sh` does it: append 4 KiB, fdatasync.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use raft::{
    Apply, Config, Entry, FileStorage, HardState, MemStorage, Message, RawNode, Role, Storage,
};

const BATCH: u64 = 1024;

struct Cluster {
    nodes: Vec<RawNode>,
    storage: Vec<MemStorage>,
    queue: VecDeque<Message>,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (0..3)
            .map(|id| {
                let mut c = Config::new(id, vec![0, 1, 2]);
                c.max_inflight_appends = 256;
                RawNode::new(Config { seed: id + 1, ..c }, Default::default()).unwrap()
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            storage: (0..3).map(|_| MemStorage::new()).collect(),
            queue: VecDeque::new(),
            applied: vec![0; 3],
        };
        while cluster.nodes[0].role() != Role::Leader {
            cluster.nodes[0].tick();
            cluster.run();
        }
        cluster
    }

    /// Persists, sends, applies and advances until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for id in 0..self.nodes.len() {
                while self.nodes[id].has_ready() {
                    moved = true;
                    let ready = self.nodes[id].ready();
                    self.storage[id]
                        .persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries)
                        .unwrap();
                    self.queue.extend(ready.messages);
                    for a in ready.to_apply {
                        if let Apply::Entry(e) = a {
                            self.applied[id] = e.index;
                        }
                    }
                    self.nodes[id].advance();
                }
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                let to = m.to as usize;
                self.nodes[to].step(m).expect("a message between honest nodes is accepted");
            }
            if !moved {
                return;
            }
        }
    }

    /// Proposes one batch on the leader and runs until every node applied it.
    fn batch(&mut self, command: &Bytes) {
        let mut last = 0;
        for _ in 0..BATCH {
            last = self.nodes[0].propose(command.clone()).unwrap().0;
        }
        while self.applied.iter().any(|&a| a < last) {
            self.run();
            if self.applied.iter().any(|&a| a < last) {
                self.nodes[0].tick(); // A heartbeat carries the last commit index.
            }
        }
        for id in 0..3 {
            self.nodes[id].snapshot(last, Bytes::new()).unwrap();
        }
        self.run();
    }
}

fn in_process(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    let command = Bytes::from_static(b"0123456789abcdef");
    let mut group = c.benchmark_group("raft");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("in_process_3_nodes", |b| b.iter(|| cluster.batch(&command)));
    group.finish();
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn file_storage(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft");
    group.measurement_time(Duration::from_secs(5));
    for batch in [1u64, 16, 256] {
        let dir = scratch("file-storage");
        let mut storage = FileStorage::open(&dir).unwrap();
        let mut next = 1u64;
        let data = Bytes::from_static(b"0123456789abcdef");
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("file_storage_append/{batch}"), |b| {
            b.iter(|| {
                let entries: Vec<Entry> = (0..batch)
                    .map(|i| Entry { term: 1, index: next + i, data: data.clone() })
                    .collect();
                next += batch;
                let hs = HardState { current_term: 1, voted_for: Some(0), commit_index: next - 1 };
                storage.persist(Some(hs), None, &entries).unwrap();
                if next % (1 << 16) < batch {
                    // Compact now and then, as a service would, so memory and disk stay flat.
                    let meta = raft::SnapshotMeta {
                        last_included_index: next - 1,
                        last_included_term: 1,
                        voters: vec![0],
                    };
                    storage
                        .persist(
                            None,
                            Some(&raft::Snapshot { meta, data: Bytes::new().into() }),
                            &[],
                        )
                        .unwrap();
                }
            })
        });
        drop(storage);
        let _ = fs::remove_dir_all(&dir);
    }
    group.finish();
}

fn disk_floor(c: &mut Criterion) {
    let dir = scratch("fsync-floor");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("append.dat");
    let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let block = vec![0x5au8; 4096];
    let mut written = 0u64;
    let mut group = c.benchmark_group("disk");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_4k_append", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&block).unwrap();
                file.sync_data().unwrap();
                written += 4096;
                if written >= 32 << 20 {
                    file.set_len(0).unwrap(); // Stay within fio's 32 MiB file.
                    written = 0;
                }
            }
            start.elapsed()
        })
    });
    group.finish();
    drop(file);
    let _ = fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = in_process, file_storage, disk_floor
}
criterion_main!(benches);
