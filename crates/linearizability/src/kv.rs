//! The key-value model: the service's Get, Put, Append and Delete on string keys and values.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::{Model, Operation};

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

    /// Whether the value is exactly `s`: compared piece by piece from the end, no copying.
    fn is(&self, s: &str) -> bool {
        let mut rest = s.as_bytes();
        if self.len_and_hash().0 != rest.len() {
            return false;
        }
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
}
