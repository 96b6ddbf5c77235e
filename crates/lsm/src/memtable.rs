//! The memtable: recent writes, ordered by key, in a lock-free skiplist.
//!
//! Entries are keyed by (user key ascending, sequence number descending), so the newest
//! version of a key comes first and a read at snapshot `s` takes the first entry with a
//! sequence number at most `s`. The map is `crossbeam_skiplist::SkipMap`: inserts and reads run
//! concurrently and a reader never waits for a writer (the crate's own choice of epoch-based
//! reclamation makes that safe without locks).
//!
//! Short user keys are stored inside the skiplist's nodes (not behind a pointer), so a search
//! touches one place in memory per node it passes instead of two: searches are bound by memory
//! latency, and this about halves it.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use crate::table::compare_bytes;

/// One version of a key: a value, or a deletion marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// The key was set to these bytes.
    Put(Bytes),
    /// The key was deleted.
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

/// User keys up to this long are held inline in the skiplist's nodes.
const INLINE_KEY_BYTES: usize = 23;

/// A user key as the skiplist holds it: inline if short, else shared.
#[derive(Debug, Clone)]
enum UserKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    Shared(Bytes),
}

impl UserKey {
    /// A copy of `key` (inline if it fits).
    fn copy(key: &[u8]) -> UserKey {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            UserKey::Inline { len: key.len() as u8, bytes }
        } else {
            UserKey::Shared(Bytes::copy_from_slice(key))
        }
    }

    /// `key`, moved inline if it fits (else kept as it is, shared).
    fn from_bytes(key: Bytes) -> UserKey {
        if key.len() <= INLINE_KEY_BYTES { UserKey::copy(&key) } else { UserKey::Shared(key) }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            UserKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            UserKey::Shared(b) => b,
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            UserKey::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            UserKey::Shared(b) => b.clone(),
        }
    }
}

/// The skiplist's key: a user key and the sequence number of one write of it, in internal-key
/// order (user key ascending, then sequence number descending).
#[derive(Debug, Clone)]
struct MemKey {
    user: UserKey,
    seq: u64,
}

impl Ord for MemKey {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        compare_bytes(self.user.as_slice(), other.user.as_slice())
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemKey {}

/// Recent writes, every version of every key, in internal-key order.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: SkipMap<MemKey, Value>,
    approximate_bytes: AtomicUsize,
}

impl Memtable {
    /// An empty memtable.
    pub(crate) fn new() -> Memtable {
        Memtable::default()
    }

    /// Adds one version of `user_key`.
    pub(crate) fn insert(&self, user_key: Bytes, seq: u64, value: Value) {
        let size = user_key.len() + 16 + if let Value::Put(v) = &value { v.len() } else { 0 };
        self.map.insert(MemKey { user: UserKey::from_bytes(user_key), seq }, value);
        self.approximate_bytes.fetch_add(size, AtomicOrdering::Relaxed);
    }

    /// The newest version of `key` with a sequence number at most `seq`.
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Lookup {
        let probe = MemKey { user: UserKey::copy(key), seq };
        match self.map.lower_bound(Bound::Included(&probe)) {
            Some(e) if e.key().user.as_slice() == key => match e.value() {
                Value::Put(v) => Lookup::Found(v.clone()),
                Value::Tombstone => Lookup::Deleted,
            },
            _ => Lookup::Absent,
        }
    }

    /// Visits up to `max` versions, in internal-key order, from the version (`user_key`, `seq`)
    /// on (`inclusive`) or from the one after it, as (user key, seq, value). One search of the
    /// skiplist, then a walk along its bottom level. Returns how many it visited: fewer than
    /// `max` means nothing follows them (as of this call).
    pub(crate) fn read_chunk(
        &self,
        (user_key, seq): (&[u8], u64),
        inclusive: bool,
        max: usize,
        mut visit: impl FnMut(&[u8], u64, &Value),
    ) -> usize {
        let probe = MemKey { user: UserKey::copy(user_key), seq };
        let from = if inclusive { Bound::Included(&probe) } else { Bound::Excluded(&probe) };
        let Some(mut entry) = self.map.lower_bound(from) else { return 0 };
        let mut n = 0;
        loop {
            visit(entry.key().user.as_slice(), entry.key().seq, entry.value());
            n += 1;
            // Stepping an entry costs fewer atomic operations than a range iterator's step.
            if n == max || !entry.move_next() {
                return n;
            }
        }
    }

    /// Every version held, in internal-key order: (user key, seq, value).
    pub(crate) fn entries(&self) -> Vec<(Bytes, u64, Value)> {
        self.map.iter().map(|e| (e.key().user.to_bytes(), e.key().seq, e.value().clone())).collect()
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

    /// Keys too long to be held inline in a node are shared instead; both kinds order, read and
    /// come back out the same.
    #[test]
    fn short_and_long_keys() {
        let m = Memtable::new();
        let long = "k".repeat(INLINE_KEY_BYTES + 1);
        let longer = format!("{long}k");
        let exact = "k".repeat(INLINE_KEY_BYTES);
        for (i, key) in [&longer, &exact, &long, &"k".to_owned()].into_iter().enumerate() {
            m.insert(b(key), i as u64, Value::Put(b(&format!("v{i}"))));
        }
        m.insert(b(&long), 9, Value::Tombstone);
        assert_eq!(m.get(long.as_bytes(), 8), Lookup::Found(b("v2")));
        assert_eq!(m.get(long.as_bytes(), 9), Lookup::Deleted);
        assert_eq!(m.get(longer.as_bytes(), 9), Lookup::Found(b("v0")));
        assert_eq!(m.get(exact.as_bytes(), 9), Lookup::Found(b("v1")));
        let keys: Vec<(Bytes, u64)> = m.entries().into_iter().map(|(k, s, _)| (k, s)).collect();
        let want = [(b("k"), 3), (b(&exact), 1), (b(&long), 9), (b(&long), 2), (b(&longer), 0)];
        assert_eq!(keys, want);
        let mut seen = Vec::new();
        let n = m.read_chunk((long.as_bytes(), 9), false, 10, |k, s, _| {
            seen.push((Bytes::copy_from_slice(k), s));
        });
        assert_eq!((n, seen), (2, vec![(b(&long), 2), (b(&longer), 0)]));
        let n = m.read_chunk((b"", u64::MAX), true, 2, |_, _, _| {});
        assert_eq!(n, 2, "stops at the limit");
        assert!(format!("{:?}", UserKey::copy(b"ab")).contains("Inline"));
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
