//! Leveled compaction: what to compact is a pure function of the version, and so is the merge.
//!
//! Level 0 holds flushed memtables, which may overlap. Every deeper level holds disjoint tables,
//! and level `n` may hold `level_base_bytes × multiplier^(n-1)` bytes. [`pick`] chooses:
//! 1. if level 0 has `level0_trigger` tables or more: all of them, with the level-1 tables they
//!    overlap, into level 1;
//! 2. else the shallowest level over its size budget: its first table (by key), with the tables
//!    of the next level it overlaps, into the next level.
//!
//! [`range_task`] plans the same kind of compaction for [`Db::compact_range`]: the tables of
//! one level that overlap a key range, into the next level.
//!
//! A compaction reads its inputs as [`Run`]s (the tables of one level, one after another; each
//! level-0 table is a run of its own, since they overlap) merged by [`MergeRuns`], and
//! [`Retention`] decides version by version what to keep: it drops what no reader can see, a
//! version hidden by a newer version that every live snapshot already sees, and, at the bottom
//! of the tree, a tombstone every snapshot sees (nothing older is left for it to hide). The
//! writers slow down when level 0 holds `level0_slowdown` tables and wait when it holds
//! `level0_stop`, so compaction can catch up.
//!
//! [`Db::compact_range`]: crate::Db::compact_range

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::manifest::{TableMeta, Version};
#[cfg(test)]
use crate::memtable::Value;
use crate::table::{Table, TableIter, compare_keys};

/// The shape of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOptions {
    /// Compact level 0 into level 1 once it holds this many tables.
    pub level0_trigger: usize,
    /// The size budget of level 1, in bytes.
    pub level_base_bytes: u64,
    /// Each level below 1 may hold this many times more than the one above.
    pub level_multiplier: u64,
    /// Compaction output is cut into tables of about this size.
    pub target_table_bytes: u64,
    /// Number of levels, including level 0.
    pub levels: usize,
    /// Writes are slowed (each group of writes waits a millisecond) while level 0 holds this
    /// many tables or more.
    pub level0_slowdown: usize,
    /// Writes wait for compaction while level 0 holds this many tables or more (at least
    /// `level0_trigger + 1`, whatever is set here).
    pub level0_stop: usize,
}

impl Default for CompactionOptions {
    fn default() -> CompactionOptions {
        CompactionOptions {
            level0_trigger: 4,
            level_base_bytes: 16 << 20,
            level_multiplier: 10,
            target_table_bytes: 4 << 20,
            levels: 7,
            level0_slowdown: 8,
            level0_stop: 12,
        }
    }
}

/// A compaction to run: the input tables and the level their merge goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompactionTask {
    pub(crate) inputs: Vec<TableMeta>,
    pub(crate) output_level: usize,
    /// No deeper level holds data overlapping the inputs: tombstones may go.
    pub(crate) bottommost: bool,
}

fn overlaps(t: &TableMeta, smallest: &Bytes, largest: &Bytes) -> bool {
    t.smallest <= *largest && t.largest >= *smallest
}

fn key_range(tables: &[TableMeta]) -> (Bytes, Bytes) {
    let smallest = tables.iter().map(|t| &t.smallest).min().cloned().unwrap_or_default();
    let largest = tables.iter().map(|t| &t.largest).max().cloned().unwrap_or_default();
    (smallest, largest)
}

/// The level's size budget.
fn budget(options: &CompactionOptions, level: usize) -> u64 {
    let depth = u32::try_from(level.saturating_sub(1)).unwrap_or(u32::MAX);
    options.level_base_bytes.saturating_mul(options.level_multiplier.saturating_pow(depth))
}

/// Chooses the next compaction, if one is due.
pub(crate) fn pick(version: &Version, options: &CompactionOptions) -> Option<CompactionTask> {
    if version.level(0).len() >= options.level0_trigger {
        return Some(task(version, version.level(0).to_vec(), 1));
    }
    let level = (1..options.levels - 1)
        .find(|&l| version.level(l).iter().map(|t| t.bytes).sum::<u64>() > budget(options, l))?;
    Some(task(version, version.level(level)[..1].to_vec(), level + 1))
}

/// The compaction of `level`'s tables that overlap `start..=end` (unbounded where `None`) into
/// `output_level`, the next level or (to rewrite the bottom of the tree) `level` itself; from
/// level 0, all of it, since its tables may hide each other's keys.
pub(crate) fn range_task(
    version: &Version,
    level: usize,
    output_level: usize,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
) -> Option<CompactionTask> {
    let in_range = |t: &TableMeta| {
        start.is_none_or(|s| t.largest.as_ref() >= s)
            && end.is_none_or(|e| t.smallest.as_ref() <= e)
    };
    let tables = version.level(level);
    let source: Vec<TableMeta> = if level == 0 {
        if tables.iter().any(in_range) { tables.to_vec() } else { Vec::new() }
    } else {
        tables.iter().filter(|t| in_range(t)).cloned().collect()
    };
    (!source.is_empty()).then(|| task(version, source, output_level))
}

