//! The bytes of a snapshot, which may be far larger than memory: [`SnapshotData`] (an immutable
//! byte string, in memory or in a file), [`SnapshotSpool`] (where new snapshots are built) and
//! [`SnapshotWriter`] (how they are built).
//!
//! A snapshot is written once, front to back, by the service on the leader or by the follower
//! assembling the leader's chunks, and then only read: in chunks to send to followers, as a
//! stream to restore from, and as a stream to copy into durable storage. None of these needs the
//! whole snapshot in memory when it lives in a file.
//!
//! A spooled file is unlinked as soon as it is created, so it lives exactly as long as some
//! `SnapshotData` refers to it, and a crash leaves nothing behind to clean up.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// An immutable byte string holding a snapshot of the service's state. Cheap to clone: clones
/// share the bytes (or the open file).
#[derive(Clone)]
pub struct SnapshotData {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Memory(Bytes),
    /// `len` bytes of `file` starting at `start`; nobody writes to that range any more.
    File {
        file: Arc<File>,
        start: u64,
        len: u64,
    },
}

impl SnapshotData {
    /// Snapshot bytes held in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> SnapshotData {
        SnapshotData { repr: Repr::Memory(data.into()) }
    }

    /// The `len` bytes of `file` starting at offset `start`. The caller promises that nothing
    /// writes to that range while any clone of the result exists.
    pub fn from_file(file: File, start: u64, len: u64) -> SnapshotData {
        SnapshotData { repr: Repr::File { file: Arc::new(file), start, len } }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match &self.repr {
            Repr::Memory(b) => b.len() as u64,
            Repr::File { len, .. } => *len,
        }
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the bytes are held in memory rather than in a file.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.repr, Repr::Memory(_))
    }

    /// Up to `max` bytes starting at `offset` (fewer at the end; none past it).
    ///
    /// # Errors
    /// If the file cannot be read, or ends before `len` says it should.
    pub fn chunk(&self, offset: u64, max: usize) -> io::Result<Bytes> {
        let end = offset.saturating_add(max as u64).min(self.len());
        let offset = offset.min(end);
        match &self.repr {
            Repr::Memory(b) => Ok(b.slice(offset as usize..end as usize)),
            Repr::File { file, start, .. } => {
                let mut buf = vec![0; (end - offset) as usize];
                file.read_exact_at(&mut buf, start + offset)?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// A reader over the whole snapshot, from the first byte.
    pub fn reader(&self) -> SnapshotReader<'_> {
        SnapshotReader { data: self, offset: 0 }
    }

    /// The whole snapshot in one buffer: for small snapshots and tests.
    ///
    /// # Errors
    /// As [`chunk`](Self::chunk).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        self.chunk(0, usize::try_from(self.len()).unwrap_or(usize::MAX))
    }
}

impl Default for SnapshotData {
    fn default() -> SnapshotData {
        SnapshotData::from_bytes(Bytes::new())
    }
}

impl From<Bytes> for SnapshotData {
    fn from(data: Bytes) -> SnapshotData {
        SnapshotData::from_bytes(data)
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(data: Vec<u8>) -> SnapshotData {
        SnapshotData::from_bytes(data)
    }
}

impl From<&'static [u8]> for SnapshotData {
    fn from(data: &'static [u8]) -> SnapshotData {
        SnapshotData::from_bytes(Bytes::from_static(data))
    }
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.is_in_memory() { "memory" } else { "file" };
        write!(f, "SnapshotData({} bytes in {place})", self.len())
    }
}

/// Equal if the bytes are equal. Reads both sides when they are files; a read error makes
/// them unequal.
impl PartialEq for SnapshotData {
    fn eq(&self, other: &SnapshotData) -> bool {
        if self.len() != other.len() {
            return false;
        }
        const STEP: usize = 1 << 16;
        let mut offset = 0;
        while offset < self.len() {
            match (self.chunk(offset, STEP), other.chunk(offset, STEP)) {
                (Ok(a), Ok(b)) if a == b => offset += a.len() as u64,
                _ => return false,
            }
        }
        true
    }
}

impl Eq for SnapshotData {}

/// Reads a [`SnapshotData`] front to back; see [`SnapshotData::reader`].
#[derive(Debug)]
pub struct SnapshotReader<'a> {
    data: &'a SnapshotData,
    offset: u64,
}

