//! The LSM engine's readers: a WAL, a table and the manifest, each put into a [`MemFs`] file and
//! opened with [`Db::open`], the way recovery meets them.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lsm::{Db, FileSystem, MemFs, Options, WriteOptions};

use crate::{frame_one, frame_records};

const DIR: &str = "/db";
/// Record kinds (docs/formats/wal.md and manifest.md).
const KIND_EDIT: u8 = 2;

fn options(fs: &MemFs) -> Options {
    Options { fs: Arc::new(fs.clone()), ..Options::default() }
}

fn write_file(fs: &MemFs, name: &str, bytes: &[u8]) {
    fs.create_dir_all(Path::new(DIR)).expect("MemFs creates directories");
    let mut file = fs.create(&Path::new(DIR).join(name)).expect("MemFs creates files");
    file.append(bytes).expect("MemFs appends");
    file.sync().expect("MemFs syncs");
}

/// Every live pair, in order.
fn contents(db: &Db) -> Vec<(Bytes, Bytes)> {
    let snapshot = db.snapshot();
    let iter = db.iter(b"", None, &snapshot).expect("an open database iterates");
    iter.map(|pair| pair.expect("an open database reads its own pairs")).collect()
}

/// Opens the database in `fs`; if it opens, checks that what it holds survives a reopen, and
/// that a write after recovery is newer than everything recovered: it is read back, before
/// and after another reopen (a sequence number handed out again would hide it).
fn open_and_check(fs: &MemFs, readable: bool) {
    let Ok(db) = Db::open(DIR, options(fs)) else { return };
    let before = if readable { Some(contents(&db)) } else { None };
    let key = before
        .as_ref()
        .and_then(|pairs| pairs.first().map(|(k, _)| k.clone()))
        .unwrap_or_else(|| Bytes::from_static(b"fuzz"));
    let written = db.write_opt(
        {
            let mut batch = lsm::WriteBatch::new();
            batch.put(key.clone(), Bytes::from_static(b"after recovery"));
            batch
        },
        WriteOptions { sync: true },
    );
    // A write may be refused (say, sequence numbers exhausted); never one that then breaks
    // the reopen.
    let Ok(()) = written else { return };
    assert_eq!(
        db.get(&key).expect("a written key reads back").as_deref(),
        Some(&b"after recovery"[..]),
        "a write after recovery is hidden by a recovered one"
    );
    drop(db);
    let db = Db::open(DIR, options(fs)).expect("a database that opened reopens");
    assert_eq!(
        db.get(&key).expect("a written key reads back after reopening").as_deref(),
        Some(&b"after recovery"[..]),
        "a write after recovery is lost or hidden after reopening"
    );
    if let Some(mut before) = before {
        for pair in &mut before {
            if pair.0 == key {
                pair.1 = Bytes::from_static(b"after recovery");
            }
        }
        if !before.iter().any(|(k, _)| *k == key) {
            before.push((key.clone(), Bytes::from_static(b"after recovery")));
            before.sort();
        }
        assert_eq!(contents(&db), before, "reopening changed the contents");
    }
}

/// Input: `mode rest`; an even `mode` puts `rest` in a WAL file as it is, an odd one frames it
/// with checksums ([`frame_records`]), so the write-batch decoder is reached.
pub fn wal(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let fs = MemFs::new();
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { frame_records(rest) };
    write_file(&fs, "wal-00000001.log", &bytes);
    open_and_check(&fs, true);
}

/// Input: `mode rest`; the manifest file is `rest` as it is (even `mode`) or framed with
/// checksums (odd `mode`). Tables it lists do not exist, so only edits that add none (or
/// remove what they add) open.
pub fn manifest(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let fs = MemFs::new();
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { frame_records(rest) };
    write_file(&fs, "MANIFEST", &bytes);
    open_and_check(&fs, true);
}

