//! The two clocks the network can run on, behind one interface.
//!
//! * **Real time.** A timer thread fires scheduled tasks at their deadline and an elastic pool of
//!   threads runs handlers, so a handler that blocks (or sleeps for twenty seconds) holds up only
//!   its own call. Nodes under test run on their own threads, as in the classic labs.
//! * **Virtual time.** Nothing runs by itself. Scheduled tasks wait in one queue ordered by
//!   (virtual deadline, insertion order), and whoever drives the simulation pops them one at a
//!   time with [`VirtualClock::step`]; a task's deadline becomes "now" while it runs. Handlers run
//!   inline. With one driving thread and one seeded generator, a run is a pure function of its
//!   seed.

use std::cell::Cell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

/// A unit of work scheduled on a clock.
pub(crate) type Task = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle handler thread waits for work before it exits.
const IDLE_WORKER_LINGER: Duration = Duration::from_secs(5);

/// Which clock a [`Network`](crate::Network) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Wall-clock time; nodes and handlers run on their own threads.
    RealTime,
    /// Simulated time, advanced only by the thread that steps the event queue.
    Virtual,
}

/// A task with its deadline, ordered so that `BinaryHeap` pops the earliest (then the oldest).
struct Timed<T> {
    at: T,
    seq: u64,
    task: Task,
}

impl<T: Ord> PartialEq for Timed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl<T: Ord> Eq for Timed<T> {}
impl<T: Ord> PartialOrd for Timed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Timed<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: the max-heap must yield the earliest deadline, ties in insertion order.
        (&other.at, other.seq).cmp(&(&self.at, self.seq))
    }
}

/// A queue of timed tasks.
struct Queue<T> {
    heap: BinaryHeap<Timed<T>>,
    next_seq: u64,
    closed: bool,
}

impl<T: Ord> Queue<T> {
    fn new() -> Self {
        Queue { heap: BinaryHeap::new(), next_seq: 0, closed: false }
    }

    fn push(&mut self, at: T, task: Task) {
        if self.closed {
            return; // Dropping the task drops its captured state, which fails its call.
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Timed { at, seq, task });
    }
}

/// The clock a network runs on.
pub(crate) enum Clock {
    Real(RealClock),
    Virtual(VirtualClock),
}

impl Clock {
    pub(crate) fn new(mode: ClockMode) -> Clock {
        match mode {
            ClockMode::RealTime => Clock::Real(RealClock::new()),
            ClockMode::Virtual => Clock::Virtual(VirtualClock::new()),
        }
    }

    pub(crate) fn mode(&self) -> ClockMode {
        match self {
            Clock::Real(_) => ClockMode::RealTime,
            Clock::Virtual(_) => ClockMode::Virtual,
        }
    }

    /// Time since the network was created.
    pub(crate) fn now(&self) -> Duration {
        match self {
            Clock::Real(c) => c.start.elapsed(),
            Clock::Virtual(c) => c.now(),
        }
    }

    /// Runs `task` after `delay`, always from the timer thread or the event queue.
    pub(crate) fn after(&self, delay: Duration, task: Task) {
        match self {
            Clock::Real(c) => c.schedule(Instant::now() + delay, task),
            Clock::Virtual(c) => c.schedule(delay, task),
        }
    }

    /// Like [`after`](Self::after), but in real time a zero delay runs `task` on the calling
    /// thread (the fast path of a reliable network). In virtual time every task goes through the
    /// queue, so a caller never re-enters itself.
    pub(crate) fn soon(&self, delay: Duration, task: Task) {
        match self {
            Clock::Real(_) if delay.is_zero() => task(),
            _ => self.after(delay, task),
        }
    }

    /// Runs a request handler: on a pool thread in real time, inline in virtual time.
    pub(crate) fn run_handler(&self, task: Task) {
        match self {
            Clock::Real(c) => c.pool.execute(task),
            Clock::Virtual(_) => task(),
        }
    }

