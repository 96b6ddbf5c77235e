//! Where a node's log, hard state and snapshot are kept: the [`Storage`] trait and
//! [`MemStorage`].

use std::sync::{Arc, Mutex, MutexGuard};

use crate::ready::PersistedState;
use crate::types::{Entry, HardState, Snapshot};

/// Why storage could not do what was asked. After any error the node must stop: it cannot know
/// what is durable. Except for lack of space ([`is_no_space`](StorageError::is_no_space)),
/// where an implementation may promise that the call took no effect, so that it can be
/// retried (see [`Storage::persist`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O operation failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data failed its checksum or does not parse, somewhere other than a torn tail.
    #[error("storage is corrupt: {0}")]
    Corruption(String),
    /// The caller broke the contract (for example, entries that leave a hole in the log).
    #[error("invalid storage request: {0}")]
    Invalid(String),
}

impl StorageError {
    /// Whether the disk is full (`ENOSPC`) or over its quota (`EDQUOT`): not damage, and
    /// possibly over once space is freed.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Io(e) => {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            }
            _ => false,
        }
    }
}

/// Durable storage for one Raft node: its log, hard state and latest snapshot.
///
/// # Contract
///
/// 1. **Durability.** When [`persist`](Storage::persist) returns `Ok`, what it was given
///    survives a crash of the process and of the machine. A node sends messages that depend on
///    this state only after `persist` returns. One exception: a hard state that changes only
///    the commit index need not be synced (it may be lost in a machine crash, leaving an older
///    commit index, which the node relearns from the leader); it must still be applied in
///    order, never after a later call's state.
/// 2. **Atomic order.** Within one call the snapshot is applied first, then the entries, then
///    the hard state. After a crash in the middle of a call, [`initial_state`] returns either
///    the state before the call or the state after some prefix of those three steps, never a
///    mix that loses an earlier step.
/// 3. **No holes.** The entries returned by `initial_state` are contiguous and start right
///    after the snapshot (entries the snapshot covers are dropped).
/// 4. **Suffix replacement.** Entries given to `persist` replace every stored entry at or after
///    their first index.
/// 5. **Snapshots replace prefixes.** A persisted snapshot drops the entries it covers; if the
///    stored log does not contain its last included entry (same index and term), the whole log
///    is dropped.
///
/// [`initial_state`]: Storage::initial_state
pub trait Storage: Send {
    /// What is durable now: the state a restarted node starts from.
    ///
    /// # Errors
    /// [`StorageError`] if the state cannot be read, or is corrupt.
    fn initial_state(&self) -> Result<PersistedState, StorageError>;

    /// Makes the persist part of a [`Ready`](crate::Ready) durable (see the contract).
    ///
    /// # Errors
    /// [`StorageError`]; the node must then stop. An error that
    /// [`is_no_space`](StorageError::is_no_space) is the exception if the implementation
    /// documents that such a call changed nothing ([`FileStorage`](crate::FileStorage)
    /// does): the node then holds back everything that depends on the call and retries it
    /// until it succeeds.
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError>;

    /// Bytes of Raft state held besides the snapshot's data: the log and the hard state. The
    /// service compacts the log when this passes its limit.
    fn raft_state_size(&self) -> u64;
}

/// In-memory storage, as the course's persister: every `persist` is "durable" at once, and a
/// crash is modelled by [`MemStorage::crash_copy`], which keeps exactly what was persisted.
///
/// Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Arc<Mutex<Image>>,
}

/// A [`PersistedState`] and the byte size of its entries, kept up to date as it changes (so
/// that [`Storage::raft_state_size`] costs nothing however long the log).
#[derive(Debug, Clone, Default)]
pub(crate) struct Image {
    pub(crate) state: PersistedState,
    /// The sum of [`Entry::size_bytes`] over `state.entries`.
    pub(crate) entry_bytes: u64,
}

impl Image {
    pub(crate) fn new(state: PersistedState) -> Image {
        let entry_bytes = state.entries.iter().map(Entry::size_bytes).sum();
        Image { state, entry_bytes }
    }

    /// Whether [`apply`](Self::apply) would accept this call (it changes nothing either way).
    pub(crate) fn check(
        &self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        check_persist(&self.state, snapshot, entries)
    }

    /// Applies one persist call (see [`apply_persist`]).
    pub(crate) fn apply(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        apply_persist(&mut self.state, &mut self.entry_bytes, hard_state, snapshot, entries)
    }