/// Input: `mode table`. The table is file 1, listed in a manifest written here. With an odd
/// `mode` the harness first rewrites the checksums of the footer, filter, index and data
/// blocks (as far as their handles can be followed), so the block decoders are reached.
/// Invariants: no panic; a table that opens can be read whole and by key, and a write after
/// opening is newest.
pub fn sstable(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let mut table = rest.to_vec();
    if mode % 2 == 1 {
        fix_checksums(&mut table);
    }
    let fs = MemFs::new();
    write_file(&fs, "00000001.sst", &table);
    // edit := log_number next_file last_seq n_added added* n_removed (docs/formats/manifest.md)
    let mut edit = Vec::new();
    for v in [0u64, 2, u64::from(*mode >> 1)] {
        edit.extend_from_slice(&v.to_le_bytes());
    }
    edit.extend_from_slice(&1u32.to_le_bytes());
    edit.push(0); // level
    edit.extend_from_slice(&1u64.to_le_bytes()); // file
    edit.extend_from_slice(&1u64.to_le_bytes()); // entries
    edit.extend_from_slice(&(table.len() as u64).to_le_bytes());
    for key in [&b""[..], &b"\xff\xff"[..]] {
        edit.extend_from_slice(&(key.len() as u32).to_le_bytes());
        edit.extend_from_slice(key);
    }
    edit.extend_from_slice(&0u32.to_le_bytes());
    let mut manifest = Vec::new();
    frame_one(&mut manifest, KIND_EDIT, &edit);
    write_file(&fs, "MANIFEST", &manifest);

    let Ok(db) = Db::open(DIR, options(&fs)) else { return };
    // Reads may find damage (a data block's checksum is checked when read): an error, never a
    // panic. What reads whole is also read key by key.
    let snapshot = db.snapshot();
    let mut keys = Vec::new();
    if let Ok(iter) = db.iter(b"", None, &snapshot) {
        for pair in iter.take(10_000) {
            match pair {
                Ok((k, _)) => keys.push(k),
                Err(_) => break,
            }
        }
    }
    for k in keys.iter().take(64) {
        let _ = db.get(k);
    }
    drop(snapshot);
    drop(db);
    if keys.len() < 10_000 {
        open_and_check(&fs, false);
    }
}

const FOOTER: usize = 48;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Rewrites the checksum after the block at `offset` of `size` bytes, if it lies in `table`.
fn fix_block(table: &mut [u8], offset: u64, size: u64) -> Option<(usize, usize)> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    if end.checked_add(4)? > table.len() {
        return None;
    }
    let crc = crc32fast::hash(&table[start..end]);
    table[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    Some((start, end))
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Rewrites the checksums of a table's footer, filter and index blocks and of the data blocks
/// the index points at (docs/formats/sstable.md).
fn fix_checksums(table: &mut [u8]) {
    if table.len() < FOOTER {
        return;
    }
    let footer = table.len() - FOOTER;
    let (filter, index) = {
        let f = &table[footer..];
        ((u64_at(f, 0), u64_at(f, 8)), (u64_at(f, 16), u64_at(f, 24)))
    };
    // Data blocks first: the index's crc is rewritten after, over bytes that no longer change.
    if let Some((start, end)) = fix_block(table, index.0, index.1) {
        let block = table[start..end].to_vec();
        let mut handles = Vec::new();
        if block.len() >= 4 {
            let n = u32::from_le_bytes(block[block.len() - 4..].try_into().expect("4 bytes"));
            let entries_end =
                (block.len() - 4).saturating_sub((n as usize).saturating_mul(4)).min(block.len());
            let mut at = 0;
            while at < entries_end && handles.len() < 1024 {
                let (Some(_), Some(unshared), Some(vlen)) =
                    (varint(&block, &mut at), varint(&block, &mut at), varint(&block, &mut at))
                else {
                    break;
                };
                let Some(value_at) = usize::try_from(unshared).ok().and_then(|u| at.checked_add(u))
                else {
                    break;
                };
                let Some(value) = usize::try_from(vlen)
                    .ok()
                    .and_then(|v| block.get(value_at..value_at.checked_add(v)?))
                else {
                    break;
                };
                if value.len() == 16 {
                    handles.push((u64_at(value, 0), u64_at(value, 8)));
                }
                at = value_at + value.len();
            }
        }
        for (offset, size) in handles {
            fix_block(table, offset, size);
        }
        fix_block(table, index.0, index.1);
    }
    fix_block(table, filter.0, filter.1);
    let crc = crc32fast::hash(&table[footer..footer + FOOTER - 4]);
    let end = table.len();
    table[end - 4..].copy_from_slice(&crc.to_le_bytes());
}