    /// The pool that runs user callbacks in real time; `None` in virtual time, where they run
    /// from the event queue.
    pub(crate) fn callback_pool(&self) -> Option<Arc<Pool>> {
        match self {
            Clock::Real(c) => Some(Arc::clone(&c.pool)),
            Clock::Virtual(_) => None,
        }
    }

    /// How many tasks panicked on network threads (always 0 in virtual time, where a panic
    /// reaches the driving thread directly).
    pub(crate) fn background_panics(&self) -> usize {
        match self {
            Clock::Real(c) => c.panics.load(Ordering::Relaxed),
            Clock::Virtual(_) => 0,
        }
    }

    /// Drops every task still waiting and refuses new ones.
    pub(crate) fn close(&self) {
        let dropped = match self {
            Clock::Real(c) => c.close(),
            Clock::Virtual(c) => c.close(),
        };
        drop(dropped); // Outside the queue lock: dropping a task may run arbitrary drops.
    }
}

/// Wall-clock scheduling: a timer thread and a pool of handler threads.
pub(crate) struct RealClock {
    start: Instant,
    timer: Arc<TimerShared>,
    pool: Arc<Pool>,
    /// Tasks that panicked on the timer or pool threads (their messages were printed).
    panics: Arc<AtomicUsize>,
}

struct TimerShared {
    queue: Mutex<Queue<Instant>>,
    wakeup: Condvar,
}

impl RealClock {
    fn new() -> RealClock {
        let timer =
            Arc::new(TimerShared { queue: Mutex::new(Queue::new()), wakeup: Condvar::new() });
        let shared = Arc::clone(&timer);
        let panics = Arc::new(AtomicUsize::new(0));
        let timer_panics = Arc::clone(&panics);
        thread::Builder::new()
            .name("labrpc-timer".into())
            .spawn(move || timer_loop(&shared, &timer_panics))
            .expect("labrpc: cannot spawn the timer thread");
        let pool = Arc::new(Pool::new(Arc::clone(&panics)));
        RealClock { start: Instant::now(), timer, pool, panics }
    }

    fn schedule(&self, at: Instant, task: Task) {
        let mut queue = self.timer.queue.lock();
        let earliest = queue.heap.peek().is_none_or(|first| at < first.at);
        queue.push(at, task);
        drop(queue);
        if earliest {
            self.timer.wakeup.notify_one();
        }
    }

    fn close(&self) -> Vec<Task> {
        let mut queue = self.timer.queue.lock();
        queue.closed = true;
        let dropped = std::mem::take(&mut queue.heap).into_iter().map(|t| t.task).collect();
        drop(queue);
        self.timer.wakeup.notify_one();
        dropped
    }
}

/// The timer thread: sleeps until the earliest deadline, runs what is due, exits when closed.
fn timer_loop(shared: &TimerShared, panics: &AtomicUsize) {
    let mut queue = shared.queue.lock();
    loop {
        if queue.closed {
            return;
        }
        let now = Instant::now();
        match queue.heap.peek().map(|first| first.at) {
            Some(at) if at <= now => {
                let due = queue.heap.pop().map(|t| t.task);
                drop(queue);
                if let Some(task) = due {
                    run_counting_panics(task, panics);
                }
                queue = shared.queue.lock();
            }
            Some(at) => {
                shared.wakeup.wait_until(&mut queue, at);
            }
            None => shared.wakeup.wait(&mut queue),
        }
    }
}

/// An elastic thread pool: a task never waits for a busy thread; idle threads linger briefly.
///
/// `idle` counts threads that are waiting for work and have not been promised a task. A submitter
/// claims one by decrementing it; if none is free it starts a new thread. An idle thread that
/// times out leaves only if it can still remove itself from `idle`; if it cannot, a submitter has
/// claimed it and a task is on its way, so it waits again.
pub(crate) struct Pool {
    sender: Sender<Task>,
    receiver: Receiver<Task>,
    idle: Arc<AtomicUsize>,
    panics: Arc<AtomicUsize>,
    /// Threads started so far (for tests of reuse).
    started: AtomicUsize,
}