    /// Bytes of Raft state besides the snapshot: the log and the hard state.
    pub(crate) fn raft_state_size(&self) -> u64 {
        HARD_STATE_BYTES + self.entry_bytes
    }
}

/// Bytes a hard state takes in the size accounting: three 8-byte fields.
const HARD_STATE_BYTES: u64 = 24;

impl MemStorage {
    /// Empty storage, as for a brand-new node.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A separate copy of what is persisted now: what a node restarted after a crash would see.
    /// The old instance may keep writing into `self` without affecting the copy.
    pub fn crash_copy(&self) -> MemStorage {
        MemStorage { state: Arc::new(Mutex::new(self.lock().clone())) }
    }

    /// The persisted snapshot, if any.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.lock().state.snapshot.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        // A panic while holding the lock cannot leave the state half-written: every update
        // below is computed first and assigned last.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Applies one persist call to `state`, following the contract, in place, keeping
/// `entry_bytes` (the entries' total [`Entry::size_bytes`]) up to date. Checks the request
/// first, so a refused call changes nothing.
fn apply_persist(
    state: &mut PersistedState,
    entry_bytes: &mut u64,
    hard_state: Option<HardState>,
    snapshot: Option<&Snapshot>,
    entries: &[Entry],
) -> Result<(), StorageError> {
    check_persist(state, snapshot, entries)?;
    let keeps_suffix = keeps_suffix(state, snapshot);
    let after = snapshot.or(state.snapshot.as_ref()).map_or(0, |s| s.meta.last_included_index);
    if let Some(snap) = snapshot {
        let keep_from = if keeps_suffix {
            state.entries.partition_point(|e| e.index <= after)
        } else {
            state.entries.len()
        };
        *entry_bytes -= state.entries.drain(..keep_from).map(|e| e.size_bytes()).sum::<u64>();
        state.snapshot = Some(snap.clone());
    }
    if let Some(first) = entries.first() {
        let keep = state.entries.partition_point(|e| e.index < first.index);
        *entry_bytes -= state.entries.drain(keep..).map(|e| e.size_bytes()).sum::<u64>();
        *entry_bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
        state.entries.extend_from_slice(entries);
    }
    if let Some(hs) = hard_state {
        state.hard_state = hs;
    }
    Ok(())
}

/// Whether the log keeps its entries after `snapshot` (it holds the snapshot's last entry).
fn keeps_suffix(state: &PersistedState, snapshot: Option<&Snapshot>) -> bool {
    snapshot.is_none_or(|snap| {
        let (index, term) = (snap.meta.last_included_index, snap.meta.last_included_term);
        state.entries.iter().any(|e| e.index == index && e.term == term)
    })
}

/// Checks a persist call against `state` (the contract's rules on entries), changing nothing.
fn check_persist(
    state: &PersistedState,
    snapshot: Option<&Snapshot>,
    entries: &[Entry],
) -> Result<(), StorageError> {
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(StorageError::Invalid(format!(
                "entries are not contiguous: {} then {}",
                pair[0].index, pair[1].index
            )));
        }
    }
    // Where the log would stand after the snapshot step.
    let keeps_suffix = keeps_suffix(state, snapshot);
    let after = snapshot.or(state.snapshot.as_ref()).map_or(0, |s| s.meta.last_included_index);
    let log_last = match state.entries.last() {
        Some(e) if keeps_suffix && e.index > after => e.index,
        _ => after,
    };
    if let Some(first) = entries.first()
        && (first.index > log_last + 1 || first.index <= after)
    {
        return Err(StorageError::Invalid(format!(
            "entries start at {} but the log continues at {}",
            first.index,
            log_last + 1
        )));
    }
    Ok(())
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<PersistedState, StorageError> {
        Ok(self.lock().state.clone())
    }

    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.lock().apply(hard_state, snapshot, entries)
    }

    fn raft_state_size(&self) -> u64 {
        self.lock().raft_state_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_passes_the_conformance_suite() {
        crate::testing::storage_suite(MemStorage::new, |s| s.crash_copy());
    }

    #[test]
    fn crash_copy_is_independent() {
        let mut s = MemStorage::new();
        let hs = HardState { current_term: 3, voted_for: Some(2), commit_index: 0 };
        s.persist(Some(hs), None, &[]).unwrap();
        let copy = s.crash_copy();
        s.persist(Some(HardState { current_term: 4, ..hs }), None, &[]).unwrap();
        assert_eq!(copy.initial_state().unwrap().hard_state, hs);
        assert_eq!(s.initial_state().unwrap().hard_state.current_term, 4);
    }
}
