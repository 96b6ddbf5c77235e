//! How long a request waits when it cannot be answered: the server's `request_timeout` counts
//! from submission, so a batch submitted together times out together.

mod lab;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kvclient::proto::{Op, Reply, Request};
use lab::Config;

/// The servers' `request_timeout` (`ServerConfig::default`, which the lab uses).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// A leader cut off from its followers cannot commit: every write of a batch submitted to it
/// is answered `Timeout` one `request_timeout` after submission, even when the caller waits
/// for them one after another. (Each used to start its own timeout when waited on: eight
/// writes then took four seconds, their answers half a second apart.)
///
/// The premise, that the node the batch goes to leads, is made true rather than assumed: the
/// node is cut off first, and only then asked whether it leads. Cut off, it cannot learn of a
/// later term, so it still leads when the batch arrives; if it had lost the lead before the
/// cut, the set-up is done again.
#[test]
fn a_batch_that_cannot_commit_times_out_together() {
    let mut cfg = Config::new(3, false, None);
    let mut ck = cfg.make_client(&[0, 1, 2]);
    ck.put("k", "1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let leader = cfg.leader().expect("a leader after a completed put");
        let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        cfg.partition(&[leader], &others);
        if cfg.server(leader).node().state().1 {
            break leader;
        }
        cfg.connect_all();
        assert!(Instant::now() < deadline, "no node stayed leader while being cut off");
        ck.put("k", "1");
    };
    let requests: Vec<Request> = (1..=8)
        .map(|seq| Request {
            client_id: 77,
            seq,
            op: Op::Put { key: Bytes::from("k"), value: Bytes::from(format!("v{seq}")) },
            ordered: false,
        })
        .collect();
    let submitted = Instant::now();
    let pending = cfg.server(leader).submit(requests);
    // When each wait returned, from submission.
    let mut answered = Vec::new();
    let mut replies = Vec::new();
    for p in pending {
        replies.push(p.wait());
        answered.push(submitted.elapsed());
    }
    assert!(replies.iter().all(|r| *r == Reply::Timeout), "{replies:?}");
    // A timeout is never early: the first answer comes a request_timeout after submission
    // (less a tick's worth of rounding).
    let first = answered[0];
    assert!(first >= REQUEST_TIMEOUT * 9 / 10, "answered Timeout after only {first:?}");
    // Together: the last answer comes less than one more request_timeout after the first,
    // measured from the first answer (the bug put seven request_timeouts between them).
    let spread = answered[7] - first;
    assert!(spread < REQUEST_TIMEOUT, "the answers came {spread:?} apart: {answered:?}");
    cfg.connect_all();
}