impl Read for SnapshotReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.data.len() - self.offset;
        let n = (buf.len() as u64).min(remaining) as usize;
        if n == 0 {
            return Ok(0);
        }
        match &self.data.repr {
            Repr::Memory(b) => {
                let from = self.offset as usize;
                buf[..n].copy_from_slice(&b[from..from + n]);
            }
            Repr::File { file, start, .. } => {
                file.read_exact_at(&mut buf[..n], start + self.offset)?
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Where new snapshots are built: in memory (for tests and small states) or in files in a
/// directory (so a snapshot never has to fit in memory).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotSpool {
    /// Build snapshots in memory.
    #[default]
    Memory,
    /// Build snapshots in unlinked temporary files in this directory.
    Dir(PathBuf),
}

impl SnapshotSpool {
    /// A writer for a new snapshot.
    ///
    /// # Errors
    /// If the spool file cannot be created.
    pub fn writer(&self) -> io::Result<SnapshotWriter> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let sink = match self {
            SnapshotSpool::Memory => Sink::Memory(Vec::new()),
            SnapshotSpool::Dir(dir) => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!("snapshot-spool-{}-{n}.tmp", std::process::id()));
                let file =
                    OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
                // The open handle keeps the file alive; nothing is left behind by a crash.
                std::fs::remove_file(&path)?;
                Sink::File(BufWriter::with_capacity(1 << 16, file))
            }
        };
        Ok(SnapshotWriter { sink, len: 0 })
    }
}

/// Builds a snapshot front to back; [`finish`](SnapshotWriter::finish) turns it into a
/// [`SnapshotData`].
#[derive(Debug)]
pub struct SnapshotWriter {
    sink: Sink,
    len: u64,
}

#[derive(Debug)]
enum Sink {
    Memory(Vec<u8>),
    File(BufWriter<File>),
}

impl SnapshotWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The finished snapshot.
    ///
    /// # Errors
    /// If buffered bytes cannot be written to the spool file.
    pub fn finish(self) -> io::Result<SnapshotData> {
        match self.sink {
            Sink::Memory(v) => Ok(SnapshotData::from_bytes(v)),
            Sink::File(w) => {
                let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
                Ok(SnapshotData::from_file(file, 0, self.len))
            }
        }
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.sink {
            Sink::Memory(v) => v.write(buf)?,
            Sink::File(w) => w.write(buf)?,
        };
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Memory(_) => Ok(()),
            Sink::File(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spools(name: &str) -> (SnapshotSpool, PathBuf) {
        let dir = std::env::temp_dir().join(format!("raft-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (SnapshotSpool::Dir(dir.clone()), dir)
    }

    fn build(spool: &SnapshotSpool, bytes: &[u8]) -> SnapshotData {
        let mut w = spool.writer().unwrap();
        for piece in bytes.chunks(7) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.len(), bytes.len() as u64);
        w.finish().unwrap()
    }

    #[test]
    fn memory_and_file_snapshots_read_back_the_same() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (dir_spool, dir) = spools("spool");
        let in_file = build(&dir_spool, &bytes);
        let in_memory = build(&SnapshotSpool::Memory, &bytes);
        assert!(!in_file.is_in_memory() && in_memory.is_in_memory());
        // The spool file is unlinked at once: nothing is left in the directory.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "spool files left behind: {left:?}");
        for data in [&in_file, &in_memory] {
            assert_eq!(data.len(), bytes.len() as u64);
            assert_eq!(data.to_bytes().unwrap(), bytes);
            assert_eq!(data.chunk(1000, 10).unwrap(), bytes[1000..1010]);
            assert_eq!(data.chunk(199_995, 10).unwrap(), bytes[199_995..]);
            assert!(data.chunk(300_000, 10).unwrap().is_empty());
            let mut read = Vec::new();
            data.reader().read_to_end(&mut read).unwrap();
            assert_eq!(read, bytes);
        }
        assert_eq!(in_file, in_memory);
        assert_ne!(in_file, SnapshotData::from(bytes[1..].to_vec()));
        let mut other = bytes.clone();
        other[150_000] ^= 1;
        assert_ne!(in_file, SnapshotData::from(other));
        assert_eq!(format!("{in_file:?}"), "SnapshotData(200000 bytes in file)");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_range_of_a_file_is_read_in_place() {
        let (_, dir) = spools("range");
        let path = dir.join("range");
        std::fs::write(&path, b"headerPAYLOADtrailer").unwrap();
        let data = SnapshotData::from_file(File::open(&path).unwrap(), 6, 7);
        assert_eq!(data.to_bytes().unwrap(), &b"PAYLOAD"[..]);
        assert_eq!(data.chunk(3, 100).unwrap(), &b"LOAD"[..]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn empty_snapshots() {
        let empty = SnapshotData::default();
        assert!(empty.is_empty() && empty.to_bytes().unwrap().is_empty());
        let w = SnapshotSpool::Memory.writer().unwrap();
        assert!(w.is_empty());
        assert_eq!(w.finish().unwrap(), empty);
        assert_eq!(SnapshotData::from(&b""[..]), empty);
    }
}
