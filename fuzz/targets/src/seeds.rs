//! Seed inputs: valid files and messages made by the real writers, from which libFuzzer starts.
//! `cargo run -p fuzz-targets --example write_seeds` writes them to `fuzz/corpus/`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kvproto::proto::{Op, Request};
use kvserver::command::Command;
use kvserver::{KvStateMachine, StateMachine};
use lsm::{Db, FileSystem, MemFs, Options};
use raft::{
    AppendOutcome, Body, Entry, FileStorage, HardState, Message, Snapshot, SnapshotMeta, Storage,
};

use crate::ScratchDir;

/// Seeds for the target `name`: valid inputs, in the input format the target documents.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "resp" => resp(),
        "wal" => lsm_files("wal"),
        "manifest" => lsm_files("manifest"),
        "sstable" => lsm_files("sstable"),
        "raft_log" => raft_log(),
        "kv_snapshot" => kv_snapshot(),
        "peer_step" => peer_step(),
        _ => Vec::new(),
    }
}

fn resp() -> Vec<Vec<u8>> {
    let commands: [&[u8]; 6] = [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"PING\r\nECHO \"a b\\x41\" 'c'\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n*0\r\n*-1\r\n",
        b"*3\r\n$4\r\nMSET\r\n$300\r\n",
        b"+OK\r\n-ERR x\r\n:42\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$1\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$2\r\nab\r\nGET x\n",
    ];
    let mut out = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let mut input = vec![if i % 2 == 0 { 0 } else { 40 }, i as u8];
        input.extend_from_slice(c);
        out.push(input);
    }
    out
}

/// A small database's files: its WAL (framed and raw), its manifest and a table.
fn lsm_files(which: &str) -> Vec<Vec<u8>> {
    let fs = MemFs::new();
    let options = Options { fs: Arc::new(fs.clone()), ..Options::default() };
    let db = Db::open("/db", options).expect("a MemFs database opens");
    for i in 0..40u32 {
        db.put(format!("key{i:03}"), format!("value {i}")).expect("put");
    }
    db.delete("key007").expect("delete");
    if which != "wal" {
        db.flush().expect("flush");
        db.put("after", "flush").expect("put");
    }
    drop(db);
    let dir = Path::new("/db");
    let names = fs.list(dir).expect("list");
    let pick = |want: &dyn Fn(&str) -> bool| -> Vec<u8> {
        let name = names.iter().find(|n| want(n)).expect("the file exists");
        fs.read(&dir.join(name)).expect("read")
    };
    let file = match which {
        "wal" => pick(&|n| n.starts_with("wal-")),
        "manifest" => pick(&|n| n == "MANIFEST"),
        _ => pick(&|n| n.ends_with(".sst")),
    };
    // Raw (mode 0) and, for the sstable, with checksums fixed up (mode 1, which then changes
    // nothing). The framed modes of the WAL and manifest take unframed records.
    let mut raw = vec![0];
    raw.extend_from_slice(&file);
    let mut seeds = vec![raw];
    if which == "sstable" {
        let mut fixed = vec![1];
        fixed.extend_from_slice(&file);
        seeds.push(fixed);
    } else {
        let mut framed = vec![1];
        framed.extend(crate::unframe_input(&unframe(&file)));
        seeds.push(framed);
    }
    seeds
}

