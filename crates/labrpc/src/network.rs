//! The network: client ends, servers, the fault model and the per-call pipeline.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::{self, Clock, ClockMode, Pool, Task};
use crate::codec;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::service::{HostedServer, Server};
use crate::trace::{Step, Trace};

/// The classic fault model's numbers, kept exactly as the course's network has them.
pub mod faults {
    /// Unreliable: each request is delayed by `0..SHORT_DELAY_MS` milliseconds (0–26 ms).
    pub const SHORT_DELAY_MS: u64 = 27;
    /// Unreliable: a request is lost with probability `REQUEST_DROP_PER_MILLE / 1000`.
    pub const REQUEST_DROP_PER_MILLE: u64 = 100;
    /// Unreliable: a reply is lost with probability `REPLY_DROP_PER_MILLE / 1000`.
    pub const REPLY_DROP_PER_MILLE: u64 = 100;
    /// Long reordering: a reply is held back with probability
    /// `REORDER_CHANCE.0 / REORDER_CHANCE.1`.
    pub const REORDER_CHANCE: (u64, u64) = (600, 900);
    /// Long reordering: a held-back reply waits
    /// `REORDER_BASE_MS + rand(0..=rand(0..REORDER_SPREAD_MS))` milliseconds (about 200–2200 ms).
    pub const REORDER_BASE_MS: u64 = 200;
    /// See [`REORDER_BASE_MS`].
    pub const REORDER_SPREAD_MS: u64 = 2000;
    /// Long delays on: a call that cannot reach a server fails after `0..LONG_DELAY_MS` ms.
    pub const LONG_DELAY_MS: u64 = 7000;
    /// Long delays off: a call that cannot reach a server fails after `0..SHORT_FAIL_MS` ms.
    pub const SHORT_FAIL_MS: u64 = 100;
}

/// The environment variable that fixes the seed of every network a test creates.
pub const SEED_ENV: &str = "LABRPC_SEED";

/// Returns the seed in `LABRPC_SEED`, or a fresh random one if it is not set.
///
/// # Panics
/// If `LABRPC_SEED` is set but is not a decimal `u64`: a mistyped replay must not silently run
/// with some other seed.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("{SEED_ENV}={text:?} is not a seed; it must be a decimal number below 2^64")
        }),
        Err(_) => {
            // Random per process and per call: RandomState is seeded from the OS.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos(),
            );
            hasher.finish()
        }
    }
}

/// A simulated network of client ends and servers.
///
/// Every random decision comes from one generator seeded at creation ([`Network::seed`]). If the
/// thread that owns the network panics (a failing test), dropping the network prints the seed and
/// the `LABRPC_SEED=…` setting that replays it. In virtual time that replay is exact.
///
/// Dropping the network shuts it down: calls still in flight fail with [`Error::Closed`] and
/// scheduled tasks are discarded.
pub struct Network {
    inner: Arc<Inner>,
}

/// A named client endpoint: the caller's side of a connection to one server.
///
/// Cheap to clone; clones are the same end. Calls on one end may run concurrently and their
/// replies may arrive in any order.
#[derive(Clone)]
pub struct ClientEnd {
    name: Arc<str>,
    /// Tells this end from a later end created under the same name.
    id: u64,
    net: Arc<Inner>,
}

/// A call's continuation, type-erased.
type Callback = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

/// The user's side of a call: a callback run exactly once, with the result or, if the network
/// shuts down first, with [`Error::Closed`] (its `Drop` sees to that).
///
/// Where it runs: a callback that may run on any thread (`pool: None`: the channel send of a
/// blocking call, or anything in virtual time) runs where the call completes. A user callback
/// in real time (`pool: Some`) runs on a handler-pool thread, never on the thread that made the
/// call, reconfigured the network or drives the timer, so it may take the caller's locks.
struct Completion {
    callback: Option<Callback>,
    pool: Option<Arc<Pool>>,
}

impl Completion {
    fn new(
        callback: impl FnOnce(Result<Vec<u8>>) + Send + 'static,
        pool: Option<Arc<Pool>>,
    ) -> Completion {
        Completion { callback: Some(Box::new(callback)), pool }
    }

