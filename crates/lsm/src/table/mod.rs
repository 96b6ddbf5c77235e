//! Sorted string tables: immutable files of sorted internal keys.
//!
//! ```text
//! table    := data_block* filter index footer
//! block    := entry* restart:u32le{n} n:u32le  crc:u32le    (crc32 of everything before it)
//! entry    := shared:varint unshared:varint value_len:varint key_suffix value
//!             -- the key is the previous key's first `shared` bytes followed by key_suffix;
//!             -- every RESTART_INTERVAL-th entry has shared = 0 and its offset in restart[]
//! filter   := bloom_bits  k:u8  crc:u32le                   (over the table's user keys)
//! index    := block whose entries map the last key of each data block to its handle
//! handle   := offset:u64le  size:u64le                       (size excludes the crc)
//! footer   := filter:handle  index:handle  version:u32le  magic:u64le  crc:u32le
//!             -- 48 bytes; crc covers the 44 before it
//! key      := user_key  trailer:u64le                        (trailer = seq << 8 | kind;
//!                                                            kind 1 = value, 0 = tombstone)
//! ```
//!
//! Keys sort by user key ascending, then sequence number descending, as in the memtable.

mod block;
mod bloom;
mod varint;

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{TABLE_FOOTER_BYTES, TABLE_MAGIC, TABLE_VERSION};
use crate::fs::{FileSystem, RandomAccessFile, WritableFile};
use crate::memtable::{Lookup, Value};

pub(crate) use block::{Block, BlockBuilder, BlockIter};
pub(crate) use bloom::Bloom;

const KIND_TOMBSTONE: u64 = 0;
const KIND_VALUE: u64 = 1;

/// Encodes an internal key: `user_key ‖ (seq << 8 | kind) as u64 LE`.
pub(crate) fn internal_key(user_key: &[u8], seq: u64, is_value: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 8);
    k.extend_from_slice(user_key);
    let kind = if is_value { KIND_VALUE } else { KIND_TOMBSTONE };
    k.extend_from_slice(&((seq << 8) | kind).to_le_bytes());
    k
}

/// Splits an internal key into (user key, seq, is_value).
pub(crate) fn split_key(key: &[u8]) -> Option<(&[u8], u64, bool)> {
    let split = key.len().checked_sub(8)?;
    let (user, trailer) = key.split_at(split);
    let mut word = [0u8; 8];
    word.copy_from_slice(trailer);
    let t = u64::from_le_bytes(word);
    Some((user, t >> 8, t & 0xff == KIND_VALUE))
}

/// The order of internal keys: user key ascending, then sequence number descending.
#[inline]
pub(crate) fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    match (split_key(a), split_key(b)) {
        (Some((ua, sa, _)), Some((ub, sb, _))) => compare_bytes(ua, ub).then(sb.cmp(&sa)),
        _ => a.cmp(b),
    }
}

/// Lexicographic byte order, as `a.cmp(b)`, eight bytes at a time: keys are short, and for
/// them this beats a call to `memcmp`.
#[inline]
pub(crate) fn compare_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (mut x, mut y) = (&a[..n], &b[..n]);
    while let (Some((wx, rx)), Some((wy, ry))) = (x.split_first_chunk(), y.split_first_chunk()) {
        if wx != wy {
            return u64::from_be_bytes(*wx).cmp(&u64::from_be_bytes(*wy));
        }
        (x, y) = (rx, ry);
    }
    for (bx, by) in x.iter().zip(y) {
        if bx != by {
            return bx.cmp(by);
        }
    }
    a.len().cmp(&b.len())
}

/// Where a block lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    offset: u64,
    size: u64,
}

impl Handle {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Option<Handle> {
        let offset = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let size = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Handle { offset, size })
    }
}

/// Writes a table from keys added in order.
pub(crate) struct TableBuilder {
    file: Box<dyn WritableFile>,
    offset: u64,
    block: BlockBuilder,
    index: BlockBuilder,
    last_key: Vec<u8>,
    user_keys: Vec<Vec<u8>>,
    block_bytes: usize,
    entries: u64,
}

/// Target size of a data block before compression of nothing (keys and values as they are).
pub(crate) const BLOCK_BYTES: usize = 4096;

