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

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::{TABLE_FOOTER_BYTES, TABLE_MAGIC, TABLE_VERSION};
use crate::fs::{FileSystem, RandomAccessFile, WritableFile};
use crate::memtable::{Lookup, Value};

pub(crate) use block::{Block, BlockBuilder};
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
pub(crate) fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    match (split_key(a), split_key(b)) {
        (Some((ua, sa, _)), Some((ub, sb, _))) => ua.cmp(ub).then(sb.cmp(&sa)),
        _ => a.cmp(b),
    }
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

/// An open table: its index and filter in memory, data blocks read on demand.
pub(crate) struct Table {
    path: PathBuf,
    file: Arc<dyn RandomAccessFile>,
    index: Block,
    /// The index decoded once: (last key of block i, handle of block i).
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    bloom: Bloom,
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
        let read = |h: Handle| -> Result<Vec<u8>> { read_block(file.as_ref(), path, h, footer_at) };
        let index = Block::new(read(index_handle)?)
            .ok_or_else(|| corrupt(index_handle.offset, "index block does not parse"))?;
        let bloom = Bloom::decode(read(filter_handle)?)
            .ok_or_else(|| corrupt(filter_handle.offset, "filter does not parse"))?;
        let blocks = index.entries();
        Ok(Table { path: path.to_path_buf(), file, index, blocks, bloom })
    }

    fn data_block(&self, handle_bytes: &[u8]) -> Result<Block> {
        let corrupt = |detail: &str| Error::Corruption {
            file: self.path.clone(),
            offset: 0,
            detail: detail.to_owned(),
        };
        let handle = Handle::decode(handle_bytes).ok_or_else(|| corrupt("bad block handle"))?;
        let bytes = read_block(self.file.as_ref(), &self.path, handle, self.file.len())?;
        Block::new(bytes).ok_or_else(|| corrupt("data block does not parse"))
    }

    /// The newest version of `user_key` with a sequence number at most `seq`.
    pub(crate) fn get(&self, user_key: &[u8], seq: u64) -> Result<Lookup> {
        if !self.bloom.may_contain(user_key) {
            return Ok(Lookup::Absent);
        }
        let target = internal_key(user_key, seq, true);
        // The first block whose last key is at or after the target holds it, if any does.
        let Some((_, handle)) = self.index.seek(&target) else { return Ok(Lookup::Absent) };
        let block = self.data_block(&handle)?;
        let Some((key, value)) = block.seek(&target) else { return Ok(Lookup::Absent) };
        match split_key(&key) {
            Some((user, _, is_value)) if user == user_key => {
                Ok(if is_value { Lookup::Found(Bytes::from(value)) } else { Lookup::Deleted })
            }
            _ => Ok(Lookup::Absent),
        }
    }

    /// The largest user key in the table.
    pub(crate) fn largest_user_key(&self) -> Option<&[u8]> {
        self.blocks.last().and_then(|(k, _)| split_key(k)).map(|(user, _, _)| user)
    }

    /// Every entry in order, as (user key, seq, value).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Result<Vec<(Bytes, u64, Value)>> {
        let mut out = Vec::new();
        for (_, handle) in self.index.entries() {
            for (key, value) in self.data_block(&handle)?.entries() {
                let Some((user, seq, is_value)) = split_key(&key) else {
                    return Err(Error::Corruption {
                        file: self.path.clone(),
                        offset: 0,
                        detail: "key shorter than its trailer".into(),
                    });
                };
                let v = if is_value { Value::Put(Bytes::from(value)) } else { Value::Tombstone };
                out.push((Bytes::copy_from_slice(user), seq, v));
            }
        }
        Ok(out)
    }
}

/// Walks one table's entries in order, one data block in memory at a time.
pub(crate) struct TableIter {
    table: Arc<Table>,
    block_no: usize,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    pos: usize,
}

impl TableIter {
    /// Positioned at the first entry at or after the internal key `target`.
    pub(crate) fn seek(table: Arc<Table>, target: &[u8]) -> Result<TableIter> {
        let block_no =
            table.blocks.partition_point(|(last, _)| compare_keys(last, target) == Ordering::Less);
        let mut it = TableIter { table, block_no, entries: Vec::new(), pos: 0 };
        if block_no < it.table.blocks.len() {
            it.entries = it.table.data_block(&it.table.blocks[block_no].1)?.entries();
            it.pos = it.entries.partition_point(|(k, _)| compare_keys(k, target) == Ordering::Less);
        }
        it.skip_empty_blocks()?;
        Ok(it)
    }

    /// The current entry, if any: (internal key, value).
    pub(crate) fn current(&self) -> Option<&(Vec<u8>, Vec<u8>)> {
        self.entries.get(self.pos)
    }

    /// The current entry as (internal key, value) slices, if any.
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.entries.get(self.pos).map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub(crate) fn advance(&mut self) -> Result<()> {
        self.pos += 1;
        self.skip_empty_blocks()
    }

    fn skip_empty_blocks(&mut self) -> Result<()> {
        while self.pos >= self.entries.len() && self.block_no + 1 < self.table.blocks.len() {
            self.block_no += 1;
            self.entries = self.table.data_block(&self.table.blocks[self.block_no].1)?.entries();
            self.pos = 0;
        }
        Ok(())
    }
}

fn read_block(file: &dyn RandomAccessFile, path: &Path, h: Handle, limit: u64) -> Result<Vec<u8>> {
    let corrupt = |detail: &str| Error::Corruption {
        file: path.to_path_buf(),
        offset: h.offset,
        detail: detail.to_owned(),
    };
    if h.offset.checked_add(h.size + 4).is_none_or(|end| end > limit) {
        return Err(corrupt("block handle points outside the file"));
    }
    let mut bytes = file.read_at(h.offset, h.size as usize + 4)?;
    let crc = bytes.split_off(h.size as usize);
    if crc32fast::hash(&bytes).to_le_bytes()[..] != crc[..] {
        return Err(corrupt("block checksum mismatch"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
