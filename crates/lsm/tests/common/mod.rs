//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use lsm::{FileSystem, MemFs, WritableFile};

/// A file system over [`MemFs`] that counts syncs (to see group commit at work) and can hold
/// back the creation of tables (to see writes wait for a stuck background worker).
#[derive(Clone, Default)]
pub struct CountingFs {
    pub inner: MemFs,
    pub syncs: Arc<AtomicUsize>,
    tables_paused: Arc<(Mutex<bool>, Condvar)>,
}

impl CountingFs {
    pub fn new() -> CountingFs {
        CountingFs::default()
    }

    /// While paused, creating a `.sst` file blocks.
    pub fn pause_tables(&self, paused: bool) {
        *self.tables_paused.0.lock().unwrap() = paused;
        self.tables_paused.1.notify_all();
    }
}

struct CountingFile {
    inner: Box<dyn WritableFile>,
    syncs: Arc<AtomicUsize>,
}

impl WritableFile for CountingFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.append(data)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(1)); // A disk takes its time.
        self.inner.sync()
    }
}

impl FileSystem for CountingFs {
    fn open_read(&self, path: &Path) -> std::io::Result<Arc<dyn lsm::RandomAccessFile>> {
        self.inner.open_read(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        if path.extension().is_some_and(|e| e == "sst") {
            let (paused, changed) = &*self.tables_paused;
            let mut paused = paused.lock().unwrap();
            while *paused {
                paused = changed.wait(paused).unwrap();
            }
        }
        Ok(Box::new(CountingFile {
            inner: self.inner.create(path)?,
            syncs: Arc::clone(&self.syncs),
        }))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(CountingFile {
            inner: self.inner.open_append(path)?,
            syncs: Arc::clone(&self.syncs),
        }))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
}