/// `source` with the tables of `output_level` it overlaps.
fn task(version: &Version, source: Vec<TableMeta>, output_level: usize) -> CompactionTask {
    let (smallest, largest) = key_range(&source);
    let mut inputs = source;
    let more = version.level(output_level).iter().filter(|t| overlaps(t, &smallest, &largest));
    let more: Vec<TableMeta> = more.filter(|t| !inputs.contains(t)).cloned().collect();
    inputs.extend(more);
    let (smallest, largest) = key_range(&inputs);
    let bottommost = (output_level + 1..version.levels.len())
        .all(|l| !version.level(l).iter().any(|t| overlaps(t, &smallest, &largest)));
    CompactionTask { inputs, output_level, bottommost }
}

/// Decides, version by version in internal-key order, which versions a compaction keeps.
pub(crate) struct Retention {
    oldest_snapshot: u64,
    bottommost: bool,
    /// The user key of the versions being decided, once one was seen.
    current: Option<Vec<u8>>,
    /// A version of `current` that every snapshot sees was already kept (or dropped as a
    /// bottom tombstone): every older version is hidden from everyone.
    seen_by_all: bool,
}

impl Retention {
    /// `oldest_snapshot` is the sequence number of the oldest live snapshot (or of the newest
    /// write, if there is none); `bottommost` says that no deeper table overlaps the inputs.
    pub(crate) fn new(oldest_snapshot: u64, bottommost: bool) -> Retention {
        Retention { oldest_snapshot, bottommost, current: None, seen_by_all: false }
    }

    /// Whether to keep this version; versions must come in internal-key order.
    pub(crate) fn keep(&mut self, user_key: &[u8], seq: u64, is_tombstone: bool) -> bool {
        match &mut self.current {
            Some(current) if current.as_slice() == user_key => {}
            Some(current) => {
                current.clear();
                current.extend_from_slice(user_key);
                self.seen_by_all = false;
            }
            None => {
                self.current = Some(user_key.to_vec());
                self.seen_by_all = false;
            }
        }
        if self.seen_by_all {
            return false; // Hidden from every reader by a newer version.
        }
        if seq <= self.oldest_snapshot {
            self.seen_by_all = true;
            if self.bottommost && is_tombstone {
                return false; // Nothing older remains for it to hide, and everyone sees it.
            }
        }
        true
    }
}

/// The entries of disjoint tables sorted by key, one table after another: one level's inputs
/// (or a single level-0 table). One data block is in memory at a time.
pub(crate) struct Run {
    tables: Vec<Arc<Table>>,
    next: usize,
    iter: Option<TableIter>,
}

impl Run {
    /// Positioned at the first entry of the first table.
    pub(crate) fn new(tables: Vec<Arc<Table>>) -> Result<Run> {
        let mut run = Run { tables, next: 0, iter: None };
        run.skip_exhausted()?;
        Ok(run)
    }

    /// The current entry: (internal key, value).
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.iter.as_ref().and_then(TableIter::entry)
    }

    /// Moves to the next entry.
    pub(crate) fn advance(&mut self) -> Result<()> {
        if let Some(it) = &mut self.iter {
            it.advance()?;
        }
        self.skip_exhausted()
    }

    fn skip_exhausted(&mut self) -> Result<()> {
        while self.entry().is_none() && self.next < self.tables.len() {
            self.iter = Some(TableIter::seek(Arc::clone(&self.tables[self.next]), &[])?);
            self.next += 1;
        }
        Ok(())
    }
}

/// Runs merged into one stream in internal-key order. The runs are few (each level-0 table and
/// one per deeper level), so the smallest is found by comparing them all.
pub(crate) struct MergeRuns {
    runs: Vec<Run>,
    current: Option<usize>,
}

impl MergeRuns {
    /// Positioned at the smallest entry of all runs.
    pub(crate) fn new(runs: Vec<Run>) -> MergeRuns {
        let mut merge = MergeRuns { runs, current: None };
        merge.find_smallest();
        merge
    }

    fn find_smallest(&mut self) {
        let mut best: Option<(usize, &[u8])> = None;
        for (i, run) in self.runs.iter().enumerate() {
            if let Some((key, _)) = run.entry()
                && best.is_none_or(|(_, b)| compare_keys(key, b) == Ordering::Less)
            {
                best = Some((i, key));
            }
        }
        self.current = best.map(|(i, _)| i);
    }

