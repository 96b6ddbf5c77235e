//! Check two small histories of one register: one linearizable, one with a stale read, and
//! print the checker's explanation of the violation.
//!
//! Times are plain numbers (the checker only compares them). In both histories client 0 writes
//! "1" between times 0 and 10, and client 1 then reads "1" between 12 and 15, after the write
//! returned. The histories differ in client 2's read, from 20 to 30: in the first it reads
//! "1"; in the second it reads the empty value, as a replica that never heard of the write
//! would. Once a read returned "1", no later read may go back, so the second is not
//! linearizable.
//!
//! `cargo run -p raftkv-linearizability --example stale_read`

use std::time::Duration;

use linearizability::{KvInput, KvModel, KvOutput, Operation, Outcome, check};

fn put(client: u64, call: u64, ret: u64, value: &str) -> Operation<KvInput, KvOutput> {
    let input = KvInput::Put { key: "x".into(), value: value.into() };
    Operation { client, call, ret, input, output: KvOutput::Done }
}

fn get(client: u64, call: u64, ret: u64, value: &str) -> Operation<KvInput, KvOutput> {
    let input = KvInput::Get { key: "x".into() };
    Operation { client, call, ret, input, output: KvOutput::Value(value.into()) }
}

fn main() {
    let fresh = vec![put(0, 0, 10, "1"), get(1, 12, 15, "1"), get(2, 20, 30, "1")];
    let stale = vec![put(0, 0, 10, "1"), get(1, 12, 15, "1"), get(2, 20, 30, "")];
    for (name, history) in [("fresh", &fresh), ("stale", &stale)] {
        match check(&KvModel, history, Duration::from_secs(5)) {
            Outcome::Linearizable => println!("{name}: linearizable"),
            Outcome::Violation(why) => println!("{name}: {why}"),
            Outcome::Unknown => panic!("{name}: the checker ran out of time on 3 operations"),
        }
    }
    assert!(matches!(check(&KvModel, &fresh, Duration::from_secs(5)), Outcome::Linearizable));
    assert!(matches!(check(&KvModel, &stale, Duration::from_secs(5)), Outcome::Violation(_)));
}
