//! The conformance suite of [`StateMachine`] (feature `testing`): [`state_machine_suite`] checks
//! rules 1 to 4 and 7 of the trait's contract on any implementation. Rules 5 and 6 (what
//! survives a crash) depend on how an implementation stores its state, so each durable one
//! tests them itself, as `KvStateMachine`'s crash tests do.

use bytes::Bytes;
use kvproto::proto::{Op, Outcome, Request};

use crate::StateMachine;
use crate::command::Command;

/// Makes a fresh, empty state machine for each check.
pub type MakeStateMachine<'a> = &'a mut dyn FnMut() -> Box<dyn StateMachine>;

/// Runs every check on machines from `make`; panics, naming the rule, at the first that fails.
pub fn state_machine_suite(make: MakeStateMachine<'_>) {
    sessions_apply_each_write_once(make);
    sessions_expire_on_the_log_clock(make);
    reads_in_the_log_see_the_writes_before_them(make);
    batches_agree_with_one_at_a_time(make);
    the_applied_index_follows_applies_and_skips(make);
    a_restored_snapshot_carries_on_as_the_original(make);
    bad_snapshots_and_misdirected_reads_are_refused(make);
    scans_come_in_pages(make);
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `op` from session `client` with number `seq`, stamped at `time_ms` on the leader's clock.
fn at(time_ms: u64, client: u64, seq: u64, op: Op) -> Command {
    Command {
        time_ms: Some(time_ms),
        request: Request { client_id: client, seq, op, ordered: false },
    }
}

fn register(time_ms: u64, id: u64, ttl_ms: u64) -> Command {
    at(time_ms, 0, 0, Op::Register { id, ttl_ms, retire: None })
}

fn append(time_ms: u64, client: u64, seq: u64, key: &str, value: &str) -> Command {
    at(time_ms, client, seq, Op::Append { key: b(key), value: b(value) })
}

fn get(m: &dyn StateMachine, key: &str) -> Option<Bytes> {
    match m.read(&Op::Get { key: b(key) }).expect("a read") {
        Outcome::Value(v) => v,
        other => panic!("a Get answered {other:?}"),
    }
}

/// Applies `commands` at indexes 1, 2, … one at a time.
fn apply_all(m: &mut dyn StateMachine, commands: &[Command]) -> Vec<Outcome> {
    let first = m.applied_index() + 1;
    (first..).zip(commands).map(|(i, c)| m.apply(i, c).expect("apply")).collect()
}

/// A log exercising every kind of command: two sessions, retries, refusals, reads.
fn sample_log() -> Vec<Command> {
    vec![
        register(1_000, 11, 60_000),
        register(1_001, 12, 60_000),
        append(1_002, 11, 1, "a", "x"),
        append(1_003, 11, 1, "a", "x"), // A retry.
        at(1_004, 12, 1, Op::Put { key: b("b"), value: b("1") }),
        at(1_005, 12, 2, Op::PutMany { pairs: vec![(b("c"), b("2")), (b("d"), b("3"))] }),
        at(1_006, 99, 1, Op::Put { key: b("z"), value: b("no session") }),
        at(1_007, 11, 5, Op::Put { key: b("z"), value: b("out of order") }),
        at(1_008, 0, 0, Op::Get { key: b("a") }),
        at(1_009, 11, 2, Op::DeleteMany { keys: vec![b("c"), b("nothing"), b("c")] }),
        append(1_010, 12, 3, "a", "y"),
        at(1_011, 0, 0, Op::Scan { start: b(""), end: None, limit: 10 }),
        at(1_012, 11, 3, Op::Delete { key: b("d") }),
        at(1_013, 0, 0, Op::Count),
        at(1_014, 11, 2, Op::Put { key: b("z"), value: b("an old retry") }),
        at(1_015, 0, 0, Op::GetMany { keys: vec![b("a"), b("b"), b("z")] }),
        at(1_016, 12, 0, Op::EndSession { id: 12 }),
        append(1_017, 12, 4, "a", "z"),
    ]
}

fn sessions_apply_each_write_once(make: MakeStateMachine<'_>) {
    let mut m = make();
    let outcomes = apply_all(m.as_mut(), &sample_log()[..8]);
    let expected = [
        Outcome::Registered { id: 11 },
        Outcome::Registered { id: 12 },
        Outcome::Length(1),
        Outcome::Length(1),
        Outcome::Written,
        Outcome::Written,
        Outcome::NoSession,
        Outcome::OutOfOrder,
    ];
    assert_eq!(outcomes, expected, "rule 2: registrations, a retry, refusals");
    assert_eq!(get(m.as_ref(), "a"), Some(b("x")), "rule 2: the retried append applied once");
    assert_eq!(get(m.as_ref(), "z"), None, "rule 2: refused writes change nothing");
    let outcomes = apply_all(m.as_mut(), &[register(1_100, 11, 60_000)]);
    assert_eq!(outcomes, [Outcome::NoSession], "rule 2: a live id cannot be registered again");
    let outcomes = apply_all(m.as_mut(), &[register(1_101, 0, 60_000)]);
    assert_eq!(outcomes, [Outcome::NoSession], "rule 2: id 0 is no session");
}

fn sessions_expire_on_the_log_clock(make: MakeStateMachine<'_>) {
    let mut m = make();
    apply_all(m.as_mut(), &[register(1_000, 5, 100), register(1_000, 6, 10_000)]);
    assert_eq!(m.session_stats(), (2, 1_000), "sessions and the log clock");
    // Session 5 lives until 1_100: a command at 1_100 still finds it, one after does not.
    let outcomes = apply_all(m.as_mut(), &[append(1_100, 5, 1, "k", "a")]);
    assert_eq!(outcomes, [Outcome::Length(1)], "rule 2: a session lives through its TTL");
    let outcomes = apply_all(m.as_mut(), &[append(1_150, 6, 1, "k", "b")]);
    assert_eq!(outcomes, [Outcome::Length(2)]);
    let outcomes = apply_all(m.as_mut(), &[append(1_201, 6, 2, "k", "c")]);
    assert_eq!(outcomes, [Outcome::Length(3)]);
    assert_eq!(m.session_stats().0, 1, "rule 2: the idle session expired (its write + TTL)");
    let outcomes = apply_all(m.as_mut(), &[append(1_202, 5, 2, "k", "d")]);
    assert_eq!(outcomes, [Outcome::NoSession], "rule 2: an expired session's writes are refused");
    // The clock never runs backwards: an older stamp does not revive anything.
    let outcomes = apply_all(m.as_mut(), &[append(900, 6, 3, "k", "e")]);
    assert_eq!(outcomes, [Outcome::Length(4)]);
    assert_eq!(m.session_stats(), (1, 1_202), "rule 2: the log clock keeps its largest stamp");
}

fn reads_in_the_log_see_the_writes_before_them(make: MakeStateMachine<'_>) {
    let mut m = make();
    let reg = register(1_000, 3, 60_000);
    let put = at(1_001, 3, 1, Op::Put { key: b("k"), value: b("v") });
    let read = at(1_002, 0, 0, Op::Get { key: b("k") });
    let outcomes = m.apply_batch(&[(1, Some(&reg)), (2, Some(&put)), (3, Some(&read))]).unwrap();
    assert_eq!(outcomes[2], Outcome::Value(Some(b("v"))), "rule 3: a read sees its batch");
    assert_eq!(get(m.as_ref(), "k"), Some(b("v")), "rule 3: `read` sees what was applied");
}

fn batches_agree_with_one_at_a_time(make: MakeStateMachine<'_>) {
    let log = sample_log();
    let mut one = make();
    let singles = apply_all(one.as_mut(), &log);
    for cut in [1, 2, 3, 7, log.len()] {
        let mut batched = make();
        let mut outcomes = Vec::new();
        let mut index = 0;
        for chunk in log.chunks(cut) {
            let entries: Vec<_> = chunk
                .iter()
                .map(|c| {
                    index += 1;
                    (index, Some(c))
                })
                .collect();
            outcomes.extend(batched.apply_batch(&entries).expect("apply a batch"));
        }
        assert_eq!(outcomes, singles, "rule 4: batches of {cut} agree with one at a time");
        assert_eq!(state(batched.as_ref()), state(one.as_ref()), "rule 4: the same state");
        assert_eq!(batched.applied_index(), log.len() as u64);
    }
    // Rule 1: a second machine given the same log answers the same.
    let mut again = make();
    assert_eq!(apply_all(again.as_mut(), &log), singles, "rule 1: deterministic");
}

/// Everything that decides later answers: every pair, the sessions and the log clock.
fn state(m: &dyn StateMachine) -> (Outcome, Vec<(u64, u64)>, (usize, u64)) {
    let all = m.read(&Op::Scan { start: b(""), end: None, limit: u32::MAX }).expect("a scan");
    (all, m.sessions(), m.session_stats())
}

fn the_applied_index_follows_applies_and_skips(make: MakeStateMachine<'_>) {
    let mut m = make();
    assert_eq!(m.applied_index(), 0, "rule 5: a new machine has applied nothing");
    m.apply(1, &register(1_000, 4, 60_000)).unwrap();
    assert_eq!(m.applied_index(), 1, "rule 5");
    m.skip(2).unwrap();
    assert_eq!(m.applied_index(), 2, "rule 5: a no-op entry counts");
    m.apply_batch(&[(3, None), (4, Some(&append(1_001, 4, 1, "k", "v"))), (5, None)]).unwrap();
    assert_eq!(m.applied_index(), 5, "rule 5: a batch ends at its last entry");
    m.sync().expect("sync");
    assert_eq!(m.applied_index(), 5, "sync changes nothing visible");
}

fn a_restored_snapshot_carries_on_as_the_original(make: MakeStateMachine<'_>) {
    let log = sample_log();
    let (before, after) = log.split_at(10);
    let mut original = make();
    apply_all(original.as_mut(), before);
    let mut image = Vec::new();
    original.snapshot(&mut image).expect("a snapshot");
    let mut copy = make();
    apply_all(copy.as_mut(), &[register(5, 77, 10)]); // State the restore must replace.
    copy.restore(original.applied_index(), &mut &image[..]).expect("a restore");
    assert_eq!(copy.applied_index(), original.applied_index(), "rule 7: at the index given");
    assert_eq!(state(copy.as_ref()), state(original.as_ref()), "rule 7: the whole state");
    // Later commands, retries included, are answered alike: the sessions came along.
    let retry = append(2_000, 11, 1, "a", "x");
    let more: Vec<Command> = after.iter().cloned().chain([retry]).collect();
    assert_eq!(
        apply_all(copy.as_mut(), &more),
        apply_all(original.as_mut(), &more),
        "rule 7: a restored machine answers as the original"
    );
    let outcomes = apply_all(copy.as_mut(), &[append(2_001, 77, 1, "k", "v")]);
    assert_eq!(outcomes, [Outcome::NoSession], "rule 7: the replaced state is gone");
}

fn bad_snapshots_and_misdirected_reads_are_refused(make: MakeStateMachine<'_>) {
    let mut m = make();
    apply_all(m.as_mut(), &[register(1_000, 8, 60_000), append(1_001, 8, 1, "k", "v")]);
    let mut image = Vec::new();
    m.snapshot(&mut image).unwrap();
    for bad in [&b"not a snapshot at all"[..], &image[..image.len() / 2], &[][..]] {
        let mut fresh = make();
        assert!(fresh.restore(3, &mut &bad[..]).is_err(), "rule 7: a damaged snapshot is refused");
        assert_ne!(fresh.applied_index(), 3, "rule 7: a failed restore is not at its index");
    }
    let write = Op::Put { key: b("k"), value: b("v") };
    assert!(m.read(&write).is_err(), "rule 3: `read` refuses a write");
}

fn scans_come_in_pages(make: MakeStateMachine<'_>) {
    let mut m = make();
    let mut log = vec![register(1_000, 9, 60_000)];
    for (seq, key) in (1..).zip(["a", "b", "c", "d"]) {
        log.push(at(1_001, 9, seq, Op::Put { key: b(key), value: b(key) }));
    }
    apply_all(m.as_mut(), &log);
    let page = |start: &str, end: Option<&str>, limit| {
        m.read(&Op::Scan { start: b(start), end: end.map(b), limit }).expect("a scan")
    };
    let pairs = |keys: &[&str]| keys.iter().map(|k| (b(k), b(k))).collect::<Vec<_>>();
    assert_eq!(page("", None, 2), Outcome::Page { pairs: pairs(&["a", "b"]), next: Some(b("c")) });
    assert_eq!(page("b", Some("d"), 10), Outcome::Page { pairs: pairs(&["b", "c"]), next: None });
    assert_eq!(page("c", None, 2), Outcome::Page { pairs: pairs(&["c", "d"]), next: None });
    assert_eq!(page("", None, 0), Outcome::Page { pairs: pairs(&["a"]), next: Some(b("b")) });
    assert_eq!(m.read(&Op::Count).unwrap(), Outcome::Count(4));
}
