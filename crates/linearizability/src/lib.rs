#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `linearizability`: checks that a concurrent history could have come from one copy of a
//! sequential object, the property a linearizable store promises.
//!
//! A history is a list of [`Operation`]s, each with the client that issued it, its input, its
//! output, and the times it was called and returned. It is linearizable if every operation can
//! be given a point between its call and its return such that, applied one at a time in the
//! order of those points, a sequential [`Model`] produces exactly the outputs observed.
//!
//! # Algorithm
//!
//! The search is the one porcupine uses (Wing and Gong's, with Lowe's memoization). The calls
//! and returns are laid out in time order in a linked list. The search walks it from the front:
//! at a call it tries to linearize that operation now, which means the model must accept it
//! from the current state; if so, the operation's call and return are unlinked, the step is
//! pushed on a stack, and the walk restarts from the front. Reaching a return means the
//! operation it belongs to was not linearized before it had to be: the last step is undone and
//! the walk continues after it. The history is linearizable when the list empties, and not when
//! the stack empties. A cache of (set of linearized operations, model state) pairs already
//! explored cuts off searches that reach the same place in a different order; that cache is
//! what makes real histories tractable.
//!
//! The cache alone is not enough when many writes overlap and only a later read says in
//! which order they happened: concurrent appends to one key reach a different value in every
//! order, so no two orders meet in the cache and the search tries them all (50 appends from 5
//! clients have billions of orders). A model may therefore supply a [`Prune`], which rejects
//! a step as soon as it can prove that nothing can follow it. The key-value model's
//! ([`KvPrune`]) rejects a value that a read still to come cannot grow into; with it, the
//! orders that survive are exactly those consistent with the reads, and equal sets of
//! linearized appends give equal values, so the cache merges them.
//!
//! A model may split a history into independent parts ([`Model::partition`]; the key-value
//! model splits by key), which are checked separately: a history is linearizable exactly when
//! each part is, for models whose operations on different parts never interact.
//!
//! The search is exponential in the worst case, so [`check`] takes a time limit and answers
//! [`Outcome::Unknown`] when it runs out rather than pretending. On a violation it returns an
//! [`Explanation`]: the longest order it could find, and the operations none of which could
//! come next.
//!
//! ```
//! use linearizability::{check, KvInput, KvModel, KvOutput, Operation, Outcome};
//! use std::time::Duration;
//!
//! let put = |client, call, ret, v: &str| Operation {
//!     client, call, ret,
//!     input: KvInput::Put { key: "x".into(), value: v.into() },
//!     output: KvOutput::Done,
//! };
//! let get = |client, call, ret, v: &str| Operation {
//!     client, call, ret,
//!     input: KvInput::Get { key: "x".into() },
//!     output: KvOutput::Value(v.into()),
//! };
//! // The put of "1" overlaps the first get, so either value may be read there...
//! let ok = vec![put(0, 0, 10, "1"), get(1, 5, 15, ""), get(1, 20, 30, "1")];
//! assert!(matches!(check(&KvModel, &ok, Duration::from_secs(1)), Outcome::Linearizable));
//! // ...but once a read saw "1", a later read may not go back to "".
//! let stale = vec![put(0, 0, 10, "1"), get(1, 12, 15, "1"), get(2, 20, 30, "")];
//! assert!(matches!(check(&KvModel, &stale, Duration::from_secs(1)), Outcome::Violation(_)));
//! ```

mod kv;
pub mod saved;

use std::collections::HashSet;
use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub use kv::{KvInput, KvModel, KvOutput, KvPrune, KvValue};

/// One operation of a history: who issued it, what it asked and answered, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it (for explanations only).
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// What was answered.
    pub output: O,
    /// When it was called (any monotonic unit; nanoseconds since the test began, say).
    pub call: u64,
    /// When it returned; at or after `call`.
    pub ret: u64,
}

/// A sequential specification: the object the history is checked against.
pub trait Model {
    /// The object's state; hashed for the search's cache.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Input: Debug;
    /// An operation's output.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after applying `input` to `state`, if that yields `output`; `None` if the
    /// object could not have answered `output` from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Splits the history (by index) into parts that can be checked separately. The default is
    /// one part.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }

    /// A [`Prune`] for one part of a history (`ops`, indexed as the part is), which lets the
    /// search drop steps that cannot lead to a complete order. The default prunes nothing.
    fn pruner<'a>(
        &self,
        ops: &[&'a Operation<Self::Input, Self::Output>],
    ) -> Box<dyn Prune<Self::State> + 'a> {
        let _ = ops;
        Box::new(NoPruning)
    }
}

/// Model-specific knowledge that cuts the search short, soundly: it may reject a step only
/// when no order continuing with that step explains the rest of the part. Rejecting a step
/// that could have led somewhere would turn a linearizable history into a reported violation,
/// so each implementation must argue (and test) why its rejections are safe.
///
/// The search calls [`advance`](Prune::advance) after the model accepted an operation and
/// before it takes the step, and [`retreat`](Prune::retreat) when it takes a step back, in
/// last-in-first-out order.
pub trait Prune<S> {
    /// Operation `op` (an index into the part) would be linearized next, taking the object
    /// from `before` to `after`. Returns `false` if no order that continues this way can
    /// linearize the rest of the part; the step is then not taken, and the pruner must be left
    /// as it was. Returns `true` to take it.
    fn advance(&mut self, op: usize, before: &S, after: &S) -> bool;

    /// Takes back the last step [`advance`](Prune::advance) accepted, which linearized `op`.
    fn retreat(&mut self, op: usize);
}

/// The [`Prune`] that never rejects a step.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPruning;

impl<S> Prune<S> for NoPruning {
    fn advance(&mut self, _op: usize, _before: &S, _after: &S) -> bool {
        true
    }

    fn retreat(&mut self, _op: usize) {}
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Some order of the operations, each at a point between its call and return, explains
    /// every output.
    Linearizable,
    /// No order does.
    Violation(Explanation),
    /// The time limit ran out before the search finished (nothing is known).
    Unknown,
}

/// Why a history is not linearizable, for people: the longest prefix of an order that worked,
/// and the operations of which none could come next. Operations are shown as
/// `client N: input -> output [call, ret]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The longest sequence of operations the search could linearize, in order.
    pub linearized: Vec<String>,
    /// The operations that had been called (and not linearized) when the search got stuck
    /// after that prefix: none of them can come next (the model refuses it, or, for a model
    /// with a [`Prune`], what it would leave cannot be explained by what is observed later),
    /// and the earliest of their returns forbids waiting for later ones.
    pub stuck: Vec<String>,
}

impl Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "not linearizable. The longest order found:")?;
        for (i, op) in self.linearized.iter().enumerate() {
            writeln!(f, "  {:>3}. {op}", i + 1)?;
        }
        writeln!(f, "after which none of these can come next:")?;
        for op in &self.stuck {
            writeln!(f, "       {op}")?;
        }
        Ok(())
    }
}

/// Checks `history` against `model`, giving up with [`Outcome::Unknown`] after `limit`. With a
/// `limit` of zero every non-empty history is [`Outcome::Unknown`]: nothing is ever assumed.
/// The search looks at the clock every few dozen steps and stops within microseconds of the
/// limit, but freeing what a long search built (its cache) takes time too: about a quarter of
/// the limit more, for a search that ran out.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    limit: Duration,
) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut unknown = false;
    for part in model.partition(history) {
        let ops: Vec<&Operation<M::Input, M::Output>> = part.iter().map(|&i| &history[i]).collect();
        if Instant::now() >= deadline {
            // A budget of zero checks nothing: every non-empty history is then inconclusive.
            unknown = true;
            continue;
        }
        match search(model, &ops, deadline) {
            Outcome::Linearizable => {}
            Outcome::Unknown => unknown = true,
            violation => return violation,
        }
    }
    if unknown { Outcome::Unknown } else { Outcome::Linearizable }
}

fn describe<I: Debug, O: Debug>(op: &Operation<I, O>) -> String {
    format!("client {}: {:?} -> {:?} [{}, {}]", op.client, op.input, op.output, op.call, op.ret)
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

/// The calls and returns of one part, in time order, as a doubly linked list over indices.
/// Node 0 is the head; node `1 + 2i` is operation `i`'s call and `2 + 2i` its return.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
}

const NONE: usize = usize::MAX;

/// Whether a list node is a return (even nodes; node 0, the head, is never visited).
fn is_return(node: usize) -> bool {
    node.is_multiple_of(2)
}

