use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kvproto::proto::{Op, Outcome, Request};
use lsm::{Db, MemFs, Options};
use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;

fn open(fs: &MemFs) -> KvStateMachine {
    let options = Options { fs: Arc::new(fs.clone()), memtable_bytes: 512, ..Options::default() };
    KvStateMachine::new(Db::open("/kv", options).unwrap()).unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn req(client_id: u64, seq: u64, op: Op) -> Request {
    Request { client_id, seq, op, ordered: false }
}

/// `request` as a version 1 log entry (no stamp: applied as the previous release did).
fn v1(request: &Request) -> Command {
    Command { time_ms: None, request: request.clone() }
}

/// Applies requests as version 1 entries.
trait ApplyRequest {
    fn apply_req(&mut self, index: Index, request: &Request) -> Result<Outcome>;
}

impl ApplyRequest for KvStateMachine {
    fn apply_req(&mut self, index: Index, request: &Request) -> Result<Outcome> {
        self.apply(index, &v1(request))
    }
}

fn get(m: &KvStateMachine, key: &str) -> Option<Bytes> {
    match m.read(&Op::Get { key: b(key) }).unwrap() {
        Outcome::Value(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_retried_write_applies_once_even_across_a_crash() {
    let fs = MemFs::new();
    let mut m = open(&fs);
    let append = |seq| req(1, seq, Op::Append { key: b("k"), value: b("x") });
    assert_eq!(m.apply_req(1, &append(1)).unwrap(), Outcome::Length(1));
    assert_eq!(m.apply_req(2, &append(1)).unwrap(), Outcome::Length(1), "the retry is answered");
    assert_eq!(get(&m, "k"), Some(b("x")), "...but not applied again");
    m.apply_req(3, &append(2)).unwrap();
    assert_eq!(get(&m, "k"), Some(b("xx")));
    m.sync().unwrap();
    m.apply_req(4, &append(3)).unwrap(); // Not synced: may be lost, but only with its index.
    drop(m);
    fs.crash();
    let mut m = open(&fs);
    assert!(m.applied_index() == 3 || m.applied_index() == 4);
    let expect = if m.applied_index() == 3 { "xx" } else { "xxx" };
    assert_eq!(get(&m, "k"), Some(b(expect)));
    // Raft delivers index 4 again if it was lost; either way the state ends the same.
    if m.applied_index() == 3 {
        m.apply_req(4, &append(3)).unwrap();
    }
    assert_eq!(get(&m, "k"), Some(b("xxx")));
}

#[test]
fn snapshots_carry_data_and_the_dedup_table() {
    let mut a = open(&MemFs::new());
    a.apply_req(1, &req(1, 1, Op::Put { key: b("a"), value: b("1") })).unwrap();
    a.apply_req(2, &req(2, 1, Op::Put { key: b("b"), value: b("2") })).unwrap();
    a.apply_req(3, &req(1, 2, Op::Delete { key: b("a") })).unwrap();
    a.skip(4).unwrap();
    let snap = snapshot_of(&a);
    let mut b_ = open(&MemFs::new());
    b_.apply_req(1, &req(9, 1, Op::Put { key: b("stale"), value: b("x") })).unwrap();
    b_.restore(4, &mut &snap[..]).unwrap();
    assert_eq!(b_.applied_index(), 4);
    assert_eq!((get(&b_, "a"), get(&b_, "b"), get(&b_, "stale")), (None, Some(b("2")), None));
    // The dedup table came along: client 2's retry is not applied again.
    assert_eq!(
        b_.apply_req(5, &req(2, 1, Op::Append { key: b("b"), value: b("!") })).unwrap(),
        Outcome::Written,
        "answered with the outcome of client 2's first write, the put"
    );
    assert_eq!(get(&b_, "b"), Some(b("2")));
}

fn snapshot_of(m: &KvStateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    m.snapshot(&mut out).unwrap();
    out
}

#[test]
fn a_damaged_snapshot_is_refused_with_a_reason() {
    let mut a = open(&MemFs::new());
    a.apply_req(1, &req(1, 1, Op::Put { key: b("a"), value: b("1") })).unwrap();
    let good = snapshot_of(&a);
    let end = good.len() - 12; // Where the end mark starts.
    let mut wrong_count = good.clone();
    wrong_count[end + 4] ^= 1;
    let mut foreign_key = good.clone();
    foreign_key[4] = b'm'; // The first record's key now names the applied index.
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("cut in a record", good[..7].to_vec(), "ends in the middle"),
        ("no end mark", good[..end].to_vec(), "ends in the middle"),
        ("wrong count", wrong_count, "says"),
        ("trailing bytes", [&good[..], b"x"].concat(), "after the end mark"),
        ("foreign key", foreign_key, "outside the state"),
    ];
    for (what, data, reason) in cases {
        let mut m = open(&MemFs::new());
        let err = m.restore(7, &mut &data[..]).unwrap_err().to_string();
        assert!(err.contains(reason), "{what}: {err}");
    }
    let mut m = open(&MemFs::new());
    m.restore(7, &mut &good[..]).unwrap();
    assert_eq!((m.applied_index(), get(&m, "a")), (7, Some(b("1"))));
}

/// A reader that fails after `left` bytes, as a disk error part way through a restore.
struct FailingReader<'a> {
    data: &'a [u8],
    left: usize,
}

impl std::io::Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk error"));
        }
        let n = buf.len().min(self.left).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        Ok(n)
    }
}

