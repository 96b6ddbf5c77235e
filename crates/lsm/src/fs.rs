//! The file layer: every byte the engine reads or writes goes through [`FileSystem`].
//!
//! [`OsFs`] is the real file system. [`MemFs`] keeps files in memory and models what a crash
//! does to them: [`MemFs::crash`] throws away every byte not yet synced and every directory
//! change (create, rename, remove) not yet made durable by syncing the directory. It can also
//! be told to fail syncs, or be given a capacity past which it answers `ENOSPC`, to test what
//! the engine does when the disk says no.
//!
//! Reads of tables are zero-copy: [`RandomAccessFile::read_at`] returns [`Bytes`], and
//! [`OsFs`] maps each file it opens for reading into memory once, so a read is a bounds check
//! and a reference-counted slice of the mapping (no system call, no copy).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

/// A file being written: appends, then syncs.
pub trait WritableFile: Send {
    /// Appends `data` at the end of the file (not yet durable).
    ///
    /// # Errors
    /// The underlying I/O error.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;

    /// Makes everything appended so far durable (`fdatasync`).
    ///
    /// # Errors
    /// The underlying I/O error; the engine must then assume nothing unsynced is durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A file opened for reading at arbitrary offsets (tables).
///
/// The engine opens a file this way only once it is complete, and never changes it while it is
/// open: an implementation may rely on that (as [`OsFs`]'s memory map does).
pub trait RandomAccessFile: Send + Sync {
    /// Reads exactly `len` bytes at `offset`. The returned bytes may share memory with the file's
    /// mapping (cloning and slicing them is cheap; holding them keeps that memory alive).
    ///
    /// # Errors
    /// The underlying I/O error; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes>;

    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// True if the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The operations the engine needs from a file system.
pub trait FileSystem: Send + Sync {
    /// Opens `path` for reading at arbitrary offsets.
    ///
    /// # Errors
    /// The underlying I/O error (`NotFound` if it does not exist).
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>>;

    /// Creates (or truncates) `path` for appending.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Opens an existing `path` for appending at its end.
    ///
    /// # Errors
    /// The underlying I/O error (`NotFound` if it does not exist).
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;

    /// Reads the whole of `path`.
    ///
    /// # Errors
    /// The underlying I/O error (`NotFound` if it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Shortens `path` to `len` bytes and syncs it (used to cut off a torn tail).
    ///
    /// # Errors
    /// The underlying I/O error.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to`. Durable once the directory is synced.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes `path`. Durable once the directory is synced.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// The names of the files in `dir`, sorted.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Creates `dir` and its parents if needed.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file being written that syncs itself every `every` bytes (never, if 0), so that the data
/// reaches the disk in steady pieces rather than in one burst at the final sync.
pub(crate) struct SyncEvery {
    inner: Box<dyn WritableFile>,
    every: usize,
    unsynced: usize,
}

impl SyncEvery {
    pub(crate) fn new(inner: Box<dyn WritableFile>, every: usize) -> SyncEvery {
        SyncEvery { inner, every, unsynced: 0 }
    }
}

impl WritableFile for SyncEvery {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)?;
        self.unsynced += data.len();
        if self.every > 0 && self.unsynced >= self.every {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.unsynced = 0;
        self.inner.sync()
    }
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

struct OsFile(fs::File);

impl WritableFile for OsFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// A whole file, mapped into memory once (or empty: a zero-length file cannot be mapped).
struct OsReader {
    data: Bytes,
}

/// The bytes `offset..offset + len` of `data`, or `UnexpectedEof` if it is shorter.
fn slice_at(data: &Bytes, offset: u64, len: usize) -> io::Result<Bytes> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    match start.checked_add(len) {
        Some(end) if end <= data.len() => Ok(data.slice(start..end)),
        _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")),
    }
}

impl RandomAccessFile for OsReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        slice_at(&self.data, offset, len)
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

impl FileSystem for OsFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        let file = fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Arc::new(OsReader { data: Bytes::new() }));
        }
        // SAFETY: a mapping is sound while nothing changes the file's bytes or shortens it (that
        // would change memory Rust treats as immutable, or fault on access). The engine opens a
        // file this way only once it is complete (a table is written in full and synced before
        // it is opened), and never writes to or truncates it afterwards: table file numbers are
        // never reused, so no later `create` reaches the same file. It only deletes it (or could
        // rename another file over it), and on Linux the unlinked file's pages stay mapped until
        // the last `Bytes` slice of the mapping is dropped. Another process modifying the
        // database's files behind the engine's back is outside that contract.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Arc::new(OsReader { data: Bytes::from_owner(map) }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let f = fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(OsFile(fs::OpenOptions::new().append(true).open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

