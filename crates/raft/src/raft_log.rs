//! The core's in-memory view of the log: what follows the last snapshot, plus the commit,
//! apply and persistence cursors.
//!
//! ```text
//!   snapshot | entries ...............................................|
//!            ^                ^               ^                ^      ^
//!     snapshot_index    last_applied    commit_index    stable_index  last_index
//! ```
//!
//! Invariants, asserted where they could break:
//! * `entries[i].index == snapshot_index + 1 + i` (no holes);
//! * `last_applied <= commit_index`;
//! * committed entries are never removed or overwritten, except by compaction into a snapshot;
//! * `stable_index` only covers entries that a storage write has made durable; an entry that is
//!   overwritten (a conflicting suffix) stops being stable.

use std::collections::VecDeque;

use crate::types::{Entry, Index, SnapshotMeta, Term};

#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: Vec<Entry>,
    /// The highest index known to be committed (Figure 2).
    pub(crate) commit_index: Index,
    /// The highest index handed to the service and acknowledged by `advance` (Figure 2).
    pub(crate) last_applied: Index,
    /// The highest index whose entry (and every entry before it) is durable in storage.
    pub(crate) stable_index: Index,
    /// For each `Ready` out, oldest first: the highest index it asked storage to persist
    /// (lowered when a conflicting suffix or a snapshot replaces what it carries).
    pub(crate) persisting: VecDeque<Index>,
}

/// Why a follower could not append at `prev_log_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) conflict_term: Option<Term>,
    pub(crate) conflict_index: Index,
}