/// A restore larger than one batch that fails part way leaves the state marked as not applied
/// (index 0), also after a crash, so the server restores again; a full restore then replaces
/// everything.
#[test]
fn a_restore_cut_short_leaves_applied_index_zero() {
    let open_big = |fs: &MemFs| {
        let options = Options { fs: Arc::new(fs.clone()), ..Options::default() };
        KvStateMachine::new(Db::open("/kv", options).unwrap()).unwrap()
    };
    let value = Bytes::from(vec![b'v'; 2000]);
    let mut source = open_big(&MemFs::new());
    for i in 0..5000u64 {
        let put = Op::Put { key: Bytes::from(format!("k{i:05}")), value: value.clone() };
        source.apply_req(i + 1, &req(1, i + 1, put)).unwrap();
    }
    let snap = snapshot_of(&source);
    assert!(snap.len() > 2 * RESTORE_BATCH_BYTES, "{} bytes is one batch", snap.len());

    let fs = MemFs::new();
    let mut m = open_big(&fs);
    m.apply_req(1, &req(9, 1, Op::Put { key: b("old"), value: b("x") })).unwrap();
    m.sync().unwrap();
    let mut failing = FailingReader { data: &snap, left: snap.len() / 2 };
    let err = m.restore(5000, &mut failing).unwrap_err();
    assert!(err.to_string().contains("disk error"), "{err}");
    assert_eq!(m.applied_index(), 0);
    m.db().flush().unwrap();
    drop(m);
    fs.crash();
    let mut m = open_big(&fs);
    assert_eq!(m.applied_index(), 0, "a half-restored state claimed an applied index");
    m.restore(5000, &mut &snap[..]).unwrap();
    assert_eq!(m.applied_index(), 5000);
    assert_eq!(get(&m, "old"), None);
    assert_eq!(get(&m, "k04999"), Some(value));
    assert_eq!(snapshot_of(&m), snap, "the restored state snapshots to the same bytes");
}

#[test]
fn multi_key_operations_apply_atomically_and_count() {
    let mut m = open(&MemFs::new());
    let pairs = vec![(b("a"), b("1")), (b("b"), b("2")), (b("a"), b("3"))];
    assert_eq!(m.apply_req(1, &req(1, 1, Op::PutMany { pairs })).unwrap(), Outcome::Written);
    let keys = vec![b("a"), b("b"), b("c")];
    assert_eq!(
        m.read(&Op::GetMany { keys: keys.clone() }).unwrap(),
        Outcome::Values(vec![Some(b("3")), Some(b("2")), None]),
        "a later pair for the same key wins"
    );
    assert_eq!(m.read(&Op::Count).unwrap(), Outcome::Count(2));
    let delete = Op::DeleteMany { keys: vec![b("a"), b("c"), b("a")] };
    assert_eq!(m.apply_req(2, &req(1, 2, delete.clone())).unwrap(), Outcome::Count(1));
    assert_eq!(
        m.apply_req(3, &req(1, 2, delete)).unwrap(),
        Outcome::Count(1),
        "a retry: same answer"
    );
    assert_eq!(m.read(&Op::Count).unwrap(), Outcome::Count(1));
    assert_eq!(
        m.read(&Op::GetMany { keys }).unwrap(),
        Outcome::Values(vec![None, Some(b("2")), None])
    );
    assert!(m.read(&Op::PutMany { pairs: vec![] }).is_err(), "a write is not a read");
}

#[test]
fn scans_come_in_pages_within_bounds() {
    let mut m = open(&MemFs::new());
    for i in 0..25u64 {
        let op = Op::Put { key: b(&format!("k{i:02}")), value: b(&i.to_string()) };
        m.apply_req(i + 1, &req(1, i + 1, op)).unwrap();
    }
    let page = |start: &str, end: Option<&str>, limit| {
        m.read(&Op::Scan { start: b(start), end: end.map(b), limit }).unwrap()
    };
    let Outcome::Page { pairs, next } = page("k05", Some("k20"), 10) else { panic!() };
    assert_eq!(pairs.len(), 10);
    assert_eq!((pairs[0].0.clone(), next), (b("k05"), Some(b("k15"))));
    let Outcome::Page { pairs, next } = page("k15", Some("k20"), 10) else { panic!() };
    assert_eq!((pairs.len(), next), (5, None));
    let Outcome::Page { pairs, .. } = page("", None, 100) else { panic!() };
    assert_eq!(pairs.len(), 25, "the dedup table and metadata never show up in a scan");
    assert!(m.read(&Op::Delete { key: b("x") }).is_err());
}