/// One in-memory file: its bytes, and how many of them are durable.
#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    synced_len: usize,
}

type FileRef = Arc<Mutex<MemFile>>;

#[derive(Debug, Default)]
struct MemState {
    /// The directory as the running process sees it.
    names: BTreeMap<PathBuf, FileRef>,
    /// The directory as a crash would leave it: as of the last `sync_dir`.
    durable_names: BTreeMap<PathBuf, FileRef>,
}

impl MemState {
    /// Copies of the durable files under their durable names, cut to their synced length.
    fn durable_image(&self) -> BTreeMap<PathBuf, FileRef> {
        let mut survivors = BTreeMap::new();
        for (path, file) in &self.durable_names {
            let f = file.lock();
            let kept = MemFile { data: f.data[..f.synced_len].to_vec(), synced_len: f.synced_len };
            survivors.insert(path.clone(), Arc::new(Mutex::new(kept)));
        }
        survivors
    }
}

/// An in-memory file system whose [`crash`](MemFs::crash) keeps only what was synced.
///
/// Cheap to clone; clones share the same files. Directories are implicit: a file's directory is
/// its path's parent, and `sync_dir` makes every pending directory change durable.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
    fail_syncs: Arc<AtomicBool>,
    /// The most bytes the files may hold together (see [`MemFs::set_capacity`]).
    capacity: Arc<Mutex<Option<u64>>>,
}

struct MemWriter {
    file: FileRef,
    fs: MemFs,
}

/// The error a full disk gives: `ENOSPC`.
fn no_space(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, format!("{what}: no space left on device"))
}

impl WritableFile for MemWriter {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        // Whatever fits is written, as a real file system's short write does.
        let room = self.fs.room();
        let fits = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        self.file.lock().data.extend_from_slice(&data[..fits]);
        if fits < data.len() {
            return Err(no_space("append"));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.fail_syncs().load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        // A full file system fails the sync of a file with unsynced data, as one that
        // allocates blocks late (or over the network) does.
        let unsynced = {
            let f = self.file.lock();
            f.data.len() > f.synced_len
        };
        if unsynced && self.fs.room() == 0 {
            return Err(no_space("fsync"));
        }
        let mut f = self.file.lock();
        f.synced_len = f.data.len();
        Ok(())
    }
}

impl MemWriter {
    /// The file system's sync failure switch.
    fn fail_syncs(&self) -> &AtomicBool {
        &self.fs.fail_syncs
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Simulates a power failure: unsynced bytes and unsynced directory changes are lost.
    /// Writers opened before the crash keep writing into files no one can see any more.
    ///
    /// Drop every [`Db`](crate::Db) on this file system first: a crashed process runs no
    /// threads, but a live database's background worker would go on creating and deleting
    /// files in the new one.
    pub fn crash(&self) {
        let mut st = self.state.lock();
        let survivors = st.durable_image();
        st.names = survivors.clone();
        st.durable_names = survivors;
    }

    /// A separate file system holding what a crash now would leave, for the restarted process;
    /// this one (and any database still running on it) goes on unaffected and can no longer
    /// change the copy. The safe way to crash a process whose threads may still be running.
    pub fn crash_copy(&self) -> MemFs {
        let survivors = self.state.lock().durable_image();
        let state = MemState { names: survivors.clone(), durable_names: survivors };
        MemFs {
            state: Arc::new(Mutex::new(state)),
            fail_syncs: Arc::default(),
            capacity: Arc::default(),
        }
    }

    /// From now on every sync fails (or succeeds again), as a failing disk would.
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Limits the bytes all files may hold together (`None`: no limit), as a small disk
    /// would. Past it the file system answers `ENOSPC` (`ErrorKind::StorageFull`): an append
    /// writes what fits and fails, a create fails, and a sync of a file holding unsynced bytes
    /// fails. Removing or truncating files makes room again.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        *self.capacity.lock() = bytes;
    }

    /// Bytes held by the files the running process sees.
    pub fn used_bytes(&self) -> u64 {
        let files: Vec<FileRef> = self.state.lock().names.values().cloned().collect();
        files.iter().map(|f| f.lock().data.len() as u64).sum()
    }

    /// Bytes that still fit under the capacity.
    fn room(&self) -> u64 {
        let Some(capacity) = *self.capacity.lock() else { return u64::MAX };
        capacity.saturating_sub(self.used_bytes())
    }

