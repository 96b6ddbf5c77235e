use std::time::Duration;

use quickcheck::{Arbitrary, Gen, QuickCheck};

use std::collections::HashSet;

use super::*;

type Op = Operation<KvInput, KvOutput>;

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str) -> Op {
    let input = KvInput::Put { key: key.into(), value: value.into() };
    Operation { client, input, output: KvOutput::Done, call, ret }
}

fn append(client: u64, call: u64, ret: u64, key: &str, value: &str) -> Op {
    let input = KvInput::Append { key: key.into(), value: value.into() };
    Operation { client, input, output: KvOutput::Done, call, ret }
}

fn delete(client: u64, call: u64, ret: u64, key: &str) -> Op {
    let input = KvInput::Delete { key: key.into() };
    Operation { client, input, output: KvOutput::Done, call, ret }
}

fn get(client: u64, call: u64, ret: u64, key: &str, value: &str) -> Op {
    let input = KvInput::Get { key: key.into() };
    Operation { client, input, output: KvOutput::Value(value.into()), call, ret }
}

fn run(history: &[Op]) -> Outcome {
    check(&KvModel, history, Duration::from_secs(10))
}

#[test]
fn sequential_and_concurrent_histories_that_are_linearizable() {
    assert_eq!(run(&[]), Outcome::Linearizable);
    let sequential = [put(0, 0, 1, "x", "a"), append(0, 2, 3, "x", "b"), get(0, 4, 5, "x", "ab")];
    assert_eq!(run(&sequential), Outcome::Linearizable);
    // Two overlapping appends may land in either order.
    let either = |first: &str| {
        [append(0, 0, 10, "x", "1"), append(1, 0, 10, "x", "2"), get(2, 11, 12, "x", first)]
    };
    assert_eq!(run(&either("12")), Outcome::Linearizable);
    assert_eq!(run(&either("21")), Outcome::Linearizable);
    // A read concurrent with a delete sees the value or nothing.
    for seen in ["v", ""] {
        let h = [put(0, 0, 1, "k", "v"), delete(1, 2, 9, "k"), get(2, 3, 8, "k", seen)];
        assert_eq!(run(&h), Outcome::Linearizable, "read {seen:?}");
    }
    // Operations that only touch at an instant count as concurrent.
    assert_eq!(run(&[put(0, 0, 5, "x", "a"), get(1, 5, 6, "x", "")]), Outcome::Linearizable);
}

#[test]
fn stale_reads_lost_writes_and_impossible_values_are_violations() {
    // A read that goes back in time after another read saw the newer value.
    let stale = [put(0, 0, 10, "x", "1"), get(1, 2, 4, "x", "1"), get(2, 5, 6, "x", "")];
    assert!(matches!(run(&stale), Outcome::Violation(_)));
    // Both appends finished before the read began; it must see both.
    let lost = [append(0, 0, 1, "x", "a"), append(1, 0, 1, "x", "b"), get(2, 2, 3, "x", "a")];
    assert!(matches!(run(&lost), Outcome::Violation(_)));
    // A value never written.
    assert!(matches!(run(&[get(0, 0, 1, "x", "ghost")]), Outcome::Violation(_)));
    // Appended twice (a retried request applied twice).
    let twice = [append(0, 0, 1, "x", "a"), get(1, 2, 3, "x", "aa")];
    assert!(matches!(run(&twice), Outcome::Violation(_)));
    // Outputs of the wrong kind.
    let wrong = Operation {
        client: 0,
        input: KvInput::Get { key: "x".into() },
        output: KvOutput::Done,
        call: 0,
        ret: 1,
    };
    assert!(matches!(run(&[wrong]), Outcome::Violation(_)));
}