    /// Runs the callback with `result`. `on_pool_thread` says the current thread is a
    /// handler-pool thread, where a user callback may run directly.
    fn complete(mut self, result: Result<Vec<u8>>, on_pool_thread: bool) {
        let Some(callback) = self.callback.take() else { return };
        match self.pool.take() {
            Some(pool) if !on_pool_thread => pool.execute(Box::new(move || callback(result))),
            _ => callback(result),
        }
    }

    /// Drops the callback without running it (the caller learns the outcome another way).
    fn disarm(mut self) {
        self.callback = None;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            let closed = Err(Error::Closed);
            match self.pool.take() {
                Some(pool) => pool.execute(Box::new(move || callback(closed))),
                None => callback(closed),
            }
        }
    }
}

struct Inner {
    clock: Clock,
    seed: u64,
    state: Mutex<State>,
}

struct State {
    rng: Rng,
    reliable: bool,
    long_delays: bool,
    long_reordering: bool,
    ends: HashMap<Arc<str>, EndState>,
    servers: HashMap<String, Arc<HostedServer>>,
    /// Calls whose handler is running, by call id (ordered, so kills are deterministic).
    in_flight: BTreeMap<u64, Arc<Call>>,
    next_call_id: u64,
    next_server_id: u64,
    next_end_id: u64,
    total_count: u64,
    total_bytes: u64,
    trace: Trace,
    closed: bool,
}

struct EndState {
    id: u64,
    enabled: bool,
    server: Option<String>,
}

/// One call on its way through the network.
struct Call {
    id: u64,
    end: Arc<str>,
    end_id: u64,
    server_name: String,
    server: Arc<HostedServer>,
    method: String,
    request: Vec<u8>,
    /// The unreliable and long-reordering settings when the call was made (as the course has it).
    reliable: bool,
    long_reordering: bool,
    completion: Mutex<Option<Completion>>,
}

impl Call {
    /// Completes the call unless it is already complete; a late result is discarded.
    fn finish(&self, result: Result<Vec<u8>>, on_pool_thread: bool) {
        let completion = self.completion.lock().take();
        if let Some(completion) = completion {
            completion.complete(result, on_pool_thread);
        }
    }

    fn dead(&self, closed: bool) -> Error {
        if closed { Error::Closed } else { Error::ServerDead { server: self.server_name.clone() } }
    }