impl Events {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, false, 1 + 2 * i));
            order.push((op.ret.max(op.call), true, 2 + 2 * i));
        }
        // At equal times calls go first: operations that touch are treated as concurrent,
        // which never reports a violation that a finer clock could explain away.
        order.sort_unstable();
        let n = 1 + 2 * ops.len();
        let (mut next, mut prev) = (vec![NONE; n], vec![NONE; n]);
        let mut last = 0;
        for &(_, _, node) in &order {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Events { next, prev }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    /// Puts back a node unlinked last-in-first-out (its neighbours still point around it).
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NONE {
            self.prev[n] = node;
        }
    }
}

/// How many steps the search takes between looks at the clock (a look costs about as much as
/// a cheap step, so this keeps the overshoot past the deadline to microseconds).
const CLOCK_EVERY: u64 = 64;

fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    deadline: Instant,
) -> Outcome {
    let mut events = Events::new(ops);
    let mut pruner = model.pruner(ops);
    let mut state = model.init();
    let mut done = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    // Each step: the operation linearized and the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    // The longest dead end so far, as operation indices; described only if it is reported.
    let mut best: Option<DeadEnd> = None;
    let mut node = events.next[0];
    let mut steps = 0u64;
    while events.next[0] != NONE {
        if steps.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline {
            return Outcome::Unknown;
        }
        steps += 1;
        let op = (node - 1) / 2;
        if !is_return(node) {
            // A call: try to linearize its operation here.
            if let Some(after) = model.step(&state, &ops[op].input, &ops[op].output) {
                let mut with = done.clone();
                with.flip(op);
                let key = (with, after);
                if !cache.contains(&key) {
                    if pruner.advance(op, &state, &key.1) {
                        let (with, after) = key.clone();
                        cache.insert(key);
                        stack.push((op, std::mem::replace(&mut state, after)));
                        done = with;
                        events.unlink(node);
                        events.unlink(node + 1);
                        node = events.next[0];
                        continue;
                    }
                    // A dead end one step further on: the step itself is a valid order, but
                    // nothing can follow it. Report it as such if it is the longest yet.
                    if best.as_ref().is_none_or(|b| b.linearized.len() < stack.len() + 1) {
                        events.unlink(node);
                        events.unlink(node + 1);
                        best = Some(DeadEnd::at(&stack, Some(op), &events));
                        events.relink(node + 1);
                        events.relink(node);
                    }
                    cache.insert(key);
                }
            }
            node = events.next[node];
        } else {
            // The return of an operation not yet linearized: this order cannot work.
            if best.as_ref().is_none_or(|b| b.linearized.len() < stack.len()) {
                best = Some(DeadEnd::at(&stack, None, &events));
            }
            let Some((undo, before)) = stack.pop() else {
                let best = best.expect("recorded just above");
                return Outcome::Violation(best.describe(ops));
            };
            pruner.retreat(undo);
            state = before;
            done.flip(undo);
            let call = 1 + 2 * undo;
            events.relink(call + 1);
            events.relink(call);
            node = events.next[call];
        }
    }
    Outcome::Linearizable
}

/// A point where the search could go no further: the order that led there and the operations
/// called (and not linearized) before the first pending return, as indices.
struct DeadEnd {
    linearized: Vec<usize>,
    stuck: Vec<usize>,
}

impl DeadEnd {
    /// The current prefix (and `then`, a step taken only tentatively) and the operations
    /// called before the first pending return.
    fn at<S>(stack: &[(usize, S)], then: Option<usize>, events: &Events) -> DeadEnd {
        let linearized = stack.iter().map(|(op, _)| *op).chain(then).collect();
        let mut stuck = Vec::new();
        let mut node = events.next[0];
        while node != NONE && !is_return(node) {
            stuck.push((node - 1) / 2);
            node = events.next[node];
        }
        DeadEnd { linearized, stuck }
    }

    fn describe<I: Debug, O: Debug>(&self, ops: &[&Operation<I, O>]) -> Explanation {
        let text = |list: &[usize]| list.iter().map(|&op| describe(ops[op])).collect();
        Explanation { linearized: text(&self.linearized), stuck: text(&self.stuck) }
    }
}

#[cfg(test)]
mod tests;
