//! On-disk constants, in one place. Every value here is frozen: changing one makes existing
//! databases unreadable. `docs/formats/wal.md` gives the grammar they belong to.

/// Bytes before a WAL record's payload: length (u32 LE) and crc32 (u32 LE).
pub(crate) const RECORD_HEADER_BYTES: usize = 8;

/// WAL record kind: one atomic write batch.
pub(crate) const RECORD_KIND_BATCH: u8 = 1;

/// Batch operation: put a key to a value.
pub(crate) const OP_PUT: u8 = 1;

/// Batch operation: delete a key.
pub(crate) const OP_DELETE: u8 = 2;

/// Upper bound on one record, so a damaged length cannot make recovery allocate wildly.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 30;

/// The largest file number (of a WAL or a table) recovery accepts: 2^48. Far beyond any a
/// database reaches (a new file a microsecond would take nine years), and far enough below
/// `u64::MAX` that no arithmetic on a file number can overflow. A larger one in a manifest is
/// corruption; a file named with one is not the engine's, and is left alone. A session refuses to
/// create a file past it (an I/O error), so it never writes a number the next open refuses.
pub(crate) const MAX_FILE_NUMBER: u64 = 1 << 48;

/// The largest sequence number: a key's trailer holds it in 56 bits (`seq << 8 | kind`).
pub(crate) const MAX_SEQ: u64 = (1 << 56) - 1;

/// WAL files are named `wal-<number, 8 digits>.log`.
pub(crate) const WAL_PREFIX: &str = "wal-";
/// See [`WAL_PREFIX`].
pub(crate) const WAL_SUFFIX: &str = ".log";

/// The last eight bytes of every table (before the footer's own checksum), little-endian.
pub(crate) const TABLE_MAGIC: u64 = 0x4c53_4d54_4142_4c45; // "LSMTABLE"

/// Table format version; a table of another version is refused.
pub(crate) const TABLE_VERSION: u32 = 1;

/// Footer: filter handle (16) + index handle (16) + version (4) + magic (8) + crc (4).
pub(crate) const TABLE_FOOTER_BYTES: usize = 48;

/// Every this many entries a block key is stored whole (a restart point for binary search).
pub(crate) const RESTART_INTERVAL: usize = 16;

/// Manifest record kind: one version edit.
pub(crate) const RECORD_KIND_EDIT: u8 = 2;

/// The manifest's file name.
pub(crate) const MANIFEST_FILE: &str = "MANIFEST";

/// Tables are named `<file number, 8 digits>.sst`.
pub(crate) const TABLE_SUFFIX: &str = ".sst";

/// A whole manifest is written here, synced, then renamed over [`MANIFEST_FILE`] (after an
/// append to the manifest failed for lack of space).
pub(crate) const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