impl Pool {
    fn new(panics: Arc<AtomicUsize>) -> Pool {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Pool {
            sender,
            receiver,
            idle: Arc::new(AtomicUsize::new(0)),
            panics,
            started: AtomicUsize::new(0),
        }
    }

    /// Runs `task` on a pool thread: an idle one if there is one, else a new one.
    pub(crate) fn execute(&self, task: Task) {
        if claim(&self.idle) {
            // A claimed worker is waiting on the channel, which stays open while `self` lives.
            let _ = self.sender.send(task);
            return;
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        let receiver = self.receiver.clone();
        let idle = Arc::clone(&self.idle);
        let panics = Arc::clone(&self.panics);
        thread::Builder::new()
            .name("labrpc-handler".into())
            .spawn(move || worker_loop(task, &receiver, &idle, &panics))
            .expect("labrpc: cannot spawn a handler thread");
    }
}

/// Takes one unit from `idle` if there is one.
fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

fn worker_loop(first: Task, receiver: &Receiver<Task>, idle: &AtomicUsize, panics: &AtomicUsize) {
    run_counting_panics(first, panics);
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        loop {
            match receiver.recv_timeout(IDLE_WORKER_LINGER) {
                Ok(task) => {
                    run_counting_panics(task, panics);
                    break;
                }
                Err(RecvTimeoutError::Timeout) if claim(idle) => return,
                Err(RecvTimeoutError::Timeout) => {} // Claimed by a submitter: a task is coming.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Runs a task on a network thread; a panic is counted (the hook has printed it) instead of
/// killing the thread that every other call depends on.
fn run_counting_panics(task: Task, panics: &AtomicUsize) {
    if catch_unwind(AssertUnwindSafe(task)).is_err() {
        panics.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Set while this thread runs a virtual-time task, to catch re-entrant stepping.
    static IN_VIRTUAL_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Simulated time: an event queue stepped by its driver.
pub(crate) struct VirtualClock {
    state: Mutex<VirtualState>,
}

struct VirtualState {
    now: Duration,
    queue: Queue<Duration>,
}

impl VirtualClock {
    fn new() -> VirtualClock {
        VirtualClock {
            state: Mutex::new(VirtualState { now: Duration::ZERO, queue: Queue::new() }),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.state.lock().now
    }

    fn schedule(&self, delay: Duration, task: Task) {
        let mut state = self.state.lock();
        let at = state.now + delay;
        state.queue.push(at, task);
    }

    fn close(&self) -> Vec<Task> {
        let mut state = self.state.lock();
        state.queue.closed = true;
        std::mem::take(&mut state.queue.heap).into_iter().map(|t| t.task).collect()
    }

    /// The deadline of the next task, if any.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.state.lock().queue.heap.peek().map(|t| t.at)
    }

    /// Runs the earliest task, first moving time to its deadline. Returns false if none is left.
    ///
    /// # Panics
    /// If called from inside a task: the simulation is driven by one loop, not re-entered.
    pub(crate) fn step(&self) -> bool {
        assert_not_in_task("step the simulation");
        let mut state = self.state.lock();
        let Some(next) = state.queue.heap.pop() else {
            return false;
        };
        state.now = next.at;
        drop(state);
        IN_VIRTUAL_TASK.with(|flag| flag.set(true));
        let _reset = ResetOnDrop;
        (next.task)();
        true
    }

    /// Runs every task due up to `deadline`, then leaves time at `deadline`.
    ///
    /// # Panics
    /// If called from inside a task.
    pub(crate) fn run_until(&self, deadline: Duration) {
        assert_not_in_task("let virtual time pass");
        while self.next_deadline().is_some_and(|at| at <= deadline) {
            self.step();
        }
        let mut state = self.state.lock();
        state.now = state.now.max(deadline);
    }
}

/// Clears the in-task flag even if the task panics.
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        IN_VIRTUAL_TASK.with(|flag| flag.set(false));
    }
}

/// Panics with a clear message if the current thread is inside a virtual-time task.
pub(crate) fn assert_not_in_task(what: &str) {
    assert!(
        !IN_VIRTUAL_TASK.with(Cell::get),
        "labrpc: cannot {what} from inside a virtual-time task or handler; \
         only the driving loop may advance virtual time (use ClientEnd::call_with instead of \
         ClientEnd::call inside handlers)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn virtual_tasks_run_in_deadline_then_insertion_order() {
        let clock = VirtualClock::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, ms) in [("c", 30), ("a", 10), ("b", 10), ("d", 20)] {
            let log = Arc::clone(&log);
            clock.schedule(Duration::from_millis(ms), Box::new(move || log.lock().push(name)));
        }
        clock.run_until(Duration::from_millis(25));
        assert_eq!(*log.lock(), ["a", "b", "d"]);
        assert_eq!(clock.now(), Duration::from_millis(25));
        assert!(clock.step());
        assert_eq!(clock.now(), Duration::from_millis(30));
        assert!(!clock.step());
        assert_eq!(*log.lock(), ["a", "b", "d", "c"]);
    }

    #[test]
    fn closed_virtual_clock_drops_tasks() {
        let clock = VirtualClock::new();
        let (tx, rx) = mpsc::channel::<()>();
        clock.schedule(Duration::ZERO, Box::new(move || drop(tx)));
        drop(clock.close());
        clock.schedule(Duration::ZERO, Box::new(|| panic!("must not run")));
        assert!(!clock.step());
        assert!(rx.recv().is_err(), "the dropped task's sender is gone");
    }

    #[test]
    fn real_timer_fires_in_order() {
        let clock = RealClock::new();
        let (tx, rx) = mpsc::channel();
        // Absolute deadlines from one instant, so a slow test thread cannot reorder them.
        let base = Instant::now();
        for ms in [40u64, 10, 25] {
            let tx = tx.clone();
            let at = base + Duration::from_millis(ms);
            clock.schedule(at, Box::new(move || tx.send(ms).unwrap()));
        }
        let got: Vec<u64> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, [10, 25, 40]);
        assert!(base.elapsed() >= Duration::from_millis(40), "fired before its deadline");
        drop(clock.close());
    }

    #[test]
    fn pool_runs_blocking_tasks_side_by_side() {
        let pool = Pool::new(Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = mpsc::channel();
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        // The first task blocks until released; the second must still run.
        pool.execute(Box::new(move || release_rx.recv().unwrap()));
        pool.execute(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(5)).expect("second task ran while first blocked");
        release_tx.send(()).unwrap();
        // Idle workers are reused: a hundred short tasks one after another need no new thread
        // (the two started above are idle now, or about to be).
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            pool.execute(Box::new(move || tx.send(i).unwrap()));
            rx.recv().unwrap();
        }
        let started = pool.started.load(Ordering::Relaxed);
        assert!(started <= 4, "{started} threads started for sequential tasks");
    }

    #[test]
    fn panicking_timer_task_is_counted_and_timer_survives() {
        let clock = Clock::new(ClockMode::RealTime);
        clock.after(Duration::from_millis(1), Box::new(|| panic!("deliberate test panic")));
        let (tx, rx) = mpsc::channel();
        clock.after(Duration::from_millis(20), Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(5)).expect("timer still runs after a panic");
        assert_eq!(clock.background_panics(), 1);
        clock.close();
    }

    #[test]
    #[should_panic(expected = "only the driving loop may advance virtual time")]
    fn stepping_from_inside_a_task_panics() {
        let clock = Arc::new(VirtualClock::new());
        let inner = Arc::clone(&clock);
        clock.schedule(Duration::ZERO, Box::new(move || assert!(inner.step())));
        clock.step();
    }
}