/// The `(kind, payload)` records of a framed file.
fn unframe(file: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().expect("4")) as usize;
        if len == 0 || at + 8 + len > file.len() {
            break;
        }
        out.push((file[at + 8], file[at + 9..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    out
}

fn raft_log() -> Vec<Vec<u8>> {
    let dir = ScratchDir::new("seeds-raft-log");
    let mut storage = FileStorage::open(dir.path()).expect("storage opens");
    let entries: Vec<Entry> = (1..=5)
        .map(|i| Entry { term: 1 + i / 3, index: i, data: Bytes::from(format!("entry {i}")) })
        .collect();
    let hard = HardState { current_term: 2, voted_for: Some(1), commit_index: 3 };
    storage.persist(Some(hard), None, &entries).expect("persist");
    let snapshot = Snapshot {
        meta: SnapshotMeta { last_included_index: 3, last_included_term: 2, voters: vec![1, 2, 3] },
        data: Bytes::from_static(b"snapshot data").into(),
    };
    storage.persist(None, Some(&snapshot), &[]).expect("persist a snapshot");
    drop(storage);
    let segment = std::fs::read(dir.path().join("log-00000001.seg")).expect("segment");
    // The segment's zeros after its records are free space; the seeds keep the records.
    let records = unframe(&segment);
    let mut raw = vec![0];
    let mut framed_file = Vec::new();
    for (kind, payload) in &records {
        crate::frame_one(&mut framed_file, *kind, payload);
    }
    raw.extend_from_slice(&framed_file);
    let mut framed = vec![1];
    framed.extend(crate::unframe_input(&records));
    let mut snap = vec![2];
    snap.extend(std::fs::read(dir.path().join("snapshot")).expect("snapshot file"));
    vec![raw, framed, snap]
}

fn kv_snapshot() -> Vec<Vec<u8>> {
    let fs = MemFs::new();
    let options = Options { fs: Arc::new(fs.clone()), wal: false, ..Options::default() };
    let mut sm = KvStateMachine::new(Db::open("/kv", options).expect("opens")).expect("starts");
    let ops = [
        Op::Put { key: Bytes::from_static(b"a"), value: Bytes::from_static(b"1") },
        Op::Append { key: Bytes::from_static(b"a"), value: Bytes::from_static(b"23") },
        Op::Put { key: Bytes::from_static(b"b"), value: Bytes::new() },
    ];
    // A session registered through the log (as a leader fills it in), then its writes: the
    // snapshot holds the log clock, the session and the data.
    let register = Op::Register { id: 42, ttl_ms: 60_000, retire: None };
    let request = Request { client_id: 9, seq: 0, op: register, ordered: false };
    sm.apply(1, &Command { time_ms: Some(1_000), request }).expect("register");
    for (i, op) in ops.into_iter().enumerate() {
        let request = Request { client_id: 42, seq: i as u64 + 1, op, ordered: false };
        let command = Command { time_ms: Some(1_001 + i as u64), request };
        sm.apply(i as u64 + 2, &command).expect("apply");
    }
    let mut out = Vec::new();
    sm.snapshot(&mut out).expect("snapshot");
    vec![out]
}

fn peer_step() -> Vec<Vec<u8>> {
    let entry = |index, term| Entry { term, index, data: Bytes::from_static(b"forged") };
    let messages = [
        Body::RequestVote { pre_vote: true, last_log_index: 3, last_log_term: 1 },
        Body::RequestVoteResponse { pre_vote: false, vote_granted: true },
        Body::AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![entry(2, 1), entry(3, 2)],
            leader_commit: 3,
            read_round: 0,
        },
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index: 1_000_000 },
            read_round: 1,
        },
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: 4,
                conflict_term: Some(1),
                conflict_index: 2,
            },
            read_round: 1,
        },
        Body::Propose { data: vec![Bytes::from_static(b"\xff")] },
        Body::ReadIndex { ctx: 5 },
        Body::InstallSnapshotResponse { last_included_index: 9, received_bytes: 0, done: true },
    ];
    // An honest prelude: ticks until node 0 leads, a proposal, deliveries.
    let mut prelude = vec![0u8; 8];
    prelude.extend(std::iter::repeat_n(0x00, 30)); // tick node 0
    prelude.push(9);
    prelude.extend([0x01, 9, 0x11, 9, 0x21, 9, 0x07, 9]);
    let mut seeds = vec![prelude.clone()];
    for (i, body) in messages.into_iter().enumerate() {
        let m = Message { from: 1 + (i as u64 % 2), to: 0, term: 2, body };
        let payload = postcard::to_stdvec(&m).expect("a message encodes");
        let mut input = prelude.clone();
        input.extend([10, 0, payload.len() as u8]);
        input.extend(payload);
        input.extend([0x01, 9, 0x00, 9]);
        seeds.push(input);
    }
    seeds
}