impl TableBuilder {
    pub(crate) fn new(file: Box<dyn WritableFile>) -> TableBuilder {
        TableBuilder {
            file,
            offset: 0,
            block: BlockBuilder::new(),
            index: BlockBuilder::new(),
            last_key: Vec::new(),
            user_keys: Vec::new(),
            block_bytes: BLOCK_BYTES,
            entries: 0,
        }
    }

    /// Adds one version of a key; keys must come in internal-key order.
    ///
    /// # Panics
    /// If `user_key, seq` does not sort after the previous key (a bug in the caller).
    pub(crate) fn add(&mut self, user_key: &[u8], seq: u64, value: &Value) -> std::io::Result<()> {
        let (is_value, bytes): (bool, &[u8]) = match value {
            Value::Put(v) => (true, v),
            Value::Tombstone => (false, &[]),
        };
        let key = internal_key(user_key, seq, is_value);
        assert!(
            self.entries == 0 || compare_keys(&self.last_key, &key) == Ordering::Less,
            "table keys out of order"
        );
        if self.user_keys.last().is_none_or(|k| k.as_slice() != user_key) {
            self.user_keys.push(user_key.to_vec());
        }
        self.block.add(&key, bytes);
        self.last_key = key;
        self.entries += 1;
        if self.block.size_estimate() >= self.block_bytes {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Adds an entry already in table form: an internal key (see [`internal_key`]) and its
    /// value bytes, as a [`TableIter`] yields them.
    ///
    /// # Panics
    /// If the key is shorter than its trailer or does not sort after the previous key.
    pub(crate) fn add_internal(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let (user_key, _, _) = split_key(key).expect("an internal key has a trailer");
        assert!(
            self.entries == 0 || compare_keys(&self.last_key, key) == Ordering::Less,
            "table keys out of order"
        );
        if self.user_keys.last().is_none_or(|k| k.as_slice() != user_key) {
            self.user_keys.push(user_key.to_vec());
        }
        self.block.add(key, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        if self.block.size_estimate() >= self.block_bytes {
            self.flush_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self, bytes: &[u8]) -> std::io::Result<Handle> {
        let handle = Handle { offset: self.offset, size: bytes.len() as u64 };
        let mut framed = Vec::with_capacity(bytes.len() + 4);
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        self.file.append(&framed)?;
        self.offset += framed.len() as u64;
        Ok(handle)
    }

    fn flush_block(&mut self) -> std::io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.block, BlockBuilder::new()).finish();
        let handle = self.write_block(&block)?;
        let mut value = Vec::with_capacity(16);
        handle.encode(&mut value);
        let last = self.last_key.clone();
        self.index.add(&last, &value);
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.offset + self.block.size_estimate() as u64
    }

    /// Writes the filter, index and footer, and syncs the file. Returns the number of entries
    /// and the file's size.
    pub(crate) fn finish(mut self) -> std::io::Result<(u64, u64)> {
        self.flush_block()?;
        let bloom = Bloom::build(self.user_keys.iter().map(Vec::as_slice), 10);
        let filter = self.write_block(&bloom.encode())?;
        let index_bytes = std::mem::replace(&mut self.index, BlockBuilder::new()).finish();
        let index = self.write_block(&index_bytes)?;
        let mut footer = Vec::with_capacity(TABLE_FOOTER_BYTES);
        filter.encode(&mut footer);
        index.encode(&mut footer);
        footer.extend_from_slice(&TABLE_VERSION.to_le_bytes());
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        self.file.append(&footer)?;
        self.offset += footer.len() as u64;
        self.file.sync()?;
        Ok((self.entries, self.offset))
    }
}

/// A table's index, decoded once when the table is opened: for each data block, the last key
/// in it and where it lies. Keys are packed into one buffer, and a dense array of 8-byte key
/// prefixes serves the binary search, so a lookup touches few cache lines and decodes nothing.
#[derive(Default)]
struct Index {
    /// Every block's last key, concatenated.
    keys: Vec<u8>,
    /// For block i: where its last key ends in `keys`, and its handle.
    blocks: Vec<(usize, Handle)>,
    /// The bytes every block's last user key starts with.
    common: Vec<u8>,
    /// For block i: the first 8 bytes of its last user key after `common` (zero-padded), as a
    /// big-endian number, so numbers order as the keys do. Empty if some key is too short to be
    /// an internal key (then `find` compares whole keys).
    prefixes: Vec<u64>,
}

/// The first 8 bytes of `bytes`, zero-padded, big-endian: if `prefix_word(a) < prefix_word(b)`
/// then `a < b` (and likewise for `>`); equal words say nothing.
fn prefix_word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(word)
}

impl Index {
    /// Adds the next block: its last key and its handle.
    fn push(&mut self, last_key: &[u8], handle: Handle) {
        self.keys.extend_from_slice(last_key);
        self.blocks.push((self.keys.len(), handle));
    }