#[test]
fn a_violation_is_explained_with_the_operations_that_cannot_be_ordered() {
    let h = [
        put(0, 0, 1, "x", "1"),
        put(1, 2, 3, "x", "2"),
        get(2, 4, 5, "x", "2"),
        get(3, 6, 7, "x", "1"),
        put(4, 100, 101, "y", "unrelated"),
    ];
    let Outcome::Violation(why) = run(&h) else { panic!("expected a violation") };
    assert_eq!(why.linearized.len(), 3, "{why}");
    assert!(why.linearized[2].contains("client 2"), "{why}");
    assert_eq!(why.stuck.len(), 1, "{why}");
    assert!(why.stuck[0].contains("client 3") && why.stuck[0].contains("\"1\""), "{why}");
    let text = why.to_string();
    assert!(text.contains("none of these can come next"), "{text}");
    assert!(!text.contains("unrelated"), "other keys are checked apart: {text}");
}

#[test]
fn keys_are_checked_apart_and_one_bad_key_fails_the_whole() {
    let mut h = vec![put(0, 0, 1, "a", "1"), get(0, 2, 3, "a", "1")];
    h.push(put(1, 0, 1, "b", "1"));
    assert_eq!(KvModel.partition(&h), vec![vec![0, 1], vec![2]]);
    assert_eq!(run(&h), Outcome::Linearizable);
    h.push(get(1, 5, 6, "b", "2"));
    assert!(matches!(run(&h), Outcome::Violation(_)));
}

#[test]
fn a_write_whose_outcome_is_unknown_may_happen_or_not() {
    let lost = u64::MAX;
    for seen in ["", "v"] {
        let h = [put(0, 0, lost, "x", "v"), get(1, 5, 6, "x", seen), get(1, 7, 8, "x", seen)];
        assert_eq!(run(&h), Outcome::Linearizable);
    }
    // ...but it cannot happen twice or be undone.
    let flicker = [put(0, 0, lost, "x", "v"), get(1, 5, 6, "x", "v"), get(1, 7, 8, "x", "")];
    assert!(matches!(run(&flicker), Outcome::Violation(_)));
}

#[test]
fn the_time_limit_answers_unknown_rather_than_guessing() {
    // Many fully concurrent appends, a put that may come anywhere among them (so no read
    // constrains the value before it), and reads of values no order produces: proving that
    // takes the search through a huge number of orders, far more than a millisecond allows.
    let n = 18;
    let mut h: Vec<Op> = (0..n).map(|i| append(i, 0, 100, "x", &format!("{i},"))).collect();
    h.push(put(98, 0, 100, "x", ""));
    h.push(get(99, 101, 102, "x", "impossible"));
    h.push(get(99, 50, 60, "x", "also impossible"));
    assert_eq!(check(&KvModel, &h, Duration::from_millis(1)), Outcome::Unknown);
}

#[test]
fn a_budget_of_zero_checks_nothing() {
    let h = [put(0, 0, 1, "x", "a"), get(0, 2, 3, "x", "a")];
    assert_eq!(check(&KvModel, &h, Duration::ZERO), Outcome::Unknown);
    let bad = [put(0, 0, 1, "x", "a"), get(0, 2, 3, "x", "b")];
    assert_eq!(check(&KvModel, &bad, Duration::ZERO), Outcome::Unknown);
    assert_eq!(check(&KvModel, &h, Duration::from_secs(1)), Outcome::Linearizable);
}

/// A history made by running operations one at a time (each at its own instant) and then
/// widening each operation's interval at random around that instant, as real concurrent
/// clients would observe them.
#[derive(Debug, Clone)]
struct Recorded(Vec<Op>);

impl Arbitrary for Recorded {
    fn arbitrary(g: &mut Gen) -> Recorded {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        let n = usize::arbitrary(g) % 40;
        let mut ops = Vec::new();
        for i in 0..n {
            let key = format!("k{}", u8::arbitrary(g) % 3);
            let value = format!("{i}.");
            let at = 10 * i as u64 + 5;
            let (before, after) = (u64::arbitrary(g) % 25, u64::arbitrary(g) % 25);
            let (call, ret) = (at.saturating_sub(before), at + after);
            let client = i as u64;
            ops.push(match u8::arbitrary(g) % 4 {
                0 => {
                    let seen = values.get(&key).cloned().unwrap_or_default();
                    get(client, call, ret, &key, &seen)
                }
                1 => {
                    values.insert(key.clone(), value.clone());
                    put(client, call, ret, &key, &value)
                }
                2 => {
                    values.entry(key.clone()).or_default().push_str(&value);
                    append(client, call, ret, &key, &value)
                }
                _ => {
                    values.remove(&key);
                    delete(client, call, ret, &key)
                }
            });
        }
        Recorded(ops)
    }
}