#[derive(Debug, Clone)]
enum Action {
    Write { client: u64, retry: bool, op: Op },
    Snapshot,
    Crash,
}

impl Arbitrary for Action {
    fn arbitrary(g: &mut Gen) -> Action {
        let key = b(&format!("k{}", u8::arbitrary(g) % 4));
        let value = b(&format!("{}", u8::arbitrary(g) % 10));
        let op = match u8::arbitrary(g) % 3 {
            0 => Op::Put { key, value },
            1 => Op::Append { key, value },
            _ => Op::Delete { key },
        };
        match u8::arbitrary(g) % 10 {
            0 => Action::Snapshot,
            1 => Action::Crash,
            _ => Action::Write {
                client: u64::from(u8::arbitrary(g) % 3),
                retry: bool::arbitrary(g),
                op,
            },
        }
    }
}

/// Against a BTreeMap that applies each (client, seq) once: retries, snapshots (restored into
/// a fresh machine) and crashes (after which the log from the durable applied index is
/// delivered again, as Raft would) never change the outcome.
fn agrees(actions: Vec<Action>) -> bool {
    let mut fs = MemFs::new();
    let mut m = open(&fs);
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut seqs = [0u64; 3];
    let mut log: Vec<Request> = Vec::new();
    for action in actions {
        match action {
            Action::Write { client, retry, op } => {
                let c = client as usize;
                if !(retry && seqs[c] > 0) {
                    seqs[c] += 1;
                    match &op {
                        Op::Put { key, value } => {
                            model.insert(key.clone(), value.clone());
                        }
                        Op::Append { key, value } => {
                            let mut v = model.get(key).map(|v| v.to_vec()).unwrap_or_default();
                            v.extend_from_slice(value);
                            model.insert(key.clone(), Bytes::from(v));
                        }
                        _ => {
                            if let Op::Delete { key } = &op {
                                model.remove(key);
                            }
                        }
                    }
                    log.push(req(client, seqs[c], op));
                } else {
                    // The same request again (its op as first sent).
                    let again = log.iter().rev().find(|r| r.client_id == client).cloned().unwrap();
                    log.push(again);
                }
                let index = log.len() as u64;
                m.apply_req(index, log.last().unwrap()).unwrap();
            }
            Action::Snapshot => {
                let data = snapshot_of(&m);
                let index = m.applied_index();
                fs = MemFs::new();
                m = open(&fs);
                m.restore(index, &mut &data[..]).unwrap();
            }
            Action::Crash => {
                drop(m);
                fs.crash();
                m = open(&fs);
                for index in m.applied_index() + 1..=log.len() as u64 {
                    m.apply_req(index, &log[index as usize - 1]).unwrap();
                }
            }
        }
    }
    let Outcome::Page { pairs, .. } =
        m.read(&Op::Scan { start: Bytes::new(), end: None, limit: 100 }).unwrap()
    else {
        return false;
    };
    pairs == model.into_iter().collect::<Vec<_>>()
}

#[test]
fn model_test_against_a_btreemap_with_retries_snapshots_and_crashes() {
    QuickCheck::new().tests(200).quickcheck(agrees as fn(Vec<Action>) -> bool);
}

/// Commands applied as one batch read what earlier commands of the batch wrote: an append
/// after a put, a retry of a write staged in the same batch, a delete counting a staged key,
/// and a read through the log in the middle of the batch.
#[test]
fn a_batch_sees_its_own_writes() {
    let mut m = open(&MemFs::new());
    let put = req(1, 1, Op::Put { key: b("k"), value: b("a") });
    let append = req(1, 2, Op::Append { key: b("k"), value: b("bc") });
    let read = req(2, 1, Op::Get { key: b("k") });
    let delete = req(3, 1, Op::DeleteMany { keys: vec![b("k"), b("absent")] });
    let (put, append, read, delete) = (v1(&put), v1(&append), v1(&read), v1(&delete));
    let batch: Vec<(Index, Option<&Command>)> = vec![
        (1, None),
        (2, Some(&put)),
        (3, Some(&append)),
        (4, Some(&append)), // a retry: answered as before, not applied again
        (5, Some(&read)),
        (6, Some(&delete)),
    ];
    let outcomes = m.apply_batch(&batch).unwrap();
    assert_eq!(
        outcomes,
        [
            Outcome::Written,
            Outcome::Length(3),
            Outcome::Length(3),
            Outcome::Value(Some(b("abc"))),
            Outcome::Count(1),
        ]
    );
    assert_eq!(m.applied_index(), 6);
    assert_eq!(get(&m, "k"), None);
}

