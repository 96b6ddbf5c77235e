//! Ordered iteration over the whole database: memtables and tables merged, newest version of
//! each key first, at a snapshot.
//!
//! Each source yields versions in internal-key order. There are few sources (the memtables,
//! each level-0 table, one per deeper level), so the merge finds the smallest current key by
//! comparing them in place, as LevelDB's merging iterator does: no heap, no copies of keys.
//! Level 0 tables are separate sources (they overlap); each deeper level is one source that
//! walks its disjoint tables one after another, so only one block per source is in use at a
//! time. A memtable source reads its skiplist in chunks (one search per chunk, not per entry),
//! copying each chunk's keys side by side.

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::memtable::{Memtable, Value};
use crate::table::{Table, TableIter, compare_bytes, internal_key, split_key};

/// Versions a memtable source reads with its first search: a seek often needs just one.
const FIRST_CHUNK: usize = 2;
/// Each later chunk is this many times larger than the one before, up to [`MAX_CHUNK`].
const CHUNK_GROWTH: usize = 8;
/// The most versions a memtable source holds at once.
const MAX_CHUNK: usize = 128;

/// The current version of a source, borrowed from it.
#[derive(Clone, Copy)]
struct Head<'a> {
    user: &'a [u8],
    seq: u64,
    is_value: bool,
}

impl Head<'_> {
    /// Internal-key order: user key ascending, then sequence number descending.
    #[inline]
    fn cmp(&self, other: &Head<'_>) -> Ordering {
        compare_bytes(self.user, other.user).then(other.seq.cmp(&self.seq))
    }
}

/// A memtable, read a chunk of versions at a time. The chunk's user keys are copied side by
/// side into one buffer while the chunk is read (they sit in the skiplist's nodes, which the
/// walk touches anyway), so the merge compares keys in memory it has just touched; values are
/// held as reference-counted clones, handed out without a copy.
struct MemorySource {
    mem: Arc<Memtable>,
    /// The chunk's user keys, back to back.
    keys: Vec<u8>,
    /// For each version of the chunk: where its user key ends in `keys`, its sequence number,
    /// and its value (`None`: a tombstone).
    versions: Vec<(usize, u64, Option<Bytes>)>,
    /// The current version's index in `versions`, and where its key starts in `keys`.
    pos: usize,
    key_start: usize,
    /// How many versions the next chunk reads.
    next_chunk: usize,
    /// Nothing follows the current chunk.
    last_chunk: bool,
    /// The user key the next chunk starts after (a buffer kept for reuse).
    resume: Vec<u8>,
}

impl MemorySource {
    fn new(mem: Arc<Memtable>, start: &[u8]) -> MemorySource {
        let mut source = MemorySource {
            mem,
            keys: Vec::new(),
            versions: Vec::with_capacity(FIRST_CHUNK),
            pos: 0,
            key_start: 0,
            next_chunk: FIRST_CHUNK,
            last_chunk: false,
            resume: Vec::new(),
        };
        // The newest possible version of `start` comes before all of its versions.
        source.read_chunk((start, u64::MAX), true);
        source
    }

    /// Replaces the chunk with the versions from `from` on (`inclusive`) or after it.
    fn read_chunk(&mut self, from: (&[u8], u64), inclusive: bool) {
        let (keys, versions) = (&mut self.keys, &mut self.versions);
        keys.clear();
        versions.clear();
        let want = self.next_chunk;
        let read = self.mem.read_chunk(from, inclusive, want, |user, seq, value| {
            keys.extend_from_slice(user);
            let value = match value {
                Value::Put(v) => Some(v.clone()),
                Value::Tombstone => None,
            };
            versions.push((keys.len(), seq, value));
        });
        self.pos = 0;
        self.key_start = 0;
        self.last_chunk = read < want;
        self.next_chunk = (want * CHUNK_GROWTH).min(MAX_CHUNK);
    }