    /// Overwrites byte `offset` of `path` (for corruption tests).
    ///
    /// # Panics
    /// If the file does not exist or is shorter.
    pub fn corrupt_byte(&self, path: &Path, offset: usize, value: u8) {
        let st = self.state.lock();
        let mut f = st.names.get(path).expect("file exists").lock();
        f.data[offset] = value;
    }

    fn file(&self, path: &Path) -> io::Result<FileRef> {
        self.state.lock().names.get(path).cloned().ok_or_else(|| not_found(path))
    }
}

/// A reader of an in-memory file: sees the file as it is when read.
struct MemReader(FileRef);

impl RandomAccessFile for MemReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let f = self.0.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(len);
        f.data
            .get(start..end)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))
    }

    fn len(&self) -> u64 {
        self.0.lock().data.len() as u64
    }
}

impl FileSystem for MemFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
        Ok(Arc::new(MemReader(self.file(path)?)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        if self.room() == 0 {
            return Err(no_space(&format!("create {}", path.display())));
        }
        let file: FileRef = Arc::default();
        self.state.lock().names.insert(path.to_path_buf(), Arc::clone(&file));
        Ok(Box::new(MemWriter { file, fs: self.clone() }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = self.file(path)?;
        Ok(Box::new(MemWriter { file, fs: self.clone() }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.file(path)?.lock().data.clone())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = self.file(path)?;
        let mut f = file.lock();
        let len = (len as usize).min(f.data.len());
        f.data.truncate(len);
        f.synced_len = len;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let file = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state.lock().names.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut st = self.state.lock();
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        st.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, FileRef)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, f)| (p.clone(), Arc::clone(f)))
            .collect();
        st.durable_names.extend(current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Counts appended bytes and syncs.
    struct Counting(std::sync::Arc<parking_lot::Mutex<(usize, Vec<usize>)>>);

    impl WritableFile for Counting {
        fn append(&mut self, data: &[u8]) -> io::Result<()> {
            self.0.lock().0 += data.len();
            Ok(())
        }

        fn sync(&mut self) -> io::Result<()> {
            let mut c = self.0.lock();
            let at = c.0;
            c.1.push(at);
            Ok(())
        }
    }

    #[test]
    fn sync_every_syncs_in_steady_pieces() {
        let seen = std::sync::Arc::new(parking_lot::Mutex::new((0, Vec::new())));
        let mut f = SyncEvery::new(Box::new(Counting(seen.clone())), 1000);
        for _ in 0..25 {
            f.append(&[7; 100]).unwrap();
        }
        assert_eq!(seen.lock().1, [1000, 2000], "a sync after each 1000 bytes");
        f.sync().unwrap();
        f.append(&[7; 999]).unwrap();
        assert_eq!(seen.lock().1, [1000, 2000, 2500], "the count restarts at an explicit sync");
        let mut never = SyncEvery::new(Box::new(Counting(seen.clone())), 0);
        never.append(&[7; 5000]).unwrap();
        assert_eq!(seen.lock().1.len(), 3, "0 means only explicit syncs");
    }

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/db")
    }

    #[test]
    fn crash_keeps_only_synced_bytes_of_durable_files() {
        let fs = MemFs::new();
        let a = dir().join("a");
        let mut w = fs.create(&a).unwrap();
        w.append(b"hello").unwrap();
        w.sync().unwrap();
        w.append(b" world").unwrap();
        fs.sync_dir(&dir()).unwrap();
        let b = dir().join("b");
        let mut wb = fs.create(&b).unwrap(); // Never made durable in the directory.
        wb.append(b"x").unwrap();
        wb.sync().unwrap();
        assert_eq!(fs.read(&a).unwrap(), b"hello world");
        let r = fs.open_read(&a).unwrap();
        assert_eq!((r.len(), r.is_empty()), (11, false));
        assert_eq!(r.read_at(6, 5).unwrap(), &b"world"[..]);
        assert_eq!(r.read_at(8, 5).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        fs.crash();
        assert_eq!(fs.read(&a).unwrap(), b"hello");
        assert_eq!(fs.read(&b).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.list(&dir()).unwrap(), ["a"]);
        // A writer from before the crash no longer reaches the surviving file.
        w.append(b"!").unwrap();
        assert_eq!(fs.read(&a).unwrap(), b"hello");
    }

    #[test]
    fn a_crash_copy_keeps_what_is_durable_and_goes_its_own_way() {
        let fs = MemFs::new();
        let path = dir().join("f");
        let mut w = fs.create(&path).unwrap();
        w.append(b"synced").unwrap();
        w.sync().unwrap();
        fs.sync_dir(&dir()).unwrap();
        w.append(b" and not").unwrap();
        let copy = fs.crash_copy();
        assert_eq!(copy.read(&path).unwrap(), b"synced");
        w.append(b"!").unwrap();
        w.sync().unwrap();
        assert_eq!(copy.read(&path).unwrap(), b"synced", "the old instance cannot reach the copy");
        assert_eq!(fs.read(&path).unwrap(), b"synced and not!");
    }

    #[test]
    fn renames_and_removes_are_durable_only_after_sync_dir() {
        let fs = MemFs::new();
        let (a, b) = (dir().join("a"), dir().join("b"));
        let mut w = fs.create(&a).unwrap();
        w.append(b"1").unwrap();
        w.sync().unwrap();
        fs.sync_dir(&dir()).unwrap();
        fs.rename(&a, &b).unwrap();
        fs.crash();
        assert_eq!(fs.list(&dir()).unwrap(), ["a"], "unsynced rename undone");
        fs.rename(&a, &b).unwrap();
        fs.sync_dir(&dir()).unwrap();
        fs.remove(&b).unwrap();
        fs.crash();
        assert_eq!(fs.list(&dir()).unwrap(), ["b"], "unsynced remove undone");
        assert_eq!(fs.read(&b).unwrap(), b"1");
    }

    #[test]
    fn failing_syncs_report_errors() {
        let fs = MemFs::new();
        let mut w = fs.create(&dir().join("a")).unwrap();
        fs.fail_syncs(true);
        assert!(w.sync().is_err());
        assert!(fs.sync_dir(&dir()).is_err());
        fs.fail_syncs(false);
        assert!(w.sync().is_ok());
    }

    #[test]
    fn a_full_file_system_answers_enospc_on_write_sync_and_create() {
        let fs = MemFs::new();
        let mut w = fs.create(&dir().join("a")).unwrap();
        w.append(b"0123").unwrap();
        w.sync().unwrap();
        fs.set_capacity(Some(10));
        let e = w.append(b"456789abcd").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert_eq!(fs.read(&dir().join("a")).unwrap(), b"0123456789", "what fits is written");
        assert_eq!(fs.used_bytes(), 10);
        assert_eq!(w.sync().unwrap_err().kind(), io::ErrorKind::StorageFull);
        let e = fs.create(&dir().join("b")).err().expect("no room for a new file");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        // Room again: the sync goes through, and new files can be made.
        fs.truncate(&dir().join("a"), 4).unwrap();
        w.sync().unwrap();
        fs.create(&dir().join("b")).unwrap().append(b"x").unwrap();
        fs.set_capacity(None);
        w.append(&[0; 100]).unwrap();
    }

    #[test]
    fn os_fs_round_trip() {
        let dir = std::env::temp_dir().join(format!("lsm-osfs-{}", std::process::id()));
        let fs = OsFs;
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut w = fs.create(&path).unwrap();
        w.append(b"abc").unwrap();
        w.sync().unwrap();
        drop(w);
        let mut w = fs.open_append(&path).unwrap();
        w.append(b"def").unwrap();
        drop(w);
        assert_eq!(fs.read(&path).unwrap(), b"abcdef");
        let r = fs.open_read(&path).unwrap();
        assert_eq!((r.len(), r.read_at(2, 3).unwrap()), (6, Bytes::from_static(b"cde")));
        assert_eq!(r.read_at(4, 5).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.read_at(u64::MAX, 1).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.read_at(6, 0).unwrap(), Bytes::new());
        // The mapping outlives the reader.
        let tail = r.read_at(3, 3).unwrap();
        drop(r);
        assert_eq!(tail, &b"def"[..]);
        fs.truncate(&path, 2).unwrap();
        fs.rename(&path, &dir.join("g")).unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(fs.list(&dir).unwrap(), ["g"]);
        assert_eq!(fs.read(&dir.join("g")).unwrap(), b"ab");
        // A removed file stays readable through a mapping made before.
        let kept = fs.open_read(&dir.join("g")).unwrap().read_at(0, 2).unwrap();
        fs.remove(&dir.join("g")).unwrap();
        assert_eq!(kept, &b"ab"[..]);
        // An empty file cannot be mapped; it reads as empty.
        let empty = dir.join("empty");
        fs.create(&empty).unwrap().sync().unwrap();
        let r = fs.open_read(&empty).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.read_at(0, 0).unwrap(), Bytes::new());
        assert_eq!(r.read_at(0, 1).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            fs.open_read(&dir.join("absent")).err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
