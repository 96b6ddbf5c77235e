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
    // Many fully concurrent appends and a read of a value no order produces: proving that
    // takes the search through a huge number of orders, far more than a millisecond allows.
    let n = 18;
    let mut h: Vec<Op> = (0..n).map(|i| append(i, 0, 100, "x", &format!("{i},"))).collect();
    h.push(get(99, 101, 102, "x", "impossible"));
    h.push(get(99, 50, 60, "x", "also impossible"));
    assert_eq!(check(&KvModel, &h, Duration::from_millis(1)), Outcome::Unknown);
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