    #[inline]
    fn head(&self) -> Option<Head<'_>> {
        let (end, seq, value) = self.versions.get(self.pos)?;
        Some(Head { user: &self.keys[self.key_start..*end], seq: *seq, is_value: value.is_some() })
    }

    fn value(&self) -> Bytes {
        self.versions.get(self.pos).and_then(|(_, _, v)| v.clone()).unwrap_or_default()
    }

    #[inline]
    fn advance(&mut self) {
        if let Some(&(end, _, _)) = self.versions.get(self.pos) {
            self.pos += 1;
            self.key_start = end;
        }
        if self.pos < self.versions.len() || self.last_chunk {
            return;
        }
        // Read on from just after the last version held.
        let Some(&(end, seq, _)) = self.versions.last() else { return };
        let start = self.versions.len().checked_sub(2).map_or(0, |i| self.versions[i].0);
        let mut resume = std::mem::take(&mut self.resume);
        resume.clear();
        resume.extend_from_slice(&self.keys[start..end]);
        self.read_chunk((&resume, seq), false);
        self.resume = resume;
    }

    /// Moves to the first version of the first user key after `user`: one search instead of
    /// a step per older version.
    fn skip_past(&mut self, user: &[u8]) {
        let mut resume = std::mem::take(&mut self.resume);
        resume.clear();
        resume.extend_from_slice(user);
        self.next_chunk = FIRST_CHUNK;
        // (user, 0) sorts after every version of `user` (sequence numbers start at 1).
        self.read_chunk((&resume, 0), false);
        self.resume = resume;
    }
}

/// Tables of one level, disjoint and sorted (or a single level-0 table).
struct LevelSource {
    /// The level's tables (empty for a level-0 table, which is `iter`'s alone).
    tables: Vec<Arc<Table>>,
    /// The next table of `tables` to open.
    next: usize,
    iter: TableIter,
}

impl LevelSource {
    /// Moves on to the next table while the current one is exhausted.
    fn skip_exhausted_tables(&mut self) -> Result<()> {
        while self.iter.entry().is_none() && self.next < self.tables.len() {
            self.iter = TableIter::seek(Arc::clone(&self.tables[self.next]), &[])?;
            self.next += 1;
        }
        Ok(())
    }
}

/// One ordered stream of versions.
enum Source {
    Memory(MemorySource),
    Level(LevelSource),
}

impl Source {
    #[inline]
    fn head(&self) -> Option<Head<'_>> {
        match self {
            Source::Memory(m) => m.head(),
            Source::Level(l) => l
                .iter
                .entry()
                .and_then(|(key, _)| split_key(key))
                .map(|(user, seq, is_value)| Head { user, seq, is_value }),
        }
    }

    /// The current value: a memtable value's clone or a slice of a table's block, no copy
    /// either way (empty for a tombstone).
    fn value(&self) -> Bytes {
        match self {
            Source::Memory(m) => m.value(),
            Source::Level(l) => l.iter.value_bytes(),
        }
    }

    #[inline]
    fn advance(&mut self) -> Result<()> {
        match self {
            Source::Memory(m) => {
                m.advance();
                Ok(())
            }
            Source::Level(l) => {
                l.iter.advance()?;
                l.skip_exhausted_tables()
            }
        }
    }

    /// Moves past every version of `user` (the current head's user key).
    fn skip_past(&mut self, user: &[u8]) -> Result<()> {
        match self {
            Source::Memory(m) => m.skip_past(user),
            Source::Level(l) => {
                let table = Arc::clone(l.iter.table());
                l.iter = TableIter::seek(table, &internal_key(user, 0, false))?;
                l.skip_exhausted_tables()?;
            }
        }
        Ok(())
    }
}

/// After this many hidden versions of one key in a row, a source seeks past the key rather
/// than stepping through the rest (a key overwritten thousands of times costs one search).
const SKIP_AFTER_HIDDEN: u32 = 8;