/// Applying a log in batches of any size gives the same outcomes, state and applied index
/// as applying it one command at a time.
fn batches_agree(requests: Vec<(u8, u8, u8)>, cuts: Vec<u8>) -> bool {
    let log: Vec<Option<Command>> = requests
        .iter()
        .map(|&(client, seq, kind)| {
            let key = Bytes::from(vec![b'a' + kind % 3]);
            let op = match kind % 6 {
                0 => return None, // a leader's no-op
                1 => Op::Put { key, value: Bytes::from(vec![seq]) },
                2 | 3 => Op::Append { key, value: Bytes::from(vec![seq]) },
                4 => Op::Delete { key },
                _ => Op::Get { key },
            };
            Some(v1(&req(u64::from(client % 3), u64::from(seq % 4) + 1, op)))
        })
        .collect();
    let entries: Vec<(Index, Option<&Command>)> =
        log.iter().enumerate().map(|(i, r)| (i as Index + 1, r.as_ref())).collect();
    let mut one = open(&MemFs::new());
    let mut expected = Vec::new();
    for &(index, r) in &entries {
        match r {
            Some(r) => expected.push(one.apply(index, r).unwrap()),
            None => one.skip(index).unwrap(),
        }
    }
    let mut batched = open(&MemFs::new());
    let mut outcomes = Vec::new();
    let mut rest = &entries[..];
    let mut cuts = cuts.into_iter().cycle();
    while !rest.is_empty() {
        let n = (usize::from(cuts.next().unwrap_or(255)) % 7 + 1).min(rest.len());
        outcomes.extend(batched.apply_batch(&rest[..n]).unwrap());
        rest = &rest[n..];
    }
    let everything = Op::Scan { start: Bytes::new(), end: None, limit: 100 };
    outcomes == expected
        && batched.applied_index() == one.applied_index()
        && batched.read(&everything).unwrap() == one.read(&everything).unwrap()
}

#[test]
fn batched_apply_agrees_with_one_at_a_time() {
    QuickCheck::new()
        .tests(300)
        .quickcheck(batches_agree as fn(Vec<(u8, u8, u8)>, Vec<u8>) -> bool);
}

/// An ordered write applies only right after the client's previous write; one that comes
/// early changes nothing and is answered `OutOfOrder`, and applies once resent in its turn.
/// A retry older than the client's last write is answered from what is still known.
#[test]
fn ordered_writes_apply_in_their_order_only() {
    let mut m = open(&MemFs::new());
    let ordered = |seq, op| Request { client_id: 9, seq, op, ordered: true };
    let append = |v: &str| Op::Append { key: b("k"), value: b(v) };
    assert_eq!(m.apply_req(1, &ordered(2, append("b"))).unwrap(), Outcome::OutOfOrder);
    assert_eq!(get(&m, "k"), None, "an early write changes nothing");
    assert_eq!(m.apply_req(2, &ordered(1, append("a"))).unwrap(), Outcome::Length(1));
    assert_eq!(m.apply_req(3, &ordered(3, append("c"))).unwrap(), Outcome::OutOfOrder);
    assert_eq!(m.apply_req(4, &ordered(2, append("b"))).unwrap(), Outcome::Length(2));
    assert_eq!(m.apply_req(5, &ordered(3, append("c"))).unwrap(), Outcome::Length(3));
    assert_eq!(get(&m, "k"), Some(b("abc")));
    assert_eq!(m.apply_req(6, &ordered(3, append("c"))).unwrap(), Outcome::Length(3), "a retry");
    // Older than the last write: a put's outcome is known, an append's is not kept.
    assert_eq!(m.apply_req(7, &ordered(2, append("b"))).unwrap(), Outcome::Forgotten);
    let put = Op::Put { key: b("p"), value: b("1") };
    assert_eq!(m.apply_req(8, &ordered(1, put)).unwrap(), Outcome::Written);
    assert_eq!(get(&m, "k"), Some(b("abc")), "no retry applied twice");
    assert_eq!(get(&m, "p"), None, "a put older than the last write is not applied");
    // Unordered writes (a clerk) may skip numbers.
    let loose = Request { client_id: 10, seq: 5, op: append("x"), ordered: false };
    assert_eq!(m.apply_req(9, &loose).unwrap(), Outcome::Length(4));
}

// ----- Sessions (version 2 entries: leader-stamped time, registration, expiry) -------------

/// `request` as a version 2 entry stamped `time_ms`.
fn at(time_ms: u64, request: Request) -> Command {
    Command { time_ms: Some(time_ms), request }
}

/// A registration as the leader fills it in.
fn register(id: u64, ttl_ms: u64, retire: Option<u64>) -> Request {
    req(0, 0, Op::Register { id, ttl_ms, retire })
}

