//! Blocks: sorted entries with prefix-compressed keys and restart points, and a cursor that
//! walks them one entry at a time without allocating.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::Bytes;

use super::{compare_keys, varint};
use crate::format::RESTART_INTERVAL;

/// Builds one block from entries added in key order.
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    /// An empty block.
    pub(crate) fn new() -> BlockBuilder {
        BlockBuilder { buf: Vec::new(), restarts: Vec::new(), last_key: Vec::new(), count: 0 }
    }

    /// Appends an entry; `key` must sort after the previous one.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            key.iter().zip(&self.last_key).take_while(|(a, b)| a == b).count()
        };
        varint::put(&mut self.buf, shared as u64);
        varint::put(&mut self.buf, (key.len() - shared) as u64);
        varint::put(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    /// True if no entry was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size of the block if it were finished now.
    pub(crate) fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// The block's bytes: entries, restart offsets, restart count.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.buf
    }
}

/// A parsed block: its bytes (shared, not copied) and where its restart array is.
///
/// Every accessor checks bounds: a damaged block makes a cursor report
/// [`corrupt`](BlockIter::is_corrupt), never panic.
#[derive(Clone)]
pub(crate) struct Block {
    data: Bytes,
    /// Where the restart array starts (= where the entries end).
    restarts_at: usize,
    /// Number of restart points.
    restarts: usize,
}

/// Decodes a varint at `*at`, with a fast path for the one-byte case (lengths below 128).
#[inline]
fn varint_at(buf: &[u8], at: &mut usize) -> Option<usize> {
    let byte = *buf.get(*at)?;
    if byte < 0x80 {
        *at += 1;
        return Some(usize::from(byte));
    }
    usize::try_from(varint::get(buf, at)?).ok()
}

/// An entry's header: (shared key bytes, unshared key bytes, value bytes), after which `at`
/// points at the unshared key suffix.
#[inline]
fn entry_header(buf: &[u8], at: &mut usize) -> Option<(usize, usize, usize)> {
    Some((varint_at(buf, at)?, varint_at(buf, at)?, varint_at(buf, at)?))
}

impl Block {
    /// Parses a block's trailer; `None` if the restart array does not fit or points outside
    /// the entries.
    pub(crate) fn new(data: Bytes) -> Option<Block> {
        let n_at = data.len().checked_sub(4)?;
        let restarts = u32::from_le_bytes(data[n_at..].try_into().ok()?) as usize;
        let restarts_at = n_at.checked_sub(restarts.checked_mul(4)?)?;
        let block = Block { data, restarts_at, restarts };
        (0..restarts)
            .all(|i| block.restart(i).is_some_and(|r| r < restarts_at.max(1)))
            .then_some(block)
    }

    /// A block with no entries.
    pub(crate) fn empty() -> Block {
        Block { data: Bytes::new(), restarts_at: 0, restarts: 0 }
    }

    fn restart(&self, i: usize) -> Option<usize> {
        let at = self.restarts_at.checked_add(i.checked_mul(4)?)?;
        let word = self.data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
    }

    /// The key stored whole at restart point `i` (its entry must share nothing with the one
    /// before it); `None` if the entry there is damaged.
    fn restart_key(&self, i: usize) -> Option<&[u8]> {
        let entries = &self.data[..self.restarts_at];
        let mut at = self.restart(i)?;
        let (shared, unshared, _) = entry_header(entries, &mut at)?;
        if shared != 0 {
            return None;
        }
        entries.get(at..at.checked_add(unshared)?)
    }

    /// Every entry, in order, copied out (for tests).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut it = BlockIter::new(self.clone());
        let mut out = Vec::new();
        it.seek_to_first();
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        out
    }
}