/// An iterator over live (key, value) pairs in key order, as of a snapshot.
pub(crate) struct MergeIter {
    /// The sources not yet exhausted, newest first (for equal keys, the first one wins).
    sources: Vec<Source>,
    seq: u64,
    end: Option<Bytes>,
    /// The user key of the last version returned or skipped as decided (valid if `decided`).
    last_user_key: Vec<u8>,
    decided: bool,
    /// Hidden versions of `last_user_key` stepped over so far.
    hidden: u32,
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
        let mut sources = Vec::with_capacity(memories.len() + level0.len() + deeper.len());
        for mem in memories {
            sources.push(Source::Memory(MemorySource::new(mem, start)));
        }
        for table in level0 {
            let iter = TableIter::seek(table, &target)?;
            sources.push(Source::Level(LevelSource { tables: Vec::new(), next: 0, iter }));
        }
        for tables in deeper {
            // Start at the first table whose range reaches `start`.
            let first = tables.partition_point(|t| t.largest_user_key().is_some_and(|l| l < start));
            let Some(table) = tables.get(first) else { continue };
            let iter = TableIter::seek(Arc::clone(table), &target)?;
            let mut level = LevelSource { tables, next: first + 1, iter };
            level.skip_exhausted_tables()?;
            sources.push(Source::Level(level));
        }
        sources.retain(|s| s.head().is_some());
        Ok(MergeIter { sources, seq, end, last_user_key: Vec::new(), decided: false, hidden: 0 })
    }

    /// The source with the smallest current version (the first, if tied), and that version.
    #[inline]
    fn smallest(sources: &[Source]) -> Option<(usize, Head<'_>)> {
        let mut heads = sources.iter().enumerate().filter_map(|(i, s)| Some((i, s.head()?)));
        let mut best = heads.next()?;
        for (i, head) in heads {
            if head.cmp(&best.1) == Ordering::Less {
                best = (i, head);
            }
        }
        Some(best)
    }

    /// The next live pair, or `None` at the end of the range.
    pub(crate) fn next_pair(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        while let Some((i, head)) = Self::smallest(&self.sources) {
            if self.end.as_ref().is_some_and(|e| compare_bytes(head.user, e) != Ordering::Less) {
                self.sources.clear();
                return Ok(None);
            }
            // Too new for the snapshot, or an older version of a decided key: skip it.
            let older =
                self.decided && compare_bytes(head.user, &self.last_user_key) == Ordering::Equal;
            let visible = head.seq <= self.seq && !older;
            let mut pair = None;
            if visible {
                self.last_user_key.clear();
                self.last_user_key.extend_from_slice(head.user);
                self.decided = true;
                self.hidden = 0;
                if head.is_value {
                    pair = Some((Bytes::copy_from_slice(head.user), self.sources[i].value()));
                }
            }
            // Step the source past this version, dropping it once exhausted.
            let source = &mut self.sources[i];
            if older {
                self.hidden += 1;
            }
            if self.hidden >= SKIP_AFTER_HIDDEN {
                self.hidden = 0;
                source.skip_past(&self.last_user_key)?;
            } else {
                source.advance()?;
            }
            if source.head().is_none() {
                self.sources.remove(i);
            }
            if pair.is_some() {
                return Ok(pair);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::fs::{FileSystem, MemFs};
    use crate::table::TableBuilder;

    /// Every version written: (user key, seq) → value (`None`: a tombstone).
    type Model = BTreeMap<(Bytes, u64), Option<Bytes>>;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// `n` random versions with sequence numbers from `first_seq` on.
    fn versions(rng: &mut Rng, n: u64, first_seq: u64) -> Vec<(Bytes, u64, Value)> {
        (0..n)
            .map(|i| {
                let k = rng.below(300);
                // Some keys too long to be held inline in the memtable.
                let key = if k.is_multiple_of(7) {
                    format!("key-{k:04}-{}", "long".repeat(8))
                } else {
                    format!("key-{k:04}")
                };
                let value = match rng.below(10) {
                    0 | 1 => Value::Tombstone,
                    2 => Value::Put(Bytes::from(vec![b'L'; 600 + i as usize])),
                    _ => Value::Put(Bytes::from(format!("v{}", first_seq + i))),
                };
                (Bytes::from(key), first_seq + i, value)
            })
            .collect()
    }

    fn record(model: &mut Model, versions: &[(Bytes, u64, Value)]) {
        for (key, seq, value) in versions {
            let v = match value {
                Value::Put(v) => Some(v.clone()),
                Value::Tombstone => None,
            };
            model.insert((key.clone(), *seq), v);
        }
    }

    fn memtable(versions: &[(Bytes, u64, Value)]) -> Arc<Memtable> {
        let mem = Memtable::new();
        for (key, seq, value) in versions {
            mem.insert(key.clone(), *seq, value.clone());
        }
        Arc::new(mem)
    }

    /// A table of `versions` (any order; sorted here).
    fn table(fs: &MemFs, name: &str, mut versions: Vec<(Bytes, u64, Value)>) -> Arc<Table> {
        versions.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let path = PathBuf::from(format!("/t/{name}.sst"));
        let mut builder = TableBuilder::new(fs.create(&path).unwrap());
        for (key, seq, value) in &versions {
            builder.add(key, *seq, value).unwrap();
        }
        builder.finish().unwrap();
        Arc::new(Table::open(fs, &path).unwrap())
    }

    /// What a read of `start..end` at `snapshot` must return.
    fn expected(
        model: &Model,
        start: &[u8],
        end: Option<&[u8]>,
        snapshot: u64,
    ) -> Vec<(Bytes, Bytes)> {
        let mut newest: BTreeMap<&Bytes, (u64, &Option<Bytes>)> = BTreeMap::new();
        for ((key, seq), value) in model {
            let in_range = key.as_ref() >= start && end.is_none_or(|e| key.as_ref() < e);
            if in_range && *seq <= snapshot && newest.get(key).is_none_or(|(s, _)| s < seq) {
                newest.insert(key, (*seq, value));
            }
        }
        newest.into_iter().filter_map(|(k, (_, v))| Some((k.clone(), v.clone()?))).collect()
    }

    /// Memtables (read in chunks), overlapping level-0 tables and a level of disjoint tables,
    /// merged: the newest visible version of each key, tombstones hiding older versions,
    /// snapshots honoured, the end bound exclusive, from any start.
    #[test]
    fn merged_sources_read_as_the_model_says() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let fs = MemFs::new();
        let mut model = Model::new();
        // Oldest first: a deeper level cut into three disjoint tables, two level-0 tables,
        // then two memtables.
        let deep = versions(&mut rng, 900, 1);
        record(&mut model, &deep);
        let mut deep_tables = Vec::new();
        for (i, (lo, hi)) in
            [("", "key-0100"), ("key-0100", "key-0200"), ("key-0200", "z")].into_iter().enumerate()
        {
            let part: Vec<_> = deep
                .iter()
                .filter(|(k, _, _)| k.as_ref() >= lo.as_bytes() && k.as_ref() < hi.as_bytes())
                .cloned()
                .collect();
            deep_tables.push(table(&fs, &format!("deep{i}"), part));
        }
        let l0_old = versions(&mut rng, 400, 1000);
        let l0_new = versions(&mut rng, 400, 1400);
        record(&mut model, &l0_old);
        record(&mut model, &l0_new);
        let level0 = vec![table(&fs, "l0new", l0_new), table(&fs, "l0old", l0_old)];
        let imm = versions(&mut rng, 500, 1800);
        let mem = versions(&mut rng, 700, 2300);
        record(&mut model, &imm);
        record(&mut model, &mem);
        let memories = vec![memtable(&mem), memtable(&imm)];

        let ranges: [(&[u8], Option<&[u8]>); 6] = [
            (b"", None),
            (b"key-0150", None),
            (b"key-0007", Some(b"key-0008")),
            (b"key-0042", Some(b"key-0250")),
            (b"zzz", None),
            (b"key-0299-", Some(b"key-0100")),
        ];
        for snapshot in [0, 500, 1200, 1799, 2000, 2999, u64::MAX >> 8] {
            for (start, end) in ranges {
                let mut merge = MergeIter::new(
                    memories.clone(),
                    level0.clone(),
                    vec![deep_tables.clone(), Vec::new()],
                    start,
                    end.map(Bytes::copy_from_slice),
                    snapshot,
                )
                .unwrap();
                let mut got = Vec::new();
                while let Some(pair) = merge.next_pair().unwrap() {
                    got.push(pair);
                }
                assert!(merge.next_pair().unwrap().is_none(), "stays at the end");
                let want = expected(&model, start, end, snapshot);
                assert_eq!(got.len(), want.len(), "snapshot {snapshot}, {start:?}..{end:?}");
                assert!(got == want, "snapshot {snapshot}, {start:?}..{end:?}: values differ");
            }
        }
    }

    /// A memtable read in chunks sees every version in order, however many chunks it takes.
    #[test]
    fn memory_source_reads_every_version_across_chunks() {
        let mut rng = Rng(42);
        let all = versions(&mut rng, 2000, 1);
        let mem = memtable(&all);
        let mut want = all.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut source = MemorySource::new(mem, b"");
        for (key, seq, value) in &want {
            let head = source.head().expect("a version");
            assert_eq!((head.user, head.seq), (key.as_ref(), *seq));
            match value {
                Value::Put(v) => assert!(head.is_value && source.value() == v),
                Value::Tombstone => assert!(!head.is_value && source.value().is_empty()),
            }
            source.advance();
        }
        assert!(source.head().is_none());
        source.advance();
        assert!(source.head().is_none() && source.value().is_empty());
        assert!(MemorySource::new(Arc::new(Memtable::new()), b"").head().is_none());
    }
}
