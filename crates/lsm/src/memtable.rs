//! The memtable: recent writes, ordered by key, in a lock-free skiplist.
//!
//! Entries are keyed by (user key ascending, sequence number descending), so the newest
//! version of a key comes first and a read at snapshot `s` takes the first entry with a
//! sequence number at most `s`. The map is `crossbeam_skiplist::SkipMap`: inserts and reads run
//! concurrently and a reader never waits for a writer (the crate's own choice of epoch-based
//! reclamation makes that safe without locks).

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

/// A key and the sequence number of the write that produced this version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InternalKey {
    pub(crate) user_key: Bytes,
    pub(crate) seq: u64,
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.user_key.cmp(&other.user_key).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One version of a key: a value, or a deletion marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Put(Bytes),
    Tombstone,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The newest visible version is this value.
    Found(Bytes),
    /// The newest visible version is a deletion.
    Deleted,
    /// No visible version here; look in older data.
    Absent,
}

#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: SkipMap<InternalKey, Value>,
    approximate_bytes: AtomicUsize,
}

impl Memtable {
    pub(crate) fn new() -> Memtable {
        Memtable::default()
    }

    pub(crate) fn insert(&self, user_key: Bytes, seq: u64, value: Value) {
        let size = user_key.len() + 16 + if let Value::Put(v) = &value { v.len() } else { 0 };
        self.map.insert(InternalKey { user_key, seq }, value);
        self.approximate_bytes.fetch_add(size, AtomicOrdering::Relaxed);
    }

    /// The newest version of `key` with a sequence number at most `seq`.
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Lookup {
        let probe = InternalKey { user_key: Bytes::copy_from_slice(key), seq };
        match self.map.range(probe..).next() {
            Some(e) if e.key().user_key == key => match e.value() {
                Value::Put(v) => Lookup::Found(v.clone()),
                Value::Tombstone => Lookup::Deleted,
            },
            _ => Lookup::Absent,
        }
    }

    /// The first version at or after `key` (`inclusive`) or strictly after it, in internal-key
    /// order.
    pub(crate) fn seek(&self, key: &InternalKey, inclusive: bool) -> Option<(InternalKey, Value)> {
        let bound = if inclusive { Bound::Included(key) } else { Bound::Excluded(key) };
        self.map.lower_bound(bound).map(|e| (e.key().clone(), e.value().clone()))
    }

    /// Every version held, in internal-key order: (user key, seq, value).
    pub(crate) fn entries(&self) -> Vec<(Bytes, u64, Value)> {
        self.map
            .iter()
            .map(|e| (e.key().user_key.clone(), e.key().seq, e.value().clone()))
            .collect()
    }

    /// True if nothing was ever inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of keys and values held, roughly.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.approximate_bytes.load(AtomicOrdering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn versions_and_snapshots() {
        let m = Memtable::new();
        m.insert(b("k"), 1, Value::Put(b("v1")));
        m.insert(b("k"), 3, Value::Put(b("v3")));
        m.insert(b("k"), 5, Value::Tombstone);
        assert_eq!(m.get(b"k", 0), Lookup::Absent);
        assert_eq!(m.get(b"k", 2), Lookup::Found(b("v1")));
        assert_eq!(m.get(b"k", 4), Lookup::Found(b("v3")));
        assert_eq!(m.get(b"k", 9), Lookup::Deleted);
        assert_eq!(m.get(b"j", 9), Lookup::Absent);
        assert!(m.approximate_bytes() > 0);
    }

    /// Readers keep reading while a writer inserts: every read sees a complete version.
    #[test]
    fn concurrent_readers_and_writers() {
        let m = Arc::new(Memtable::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(AtomicOrdering::Relaxed) {
                        let k = format!("key{:04}", reads % 1000);
                        if let Lookup::Found(v) = m.get(k.as_bytes(), u64::MAX) {
                            assert!(v.starts_with(k.as_bytes()), "reader {r}: {k} -> {v:?}");
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for seq in 0..20_000u64 {
            let k = format!("key{:04}", seq % 1000);
            m.insert(Bytes::from(k.clone()), seq, Value::Put(Bytes::from(format!("{k}-v{seq}"))));
        }
        stop.store(true, AtomicOrdering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0);
        assert_eq!(m.entries().len(), 20_000);
    }
}
