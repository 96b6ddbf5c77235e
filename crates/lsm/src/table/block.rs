//! Blocks: sorted entries with prefix-compressed keys and restart points.

use std::cmp::Ordering;

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
    pub(crate) fn new() -> BlockBuilder {
        BlockBuilder { buf: Vec::new(), restarts: Vec::new(), last_key: Vec::new(), count: 0 }
    }

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

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

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

/// A parsed block. Every accessor checks bounds: a damaged block yields `None` or fewer
/// entries, never a panic.
pub(crate) struct Block {
    data: Vec<u8>,
    /// Where the restart array starts (= where the entries end).
    restarts_at: usize,
    restarts: usize,
}

impl Block {
    pub(crate) fn new(data: Vec<u8>) -> Option<Block> {
        let n_at = data.len().checked_sub(4)?;
        let restarts = u32::from_le_bytes(data[n_at..].try_into().ok()?) as usize;
        let restarts_at = n_at.checked_sub(restarts.checked_mul(4)?)?;
        let block = Block { data, restarts_at, restarts };
        (0..restarts)
            .all(|i| block.restart(i).is_some_and(|r| r < restarts_at.max(1)))
            .then_some(block)
    }

    fn restart(&self, i: usize) -> Option<usize> {
        let at = self.restarts_at + 4 * i;
        Some(u32::from_le_bytes(self.data.get(at..at + 4)?.try_into().ok()?) as usize)
    }

    /// Decodes the entry at `*at` onto `key` (which holds the previous key); returns the value.
    fn next(&self, at: &mut usize, key: &mut Vec<u8>) -> Option<Vec<u8>> {
        if *at >= self.restarts_at {
            return None;
        }
        let shared = varint::get(&self.data, at)? as usize;
        let unshared = varint::get(&self.data, at)? as usize;
        let value_len = varint::get(&self.data, at)? as usize;
        if shared > key.len() {
            return None;
        }
        let key_end = at.checked_add(unshared)?;
        let value_end = key_end.checked_add(value_len)?;
        if value_end > self.restarts_at {
            return None;
        }
        key.truncate(shared);
        key.extend_from_slice(&self.data[*at..key_end]);
        let value = self.data[key_end..value_end].to_vec();
        *at = value_end;
        Some(value)
    }

    /// Every entry, in order.
    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let (mut at, mut key) = (0, Vec::new());
        while let Some(value) = self.next(&mut at, &mut key) {
            out.push((key.clone(), value));
        }
        out
    }

    /// The first entry whose key is at or after `target`.
    pub(crate) fn seek(&self, target: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        // Binary search for the last restart point whose key is before the target.
        let (mut lo, mut hi) = (0usize, self.restarts);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let mut at = self.restart(mid)?;
            let mut key = Vec::new();
            self.next(&mut at, &mut key)?;
            if compare_keys(&key, target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut at = if lo == 0 { 0 } else { self.restart(lo - 1)? };
        let mut key = Vec::new();
        while let Some(value) = self.next(&mut at, &mut key) {
            if compare_keys(&key, target) != Ordering::Less {
                return Some((key, value));
            }
        }
        None
    }
}
