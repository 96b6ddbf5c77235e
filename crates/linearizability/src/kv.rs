//! The key-value model: the service's Get, Put, Append and Delete on string keys and values.

use std::collections::BTreeMap;

use crate::{Model, Operation};

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
/// keys never interact, so the history is partitioned by key and the state is one key's value.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, input: &KvInput, output: &KvOutput) -> Option<String> {
        match (input, output) {
            (KvInput::Get { .. }, KvOutput::Value(v)) => (v == state).then(|| state.clone()),
            (KvInput::Put { value, .. }, KvOutput::Done) => Some(value.clone()),
            (KvInput::Append { value, .. }, KvOutput::Done) => Some(format!("{state}{value}")),
            (KvInput::Delete { .. }, KvOutput::Done) => Some(String::new()),
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
