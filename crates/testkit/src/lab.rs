//! What the two lab harnesses (Raft's 2A–2D, the KV service's 3A–3B) share.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// How many lab tests of one test binary may run at once. The lab tests run clusters on real
/// time and wait far more than they compute; two at a time keeps a 2-core machine responsive
/// enough for their timing assumptions (elections within a second).
pub const MAX_CONCURRENT_TESTS: usize = 2;

static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

fn running() -> MutexGuard<'static, usize> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A place among the lab tests allowed to run now ([`MAX_CONCURRENT_TESTS`]); given back on
/// drop. A harness takes one when it builds its cluster.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// Waits for a free place and takes it.
    pub fn acquire() -> Slot {
        let mut running = running();
        while *running >= MAX_CONCURRENT_TESTS {
            running = SLOT_FREED.wait(running).unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        Slot(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *running() -= 1;
        SLOT_FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn no_more_than_the_limit_hold_a_slot_at_once() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (now, most) = (Arc::clone(&now), Arc::clone(&most));
                std::thread::spawn(move || {
                    let _slot = Slot::acquire();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), MAX_CONCURRENT_TESTS);
        assert_eq!(*running(), 0, "every slot was given back");
    }
}
