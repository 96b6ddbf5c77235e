//! The key-value model: the service's Get, Put, Append and Delete on string keys and values.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::{Model, Operation, Prune};

/// One key's value as the search sees it: a persistent string, so that an append costs the
/// length of what is appended (not of the whole value), a state is cloned by a reference count,
/// and hashing it for the search's cache reads one precomputed number. Long histories of
/// appends to one key (as the classic tests make) would otherwise cost the square of their
/// length.
#[derive(Clone, Default)]
pub struct KvValue(Option<Arc<Piece>>);

/// The last piece of a value: what was appended, on top of what came before.
struct Piece {
    before: Option<Arc<Piece>>,
    tail: String,
    len: usize,
    hash: u64,
    /// Pieces in the chain, this one included; kept below [`MAX_DEPTH`] by flattening.
    depth: usize,
}

/// A chain this long is flattened into one piece: appends stay cheap (the flattening costs
/// the value's length once every this many appends) and chains stay short.
const MAX_DEPTH: usize = 32;

/// A polynomial rolling hash: `hash(a ‖ b)` follows from `hash(a)` and the bytes of `b`.
fn roll(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = hash.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(b) + 1);
    }
    hash
}

impl KvValue {
    /// The value `s`.
    pub fn of(s: &str) -> KvValue {
        KvValue(None).append(s)
    }

    /// This value with `s` appended.
    pub fn append(&self, s: &str) -> KvValue {
        if s.is_empty() {
            return self.clone();
        }
        let (len, hash) = self.len_and_hash();
        let depth = self.0.as_ref().map_or(0, |p| p.depth);
        let (before, tail, depth) = if depth + 1 >= MAX_DEPTH {
            (None, self.to_string_lossy() + s, 1)
        } else {
            (self.0.clone(), s.to_owned(), depth + 1)
        };
        let piece =
            Piece { before, tail, len: len + s.len(), hash: roll(hash, s.as_bytes()), depth };
        KvValue(Some(Arc::new(piece)))
    }

    fn len_and_hash(&self) -> (usize, u64) {
        self.0.as_ref().map_or((0, 0), |p| (p.len, p.hash))
    }

    /// The whole value as one string.
    pub fn to_string_lossy(&self) -> String {
        let mut pieces = Vec::new();
        let mut at = self.0.as_deref();
        while let Some(p) = at {
            pieces.push(p.tail.as_str());
            at = p.before.as_deref();
        }
        pieces.iter().rev().copied().collect()
    }

    /// The value's length in bytes.
    pub fn len(&self) -> usize {
        self.len_and_hash().0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the value is exactly `s`: compared piece by piece from the end, no copying.
    fn is(&self, s: &str) -> bool {
        self.len() == s.len() && self.is_prefix_of(s)
    }

    /// Whether `s` begins with the value: compared piece by piece from the end, no copying.
    pub fn is_prefix_of(&self, s: &str) -> bool {
        let Some(mut rest) = s.as_bytes().get(..self.len()) else { return false };
        let mut at = self.0.as_deref();
        while let Some(p) = at {
            let Some(head) = rest.strip_suffix(p.tail.as_bytes()) else { return false };
            rest = head;
            at = p.before.as_deref();
        }
        rest.is_empty()
    }
}

impl PartialEq for KvValue {
    fn eq(&self, other: &KvValue) -> bool {
        let same_piece = match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_piece
            || (self.len_and_hash() == other.len_and_hash()
                && self.to_string_lossy() == other.to_string_lossy())
    }
}

impl Eq for KvValue {}

impl Hash for KvValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.len_and_hash().hash(state);
    }
}

impl std::fmt::Debug for KvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// A key-value operation's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    /// Read a key (a missing key reads as the empty string, as in the classic labs).
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Append to a key's value (to the empty string if it is missing).
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Append { key, .. }
            | KvInput::Delete { key } => key,
        }
    }
}

/// A key-value operation's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// What a `Get` read.
    Value(String),
    /// A write completed. (A write whose outcome is unknown, because its client gave up,
    /// goes in the history with `ret = u64::MAX`: it may take effect at any later point.)
    Done,
}

/// The key-value store as one sequential object, checked key by key: operations on different
/// keys never interact, so the history is partitioned by key and the state is one key's value
/// (a [`KvValue`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = KvValue;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvValue {
        KvValue::default()
    }

    fn step(&self, state: &KvValue, input: &KvInput, output: &KvOutput) -> Option<KvValue> {
        match (input, output) {
            (KvInput::Get { .. }, KvOutput::Value(v)) => state.is(v).then(|| state.clone()),
            (KvInput::Put { value, .. }, KvOutput::Done) => Some(KvValue::of(value)),
            (KvInput::Append { value, .. }, KvOutput::Done) => Some(state.append(value)),
            (KvInput::Delete { .. }, KvOutput::Done) => Some(KvValue::default()),
            _ => None, // A read that answered "done", or a write that answered a value.
        }
    }

    fn partition(&self, history: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn pruner<'a>(&self, ops: &[&'a Operation<KvInput, KvOutput>]) -> Box<dyn Prune<KvValue> + 'a> {
        Box::new(KvPrune::new(ops))
    }
}