use std::collections::BTreeMap;

#[test]
fn recorded_executions_are_linearizable_and_a_forged_read_is_not() {
    fn property(recorded: Recorded) -> bool {
        let mut h = recorded.0;
        if run(&h) != Outcome::Linearizable {
            return false;
        }
        // A read of a value nobody wrote, after everything, is never explained away.
        let end = h.iter().map(|op| op.ret).max().unwrap_or(0);
        h.push(get(7, end + 1, end + 2, "k0", "forged"));
        matches!(run(&h), Outcome::Violation(_))
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Recorded) -> bool);
}

#[test]
fn values_built_differently_but_equal_are_the_same_state() {
    let a = KvValue::default().append("ab").append("c");
    let b = KvValue::default().append("a").append("bc");
    assert_eq!(a, b);
    assert_eq!(format!("{a:?}"), "\"abc\"");
    let mut seen = HashSet::new();
    seen.insert(a);
    assert!(seen.contains(&b));
    assert_ne!(b, KvValue::default().append("abd"));
    assert_eq!(KvValue::default().append(""), KvValue::default());
}

#[test]
fn a_long_single_client_history_of_appends_checks_quickly() {
    // 20,000 appends and reads in sequence: a persistent value keeps each step cheap.
    let mut h = Vec::new();
    let mut value = String::new();
    for i in 0..10_000u64 {
        let piece = format!("x 0 {i} y");
        value.push_str(&piece);
        h.push(append(0, 4 * i, 4 * i + 1, "k", &piece));
        h.push(get(0, 4 * i + 2, 4 * i + 3, "k", &value));
    }
    let started = std::time::Instant::now();
    assert_eq!(check(&KvModel, &h, Duration::from_secs(60)), Outcome::Linearizable);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A small deterministic generator for the tests' histories.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The classic one-key test's history: a put of "", then `clients` clients each appending
/// `each` values one after another with random latencies, all overlapping, then one read of
/// the final value. Each append takes effect at a random instant inside its interval, and the
/// read sees them in that order. Returns the history and the appends in effect order.
fn one_key_appends(seed: u64, clients: u64, each: u64) -> (Vec<Op>, Vec<String>) {
    let mut rng = Xorshift(seed | 1);
    let mut h = vec![put(99, 0, 10, "k", "")];
    let mut effects = Vec::new();
    for c in 0..clients {
        let mut t = 11 + rng.below(5);
        for j in 0..each {
            let (call, ret) = (t, t + 1 + rng.below(300));
            let at = call + rng.below(ret - call + 1);
            let value = format!("x {c} {j} y");
            h.push(append(c, call, ret, "k", &value));
            // Ties broken by client, which is as good as any order at one instant.
            effects.push((at, c, value));
            t = ret + rng.below(3);
        }
    }
    effects.sort();
    let effects: Vec<String> = effects.into_iter().map(|(_, _, v)| v).collect();
    let end = h.iter().map(|op| op.ret).max().unwrap_or(0);
    h.push(get(99, end + 1, end + 2, "k", &effects.concat()));
    (h, effects)
}

/// With the final read, `read`, replaced.
fn with_final_read(h: &[Op], read: &str) -> Vec<Op> {
    let mut h = h.to_vec();
    let last = h.len() - 1;
    h[last].output = KvOutput::Value(read.into());
    h
}

#[test]
fn concurrent_appends_to_one_key_get_a_verdict_quickly() {
    // The classic test's shape (5 clients, 10 appends each), and a bigger one.
    for (clients, each) in [(5, 10), (10, 20)] {
        for seed in 1..=5 {
            let (h, _) = one_key_appends(seed, clients, each);
            let started = std::time::Instant::now();
            assert_eq!(run(&h), Outcome::Linearizable, "seed {seed}");
            let took = started.elapsed();
            assert!(took < Duration::from_secs(2), "{clients}x{each}, seed {seed}: {took:?}");
        }
    }
}

#[test]
fn violations_among_concurrent_appends_are_still_found() {
    for seed in 1..=5 {
        let (h, effects) = one_key_appends(seed, 5, 10);
        let n = effects.len();
        // One append missing from the final value (in the middle, at the end, at the start).
        for gone in [n / 2, n - 1, 0] {
            let mut lost = effects.clone();
            lost.remove(gone);
            let outcome = run(&with_final_read(&h, &lost.concat()));
            assert!(matches!(outcome, Outcome::Violation(_)), "seed {seed}, lost {gone}");
        }
        // One append applied twice.
        let mut twice = effects.clone();
        twice.insert(n / 2, effects[n / 2].clone());
        assert!(matches!(run(&with_final_read(&h, &twice.concat())), Outcome::Violation(_)));
        // Two appends of one client in the wrong order (each client's are sequential).
        let first = effects.iter().position(|v| v.starts_with("x 2 ")).unwrap();
        let second = effects.iter().position(|v| v.starts_with("x 2 1 ")).unwrap();
        let mut swapped = effects.clone();
        swapped.swap(first, second);
        assert!(matches!(run(&with_final_read(&h, &swapped.concat())), Outcome::Violation(_)));
        // The right pieces with one character changed.
        let mut bent = effects.concat();
        bent.replace_range(n..n + 1, "#");
        assert!(matches!(run(&with_final_read(&h, &bent)), Outcome::Violation(_)));
        // A read in the middle that contradicts the final order: it saw the last append's
        // value first, before any other.
        let mut h2 = h.clone();
        let end = h.iter().map(|op| op.ret).max().unwrap();
        h2.push(get(98, end - 1, end, "k", &effects[n - 1]));
        assert!(matches!(run(&h2), Outcome::Violation(_)), "seed {seed}");
        // ...while a read that saw a prefix of the final order, concurrent with the rest, is
        // fine.
        let mut h3 = h.clone();
        h3.push(get(98, 11, end, "k", &effects[..n / 3].concat()));
        assert_eq!(run(&h3), Outcome::Linearizable, "seed {seed}");
    }
}

#[test]
fn a_put_or_delete_that_may_come_between_lifts_the_constraint() {
    // A put concurrent with an append: the read after both may see the put alone (the append
    // came first and was overwritten), so a value that is no prefix of the read is fine
    // while the put may still come.
    for (seen, ok) in [("x", true), ("xy", true), ("y", false), ("yx", false)] {
        let h = [append(0, 0, 10, "k", "y"), put(1, 0, 10, "k", "x"), get(2, 11, 12, "k", seen)];
        assert_eq!(run(&h) == Outcome::Linearizable, ok, "read {seen:?}: {:?}", run(&h));
    }
    // A put called just as the read returns may still come before it (touching intervals
    // overlap): the append must come first, then the put, then the read.
    let h = [append(0, 0, 1, "k", "y"), get(1, 5, 10, "k", "x"), put(2, 10, 20, "k", "x")];
    assert_eq!(run(&h), Outcome::Linearizable);
    // Likewise a delete: appends then a delete read as "".
    let h = [
        append(0, 0, 10, "k", "a"),
        append(1, 0, 10, "k", "b"),
        delete(2, 0, 10, "k"),
        get(3, 11, 12, "k", "b"),
    ];
    assert_eq!(run(&h), Outcome::Linearizable);
    let h = [append(0, 0, 10, "k", "a"), delete(2, 0, 10, "k"), get(3, 11, 12, "k", "")];
    assert_eq!(run(&h), Outcome::Linearizable);
    // A put whose outcome is unknown may come at any later point, even after a read that
    // returned long after it was called.
    let lost = u64::MAX;
    let h = [
        put(0, 0, 1, "k", "a"),
        put(1, 2, lost, "k", "z"),
        append(2, 3, 4, "k", "b"),
        get(3, 5, 6, "k", "z"),
        get(3, 7, 8, "k", "z"),
    ];
    assert_eq!(run(&h), Outcome::Linearizable);
}

/// Whether some order of `h`, respecting real time (an operation that returned strictly
/// before another was called comes first), explains every output: by trying every order.
fn brute_force(h: &[Op]) -> bool {
    fn extend(h: &[Op], used: &mut Vec<bool>, state: KvValue) -> bool {
        if used.iter().all(|&u| u) {
            return true;
        }
        for i in 0..h.len() {
            if used[i] {
                continue;
            }
            // Every operation not yet placed must not have had to come before `i`.
            let blocked =
                (0..h.len()).any(|j| j != i && !used[j] && h[j].ret.max(h[j].call) < h[i].call);
            if blocked {
                continue;
            }
            if let Some(next) = KvModel.step(&state, &h[i].input, &h[i].output) {
                used[i] = true;
                if extend(h, used, next) {
                    used[i] = false;
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    extend(h, &mut vec![false; h.len()], KvValue::default())
}

/// A small one-key history, made to sit near the edge: operations run one at a time, their
/// intervals widened at random, and then, half the time, one read's value replaced with
/// another the key held at some point (or with such a value and a bit more).
#[derive(Debug, Clone)]
struct Small(Vec<Op>);

impl Arbitrary for Small {
    fn arbitrary(g: &mut Gen) -> Small {
        let n = 1 + usize::arbitrary(g) % 7;
        let mut value = String::new();
        let mut held = vec![String::new()];
        let mut ops = Vec::new();
        for i in 0..n {
            let piece = ["a", "b", "ab", "c"][usize::arbitrary(g) % 4];
            // Coarse times, so that intervals often touch (which counts as overlapping).
            let at = 4 * i as u64 + 4;
            let (before, after) = (u64::arbitrary(g) % 9, u64::arbitrary(g) % 9);
            let (call, ret) = (at - before.min(at), at + after);
            let ret = if u8::arbitrary(g) % 16 == 0 { u64::MAX } else { ret };
            ops.push(match u8::arbitrary(g) % 8 {
                0..=2 => get(i as u64, call, ret.min(1000), "k", &value),
                3 => {
                    value = piece.to_owned();
                    put(i as u64, call, ret, "k", piece)
                }
                4 => {
                    value.clear();
                    delete(i as u64, call, ret, "k")
                }
                _ => {
                    value.push_str(piece);
                    append(i as u64, call, ret, "k", piece)
                }
            });
            held.push(value.clone());
        }
        if bool::arbitrary(g) {
            let reads: Vec<usize> =
                (0..n).filter(|&i| matches!(ops[i].input, KvInput::Get { .. })).collect();
            if !reads.is_empty() {
                let i = reads[usize::arbitrary(g) % reads.len()];
                let mut forged = held[usize::arbitrary(g) % held.len()].clone();
                if bool::arbitrary(g) {
                    forged.push_str(["a", "b", "c"][usize::arbitrary(g) % 3]);
                }
                ops[i].output = KvOutput::Value(forged);
            }
        }
        Small(ops)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Small>> {
        let ops = self.0.clone();
        Box::new((0..ops.len()).map(move |i| {
            let mut fewer = ops.clone();
            fewer.remove(i);
            Small(fewer)
        }))
    }
}

#[test]
fn the_verdict_agrees_with_trying_every_order() {
    fn property(small: Small) -> bool {
        let expected = brute_force(&small.0);
        match run(&small.0) {
            Outcome::Linearizable => expected,
            Outcome::Violation(_) => !expected,
            Outcome::Unknown => false,
        }
    }
    QuickCheck::new().tests(5000).quickcheck(property as fn(Small) -> bool);
}