    fn is_finished(&self) -> bool {
        self.completion.lock().is_none()
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl State {
    /// The server the end `(name, id)` would reach now: it still exists (not deleted and
    /// re-created under the same name), is enabled and connected, and the server exists.
    fn route(&self, name: &str, id: u64) -> Option<(String, Arc<HostedServer>)> {
        let end = self.ends.get(name).filter(|e| e.enabled && e.id == id)?;
        let server = end.server.as_ref()?;
        Some((server.clone(), Arc::clone(self.servers.get(server)?)))
    }

    /// Whether `call` could still be answered: the network is open, its end is enabled and
    /// still connected to the same server name, and that name still belongs to the same server
    /// instance.
    fn is_alive(&self, call: &Call) -> bool {
        !self.closed
            && self.route(&call.end, call.end_id).is_some_and(|(name, server)| {
                name == call.server_name && server.id == call.server.id
            })
    }

    /// Removes and returns the in-flight calls that can no longer be answered.
    fn take_dead_calls(&mut self) -> Vec<Arc<Call>> {
        let dead: Vec<u64> =
            self.in_flight.iter().filter(|(_, c)| !self.is_alive(c)).map(|(&id, _)| id).collect();
        dead.iter().filter_map(|id| self.in_flight.remove(id)).collect()
    }
}

impl Inner {
    /// The time to record in the trace: virtual time is part of a run's identity, real is not.
    fn trace_time(&self) -> Option<Duration> {
        match self.clock.mode() {
            ClockMode::Virtual => Some(self.clock.now()),
            ClockMode::RealTime => None,
        }
    }

    /// Step 1: the call enters the network. Decides reachability, delay and request loss.
    /// Fails at once, without running `done`, only if the network is closed.
    fn submit(
        self: &Arc<Self>,
        end: &ClientEnd,
        method: &str,
        request: Vec<u8>,
        done: Completion,
    ) -> Result<()> {
        let now = self.trace_time();
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            done.disarm();
            return Err(Error::Closed);
        }
        st.total_count += 1;
        st.total_bytes += request.len() as u64;
        let id = st.next_call_id;
        st.next_call_id += 1;

        let Some((server_name, server)) = st.route(&end.name, end.id) else {
            let limit = if st.long_delays { faults::LONG_DELAY_MS } else { faults::SHORT_FAIL_MS };
            let delay = st.rng.below(limit);
            st.trace.record(now, Step::Unreachable, id, delay);
            drop(st);
            let error = Error::Unreachable { end: end.name.to_string() };
            self.clock.soon(millis(delay), Box::new(move || done.complete(Err(error), false)));
            return Ok(());
        };

        let reliable = st.reliable;
        let (delay, lost) = if reliable {
            (0, false)
        } else {
            let delay = st.rng.below(faults::SHORT_DELAY_MS);
            (delay, st.rng.chance(faults::REQUEST_DROP_PER_MILLE, 1000))
        };
        st.trace.record(now, if lost { Step::RequestDropped } else { Step::Sent }, id, delay);
        let long_reordering = st.long_reordering;
        drop(st);

        if lost {
            let fail = move || done.complete(Err(Error::Dropped), false);
            self.clock.soon(millis(delay), Box::new(fail));
            return Ok(());
        }
        let call = Arc::new(Call {
            id,
            end: Arc::clone(&end.name),
            end_id: end.id,
            server_name,
            server,
            method: method.to_owned(),
            request,
            reliable,
            long_reordering,
            completion: Mutex::new(Some(done)),
        });
        let inner = Arc::clone(self);
        self.clock.soon(millis(delay), Box::new(move || inner.deliver(call)));
        Ok(())
    }

    /// Step 2: the request arrives. If the server is still there, its handler runs.
    fn deliver(self: &Arc<Self>, call: Arc<Call>) {
        let now = self.trace_time();
        let mut st = self.state.lock();
        if !st.is_alive(&call) {
            st.trace.record(now, Step::Dead, call.id, 0);
            let error = call.dead(st.closed);
            drop(st);
            call.finish(Err(error), false);
            return;
        }
        call.server.count_delivery();
        st.in_flight.insert(call.id, Arc::clone(&call));
        st.trace.record(now, Step::Delivered, call.id, call.request.len() as u64);
        drop(st);
        let inner = Arc::clone(self);
        let catch_panics = self.clock.mode() == ClockMode::RealTime;
        self.clock.run_handler(Box::new(move || {
            let result = call.server.dispatch(&call.method, &call.request, catch_panics);
            inner.reply(call, result);
        }));
    }

    /// Step 3: the handler has returned (on a pool thread in real time). Decides reply loss and
    /// long reordering.
    fn reply(self: &Arc<Self>, call: Arc<Call>, result: Result<Vec<u8>>) {
        let now = self.trace_time();
        let mut st = self.state.lock();
        let was_in_flight = st.in_flight.remove(&call.id).is_some();
        if !was_in_flight || call.is_finished() {
            return; // Already failed because its server went away: the late reply is discarded.
        }
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                st.trace.record(now, Step::HandlerFailed, call.id, 0);
                drop(st);
                call.finish(Err(error), true);
                return;
            }
        };
        if !st.is_alive(&call) {
            // The server died while its handler ran: never acknowledge that work.
            st.trace.record(now, Step::Dead, call.id, 1);
            let error = call.dead(st.closed);
            drop(st);
            call.finish(Err(error), true);
        } else if !call.reliable && st.rng.chance(faults::REPLY_DROP_PER_MILLE, 1000) {
            st.trace.record(now, Step::ReplyDropped, call.id, 0);
            drop(st);
            call.finish(Err(Error::Dropped), true);
        } else if call.long_reordering
            && st.rng.chance(faults::REORDER_CHANCE.0, faults::REORDER_CHANCE.1)
        {
            let spread = st.rng.below(faults::REORDER_SPREAD_MS);
            let delay = faults::REORDER_BASE_MS + st.rng.below(spread + 1);
            st.trace.record(now, Step::ReplyDelayed, call.id, delay);
            drop(st);
            let inner = Arc::clone(self);
            let hand_over = move || inner.hand_over(&call, reply, false);
            self.clock.after(millis(delay), Box::new(hand_over));
        } else {
            drop(st);
            self.hand_over(&call, reply, true);
        }
    }

    /// Step 4: the reply reaches the caller; its bytes count now.
    fn hand_over(&self, call: &Call, reply: Vec<u8>, on_pool_thread: bool) {
        let now = self.trace_time();
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            call.finish(Err(Error::Closed), on_pool_thread);
            return;
        }
        st.total_bytes += reply.len() as u64;
        st.trace.record(now, Step::Replied, call.id, reply.len() as u64);
        drop(st);
        call.finish(Ok(reply), on_pool_thread);
    }

    /// Changes the network's topology with `change`, then fails the calls it cut off.
    fn reconfigure(&self, change: impl FnOnce(&mut State)) {
        let now = self.trace_time();
        let mut st = self.state.lock();
        change(&mut st);
        let dead = st.take_dead_calls();
        for call in &dead {
            st.trace.record(now, Step::Dead, call.id, 2);
        }
        drop(st);
        for call in dead {
            let error = call.dead(false);
            match self.clock.mode() {
                // Real time: the completion goes to the handler pool, off this thread.
                ClockMode::RealTime => call.finish(Err(error), false),
                // Virtual time: an event, so the driver's own locks are not held when it runs.
                ClockMode::Virtual => {
                    let fail = move || call.finish(Err(error), false);
                    self.clock.after(Duration::ZERO, Box::new(fail));
                }
            }
        }
    }

    fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        let in_flight = std::mem::take(&mut st.in_flight);
        drop(st);
        self.clock.close();
        for call in in_flight.into_values() {
            call.finish(Err(Error::Closed), false);
        }
    }
}