/// The key-value model's [`Prune`], for one key: a value that a read still to come cannot grow
/// into is a dead end.
///
/// # The rule
///
/// Call a put or a delete a *reset* (it replaces the value whatever it was) and take the
/// operations not yet linearized. Among their reads, the *target* is the one that returns
/// first, provided that it returns before every such reset is called. (Times compare as in
/// the search: an operation must come before another only if it returns strictly before the
/// other is called.) A step is rejected when, after it, there is a target and the value is
/// not a prefix of what the target read.
///
/// # Why no linearizable order is lost
///
/// Suppose the current order (with the step) extends to a complete one, and let `g` be the
/// target, which read `w`, with `V` the value now. Every reset not yet linearized is called
/// after `g` returns, so it must come after `g` in any order; between now and `g` the complete
/// order therefore places only appends and reads. Reads leave the value alone and appends
/// only add to its end, so the value `g` sees is `V` followed by some appended strings, and
/// it must equal `w`: `V` is a prefix of `w`. So when `V` is not a prefix of `w`, no complete
/// order extends this one, and rejecting the step loses nothing. The rule depends only on the
/// set of linearized operations and the value, so the search's cache stays sound too.
///
/// # Cost
///
/// The check costs the length of an appended string, not of the value: while the target
/// stays the same, every accepted state is a prefix of its read (that is what acceptance
/// checked), so after an append only the appended part needs comparing. The whole value is
/// compared only when the target changes (when it is linearized itself, or a reset is) or
/// after a reset, whose value is short.
///
/// # Effect
///
/// For concurrent appends followed by a read, as the classic one-key test makes, the only
/// orders left are those that spell the read's value, and equal sets of linearized appends
/// then give equal values, which the search's cache merges: the search becomes linear in the
/// number of operations, where it was exponential.
pub struct KvPrune<'a> {
    ops: Vec<&'a Operation<KvInput, KvOutput>>,
    /// Puts and deletes not yet linearized, by call time.
    resets: BTreeSet<(u64, usize)>,
    /// Reads (of a value) not yet linearized, by return time.
    reads: BTreeSet<(u64, usize)>,
    /// The target before any step.
    initial: Option<usize>,
    /// The target after each accepted step, in order.
    targets: Vec<Option<usize>>,
}

/// When an operation returns, as the search's event list orders it.
fn returned<I, O>(op: &Operation<I, O>) -> u64 {
    op.ret.max(op.call)
}

impl<'a> KvPrune<'a> {
    /// The pruner for one key's operations, `ops`.
    pub fn new(ops: &[&'a Operation<KvInput, KvOutput>]) -> KvPrune<'a> {
        let mut prune = KvPrune {
            ops: ops.to_vec(),
            resets: BTreeSet::new(),
            reads: BTreeSet::new(),
            initial: None,
            targets: Vec::new(),
        };
        for i in 0..ops.len() {
            prune.take_out(i, true);
        }
        prune.initial = prune.target();
        prune
    }

    /// Takes operation `i` out of the sets of operations not yet linearized or, with `back`,
    /// puts it back in.
    fn take_out(&mut self, i: usize, back: bool) {
        let op = self.ops[i];
        let (set, at) = match (&op.input, &op.output) {
            (KvInput::Put { .. } | KvInput::Delete { .. }, _) => (&mut self.resets, op.call),
            (KvInput::Get { .. }, KvOutput::Value(_)) => (&mut self.reads, returned(op)),
            _ => return,
        };
        if back {
            set.insert((at, i));
        } else {
            set.remove(&(at, i));
        }
    }

    fn current(&self) -> Option<usize> {
        self.targets.last().map_or(self.initial, |t| *t)
    }

    /// The read every value must be able to grow into, if any (see the type's description).
    fn target(&self) -> Option<usize> {
        let &(ret, read) = self.reads.first()?;
        let reset = self.resets.first().map(|&(call, _)| call);
        reset.is_none_or(|call| ret < call).then_some(read)
    }

    fn read_value(&self, read: usize) -> &'a str {
        match &self.ops[read].output {
            KvOutput::Value(v) => v,
            KvOutput::Done => unreachable!("only reads of a value are targets"),
        }
    }
}

impl Prune<KvValue> for KvPrune<'_> {
    fn advance(&mut self, op: usize, before: &KvValue, after: &KvValue) -> bool {
        let was = self.current();
        self.take_out(op, false);
        let target = self.target();
        let fits = match target {
            None => true,
            Some(t) => {
                let w = self.read_value(t);
                match &self.ops[op].input {
                    // The value has not changed, and it was a prefix of the same target's.
                    KvInput::Get { .. } if target == was => true,
                    // `before` was a prefix of `w`; compare the part the append added.
                    KvInput::Append { value, .. } if target == was => {
                        w.as_bytes().get(before.len()..after.len()) == Some(value.as_bytes())
                    }
                    _ => after.is_prefix_of(w),
                }
            }
        };
        if fits {
            self.targets.push(target);
        } else {
            self.take_out(op, true);
        }
        fits
    }

    fn retreat(&mut self, op: usize) {
        self.targets.pop();
        self.take_out(op, true);
    }
}