    /// The current entry: (internal key, value).
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.current.and_then(|i| self.runs[i].entry())
    }

    /// Moves to the next entry.
    pub(crate) fn advance(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            self.runs[i].advance()?;
        }
        self.find_smallest();
        Ok(())
    }
}

/// Merges the inputs' entries into one sorted run, dropping versions no reader can see (the
/// in-memory form of what a compaction does, for tests).
#[cfg(test)]
pub(crate) fn merge(
    inputs: Vec<Vec<(Bytes, u64, Value)>>,
    oldest_snapshot: u64,
    bottommost: bool,
) -> Vec<(Bytes, u64, Value)> {
    let mut all: Vec<(Bytes, u64, Value)> = inputs.into_iter().flatten().collect();
    // Internal-key order: user key ascending, then sequence number descending.
    all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut retention = Retention::new(oldest_snapshot, bottommost);
    all.into_iter()
        .filter(|(key, seq, value)| retention.keep(key, *seq, *value == Value::Tombstone))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::VersionEdit;

    fn table(level: u8, file: u64, range: (&str, &str), bytes: u64) -> TableMeta {
        let (smallest, largest) =
            (Bytes::from(range.0.to_owned()), Bytes::from(range.1.to_owned()));
        TableMeta { level, file, entries: 1, bytes, smallest, largest }
    }

    fn version(tables: Vec<TableMeta>) -> Version {
        Version::default().apply(&VersionEdit { added: tables, ..Default::default() })
    }

    fn opts() -> CompactionOptions {
        CompactionOptions { level_base_bytes: 1000, ..CompactionOptions::default() }
    }

    #[test]
    fn level_zero_trigger_takes_all_of_it_and_the_overlapping_level_one() {
        let mut tables: Vec<TableMeta> = (1..=4).map(|f| table(0, f, ("c", "f"), 10)).collect();
        tables.push(table(1, 10, ("a", "b"), 10));
        tables.push(table(1, 11, ("d", "e"), 10));
        tables.push(table(2, 20, ("x", "z"), 10));
        let task = pick(&version(tables), &opts()).unwrap();
        let files: Vec<u64> = task.inputs.iter().map(|t| t.file).collect();
        assert_eq!(files, [4, 3, 2, 1, 11]);
        assert_eq!(task.output_level, 1);
        assert!(task.bottommost, "level 2 does not overlap c..f");
    }

    #[test]
    fn an_oversized_level_spills_into_the_next() {
        let tables = vec![
            table(0, 1, ("a", "z"), 10),
            table(1, 10, ("a", "c"), 600),
            table(1, 11, ("d", "f"), 600),
            table(2, 20, ("b", "b"), 10),
            table(3, 30, ("a", "z"), 10),
        ];
        let task = pick(&version(tables), &opts()).unwrap();
        let files: Vec<u64> = task.inputs.iter().map(|t| t.file).collect();
        assert_eq!((files, task.output_level, task.bottommost), (vec![10, 20], 2, false));
    }

    #[test]
    fn nothing_to_do_when_every_level_is_within_budget() {
        let tables = vec![table(0, 1, ("a", "z"), 10), table(1, 10, ("a", "z"), 999)];
        assert_eq!(pick(&version(tables), &opts()), None);
        assert_eq!(budget(&opts(), 3), 100_000);
    }

    fn e(k: &str, seq: u64, v: Option<&str>) -> (Bytes, u64, Value) {
        let value = v.map_or(Value::Tombstone, |v| Value::Put(Bytes::from(v.to_owned())));
        (Bytes::from(k.to_owned()), seq, value)
    }

    #[test]
    fn merge_keeps_what_snapshots_can_see() {
        let newer = vec![e("a", 9, Some("a9")), e("b", 8, None), e("c", 7, Some("c7"))];
        let older = vec![e("a", 5, Some("a5")), e("a", 2, Some("a2")), e("b", 3, Some("b3"))];
        // A snapshot at 6 still sees a5 and b3; a2 is hidden from everyone by a5.
        let kept = merge(vec![newer.clone(), older.clone()], 6, false);
        assert_eq!(
            kept,
            vec![
                e("a", 9, Some("a9")),
                e("a", 5, Some("a5")),
                e("b", 8, None),
                e("b", 3, Some("b3")),
                e("c", 7, Some("c7"))
            ]
        );
        // With no snapshot older than 9, only the newest versions stay; the tombstone stays
        // unless this is the bottom of the tree.
        let kept = merge(vec![newer.clone(), older.clone()], 9, false);
        assert_eq!(kept, vec![e("a", 9, Some("a9")), e("b", 8, None), e("c", 7, Some("c7"))]);
        let kept = merge(vec![newer, older], 9, true);
        assert_eq!(kept, vec![e("a", 9, Some("a9")), e("c", 7, Some("c7"))]);
    }
}