fn put(session: u64, seq: u64, key: &str) -> Request {
    req(session, seq, Op::Put { key: b(key), value: b("v") })
}

#[test]
fn writes_need_a_registered_session_and_its_next_number() {
    let mut m = open(&MemFs::new());
    assert_eq!(m.apply(1, &at(10, put(77, 1, "a"))).unwrap(), Outcome::NoSession);
    assert_eq!(get(&m, "a"), None, "an unregistered id writes nothing");
    assert_eq!(
        m.apply(2, &at(10, register(77, 1000, None))).unwrap(),
        Outcome::Registered { id: 77 }
    );
    assert_eq!(m.apply(3, &at(10, register(77, 1000, None))).unwrap(), Outcome::NoSession);
    assert_eq!(m.apply(4, &at(10, put(77, 0, "a"))).unwrap(), Outcome::OutOfOrder);
    assert_eq!(m.apply(5, &at(10, put(77, 2, "a"))).unwrap(), Outcome::OutOfOrder);
    assert_eq!(get(&m, "a"), None);
    assert_eq!(m.apply(6, &at(10, put(77, 1, "a"))).unwrap(), Outcome::Written);
    assert_eq!(m.apply(7, &at(10, put(77, 1, "a"))).unwrap(), Outcome::Written, "a retry");
    // A registration a leader did not fill in (id 0) registers nothing.
    assert_eq!(m.apply(8, &at(10, register(0, 1000, None))).unwrap(), Outcome::NoSession);
    assert_eq!(m.sessions(), vec![(77, 1010)]);
}

/// Issue 14: a client that knows (or guesses) another's id jumps its number to `u64::MAX`, so
/// that the owner's later writes would be answered as old retries and never applied. The
/// jump is refused and the owner carries on.
#[test]
fn a_sequence_jump_is_refused_and_the_owner_carries_on() {
    let mut m = open(&MemFs::new());
    m.apply(1, &at(10, register(5, 1000, None))).unwrap();
    assert_eq!(m.apply(2, &at(10, put(5, 1, "a"))).unwrap(), Outcome::Written);
    let jump = req(5, u64::MAX, Op::Put { key: b("a"), value: b("evil") });
    assert_eq!(m.apply(3, &at(10, jump.clone())).unwrap(), Outcome::OutOfOrder);
    let ordered_jump = Request { ordered: true, ..jump };
    assert_eq!(m.apply(4, &at(10, ordered_jump)).unwrap(), Outcome::OutOfOrder);
    let next = req(5, 2, Op::Put { key: b("a"), value: b("mine") });
    assert_eq!(m.apply(5, &at(10, next)).unwrap(), Outcome::Written);
    assert_eq!(get(&m, "a"), Some(b("mine")));
}

#[test]
fn an_idle_session_expires_on_the_log_clock_and_its_writes_are_refused() {
    let fs = MemFs::new();
    let mut m = open(&fs);
    m.apply(1, &at(1000, register(1, 100, None))).unwrap();
    m.apply(2, &at(1000, register(2, 100, None))).unwrap();
    assert_eq!(m.apply(3, &at(1050, put(2, 1, "a"))).unwrap(), Outcome::Written);
    assert_eq!(m.sessions(), vec![(1, 1100), (2, 1150)]);
    // A stamp from behind (a new leader whose clock is late) does not move the clock back.
    m.apply(4, &at(900, put(2, 2, "b"))).unwrap();
    assert_eq!((m.clock(), m.sessions()), (1050, vec![(1, 1100), (2, 1150)]));
    // At 1100 session 1 is exactly at its expiry: still live. Past it, gone.
    m.skip(5).unwrap();
    m.apply(6, &at(1100, req(9, 1, Op::Get { key: b("a") }))).unwrap();
    assert_eq!(m.sessions().len(), 2);
    m.apply(7, &at(1101, req(9, 2, Op::Get { key: b("a") }))).unwrap();
    assert_eq!(m.sessions(), vec![(2, 1150)], "evicted by a read's stamp, at index 7");
    assert_eq!(m.apply(8, &at(1101, put(1, 1, "c"))).unwrap(), Outcome::NoSession);
    assert_eq!(get(&m, "c"), None, "an expired session's write is not applied");
    // The clock and the sessions survive a restart.
    m.sync().unwrap();
    drop(m);
    fs.crash();
    let mut m = open(&fs);
    assert_eq!((m.clock(), m.sessions()), (1101, vec![(2, 1150)]));
    // A retry of session 2's last write after it expired: refused, not applied again.
    assert_eq!(m.apply(9, &at(1151, put(2, 2, "b"))).unwrap(), Outcome::NoSession);
    assert_eq!(m.sessions(), vec![]);
}

