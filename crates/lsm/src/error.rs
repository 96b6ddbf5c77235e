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