impl RaftLog {
    /// A log that starts after `snapshot` (index 0, term 0 for none) with `entries`, all durable.
    pub(crate) fn restore(
        snapshot_index: Index,
        snapshot_term: Term,
        entries: Vec<Entry>,
        commit_index: Index,
    ) -> RaftLog {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.index, snapshot_index + 1 + i as u64, "stored log has a hole");
        }
        let last = snapshot_index + entries.len() as u64;
        let commit_index = commit_index.clamp(snapshot_index, last);
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries,
            commit_index,
            last_applied: snapshot_index,
            stable_index: last,
            persisting: VecDeque::new(),
        }
    }

    /// The highest index handed to storage so far (durable or in a `Ready` still out): the
    /// next `Ready` carries the entries after it.
    pub(crate) fn handed_to(&self) -> Index {
        self.persisting.back().copied().unwrap_or(0).max(self.stable_index)
    }

    /// Lowers what the `Ready`s out will have made durable to at most `index`.
    fn unpersist_after(&mut self, index: Index) {
        self.stable_index = self.stable_index.min(index);
        for to in &mut self.persisting {
            *to = (*to).min(index);
        }
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The first index still held as an entry.
    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`: known for the snapshot's last entry and for held
    /// entries, `None` if compacted away or beyond the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            Some(self.snapshot_term)
        } else if index < self.snapshot_index || index > self.last_index() {
            None
        } else {
            Some(self.entries[(index - self.snapshot_index - 1) as usize].term)
        }
    }

    fn position(&self, index: Index) -> usize {
        debug_assert!(index > self.snapshot_index && index <= self.last_index() + 1);
        (index - self.snapshot_index - 1) as usize
    }

    /// Entries from `lo` on, at most `max_bytes` of them but always at least one if any exist.
    ///
    /// # Panics
    /// If `lo` is compacted (the caller must send a snapshot instead).
    pub(crate) fn entries_from(&self, lo: Index, max_bytes: u64) -> Vec<Entry> {
        assert!(lo > self.snapshot_index, "entries_from({lo}): compacted into the snapshot");
        if lo > self.last_index() {
            return Vec::new();
        }
        let mut size = 0;
        let mut out = Vec::new();
        for e in &self.entries[self.position(lo)..] {
            size += e.size_bytes();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// The entries between `lo` and `hi` inclusive (all held).
    pub(crate) fn slice(&self, lo: Index, hi: Index) -> &[Entry] {
        if lo > hi {
            return &[];
        }
        &self.entries[self.position(lo)..=self.position(hi)]
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Leader: appends a new entry at the end and returns its index.
    pub(crate) fn append(&mut self, term: Term, data: bytes::Bytes) -> Index {
        let index = self.last_index() + 1;
        self.entries.push(Entry { term, index, data });
        index
    }

    /// Follower: the AppendEntries consistency check and append (Figure 2, receiver steps 2–4).
    /// Returns the last index now known to match the leader's log.
    pub(crate) fn try_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
    ) -> Result<Index, Conflict> {
        let last_new = prev_log_index + entries.len() as u64;
        if prev_log_index < self.snapshot_index {
            // The prefix up to our snapshot is committed, so it matches the leader's; skip the
            // entries the snapshot already covers.
            let skip = (self.snapshot_index - prev_log_index) as usize;
            if skip >= entries.len() {
                // Claim no more than the leader sent: it checks answers against that.
                return Ok(last_new);
            }
            let rest = &entries[skip..];
            return self.try_append(self.snapshot_index, self.snapshot_term, rest);
        }
        match self.term(prev_log_index) {
            None => {
                return Err(Conflict {
                    conflict_term: None,
                    conflict_index: self.last_index() + 1,
                });
            }
            Some(term) if term != prev_log_term => {
                let mut first = prev_log_index;
                while first > self.first_index() && self.term(first - 1) == Some(term) {
                    first -= 1;
                }
                return Err(Conflict { conflict_term: Some(term), conflict_index: first });
            }
            Some(_) => {}
        }
        // Find the first entry we do not already have; everything before it matches.
        let new_from = entries.iter().position(|e| self.term(e.index) != Some(e.term));
        if let Some(pos) = new_from {
            let at = entries[pos].index;
            if at <= self.last_index() {
                self.truncate_from(at);
            }
            self.entries.extend_from_slice(&entries[pos..]);
        }
        Ok(last_new)
    }

    /// The first of `entries` that [`try_append`](Self::try_append) would write over a
    /// committed entry of another term, if any. A correct leader never sends one (its log
    /// holds every committed entry, §5.4.3); this catches a forged or corrupted AppendEntries
    /// before it reaches the assertion in `truncate_from`.
    pub(crate) fn committed_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .filter(|e| e.index > self.snapshot_index && e.index <= self.commit_index)
            .find(|e| self.term(e.index) != Some(e.term))
            .map(|e| e.index)
    }

    /// Planted bug only: removes the entries after `index` (which must be above the commit
    /// index), as [`truncate_from`](Self::truncate_from) does.
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn planted_truncate_after(&mut self, index: Index) {
        if index < self.last_index() {
            self.truncate_from(index + 1);
        }
    }

    /// Removes the entries from `index` on (a conflicting suffix, §5.3).
    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.commit_index,
            "refusing to overwrite committed entry {index} (commit index {})",
            self.commit_index
        );
        let keep = self.position(index);
        self.entries.truncate(keep);
        self.unpersist_after(index - 1);
    }

    /// The last index of `term` in the log, if it holds any entry of that term.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        if term == self.snapshot_term && self.entries.iter().all(|e| e.term != term) {
            return Some(self.snapshot_index).filter(|&i| i > 0);
        }
        self.entries.iter().rev().find(|e| e.term == term).map(|e| e.index)
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        if index > self.commit_index {
            self.commit_index = index;
        }
    }

    /// Service snapshot at `index` (≤ `last_applied`): drops the entries it covers.
    pub(crate) fn compact(&mut self, index: Index) {
        assert!(index <= self.last_applied, "compact({index}) beyond last applied");
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("index is held");
        let drop = self.position(index) + 1;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Installs a snapshot received from the leader (§7, receiver steps 6–7): keeps the entries
    /// after it if the log agrees at its last index, else discards the whole log.
    pub(crate) fn install(&mut self, meta: &SnapshotMeta) {
        let index = meta.last_included_index;
        assert!(index > self.commit_index, "installing a snapshot at or below the commit index");
        if self.term(index) == Some(meta.last_included_term) {
            let drop = self.position(index) + 1;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
            self.unpersist_after(index);
        }
        self.snapshot_index = index;
        self.snapshot_term = meta.last_included_term;
        self.commit_index = index;
        self.stable_index = self.stable_index.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(terms: &[Term], from: Index) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry { term, index: from + i as u64, data: bytes::Bytes::new() })
            .collect()
    }

    fn log(terms: &[Term]) -> RaftLog {
        RaftLog::restore(0, 0, entries(terms, 1), 0)
    }

    #[test]
    fn terms_and_bounds() {
        let l = log(&[1, 1, 2]);
        assert_eq!((l.first_index(), l.last_index(), l.last_term()), (1, 3, 2));
        assert_eq!(l.term(0), Some(0));
        assert_eq!(l.term(3), Some(2));
        assert_eq!(l.term(4), None);
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let l = log(&[1, 2, 2]);
        assert!(l.is_up_to_date(1, 3));
        assert!(l.is_up_to_date(3, 2));
        assert!(!l.is_up_to_date(2, 2));
        assert!(!l.is_up_to_date(9, 1));
    }

    #[test]
    fn append_skips_what_matches_and_truncates_conflicts() {
        let mut l = log(&[1, 1, 1, 1]);
        // Already present: nothing changes, match reaches the end of the request only.
        assert_eq!(l.try_append(1, 1, &entries(&[1], 2)), Ok(2));
        assert_eq!(l.last_index(), 4);
        // Conflict at 3: entries 3.. replaced.
        assert_eq!(l.try_append(2, 1, &entries(&[2, 2], 3)), Ok(4));
        assert_eq!(l.term(3), Some(2));
        assert_eq!(l.stable_index, 2, "overwritten entries are no longer stable");
    }

    #[test]
    fn conflict_hints() {
        let mut l = log(&[1, 2, 2, 2]);
        assert_eq!(
            l.try_append(7, 2, &[]),
            Err(Conflict { conflict_term: None, conflict_index: 5 })
        );
        assert_eq!(
            l.try_append(4, 3, &[]),
            Err(Conflict { conflict_term: Some(2), conflict_index: 2 })
        );
        assert_eq!(l.last_index_of_term(2), Some(4));
        assert_eq!(l.last_index_of_term(3), None);
    }

    /// The conflict hint never reaches into the snapshot, even when the snapshot's last entry
    /// has the conflicting term: it names the first held entry of that term.
    #[test]
    fn conflict_hint_stops_at_the_first_held_entry() {
        let mut l = RaftLog::restore(3, 2, entries(&[2, 2], 4), 3);
        assert_eq!(
            l.try_append(5, 3, &[]),
            Err(Conflict { conflict_term: Some(2), conflict_index: 4 }),
            "the hint must not go below first_index 4 into the snapshot"
        );
    }

    /// A term held only as the snapshot's last entry ends at the snapshot index; a term that
    /// is neither held nor the snapshot's is not found, whatever the snapshot covers.
    #[test]
    fn last_index_of_a_term_that_ends_in_the_snapshot() {
        let l = RaftLog::restore(3, 2, entries(&[3, 3], 4), 3);
        assert_eq!(l.last_index_of_term(2), Some(3), "term 2 ends with the snapshot at 3");
        assert_eq!(l.last_index_of_term(3), Some(5));
        assert_eq!(l.last_index_of_term(1), None, "term 1 is neither held nor the snapshot's");
    }

    /// Without a snapshot, term 0 is only the empty log's sentinel at index 0, not an entry.
    #[test]
    fn term_zero_is_not_in_a_log_without_a_snapshot() {
        let l = log(&[1, 2]);
        assert_eq!(l.last_index_of_term(0), None, "index 0 holds no entry");
        assert_eq!(RaftLog::restore(0, 0, vec![], 0).last_index_of_term(0), None);
    }

    /// Entries the snapshot covers, its last one included, are skipped by `try_append`, so
    /// `committed_conflict` does not report them even where their term differs; a differing
    /// committed entry after the snapshot is reported.
    #[test]
    fn committed_conflict_ignores_what_the_snapshot_covers() {
        let mut l = RaftLog::restore(3, 2, entries(&[2, 2], 4), 5);
        let covered = entries(&[1, 1, 9, 2, 2], 1);
        assert_eq!(l.committed_conflict(&covered), None, "entry 3 is covered by the snapshot");
        assert_eq!(l.try_append(0, 0, &covered), Ok(5));
        assert_eq!((l.term(3), l.last_index()), (Some(2), 5), "the snapshot is untouched");
        assert_eq!(l.committed_conflict(&entries(&[2, 7], 4)), Some(5));
    }

    #[test]
    #[should_panic(expected = "refusing to overwrite committed entry")]
    fn committed_entries_are_never_overwritten() {
        let mut l = log(&[1, 1, 1]);
        l.commit_to(3);
        let _ = l.try_append(1, 1, &entries(&[2], 2));
    }

    #[test]
    fn compaction_and_requests_below_the_snapshot() {
        let mut l = log(&[1, 1, 2, 2]);
        l.commit_to(3);
        l.last_applied = 3;
        l.compact(3);
        assert_eq!((l.snapshot_index(), l.term(3), l.first_index()), (3, Some(2), 4));
        assert_eq!(l.term(2), None);
        assert_eq!(l.last_index_of_term(2), Some(4));
        // A request whose prefix lies inside the snapshot still appends the rest.
        assert_eq!(l.try_append(1, 1, &entries(&[1, 2, 2, 3], 2)), Ok(5));
        assert_eq!(l.term(5), Some(3));
        // One wholly inside it matches too, and claims no more than the request carried.
        assert_eq!(l.try_append(1, 1, &entries(&[1], 2)), Ok(2));
    }

    #[test]
    fn install_keeps_a_matching_suffix_or_clears() {
        let mut l = log(&[1, 1, 2, 2]);
        l.install(&SnapshotMeta { last_included_index: 2, last_included_term: 1, voters: vec![] });
        assert_eq!((l.first_index(), l.last_index(), l.commit_index), (3, 4, 2));
        let mut l = log(&[1, 1]);
        l.install(&SnapshotMeta { last_included_index: 5, last_included_term: 3, voters: vec![] });
        assert_eq!((l.last_index(), l.last_term(), l.stable_index), (5, 3, 5));
    }

    #[test]
    fn entries_from_respects_the_byte_limit_but_sends_one() {
        let l = log(&[1, 1, 1]);
        assert_eq!(l.entries_from(1, 0).len(), 1);
        let two = l.entries[0].size_bytes() + l.entries[1].size_bytes();
        assert_eq!(l.entries_from(1, two).len(), 2);
        assert_eq!(l.entries_from(1, two - 1).len(), 1);
        assert_eq!(l.entries_from(1, u64::MAX).len(), 3);
        assert!(l.entries_from(4, 100).is_empty());
    }
}