    /// Prepares the prefixes for `find`, once every block is in.
    fn build_prefixes(&mut self) {
        let n = self.len();
        let users: Option<Vec<&[u8]>> =
            (0..n).map(|i| split_key(self.key(i)).map(|(user, _, _)| user)).collect();
        let Some(users) = users else { return };
        let (Some(first), Some(last)) = (users.first(), users.last()) else { return };
        // User keys ascend, so what the first and last share, all share.
        let common = first.iter().zip(*last).take_while(|(a, b)| a == b).count();
        let prefixes = users.iter().map(|user| prefix_word(&user[common..])).collect();
        self.common = first[..common].to_vec();
        self.prefixes = prefixes;
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    /// The last key of block `i`.
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.blocks[i - 1].0 };
        &self.keys[start..self.blocks[i].0]
    }

    /// The first block whose last key is at or after `target`: the only block that can hold
    /// the first entry at or after it (`len()` if every key is before it).
    fn find(&self, target: &[u8]) -> usize {
        let user = match split_key(target) {
            Some((user, _, _)) if !self.prefixes.is_empty() => user,
            _ => return self.search(0, self.len(), target),
        };
        let c = self.common.len();
        let head = &user[..user.len().min(c)];
        match head.cmp(&self.common[..head.len()]) {
            Ordering::Less => return 0,
            Ordering::Greater => return self.len(),
            // A proper prefix of every user key sorts before all of them.
            Ordering::Equal if user.len() < c => return 0,
            Ordering::Equal => {}
        }
        // Blocks whose word is below the target's end before it; above it, after it. Only
        // those with the same word need whole keys compared.
        let word = prefix_word(&user[c..]);
        let lo = self.prefixes.partition_point(|&p| p < word);
        let hi = lo + self.prefixes[lo..].iter().take_while(|&&p| p == word).count();
        self.search(lo, hi, target)
    }

