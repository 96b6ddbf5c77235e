//! Ordered iteration over the whole database: memtables and tables merged, newest version of
//! each key first, at a snapshot.
//!
//! Each source yields internal keys in order; a heap picks the smallest across sources. Level 0
//! tables are separate sources (they overlap); each deeper level is one source that walks its
//! disjoint tables one after another, so only one block per source is in memory at a time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::memtable::{InternalKey, Memtable, Value};
use crate::table::{Table, TableIter, compare_keys, internal_key, split_key};

/// A table-format entry: (internal key bytes, value bytes).
type Entry = (Vec<u8>, Vec<u8>);

/// One ordered stream of entries.
enum Source {
    /// A memtable, walked entry by entry (each step is one skiplist search).
    Memory { mem: Arc<Memtable>, current: Option<(InternalKey, Entry)> },
    /// Tables of one level, disjoint and sorted; `next` is the next table to open.
    Level { tables: Vec<Arc<Table>>, next: usize, iter: Option<TableIter> },
}

impl Source {
    fn current(&self) -> Option<&(Vec<u8>, Vec<u8>)> {
        match self {
            Source::Memory { current, .. } => current.as_ref().map(|(_, entry)| entry),
            Source::Level { iter, .. } => iter.as_ref().and_then(TableIter::current),
        }
    }

    fn advance(&mut self) -> Result<()> {
        match self {
            Source::Memory { mem, current } => {
                if let Some((key, _)) = current.take() {
                    *current = mem.seek(&key, false).map(encode);
                }
            }
            Source::Level { tables, next, iter } => {
                if let Some(it) = iter {
                    it.advance()?;
                }
                // Move on to the next table once this one is exhausted.
                while iter.as_ref().is_none_or(|it| it.current().is_none()) && *next < tables.len()
                {
                    *iter = Some(TableIter::seek(Arc::clone(&tables[*next]), &[])?);
                    *next += 1;
                }
            }
        }
        Ok(())
    }
}

/// A heap entry: the current key of source `i`, ordered so the heap pops the smallest key
/// (ties: the lower source index, i.e. the newer source, first).
struct Head {
    key: Vec<u8>,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(&other.key, &self.key).then(other.source.cmp(&self.source))
    }
}

/// An iterator over live (key, value) pairs in key order, as of a snapshot.
pub(crate) struct MergeIter {
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    seq: u64,
    end: Option<Bytes>,
    last_user_key: Option<Vec<u8>>,
}

/// A memtable version as a table entry: (internal key bytes, value bytes).
fn encode((key, value): (InternalKey, Value)) -> (InternalKey, Entry) {
    let entry = match &value {
        Value::Put(v) => (internal_key(&key.user_key, key.seq, true), v.to_vec()),
        Value::Tombstone => (internal_key(&key.user_key, key.seq, false), Vec::new()),
    };
    (key, entry)
}

impl MergeIter {
    /// `memories` newest first, then `level0` tables newest first, then one list per deeper
    /// level (sorted by key).
    pub(crate) fn new(
        memories: Vec<Arc<Memtable>>,
        level0: Vec<Arc<Table>>,
        deeper: Vec<Vec<Arc<Table>>>,
        start: &[u8],
        end: Option<Bytes>,
        seq: u64,
    ) -> Result<MergeIter> {
        let target = internal_key(start, u64::MAX >> 8, true);
        let mut sources = Vec::new();
        let first = InternalKey { user_key: Bytes::copy_from_slice(start), seq: u64::MAX };
        for mem in memories {
            let current = mem.seek(&first, true).map(encode);
            sources.push(Source::Memory { mem, current });
        }
        for table in level0 {
            let iter = TableIter::seek(table, &target)?;
            sources.push(Source::Level { tables: Vec::new(), next: 0, iter: Some(iter) });
        }
        for tables in deeper {
            // Start at the first table whose range reaches `start`.
            let first = tables.partition_point(|t| t.largest_user_key().is_some_and(|l| l < start));
            let iter = match tables.get(first) {
                Some(t) => Some(TableIter::seek(Arc::clone(t), &target)?),
                None => None,
            };
            let mut source = Source::Level { tables, next: first + 1, iter };
            if source.current().is_none() {
                source.advance()?;
            }
            sources.push(source);
        }
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter().enumerate() {
            if let Some((k, _)) = s.current() {
                heap.push(Head { key: k.clone(), source: i });
            }
        }
        Ok(MergeIter { sources, heap, seq, end, last_user_key: None })
    }

    /// The next live pair, or `None` at the end of the range.
    pub(crate) fn next_pair(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        while let Some(head) = self.heap.pop() {
            let source = &mut self.sources[head.source];
            let (key, value) = source.current().cloned().expect("a head has a current entry");
            source.advance()?;
            if let Some((k, _)) = source.current() {
                self.heap.push(Head { key: k.clone(), source: head.source });
            }
            let Some((user, seq, is_value)) = split_key(&key) else { continue };
            if self.end.as_ref().is_some_and(|e| user >= e.as_ref()) {
                self.heap.clear();
                return Ok(None);
            }
            if seq > self.seq || self.last_user_key.as_deref() == Some(user) {
                continue; // Too new for the snapshot, or an older version of a decided key.
            }
            self.last_user_key = Some(user.to_vec());
            if is_value {
                return Ok(Some((Bytes::copy_from_slice(user), Bytes::from(value))));
            }
        }
        Ok(None)
    }
}