#[test]
fn a_registration_retires_the_session_it_names() {
    let mut m = open(&MemFs::new());
    m.apply(1, &at(10, register(1, 1000, None))).unwrap();
    m.apply(2, &at(10, put(1, 1, "a"))).unwrap();
    assert_eq!(
        m.apply(3, &at(10, register(2, 1000, Some(1)))).unwrap(),
        Outcome::Registered { id: 2 }
    );
    assert_eq!(m.sessions(), vec![(2, 1010)]);
    // The old session's write that was in flight can no longer apply.
    assert_eq!(m.apply(4, &at(10, put(1, 2, "late"))).unwrap(), Outcome::NoSession);
    assert_eq!(get(&m, "late"), None);
}

#[test]
fn a_session_can_be_ended_by_its_owner() {
    let mut m = open(&MemFs::new());
    m.apply(1, &at(10, register(1, 1000, None))).unwrap();
    let end = req(0, 0, Op::EndSession { id: 1 });
    assert_eq!(m.apply(2, &at(10, end.clone())).unwrap(), Outcome::Written);
    assert_eq!(m.sessions(), vec![]);
    assert_eq!(m.apply(3, &at(10, put(1, 1, "a"))).unwrap(), Outcome::NoSession);
    assert_eq!(m.apply(4, &at(10, end.clone())).unwrap(), Outcome::Written, "twice: harmless");
    assert_eq!(m.apply(5, &v1(&end)).unwrap(), Outcome::NoSession, "not in version 1");
}

/// Dedup entries of release 1 (and sessions version 1 entries create) are kept while only
/// version 1 entries come, and expire at the first stamped entry.
#[test]
fn release_1_entries_apply_as_before_and_their_sessions_expire_once_stamps_come() {
    let mut m = open(&MemFs::new());
    assert_eq!(m.apply(1, &v1(&put(42, 1, "a"))).unwrap(), Outcome::Written);
    assert_eq!(m.apply(2, &v1(&put(42, 5, "b"))).unwrap(), Outcome::Written, "gaps allowed");
    assert_eq!(m.apply(3, &v1(&put(42, 5, "b"))).unwrap(), Outcome::Written);
    assert_eq!(m.apply(4, &v1(&register(9, 10, None))).unwrap(), Outcome::NoSession);
    assert_eq!(m.sessions().len(), 1);
    // A release 1 dedup entry ('c'), as that release left it.
    let mut legacy = 7u64.to_le_bytes().to_vec();
    legacy.extend_from_slice(&postcard::to_allocvec(&Outcome::Written).unwrap());
    m.db().put(legacy_key(43), legacy).unwrap();
    let mut m = KvStateMachine::new(m.db().clone()).unwrap();
    assert_eq!(m.sessions(), vec![(42, LEGACY_TTL_MS), (43, 0)]);
    assert_eq!(m.apply(5, &v1(&put(43, 7, "c"))).unwrap(), Outcome::Written, "a retry");
    assert_eq!(get(&m, "c"), None);
    assert_eq!(m.apply(6, &at(1, put(43, 8, "c"))).unwrap(), Outcome::NoSession);
    assert_eq!(m.sessions(), vec![(42, LEGACY_TTL_MS)]);
    m.apply(7, &at(LEGACY_TTL_MS + 1, put(0, 0, "x"))).unwrap();
    assert_eq!(m.sessions(), vec![]);
}

/// A replica's view of the session table after each index.
type Trace = Vec<(Index, u64, Vec<(u64, u64)>)>;

/// A log with registrations, writes, retries, reads, no-ops and stamps that sometimes go
/// back (a new leader's clock behind): every session expires at some point.
fn session_log(seed: u64) -> Vec<Option<Command>> {
    let mut rng = labrpc::Rng::new(seed);
    let mut time = 1_000_000;
    let mut sessions: Vec<(u64, u64)> = Vec::new(); // (id, next seq)
    let mut log = Vec::new();
    for i in 0..400u64 {
        time += rng.next_u64() % 40;
        let stamp = if rng.next_u64().is_multiple_of(10) { time - 100 } else { time };
        let request = match rng.next_u64() % 8 {
            0 => None,
            1 | 2 => {
                let id = 1000 + i;
                let retire = (rng.next_u64().is_multiple_of(4) && !sessions.is_empty())
                    .then(|| sessions.remove(rng.next_u64() as usize % sessions.len()).0);
                sessions.push((id, 1));
                Some(register(id, 100 + rng.next_u64() % 400, retire))
            }
            3 => Some(req(1, i, Op::Get { key: b("k") })),
            _ if sessions.is_empty() => Some(put(rng.next_u64() % 2000, 1, "k")),
            _ => {
                let s = rng.next_u64() as usize % sessions.len();
                let (id, seq) = &mut sessions[s];
                let retry = rng.next_u64().is_multiple_of(5) && *seq > 1;
                let number = if retry { *seq - 1 } else { *seq };
                if !retry {
                    *seq += 1;
                }
                let key = format!("k{}", rng.next_u64() % 5);
                Some(req(*id, number, Op::Append { key: b(&key), value: b("x") }))
            }
        };
        log.push(request.map(|r| at(stamp, r)));
    }
    log
}

