//! Leveled compaction: what to compact is a pure function of the version, and so is the merge.
//!
//! Level 0 holds flushed memtables, which may overlap. Every deeper level holds disjoint tables,
//! and level `n` may hold `level_base_bytes × multiplier^(n-1)` bytes. [`pick`] chooses:
//! 1. if level 0 has `level0_trigger` tables or more: all of them, with the level-1 tables they
//!    overlap, into level 1;
//! 2. else the shallowest level over its size budget: its first table (by key), with the tables
//!    of the next level it overlaps, into the next level.
//!
//! [`merge`] combines the inputs' entries, newest version of each key first, and drops what no
//! reader can see: a version hidden by a newer version that every live snapshot already sees,
//! and, at the bottom of the tree, a tombstone every snapshot sees (nothing older is left for
//! it to hide).

use bytes::Bytes;

use crate::manifest::{TableMeta, Version};
use crate::memtable::{InternalKey, Value};

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
}

impl Default for CompactionOptions {
    fn default() -> CompactionOptions {
        CompactionOptions {
            level0_trigger: 4,
            level_base_bytes: 16 << 20,
            level_multiplier: 10,
            target_table_bytes: 4 << 20,
            levels: 7,
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
    let (source, output_level) = if version.level(0).len() >= options.level0_trigger {
        (version.level(0).to_vec(), 1)
    } else {
        let level = (1..options.levels - 1).find(|&l| {
            version.level(l).iter().map(|t| t.bytes).sum::<u64>() > budget(options, l)
        })?;
        (version.level(level)[..1].to_vec(), level + 1)
    };
    let (smallest, largest) = key_range(&source);
    let mut inputs = source;
    inputs.extend(
        version.level(output_level).iter().filter(|t| overlaps(t, &smallest, &largest)).cloned(),
    );
    let (smallest, largest) = key_range(&inputs);
    let bottommost = (output_level + 1..version.levels.len())
        .all(|l| !version.level(l).iter().any(|t| overlaps(t, &smallest, &largest)));
    Some(CompactionTask { inputs, output_level, bottommost })
}

/// Merges the inputs' entries into one sorted run, dropping versions no reader can see.
/// `oldest_snapshot` is the sequence number of the oldest live snapshot (or of the newest
/// write, if there is none).
pub(crate) fn merge(
    inputs: Vec<Vec<(Bytes, u64, Value)>>,
    oldest_snapshot: u64,
    bottommost: bool,
) -> Vec<(Bytes, u64, Value)> {
    let mut all: Vec<(InternalKey, Value)> = inputs
        .into_iter()
        .flatten()
        .map(|(user_key, seq, value)| (InternalKey { user_key, seq }, value))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(all.len());
    let mut current: Option<Bytes> = None;
    // The newest version of the current key that every snapshot sees, once found.
    let mut seen_by_all = false;
    for (key, value) in all {
        if current.as_ref() != Some(&key.user_key) {
            current = Some(key.user_key.clone());
            seen_by_all = false;
        }
        if seen_by_all {
            continue; // Hidden from every reader by a newer version.
        }
        if key.seq <= oldest_snapshot {
            seen_by_all = true;
            if bottommost && value == Value::Tombstone {
                continue; // Nothing older remains for it to hide, and everyone sees it.
            }
        }
        out.push((key.user_key, key.seq, value));
    }
    out
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
