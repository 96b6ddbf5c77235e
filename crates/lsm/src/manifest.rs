//! The manifest: the log of changes to the set of live tables, replayed on open.
//!
//! ```text
//! manifest := record*                  (framed as in the WAL; kind 2)
//! edit     := log_number:u64  next_file:u64  last_seq:u64
//!             n_added:u32  added{n_added}  n_removed:u32  removed{n_removed}
//! added    := level:u8  file:u64  entries:u64  bytes:u64
//!             klen:u32 smallest{klen}  klen:u32 largest{klen}
//! removed  := level:u8  file:u64
//! ```
//!
//! `log_number` is the first WAL still needed: WALs numbered below it were flushed into tables.
//! An edit is appended and synced before anything it describes is relied on, and the files it
//! removes are deleted only after.

use bytes::Bytes;

/// What the engine knows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) level: u8,
    pub(crate) file: u64,
    pub(crate) entries: u64,
    /// The table file's size.
    pub(crate) bytes: u64,
    pub(crate) smallest: Bytes,
    pub(crate) largest: Bytes,
}

/// One change to the version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    pub(crate) log_number: u64,
    pub(crate) next_file: u64,
    pub(crate) last_seq: u64,
    pub(crate) added: Vec<TableMeta>,
    pub(crate) removed: Vec<(u8, u64)>,
}

impl VersionEdit {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [self.log_number, self.next_file, self.last_seq] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.added.len() as u32).to_le_bytes());
        for t in &self.added {
            out.push(t.level);
            out.extend_from_slice(&t.file.to_le_bytes());
            out.extend_from_slice(&t.entries.to_le_bytes());
            out.extend_from_slice(&t.bytes.to_le_bytes());
            for k in [&t.smallest, &t.largest] {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k);
            }
        }
        out.extend_from_slice(&(self.removed.len() as u32).to_le_bytes());
        for (level, file) in &self.removed {
            out.push(*level);
            out.extend_from_slice(&file.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<VersionEdit> {
        let mut at: usize = 0;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let mut u64s = [0u64; 3];
        for v in &mut u64s {
            *v = u64::from_le_bytes(take(8)?.try_into().ok()?);
        }
        let mut edit = VersionEdit {
            log_number: u64s[0],
            next_file: u64s[1],
            last_seq: u64s[2],
            ..Default::default()
        };
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?);
        for _ in 0..n {
            let level = take(1)?[0];
            let file = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let entries = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let bytes = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let smallest = Bytes::copy_from_slice(take(klen)?);
            let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let largest = Bytes::copy_from_slice(take(klen)?);
            edit.added.push(TableMeta { level, file, entries, bytes, smallest, largest });
        }
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?);
        for _ in 0..n {
            let level = take(1)?[0];
            let file = u64::from_le_bytes(take(8)?.try_into().ok()?);
            edit.removed.push((level, file));
        }
        (at == b.len()).then_some(edit)
    }
}

/// The set of live tables, level by level; level 0 newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) levels: Vec<Vec<TableMeta>>,
}

impl Version {
    /// This version with `edit` applied (a pure function: recovery and the running engine
    /// apply edits the same way).
    pub(crate) fn apply(&self, edit: &VersionEdit) -> Version {
        let mut next = self.clone();
        for (level, file) in &edit.removed {
            if let Some(tables) = next.levels.get_mut(*level as usize) {
                tables.retain(|t| t.file != *file);
            }
        }
        for t in &edit.added {
            let level = t.level as usize;
            if next.levels.len() <= level {
                next.levels.resize(level + 1, Vec::new());
            }
            next.levels[level].push(t.clone());
        }
        for (level, tables) in next.levels.iter_mut().enumerate() {
            if level == 0 {
                tables.sort_by_key(|t| std::cmp::Reverse(t.file)); // Newest first.
            } else {
                tables.sort_by(|a, b| a.smallest.cmp(&b.smallest)); // Disjoint, by key.
            }
        }
        next
    }

    /// Every live table, level by level (level 0 newest first, deeper levels by key).
    pub(crate) fn tables(&self) -> impl Iterator<Item = &TableMeta> {
        self.levels.iter().flatten()
    }

    /// The tables of `level` (empty if the level does not exist yet).
    pub(crate) fn level(&self, level: usize) -> &[TableMeta] {
        self.levels.get(level).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(level: u8, file: u64) -> TableMeta {
        let (smallest, largest) = (Bytes::from("a"), Bytes::from("z"));
        TableMeta { level, file, entries: 3, bytes: 100, smallest, largest }
    }

    #[test]
    fn edits_round_trip_and_refuse_damage() {
        let edit = VersionEdit {
            log_number: 4,
            next_file: 9,
            last_seq: 77,
            added: vec![meta(0, 7), meta(1, 8)],
            removed: vec![(0, 3)],
        };
        let bytes = edit.encode();
        assert_eq!(VersionEdit::decode(&bytes), Some(edit));
        for cut in 0..bytes.len() {
            assert_eq!(VersionEdit::decode(&bytes[..cut]), None);
        }
    }

    #[test]
    fn apply_adds_removes_and_orders_level_zero() {
        let v = Version::default()
            .apply(&VersionEdit { added: vec![meta(0, 1), meta(0, 2)], ..Default::default() })
            .apply(&VersionEdit {
                added: vec![meta(1, 3)],
                removed: vec![(0, 1)],
                ..Default::default()
            });
        let files: Vec<Vec<u64>> =
            v.levels.iter().map(|l| l.iter().map(|t| t.file).collect()).collect();
        assert_eq!(files, vec![vec![2], vec![3]]);
        assert_eq!(v.tables().count(), 2);
    }
}