    /// The first block in `lo..hi` whose last key is at or after `target`, else `hi`.
    fn search(&self, mut lo: usize, mut hi: usize, target: &[u8]) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if compare_keys(self.key(mid), target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// An open table: its index and filter in memory, data blocks read on demand (through the
/// file's memory map for [`OsFs`](crate::OsFs): no copy).
///
/// A data block's checksum is checked the first time this `Table` reads the block, and not
/// again: an open table's bytes do not change (the [`RandomAccessFile`] contract), so a second
/// check would only repeat the first (and, for a block not otherwise in the CPU's caches, cost
/// more than the rest of a seek). Reopening the table checks every block afresh.
pub(crate) struct Table {
    path: PathBuf,
    file: Arc<dyn RandomAccessFile>,
    index: Index,
    bloom: Bloom,
    /// One bit per data block: its checksum has been checked.
    verified: Vec<AtomicU64>,
}

impl Table {
    /// Opens the table at `path`, checking its footer, index and filter.
    pub(crate) fn open(fs: &dyn FileSystem, path: &Path) -> Result<Table> {
        let file = fs.open_read(path)?;
        let corrupt = |offset: u64, detail: &str| Error::Corruption {
            file: path.to_path_buf(),
            offset,
            detail: detail.to_owned(),
        };
        let len = file.len();
        if len < TABLE_FOOTER_BYTES as u64 {
            return Err(corrupt(0, "too short to be a table"));
        }
        let footer_at = len - TABLE_FOOTER_BYTES as u64;
        let footer = file.read_at(footer_at, TABLE_FOOTER_BYTES)?;
        let (body, crc) = footer.split_at(TABLE_FOOTER_BYTES - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(corrupt(footer_at, "footer checksum mismatch"));
        }
        let magic = u64::from_le_bytes(body[36..44].try_into().expect("8 bytes"));
        if magic != TABLE_MAGIC {
            return Err(corrupt(footer_at, "not a table (bad magic number)"));
        }
        let version = u32::from_le_bytes(body[32..36].try_into().expect("4 bytes"));
        if version != TABLE_VERSION {
            return Err(corrupt(footer_at, &format!("unknown table format version {version}")));
        }
        let filter_handle = Handle::decode(&body[0..16]).expect("16 bytes");
        let index_handle = Handle::decode(&body[16..32]).expect("16 bytes");
        let read = |h: Handle| read_block(file.as_ref(), path, h, footer_at, true);
        let index_block = Block::new(read(index_handle)?)
            .ok_or_else(|| corrupt(index_handle.offset, "index block does not parse"))?;
        let bloom = Bloom::decode(read(filter_handle)?.to_vec())
            .ok_or_else(|| corrupt(filter_handle.offset, "filter does not parse"))?;
        let mut index = Index::default();
        let mut it = BlockIter::new(index_block);
        it.seek_to_first();
        while it.valid() {
            let handle = Handle::decode(it.value())
                .ok_or_else(|| corrupt(index_handle.offset, "bad block handle in the index"))?;
            index.push(it.key(), handle);
            it.next();
        }
        if it.is_corrupt() {
            return Err(corrupt(index_handle.offset, "index entry does not decode"));
        }
        index.build_prefixes();
        let verified = (0..index.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Table { path: path.to_path_buf(), file, index, bloom, verified })
    }

    fn corrupt(&self, offset: u64, detail: &str) -> Error {
        Error::Corruption { file: self.path.clone(), offset, detail: detail.to_owned() }
    }

    /// Data block `i` (read, and checked if it has not been yet).
    fn data_block(&self, i: usize) -> Result<Block> {
        let handle = self.index.blocks[i].1;
        let (word, bit) = (&self.verified[i / 64], 1u64 << (i % 64));
        // Relaxed suffices: a bit set means some thread checked these very bytes (which never
        // change); a bit not yet seen set costs only a second check.
        let checked = word.load(AtomicOrdering::Relaxed) & bit != 0;
        let bytes = read_block(self.file.as_ref(), &self.path, handle, self.file.len(), !checked)?;
        if !checked {
            // Only the first reads write: later ones share the word without contention.
            word.fetch_or(bit, AtomicOrdering::Relaxed);
        }
        Block::new(bytes).ok_or_else(|| self.corrupt(handle.offset, "data block does not parse"))
    }

    /// The newest version of `user_key` with a sequence number at most `seq`. A value found is
    /// a slice of the block (no copy).
    pub(crate) fn get(&self, user_key: &[u8], seq: u64) -> Result<Lookup> {
        if !self.bloom.may_contain(user_key) {
            return Ok(Lookup::Absent);
        }
        let target = internal_key(user_key, seq, true);
        // The first block whose last key is at or after the target holds it, if any does.
        let block_no = self.index.find(&target);
        if block_no == self.index.len() {
            return Ok(Lookup::Absent);
        }
        let mut it = BlockIter::new(self.data_block(block_no)?);
        it.seek(&target);
        if it.is_corrupt() {
            let offset = self.index.blocks[block_no].1.offset;
            return Err(self.corrupt(offset, "data block entry does not decode"));
        }
        if !it.valid() {
            return Ok(Lookup::Absent);
        }
        match split_key(it.key()) {
            Some((user, _, is_value)) if user == user_key => {
                Ok(if is_value { Lookup::Found(it.value_bytes()) } else { Lookup::Deleted })
            }
            _ => Ok(Lookup::Absent),
        }
    }

    /// The largest user key in the table.
    pub(crate) fn largest_user_key(&self) -> Option<&[u8]> {
        let n = self.index.len();
        (n > 0).then(|| self.index.key(n - 1)).and_then(split_key).map(|(user, _, _)| user)
    }

    /// Every entry in order, as (user key, seq, value); values share the table's memory.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Result<Vec<(Bytes, u64, Value)>> {
        let mut out = Vec::new();
        let mut it = BlockIter::new(Block::empty());
        for i in 0..self.index.len() {
            it.reset(self.data_block(i)?);
            it.seek_to_first();
            while it.valid() {
                let offset = self.index.blocks[i].1.offset;
                let Some((user, seq, is_value)) = split_key(it.key()) else {
                    return Err(self.corrupt(offset, "key shorter than its trailer"));
                };
                let v = if is_value { Value::Put(it.value_bytes()) } else { Value::Tombstone };
                out.push((Bytes::copy_from_slice(user), seq, v));
                it.next();
            }
            if it.is_corrupt() {
                let offset = self.index.blocks[i].1.offset;
                return Err(self.corrupt(offset, "data block entry does not decode"));
            }
        }
        Ok(out)
    }
}

/// Walks one table's entries in order, one data block at a time, with a block cursor (no
/// allocation per entry).
pub(crate) struct TableIter {
    table: Arc<Table>,
    block_no: usize,
    cursor: BlockIter,
}

impl TableIter {
    /// Positioned at the first entry at or after the internal key `target`.
    pub(crate) fn seek(table: Arc<Table>, target: &[u8]) -> Result<TableIter> {
        let block_no = table.index.find(target);
        let mut it = TableIter { table, block_no, cursor: BlockIter::new(Block::empty()) };
        if block_no < it.table.index.len() {
            it.cursor.reset(it.table.data_block(block_no)?);
            it.cursor.seek(target);
        }
        it.settle()?;
        Ok(it)
    }

