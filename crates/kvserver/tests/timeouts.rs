//! How long a request waits when it cannot be answered: the server's `request_timeout` counts
//! from submission, so a batch submitted together times out together.

mod lab;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kvclient::proto::{Op, Reply, Request};
use lab::Config;

/// A leader cut off from its followers cannot commit: every write of a batch submitted to it
/// is answered `Timeout` about one `request_timeout` (500 ms in the lab) after submission,
/// even when the caller waits for them one after another. (Each used to start its own
/// timeout when waited on: eight writes then took four seconds.)
#[test]
fn a_batch_that_cannot_commit_times_out_together() {
    let mut cfg = Config::new(3, false, None);
    let mut ck = cfg.make_client(&[0, 1, 2]);
    ck.put("k", "1");
    let leader = cfg.leader().expect("a leader after a completed put");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cfg.partition(&[leader], &others);
    let requests: Vec<Request> = (1..=8)
        .map(|seq| Request {
            client_id: 77,
            seq,
            op: Op::Put { key: Bytes::from("k"), value: Bytes::from(format!("v{seq}")) },
            ordered: false,
        })
        .collect();
    let started = Instant::now();
    let pending = cfg.server(leader).submit(requests);
    let replies: Vec<Reply> = pending.into_iter().map(|p| p.wait()).collect();
    let took = started.elapsed();
    assert!(replies.iter().all(|r| *r == Reply::Timeout), "{replies:?}");
    assert!(took >= Duration::from_millis(450), "answered Timeout after only {took:?}");
    assert!(took < Duration::from_millis(1500), "eight waits took {took:?}");
    cfg.connect_all();
}
