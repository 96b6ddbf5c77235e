//! Errors of the engine.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data is damaged where a crash cannot explain it.
    #[error("corruption in {file} at byte {offset}: {detail}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write failed to reach the disk (a failed fsync), so the engine no longer
    /// knows what is durable; every later write fails with this. Reopen the database.
    #[error("the database is poisoned by an earlier write failure ({0}); reopen it")]
    Poisoned(String),
    /// The disk is full (`ENOSPC`) or over its quota (`EDQUOT`): this write did not happen
    /// (it is not in the memtable; if its WAL record reached the disk anyway, a crash may
    /// bring it back, as with any write whose outcome was an error). The engine is not
    /// poisoned: later writes succeed once space is freed, and background flushes and
    /// compactions that failed for space retry by themselves.
    #[error("no space left on the disk ({0}); writes resume once space is freed")]
    NoSpace(String),
    /// The write would need sequence numbers past the largest a key can carry (2^56 - 1). Only
    /// a damaged database that recovered a sequence number near it can get here; nothing was
    /// written.
    #[error("sequence numbers are exhausted: the last is {last}, and a write needs {needed}")]
    SequenceExhausted {
        /// The last sequence number handed out.
        last: u64,
        /// How many the write needs.
        needed: u64,
    },
}

impl Error {
    /// Whether this is a lack of space ([`Error::NoSpace`], or an I/O error `ENOSPC` or
    /// `EDQUOT`): something to retry once space is freed, not damage.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::NoSpace(_) => true,
            Error::Io(e) => io_is_no_space(e),
            _ => false,
        }
    }
}

/// Whether an I/O error says the disk is full or the quota is used up.
pub(crate) fn io_is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}