/// One replica applies every entry on its own, one batches, one restarts from its disk (losing
/// what was not synced and getting it again), one restores snapshots: after every index they
/// hold the same clock and the same sessions, so every session is evicted at the same index
/// on all of them.
#[test]
fn every_replica_evicts_the_same_sessions_at_the_same_index() {
    for seed in 0..8 {
        let log = session_log(seed);
        let entries: Vec<(Index, Option<&Command>)> =
            log.iter().enumerate().map(|(i, c)| (i as Index + 1, c.as_ref())).collect();
        let trace = |m: &KvStateMachine| (m.applied_index(), m.clock(), m.sessions());
        // The reference: one entry at a time.
        let mut one = open(&MemFs::new());
        let mut reference: Trace = Vec::new();
        let mut evictions = 0;
        for &(index, command) in &entries {
            let before = one.sessions().len();
            match command {
                Some(c) => drop(one.apply(index, c).unwrap()),
                None => one.skip(index).unwrap(),
            }
            let registered =
                matches!(command, Some(c) if matches!(c.request.op, Op::Register { .. }));
            evictions += (before + usize::from(registered)).saturating_sub(one.sessions().len());
            reference.push(trace(&one));
        }
        assert!(evictions > 20, "seed {seed}: only {evictions} sessions ended");
        // Batches of varying size, a crash every so often, a snapshot restore every so often.
        let (fs, mut restored_fs) = (MemFs::new(), MemFs::new());
        let mut batched = open(&MemFs::new());
        let mut crashed = open(&fs);
        let mut restored = open(&restored_fs);
        let mut at_index = 0;
        let mut round = 0;
        while at_index < entries.len() {
            round += 1;
            let n = (round * 7 % 11 + 1).min(entries.len() - at_index);
            let run = &entries[at_index..at_index + n];
            batched.apply_batch(run).unwrap();
            for m in [&mut crashed, &mut restored] {
                for &(index, command) in run {
                    match command {
                        Some(c) => drop(m.apply(index, c).unwrap()),
                        None => m.skip(index).unwrap(),
                    }
                }
            }
            at_index += n;
            let expected = &reference[at_index - 1];
            assert_eq!(&trace(&batched), expected, "seed {seed}: batched, index {at_index}");
            assert_eq!(&trace(&restored), expected, "seed {seed}: restored, index {at_index}");
            assert_eq!(&trace(&crashed), expected, "seed {seed}: restarted, index {at_index}");
            if round % 3 == 0 {
                drop(crashed);
                fs.crash();
                crashed = open(&fs);
                for &(index, command) in &entries[crashed.applied_index() as usize..at_index] {
                    match command {
                        Some(c) => drop(crashed.apply(index, c).unwrap()),
                        None => crashed.skip(index).unwrap(),
                    }
                }
                assert_eq!(&trace(&crashed), expected, "seed {seed}: after a crash");
            }
            if round % 4 == 0 {
                let data = snapshot_of(&restored);
                restored_fs = MemFs::new();
                restored = open(&restored_fs);
                restored.restore(at_index as Index, &mut &data[..]).unwrap();
                assert_eq!(&trace(&restored), expected, "seed {seed}: after a restore");
            }
        }
        let everything = Op::Scan { start: Bytes::new(), end: None, limit: 100 };
        let state = one.read(&everything).unwrap();
        for m in [&batched, &crashed, &restored] {
            assert_eq!(m.read(&everything).unwrap(), state, "seed {seed}");
        }
    }
}

#[test]
fn a_snapshot_with_a_bad_session_or_clock_is_refused() {
    let mut a = open(&MemFs::new());
    a.apply(1, &at(10, register(3, 1000, None))).unwrap();
    let good = snapshot_of(&a);
    // The records, in key order: the clock ('a'), then the session ('b').
    let clock_value = 4 + CLOCK.len() + 4;
    let mut short_clock = good.clone();
    short_clock[4 + CLOCK.len()] = 7; // The clock's length: 7 bytes now.
    let mut bad_session = good.clone();
    let session_value = clock_value + 8 + 4 + 9 + 4;
    bad_session[session_value + 24] = 0xff; // The reply's variant: no such outcome.
    for (what, data) in [("clock", short_clock), ("session", bad_session)] {
        let mut m = open(&MemFs::new());
        assert!(m.restore(5, &mut &data[..]).is_err(), "{what}");
    }
    let mut m = open(&MemFs::new());
    m.restore(5, &mut &good[..]).unwrap();
    assert_eq!((m.clock(), m.sessions()), (10, vec![(3, 1010)]));
}

