//! The write-ahead log: every batch is appended here, and made durable when the writer asks,
//! before it reaches the memtable.
//!
//! ```text
//! wal     := record*
//! record  := length:u32le  crc:u32le  kind:u8  payload   (length = 1 + |payload|,
//!                                                         crc = crc32(kind ‖ payload))
//! ```
//!
//! Recovery reads records in order. A bad record with nothing valid after it is a torn write
//! (the process died mid-append, so it was never acknowledged as durable): the file is cut
//! there and replay goes on. A bad record followed by a valid one is damage to data that may
//! have been acknowledged: [`Error::Corruption`](crate::Error::Corruption), naming the file and
//! offset.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{MAX_RECORD_BYTES, RECORD_HEADER_BYTES};
use crate::fs::{FileSystem, WritableFile};

/// Appends records to one WAL file.
pub(crate) struct WalWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
}

impl WalWriter {
    /// Starts a new, empty WAL at `path`.
    pub(crate) fn create(fs: &dyn FileSystem, path: &Path) -> io::Result<WalWriter> {
        Ok(WalWriter { file: fs.create(path)?, path: path.to_path_buf() })
    }

    /// Continues an existing WAL (after recovery cut any torn tail).
    pub(crate) fn open(fs: &dyn FileSystem, path: &Path) -> io::Result<WalWriter> {
        Ok(WalWriter { file: fs.open_append(path)?, path: path.to_path_buf() })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records, already framed with [`frame`], in one write.
    pub(crate) fn append(&mut self, framed: &[u8]) -> io::Result<()> {
        self.file.append(framed)
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
}

/// Appends one framed record to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.extend_from_slice(&((1 + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The record at `at`, if a whole, checksummed one starts there: (kind, payload, next offset).
fn record_at(buf: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = buf.get(at..at + RECORD_HEADER_BYTES)?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length == 0 || length > MAX_RECORD_BYTES {
        return None;
    }
    let body = buf.get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + length)?;
    (crc32fast::hash(body) == crc).then(|| (body[0], &body[1..], at + RECORD_HEADER_BYTES + length))
}

/// Reads every record of the WAL at `path`, in order, as (offset, kind, payload). Cuts off a
/// torn tail (and says so on stderr).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read or repaired; [`Error::Corruption`] for damage
/// before the tail.
pub(crate) fn read_all(fs: &dyn FileSystem, path: &Path) -> Result<Vec<(usize, u8, Vec<u8>)>> {
    let buf = fs.read(path)?;
    let mut records = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if let Some((kind, payload, next)) = record_at(&buf, at) {
            records.push((at, kind, payload.to_vec()));
            at = next;
            continue;
        }
        let valid_after = (at + 1..buf.len()).any(|p| record_at(&buf, p).is_some());
        if valid_after {
            return Err(Error::Corruption {
                file: path.to_path_buf(),
                offset: at as u64,
                detail: "bad length or checksum in the middle of the log".into(),
            });
        }
        log::warn!(
            "lsm: {}: dropping a torn write of {} bytes at byte {at} (never acknowledged)",
            path.display(),
            buf.len() - at
        );
        fs.truncate(path, at as u64)?;
        break;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemFs;

    fn write(fs: &MemFs, path: &Path, payloads: &[&[u8]]) -> Vec<usize> {
        let mut w = WalWriter::create(fs, path).unwrap();
        let mut starts = Vec::new();
        let mut at = 0;
        for p in payloads {
            let mut out = Vec::new();
            frame(&mut out, 1, p);
            starts.push(at);
            at += out.len();
            w.append(&out).unwrap();
        }
        w.sync().unwrap();
        starts
    }

    #[test]
    fn round_trip_and_append_after_reopen() {
        let fs = MemFs::new();
        let path = PathBuf::from("/db/wal-00000001.log");
        write(&fs, &path, &[b"one", b"two"]);
        let mut w = WalWriter::open(&fs, &path).unwrap();
        let mut out = Vec::new();
        frame(&mut out, 1, b"three");
        w.append(&out).unwrap();
        assert_eq!(w.path(), path);
        let records = read_all(&fs, &path).unwrap();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.2.as_slice()).collect();
        assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn every_cut_of_the_last_record_keeps_the_rest() {
        let fs = MemFs::new();
        let path = PathBuf::from("/db/wal");
        let starts = write(&fs, &path, &[b"alpha", b"beta", b"gamma-gamma"]);
        let whole = fs.read(&path).unwrap();
        for cut in starts[2]..whole.len() {
            let fs = MemFs::new();
            let mut w = fs.create(&path).unwrap();
            w.append(&whole[..cut]).unwrap();
            let records = read_all(&fs, &path).unwrap();
            assert_eq!(records.len(), 2, "cut at {cut}");
            assert_eq!(fs.read(&path).unwrap().len(), starts[2], "torn bytes removed");
        }
    }

    #[test]
    fn damage_before_the_tail_is_corruption() {
        let fs = MemFs::new();
        let path = PathBuf::from("/db/wal");
        let starts = write(&fs, &path, &[b"alpha", b"beta", b"gamma"]);
        for at in 0..starts[2] {
            let fs2 = MemFs::new();
            let mut bytes = fs.read(&path).unwrap();
            bytes[at] ^= 0x10;
            fs2.create(&path).unwrap().append(&bytes).unwrap();
            match read_all(&fs2, &path) {
                Err(Error::Corruption { offset, file, .. }) => {
                    assert!(offset as usize <= at && file == path);
                }
                other => panic!("flip at {at}: {other:?}"),
            }
        }
    }
}
