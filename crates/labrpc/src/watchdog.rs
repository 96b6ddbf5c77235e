//! A per-test deadline for harnesses that run a cluster in real time.
//!
//! Lab clerks retry until they are answered, and a test waits for its clerks; a liveness bug
//! would then hang the suite instead of failing a test. A [`Watchdog`] fails the test that
//! started it if that test is still running at its limit. A hung test cannot be unwound from
//! another thread, so the watchdog ends the whole test process with [`WATCHDOG_EXIT`], after
//! writing on stderr (which the test harness does not capture) which test it was and why.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Exit status of a test process ended by a [`Watchdog`] (the one `timeout(1)` uses).
pub const WATCHDOG_EXIT: i32 = 124;

/// The environment variable that overrides every watchdog's limit, in milliseconds.
pub const LIMIT_ENV: &str = "LAB_TEST_LIMIT_MS";

/// Watches the test that started it until dropped; see the module's description.
#[derive(Debug)]
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Starts watching the calling test (named after its thread, as the test harness names
    /// them): past `limit` (or [`LIMIT_ENV`] when set) from now, the process ends. Panics if
    /// [`LIMIT_ENV`] is set to something that is not a number of milliseconds.
    pub fn start(limit: Duration) -> Watchdog {
        Watchdog::start_with_cleanup(limit, || {})
    }

    /// [`Watchdog::start`], running `cleanup` before the process ends: for a test whose
    /// cluster lives in child processes, which would outlive it (`cleanup` kills them).
    pub fn start_with_cleanup(
        limit: Duration,
        cleanup: impl FnOnce() + Send + 'static,
    ) -> Watchdog {
        let limit = match std::env::var(LIMIT_ENV) {
            Ok(ms) => match ms.trim().parse() {
                Ok(ms) => Duration::from_millis(ms),
                Err(e) => panic!("{LIMIT_ENV}={ms:?} is not a number of milliseconds: {e}"),
            },
            Err(_) => limit,
        };
        let name = std::thread::current().name().unwrap_or("(unnamed)").to_owned();
        Watchdog::start_with(limit, move || {
            let _ = writeln!(
                std::io::stderr(),
                "\nWATCHDOG: test {name} is still running after its limit of {limit:?}: \
                 failing it (a liveness bug, or a clerk retrying forever); ending the test \
                 process with status {WATCHDOG_EXIT}"
            );
            cleanup();
            std::process::exit(WATCHDOG_EXIT);
        })
    }

    /// Runs `fire` on a thread of its own if the watchdog is still alive `limit` from now.
    fn start_with(limit: Duration, fire: impl FnOnce() + Send + 'static) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = Arc::clone(&done);
        let deadline = Instant::now() + limit;
        std::thread::spawn(move || {
            let (finished, wake) = &*watched;
            let mut finished = finished.lock().unwrap_or_else(PoisonError::into_inner);
            while !*finished {
                let now = Instant::now();
                if now >= deadline {
                    drop(finished);
                    fire();
                    return;
                }
                finished = wake
                    .wait_timeout(finished, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.done.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.done.1.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn it_fires_past_the_limit_and_not_once_dropped() {
        let (tx, rx) = mpsc::channel();
        let fired = tx.clone();
        let _alive = Watchdog::start_with(Duration::from_millis(50), move || {
            let _ = fired.send("late");
        });
        // Waits on the event, not on a guess of how long: it must come.
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok("late"));

        let (tx2, rx2) = mpsc::channel::<&str>();
        let dropped = Watchdog::start_with(Duration::from_millis(200), move || {
            let _ = tx2.send("fired after drop");
        });
        drop(dropped);
        // The watcher thread ends without firing: the sender is dropped with it.
        assert_eq!(rx2.recv(), Err(mpsc::RecvError));
        drop(tx);
    }
}