    /// The table being walked.
    pub(crate) fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The current entry as (internal key, value) slices, if any.
    #[inline]
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.cursor.valid().then(|| (self.cursor.key(), self.cursor.value()))
    }

    /// The current value as a slice of the block's bytes (no copy); empty past the end.
    pub(crate) fn value_bytes(&self) -> Bytes {
        self.cursor.value_bytes()
    }

    /// Steps to the next entry (past the end: stays there).
    ///
    /// # Errors
    /// [`Error::Corruption`] if a block is damaged, or an I/O error reading one.
    #[inline]
    pub(crate) fn advance(&mut self) -> Result<()> {
        if self.cursor.next() && self.cursor.key().len() >= 8 {
            return Ok(());
        }
        self.settle()
    }

    /// After positioning: reports a damaged entry, and moves on to the next block while the
    /// cursor is past the end of its block.
    fn settle(&mut self) -> Result<()> {
        loop {
            if self.cursor.valid() {
                if self.cursor.key().len() < 8 {
                    return Err(self.damaged("key shorter than its trailer"));
                }
                return Ok(());
            }
            if self.cursor.is_corrupt() {
                return Err(self.damaged("data block entry does not decode"));
            }
            if self.block_no + 1 >= self.table.index.len() {
                return Ok(());
            }
            self.block_no += 1;
            self.cursor.reset(self.table.data_block(self.block_no)?);
            self.cursor.seek_to_first();
        }
    }

    fn damaged(&self, detail: &str) -> Error {
        let offset = self.table.index.blocks.get(self.block_no).map_or(0, |b| b.1.offset);
        self.table.corrupt(offset, detail)
    }
}

/// Reads the block at `h` (which must end by `limit`) and, if `check`, checks its checksum; the
/// result shares the file's memory.
fn read_block(
    file: &dyn RandomAccessFile,
    path: &Path,
    h: Handle,
    limit: u64,
    check: bool,
) -> Result<Bytes> {
    let corrupt = |detail: &str| Error::Corruption {
        file: path.to_path_buf(),
        offset: h.offset,
        detail: detail.to_owned(),
    };
    let framed =
        h.size.checked_add(4).filter(|&n| h.offset.checked_add(n).is_some_and(|e| e <= limit));
    let Some(framed) = framed.and_then(|n| usize::try_from(n).ok()) else {
        return Err(corrupt("block handle points outside the file"));
    };
    let mut bytes = file.read_at(h.offset, framed)?;
    let (data, crc) = bytes.split_at(framed - 4);
    if check && crc32fast::hash(data).to_le_bytes()[..] != crc[..] {
        return Err(corrupt("block checksum mismatch"));
    }
    bytes.truncate(framed - 4);
    Ok(bytes)
}

#[cfg(test)]
mod tests;