impl Network {
    /// A network on `mode`'s clock, seeded from `LABRPC_SEED` or at random (see
    /// [`seed_from_env`]).
    pub fn new(mode: ClockMode) -> Network {
        Network::with_seed(mode, seed_from_env())
    }

    /// A network on `mode`'s clock whose random decisions all derive from `seed`.
    ///
    /// It starts reliable, with long delays and long reordering off.
    pub fn with_seed(mode: ClockMode, seed: u64) -> Network {
        let state = State {
            rng: Rng::new(seed),
            reliable: true,
            long_delays: false,
            long_reordering: false,
            ends: HashMap::new(),
            servers: HashMap::new(),
            in_flight: BTreeMap::new(),
            next_call_id: 0,
            next_server_id: 0,
            next_end_id: 0,
            total_count: 0,
            total_bytes: 0,
            trace: Trace::new(),
            closed: false,
        };
        let inner = Inner { clock: Clock::new(mode), seed, state: Mutex::new(state) };
        Network { inner: Arc::new(inner) }
    }

    /// The seed this network's generator started from.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Which clock this network runs on.
    pub fn mode(&self) -> ClockMode {
        self.inner.clock.mode()
    }

    /// Unreliable (`false`): requests wait 0–26 ms, and 10% of requests and 10% of replies are
    /// lost. Takes effect for calls made from now on.
    pub fn set_reliable(&self, reliable: bool) {
        self.inner.state.lock().reliable = reliable;
    }

    /// Long delays on: a call that cannot reach its server fails after 0–6999 ms rather than
    /// 0–99 ms, as a real network's timeouts would make it. Catches callers that wait on RPCs
    /// to dead peers synchronously.
    pub fn set_long_delays(&self, on: bool) {
        self.inner.state.lock().long_delays = on;
    }

    /// Long reordering on: two thirds of replies are held back 200–2200 ms, so replies arrive
    /// long after later ones.
    pub fn set_long_reordering(&self, on: bool) {
        self.inner.state.lock().long_reordering = on;
    }

    /// Creates a client end called `name`, enabled but connected to nothing.
    ///
    /// # Panics
    /// If an end with that name already exists.
    pub fn make_end(&self, name: &str) -> ClientEnd {
        let name: Arc<str> = Arc::from(name);
        let mut st = self.inner.state.lock();
        let id = st.next_end_id;
        st.next_end_id += 1;
        let state = EndState { id, enabled: true, server: None };
        let previous = st.ends.insert(Arc::clone(&name), state);
        assert!(previous.is_none(), "labrpc: a client end called {name:?} already exists");
        ClientEnd { name, id, net: Arc::clone(&self.inner) }
    }

    /// Forgets the end `name`: its calls in flight fail and later calls cannot reach anyone.
    pub fn delete_end(&self, name: &str) {
        self.inner.reconfigure(|st| {
            st.ends.remove(name);
        });
    }