/// A cursor over one block's entries. It decodes one entry at a time into a key buffer it
/// reuses, and exposes the value as a range of the block's bytes: stepping allocates nothing.
pub(crate) struct BlockIter {
    block: Block,
    /// The current entry's key (valid only while `valid`).
    key: Vec<u8>,
    /// Where the current entry's value lies in the block.
    value: Range<usize>,
    /// Where the entry after the current one starts.
    next_at: usize,
    valid: bool,
    /// An entry failed to decode: the block is damaged.
    corrupt: bool,
}

impl BlockIter {
    /// A cursor over `block`, not yet positioned (call [`seek`](Self::seek) or
    /// [`seek_to_first`](Self::seek_to_first)).
    pub(crate) fn new(block: Block) -> BlockIter {
        BlockIter { block, key: Vec::new(), value: 0..0, next_at: 0, valid: false, corrupt: false }
    }

    /// Moves the cursor to another block, keeping its key buffer; not yet positioned.
    pub(crate) fn reset(&mut self, block: Block) {
        self.block = block;
        self.key.clear();
        self.value = 0..0;
        self.next_at = 0;
        self.valid = false;
        self.corrupt = false;
    }

    /// True if the cursor is on an entry.
    #[inline]
    pub(crate) fn valid(&self) -> bool {
        self.valid
    }

    /// True if the cursor stopped because an entry did not decode.
    pub(crate) fn is_corrupt(&self) -> bool {
        self.corrupt
    }

    /// The current entry's key (empty if not [`valid`](Self::valid)).
    #[inline]
    pub(crate) fn key(&self) -> &[u8] {
        if self.valid { &self.key } else { &[] }
    }

    /// The current entry's value (empty if not [`valid`](Self::valid)).
    #[inline]
    pub(crate) fn value(&self) -> &[u8] {
        if self.valid { &self.block.data[self.value.clone()] } else { &[] }
    }

    /// The current entry's value as a slice of the block's bytes (no copy).
    pub(crate) fn value_bytes(&self) -> Bytes {
        if self.valid { self.block.data.slice(self.value.clone()) } else { Bytes::new() }
    }

    /// Positions the cursor on the first entry (not valid if the block is empty).
    pub(crate) fn seek_to_first(&mut self) {
        self.key.clear();
        self.next_at = 0;
        self.corrupt = false;
        self.next();
    }

    /// Positions the cursor on the first entry whose key is at or after `target` (in
    /// internal-key order); not valid if there is none.
    pub(crate) fn seek(&mut self, target: &[u8]) {
        self.corrupt = false;
        // Binary search for the first restart point whose key is at or after the target; the
        // entry sought lies between the restart point before it and it.
        let (mut lo, mut hi) = (0usize, self.block.restarts);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(key) = self.block.restart_key(mid) else {
                return self.fail();
            };
            if compare_keys(key, target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = if lo == 0 { Some(0) } else { self.block.restart(lo - 1) };
        let Some(start) = start else { return self.fail() };
        self.key.clear();
        self.next_at = start;
        while self.next() {
            if compare_keys(&self.key, target) != Ordering::Less {
                return;
            }
        }
    }

    /// Steps to the next entry; returns whether the cursor is on one.
    #[inline]
    pub(crate) fn next(&mut self) -> bool {
        let entries = &self.block.data[..self.block.restarts_at];
        let mut at = self.next_at;
        if at >= entries.len() {
            self.valid = false;
            return false;
        }
        let Some((shared, unshared, value_len)) = entry_header(entries, &mut at) else {
            self.fail();
            return false;
        };
        let key_end = at.checked_add(unshared);
        let value_end = key_end.and_then(|k| k.checked_add(value_len));
        let (Some(key_end), Some(value_end)) = (key_end, value_end) else {
            self.fail();
            return false;
        };
        if shared > self.key.len() || value_end > entries.len() {
            self.fail();
            return false;
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(&entries[at..key_end]);
        self.value = key_end..value_end;
        self.next_at = value_end;
        self.valid = true;
        true
    }

    fn fail(&mut self) {
        self.valid = false;
        self.corrupt = true;
    }
}