#[test]
fn the_lsm_machine_passes_the_conformance_suite() {
    crate::testing::state_machine_suite(&mut || Box::new(open(&MemFs::new())));
}

#[test]
fn the_memory_machine_passes_the_conformance_suite() {
    crate::testing::state_machine_suite(&mut || Box::new(crate::MemStateMachine::new()));
}

/// One random command for [`the_lsm_and_the_memory_machines_agree_on_random_logs`]: sessions
/// registered, used, retried, skipped ahead, ended and left to expire, unknown sessions, reads
/// in the log, and now and then an unstamped (release 1) write.
fn random_command(rng: &mut labrpc::Rng, time: &mut u64, seqs: &mut BTreeMap<u64, u64>) -> Command {
    *time += rng.below(40);
    let key = b(&format!("k{}", rng.below(5)));
    let value = b(&format!("{}", rng.below(100)));
    let client = 1 + rng.below(4);
    let data_op = match rng.below(6) {
        0 => Op::Put { key, value },
        1 => Op::Append { key, value },
        2 => Op::Delete { key },
        3 => Op::PutMany { pairs: vec![(key, value.clone()), (b("k9"), value)] },
        4 => Op::DeleteMany { keys: vec![key.clone(), b("k0"), key] },
        _ => Op::Append { key: b("log"), value },
    };
    let stamped = |request| Command { time_ms: Some(*time), request };
    match rng.below(20) {
        0 | 1 => {
            let retire = rng.chance(1, 3).then(|| 1 + rng.below(4));
            seqs.insert(client, 0);
            let ttl_ms = 50 + rng.below(400);
            stamped(req(0, 0, Op::Register { id: client, ttl_ms, retire }))
        }
        2 => stamped(req(0, 0, Op::EndSession { id: client })),
        3 => stamped(req(0, 0, Op::Get { key: b("log") })),
        4 => stamped(req(0, 0, Op::Scan { start: b("k1"), end: Some(b("k4")), limit: 2 })),
        5 => stamped(req(0, 0, Op::Count)),
        6 => stamped(req(0, 0, Op::GetMany { keys: vec![b("k0"), b("k9")] })),
        7 => Command { time_ms: None, request: req(client + 10, 1 + rng.below(3), data_op) },
        8 => {
            // A retry of an earlier number (or of one never used), or a gap.
            let seq = seqs.get(&client).copied().unwrap_or(0) + rng.below(3);
            stamped(req(client, seq.saturating_sub(1), data_op))
        }
        _ => {
            let seq = seqs.entry(client).or_insert(0);
            *seq += 1;
            stamped(req(client, *seq, data_op))
        }
    }
}

/// Both implementations of the trait, given the same random log (in batches of random sizes,
/// with snapshots restored into fresh machines along the way), answer every command alike and
/// end in the same state: the second implementation really is interchangeable.
#[test]
fn the_lsm_and_the_memory_machines_agree_on_random_logs() {
    for seed in 0..100 {
        let mut rng = labrpc::Rng::new(seed);
        let mut lsm: Box<dyn StateMachine> = Box::new(open(&MemFs::new()));
        let mut mem: Box<dyn StateMachine> = Box::new(crate::MemStateMachine::new());
        let (mut time, mut index, mut seqs) = (1_000, 0, BTreeMap::new());
        for _ in 0..60 {
            let batch: Vec<Command> = (0..1 + rng.below(4))
                .map(|_| random_command(&mut rng, &mut time, &mut seqs))
                .collect();
            let entries: Vec<(Index, Option<&Command>)> = batch
                .iter()
                .map(|c| {
                    index += 1;
                    (index, Some(c))
                })
                .collect();
            let (a, b) = (lsm.apply_batch(&entries).unwrap(), mem.apply_batch(&entries).unwrap());
            assert_eq!(a, b, "seed {seed}: the outcomes of {batch:?}");
            assert_eq!(lsm.session_stats(), mem.session_stats(), "seed {seed}");
            assert_eq!(lsm.sessions(), mem.sessions(), "seed {seed}: the sessions");
            if rng.chance(1, 15) {
                lsm = restored(lsm.as_ref(), Box::new(open(&MemFs::new())));
                mem = restored(mem.as_ref(), Box::new(crate::MemStateMachine::new()));
            }
        }
        let all = Op::Scan { start: Bytes::new(), end: None, limit: 1_000 };
        assert_eq!(lsm.read(&all).unwrap(), mem.read(&all).unwrap(), "seed {seed}: the data");
        assert_eq!(lsm.applied_index(), mem.applied_index());
    }
}

/// `into`, restored from a snapshot of `from`.
fn restored(from: &dyn StateMachine, mut into: Box<dyn StateMachine>) -> Box<dyn StateMachine> {
    let mut image = Vec::new();
    from.snapshot(&mut image).unwrap();
    into.restore(from.applied_index(), &mut &image[..]).unwrap();
    into
}