    /// Routes the end `end` to the server called `server` (which need not exist yet).
    ///
    /// # Panics
    /// If there is no end called `end`.
    pub fn connect(&self, end: &str, server: &str) {
        self.inner.reconfigure(|st| {
            let state = st.ends.get_mut(end);
            let state = state.unwrap_or_else(|| panic!("labrpc: connect: no client end {end:?}"));
            state.server = Some(server.to_owned());
        });
    }

    /// Unroutes the end `end`: until it is connected again its calls cannot reach any server,
    /// and its calls in flight are cut off.
    ///
    /// # Panics
    /// If there is no end called `end`.
    pub fn disconnect(&self, end: &str) {
        self.inner.reconfigure(|st| {
            let state = st.ends.get_mut(end);
            let state =
                state.unwrap_or_else(|| panic!("labrpc: disconnect: no client end {end:?}"));
            state.server = None;
        });
    }

    /// Enables or disables the end `end`. Disabling it cuts off its calls in flight, as a
    /// partition would.
    ///
    /// # Panics
    /// If there is no end called `end`.
    pub fn enable(&self, end: &str, enabled: bool) {
        self.inner.reconfigure(|st| {
            let state = st.ends.get_mut(end);
            let state = state.unwrap_or_else(|| panic!("labrpc: enable: no client end {end:?}"));
            state.enabled = enabled;
        });
    }

    /// Hosts `server` under `name`, replacing (and cutting off) any server of that name.
    pub fn add_server(&self, name: &str, server: Server) {
        self.inner.reconfigure(|st| {
            let id = st.next_server_id;
            st.next_server_id += 1;
            st.servers.insert(name.to_owned(), Arc::new(server.into_hosted(id)));
        });
    }

    /// Removes the server `name`, as a crash would: calls in flight to it fail at once and any
    /// reply its handlers still produce is discarded.
    pub fn delete_server(&self, name: &str) {
        self.inner.reconfigure(|st| {
            st.servers.remove(name);
        });
    }

    /// RPCs delivered to the handlers of the server currently called `name` (0 if none).
    pub fn count(&self, name: &str) -> u64 {
        self.inner.state.lock().servers.get(name).map_or(0, |s| s.count())
    }

    /// Calls submitted to the network by any end, including those later lost or refused.
    pub fn total_count(&self) -> u64 {
        self.inner.state.lock().total_count
    }

    /// Bytes carried: every request when submitted, plus every reply when delivered.
    pub fn total_bytes(&self) -> u64 {
        self.inner.state.lock().total_bytes
    }

    /// Time since the network was created, on its clock.
    pub fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// Runs `task` once `delay` has passed on the network's clock: on the timer thread in real
    /// time (keep it short), from the event queue in virtual time. The task is discarded if the
    /// network shuts down first.
    pub fn schedule(&self, delay: Duration, task: impl FnOnce() + Send + 'static) {
        let inner = Arc::clone(&self.inner);
        let task: Task = Box::new(move || {
            let now = inner.trace_time();
            inner.state.lock().trace.record(now, Step::UserTask, 0, 0);
            task();
        });
        self.inner.clock.after(delay, task);
    }

    /// Lets `duration` pass: sleeps in real time; in virtual time runs every event due within it.
    ///
    /// # Panics
    /// In virtual time, if called from inside a handler or scheduled task.
    pub fn sleep(&self, duration: Duration) {
        match &self.inner.clock {
            Clock::Real(_) => std::thread::sleep(duration),
            Clock::Virtual(c) => c.run_until(c.now() + duration),
        }
    }

    /// Virtual time: runs the next event, moving time to it. Returns false if none is waiting.
    ///
    /// # Panics
    /// In real time (events run by themselves there), or from inside a handler or task.
    pub fn step(&self) -> bool {
        match &self.inner.clock {
            Clock::Real(_) => {
                panic!("labrpc: step() drives virtual time; this network is real-time")
            }
            Clock::Virtual(c) => c.step(),
        }
    }

    /// The next value of the network's seeded generator, in `0..n`, for simulations that must
    /// draw their own decisions (which node to crash, how long to wait) from the same seed.
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn random_below(&self, n: u64) -> u64 {
        self.inner.state.lock().rng.below(n)
    }

    /// A fingerprint of every decision and delivery so far. In virtual time, two runs with the
    /// same seed and the same driver give the same hash; in real time it is not reproducible.
    pub fn trace_hash(&self) -> u64 {
        self.inner.state.lock().trace.hash()
    }

