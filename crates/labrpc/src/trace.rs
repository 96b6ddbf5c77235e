//! A running fingerprint of everything the network decided, for replay checks.

use std::time::Duration;

/// What happened to a call at one step of its way through the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Submitted; the end could not reach a server. Detail: failure delay in ms.
    Unreachable,
    /// Submitted; the request will be lost. Detail: delay in ms before the caller learns it.
    RequestDropped,
    /// Submitted; the request is on its way. Detail: delivery delay in ms.
    Sent,
    /// The server had gone when the request arrived or while its handler ran.
    Dead,
    /// Handed to the handler. Detail: request bytes.
    Delivered,
    /// The handler returned an error (unknown method, codec, panic).
    HandlerFailed,
    /// The reply was lost.
    ReplyDropped,
    /// The reply is held back by long reordering. Detail: extra delay in ms.
    ReplyDelayed,
    /// The reply reached the caller. Detail: reply bytes.
    Replied,
    /// A task scheduled by the user ran.
    UserTask,
}

/// FNV-1a over the trace's words; in virtual time each word includes the time of the step.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: u64,
    log: Option<Vec<String>>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub(crate) fn new() -> Trace {
        Trace { hash: FNV_OFFSET, log: None }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn enable_log(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    pub(crate) fn take_log(&mut self) -> Vec<String> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Adds one step. `time` is `None` in real time, where timing is not reproducible.
    pub(crate) fn record(&mut self, time: Option<Duration>, step: Step, call: u64, detail: u64) {
        let nanos = time.map_or(0, |t| t.as_nanos() as u64);
        for word in [nanos, step as u64, call, detail] {
            for byte in word.to_le_bytes() {
                self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
            }
        }
        if let Some(log) = &mut self.log {
            let at = time.map_or_else(String::new, |t| format!("{:>12.6}s ", t.as_secs_f64()));
            log.push(format!("{at}call {call:>6} {step:?} {detail}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field_and_order() {
        let run = |steps: &[(u64, Step, u64, u64)]| {
            let mut t = Trace::new();
            for &(ms, step, call, detail) in steps {
                t.record(Some(Duration::from_millis(ms)), step, call, detail);
            }
            t.hash()
        };
        let base = run(&[(1, Step::Sent, 1, 0), (2, Step::Replied, 1, 8)]);
        assert_eq!(base, run(&[(1, Step::Sent, 1, 0), (2, Step::Replied, 1, 8)]));
        assert_ne!(base, run(&[(2, Step::Replied, 1, 8), (1, Step::Sent, 1, 0)]));
        assert_ne!(base, run(&[(1, Step::Sent, 1, 0), (3, Step::Replied, 1, 8)]));
        assert_ne!(base, run(&[(1, Step::Sent, 1, 0), (2, Step::Replied, 1, 9)]));
        assert_ne!(base, run(&[(1, Step::Sent, 1, 0), (2, Step::Dead, 1, 8)]));
    }

    #[test]
    fn log_is_kept_only_when_enabled() {
        let mut t = Trace::new();
        t.record(None, Step::Sent, 1, 0);
        assert!(t.take_log().is_empty());
        t.enable_log();
        t.record(Some(Duration::from_millis(1500)), Step::Delivered, 7, 42);
        assert_eq!(t.take_log(), ["    1.500000s call      7 Delivered 42"]);
    }
}