    /// Starts keeping a readable line per trace step (off by default: it costs memory).
    pub fn enable_trace_log(&self) {
        self.inner.state.lock().trace.enable_log();
    }

    /// Takes the trace lines kept since [`enable_trace_log`](Self::enable_trace_log) or the
    /// last call.
    pub fn take_trace_log(&self) -> Vec<String> {
        self.inner.state.lock().trace.take_log()
    }

    /// How many handlers or scheduled tasks panicked on the network's own threads (real time).
    /// Their messages were printed; dropping the network panics if this is not zero, so such a
    /// failure cannot pass unnoticed.
    pub fn background_panics(&self) -> usize {
        self.inner.clock.background_panics()
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network").field("seed", &self.seed()).field("mode", &self.mode()).finish()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.inner.close();
        let seed = self.inner.seed;
        if std::thread::panicking() {
            eprintln!(
                "labrpc: the failing test used seed {seed} ({mode:?}); \
                 replay it with {SEED_ENV}={seed}",
                mode = self.mode()
            );
        } else {
            let panics = self.background_panics();
            assert!(
                panics == 0,
                "labrpc: {panics} handler(s) or task(s) panicked on network threads (see the \
                 messages above); seed {seed}, replay with {SEED_ENV}={seed}"
            );
        }
    }
}

impl ClientEnd {
    /// The end's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `method` (`"Service.Method"`) with `request` and waits for the reply.
    ///
    /// Returns `Ok` only if the handler ran and its reply arrived. Every call returns eventually
    /// (unless a handler never returns and its server is never deleted). In virtual time the call
    /// drives the simulation, stepping events until its own reply or failure arrives.
    ///
    /// # Errors
    /// Any [`Error`]: the request or reply was lost, the server was unreachable or died, or the
    /// two sides disagree on the types.
    ///
    /// # Panics
    /// In virtual time, if called from inside a handler or scheduled task (use
    /// [`call_with`](Self::call_with) there).
    pub fn call<Req, Rep>(&self, method: &str, request: &Req) -> Result<Rep>
    where
        Req: Serialize,
        Rep: DeserializeOwned + Send + 'static,
    {
        let request = codec::encode(request, "request")?;
        match &self.net.clock {
            Clock::Real(_) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let done = Completion::new(move |r| drop(tx.send(r)), None);
                self.net.submit(self, method, request, done)?;
                let reply = rx.recv().unwrap_or(Err(Error::Closed))?;
                codec::decode(&reply, "reply")
            }
            Clock::Virtual(c) => {
                clock::assert_not_in_task("make a blocking call");
                let slot = Arc::new(Mutex::new(None));
                let filled = Arc::clone(&slot);
                let done = Completion::new(move |r| *filled.lock() = Some(r), None);
                self.net.submit(self, method, request, done)?;
                loop {
                    if let Some(reply) = slot.lock().take() {
                        return codec::decode(&reply?, "reply");
                    }
                    if !c.step() {
                        return Err(Error::Closed);
                    }
                }
            }
        }
    }

    /// Calls `method` with `request` and returns at once; `on_reply` runs later, exactly once,
    /// with the result, or with [`Error::Closed`] if the network shuts down first.
    ///
    /// `on_reply` never runs on the calling thread during this call. In real time it runs on a
    /// handler-pool thread (it may block and may take locks the caller holds now); in virtual
    /// time it runs from the event queue, on the driving thread.
    ///
    /// # Errors
    /// [`Error::Codec`] if `request` cannot be encoded, [`Error::Closed`] if the network has
    /// shut down; `on_reply` is then never called.
    pub fn call_with<Req, Rep, F>(&self, method: &str, request: &Req, on_reply: F) -> Result<()>
    where
        Req: Serialize,
        Rep: DeserializeOwned,
        F: FnOnce(Result<Rep>) + Send + 'static,
    {
        let request = codec::encode(request, "request")?;
        let decode_then_reply =
            move |r: Result<Vec<u8>>| on_reply(r.and_then(|bytes| codec::decode(&bytes, "reply")));
        let done = Completion::new(decode_then_reply, self.net.clock.callback_pool());
        self.net.submit(self, method, request, done)
    }
}

impl fmt::Debug for ClientEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientEnd").field("name", &self.name).finish()
    }
}
