//! The service's state machine: the key-value data, the clients' dedup table and the applied
//! index, all in one LSM database and changed together in one atomic write per command.
//!
//! ```text
//! key layout:  'd' ‖ user key        -> value
//!              'c' ‖ client id (u64 BE) -> last seq (u64 LE) ‖ encoded reply
//!              'm' ‖ "applied"        -> applied index (u64 LE)
//! snapshot  := record* end     record := klen:u32le key vlen:u32le value (every 'd', 'c' pair)
//!              end := 0xffffffff count:u64le (the number of records before it)
//! ```
//!
//! A snapshot is written while iterating an LSM snapshot, and restored in batches of about
//! 4 MiB as it is read: neither side ever holds the whole state in memory.
//! Restoring first deletes the old pairs, in batches, the first of which also resets the applied
//! index to 0; the last batch sets the snapshot's index and is synced. A crash part way through
//! thus leaves applied index 0, and the server restores Raft's snapshot again on restart.
//!
//! The database may run without its own write-ahead log (`lsm::Options::wal` off, as the
//! `kvserver` binary runs it): Raft's log already holds every command, so an applied command
//! needs no second copy on disk. A crash then loses the commands applied since the last
//! memtable flush, together with their applied index, and Raft delivers them again. That is
//! safe because Raft discards its log only up to a snapshot, and [`StateMachine::sync`] (a
//! synced write, which flushes the memtable) comes before every snapshot. A command applied
//! but not yet in this node's own log (entries are applied while they are written) may survive
//! the crash while the entry does not: it was committed, so it comes back unchanged, and is
//! skipped as already applied.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use kvclient::proto::{Op, Outcome, Request};
use lsm::{Db, WriteBatch, WriteOptions};
use raft::Index;

use crate::Result;

const DATA: u8 = b'd';
const CLIENT: u8 = b'c';
const APPLIED: &[u8] = b"mapplied";

/// Restoring a snapshot writes it to the database in batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// Marks the end of a snapshot's records (no key is this long).
const END_MARK: u32 = u32::MAX;

/// The largest page a scan returns, whatever the client asks.
pub const MAX_SCAN_PAGE: u32 = 1000;

/// What the service plugs into Raft: it applies committed commands in log order, answers
/// reads, and snapshots and restores its whole state.
pub trait StateMachine: Send {
    /// Applies the committed `request` at log `index` (indexes come in order, each once) and
    /// returns its outcome. A write whose (client id, sequence number) was already applied is
    /// answered with the recorded outcome and not applied again.
    ///
    /// # Errors
    /// If the state cannot be read or written; the server must then stop.
    fn apply(&mut self, index: Index, request: &Request) -> Result<Outcome>;

    /// Records that `index` was applied without a command (a leader's no-op).
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    fn skip(&mut self, index: Index) -> Result<()>;

    /// Applies consecutive committed entries (`None` for a no-op) as [`apply`](Self::apply)
    /// and [`skip`](Self::skip) would one by one, returning each command's outcome. An
    /// implementation may write them all at once; this one applies them one at a time.
    ///
    /// # Errors
    /// As [`apply`](Self::apply); entries before the failing one may have been applied.
    fn apply_batch(&mut self, entries: &[(Index, Option<&Request>)]) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for &(index, request) in entries {
            match request {
                Some(r) => outcomes.push(self.apply(index, r)?),
                None => self.skip(index)?,
            }
        }
        Ok(outcomes)
    }

    /// The last index applied.
    fn applied_index(&self) -> Index;

    /// Answers a read (`Get` or `Scan`) from the current state.
    ///
    /// # Errors
    /// If the state cannot be read.
    fn read(&self, op: &Op) -> Result<Outcome>;

    /// Writes the whole state (data and dedup table) to `out`, front to back.
    ///
    /// # Errors
    /// If the state cannot be read or `out` cannot be written.
    fn snapshot(&self, out: &mut dyn Write) -> Result<()>;

    /// Replaces the whole state with a snapshot taken at `index`, read from `data` to its end.
    ///
    /// # Errors
    /// If the snapshot does not parse or the state cannot be written.
    fn restore(&mut self, index: Index, data: &mut dyn Read) -> Result<()>;

    /// Makes everything applied so far durable (before Raft may discard the log behind it).
    ///
    /// # Errors
    /// If the state cannot be synced.
    fn sync(&mut self) -> Result<()>;
}

/// The key-value state machine stored in an [`lsm::Db`].
#[derive(Clone)]
pub struct KvStateMachine {
    db: Db,
    applied: Index,
}

impl std::fmt::Debug for KvStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStateMachine").field("applied", &self.applied).finish_non_exhaustive()
    }
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

fn client_key(client_id: u64) -> Vec<u8> {
    prefixed(CLIENT, &client_id.to_be_bytes())
}

/// Writes of a batch of commands not yet in the database, and what they set, so that later
/// commands of the batch read them.
#[derive(Default)]
struct Stage {
    batch: WriteBatch,
    /// Key -> value set by the batch (`None`: deleted).
    written: std::collections::HashMap<Vec<u8>, Option<Bytes>>,
}

impl Stage {
    fn get(&self, db: &Db, key: &[u8]) -> Result<Option<Bytes>> {
        match self.written.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(db.get(key)?),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Bytes) {
        self.batch.put(key.clone(), value.clone());
        self.written.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.batch.delete(key.clone());
        self.written.insert(key, None);
    }
}

impl KvStateMachine {
    /// The state machine kept in `db` (empty or as a previous run left it).
    ///
    /// # Errors
    /// If the applied index cannot be read.
    pub fn new(db: Db) -> Result<KvStateMachine> {
        let applied =
            match db.get(APPLIED)? {
                Some(v) => u64::from_le_bytes(v.as_ref().try_into().map_err(|_| {
                    crate::Error::Corrupt("the applied index is not 8 bytes".into())
                })?),
                None => 0,
            };
        Ok(KvStateMachine { db, applied })
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The outcome recorded for `client_id`'s last write: (its sequence number, outcome).
    fn last_write(&self, stage: &Stage, client_id: u64) -> Result<Option<(u64, Outcome)>> {
        let Some(v) = stage.get(&self.db, &client_key(client_id))? else { return Ok(None) };
        let corrupt = || crate::Error::Corrupt(format!("dedup entry of client {client_id}"));
        let seq = u64::from_le_bytes(v.get(..8).ok_or_else(corrupt)?.try_into().expect("8"));
        let outcome = postcard::from_bytes(&v[8..]).map_err(|_| corrupt())?;
        Ok(Some((seq, outcome)))
    }

    fn write(&mut self, index: Index, mut batch: WriteBatch, sync: bool) -> Result<()> {
        batch.put(APPLIED.to_vec(), index.to_le_bytes().to_vec());
        self.db.write_opt(batch, WriteOptions { sync })?;
        self.applied = index;
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes; the end of the input is a corrupt snapshot.
fn read_snapshot_bytes(data: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    data.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            crate::Error::Corrupt("the snapshot ends in the middle of a record".into())
        }
        _ => crate::Error::Io(e),
    })
}

fn read_u32(data: &mut dyn Read) -> Result<u32> {
    let mut word = [0u8; 4];
    read_snapshot_bytes(data, &mut word)?;
    Ok(u32::from_le_bytes(word))
}

/// Reads one snapshot record: `Some((key, value))`, or `None` at the end mark (checking the
/// record count and that nothing follows).
fn read_record(data: &mut dyn Read, records: u64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let corrupt = |what: String| crate::Error::Corrupt(format!("snapshot: {what}"));
    let klen = read_u32(data)?;
    if klen == END_MARK {
        let mut count = [0u8; 8];
        read_snapshot_bytes(data, &mut count)?;
        let count = u64::from_le_bytes(count);
        if count != records {
            return Err(corrupt(format!("holds {records} records but says {count}")));
        }
        if data.read(&mut [0u8; 1])? != 0 {
            return Err(corrupt("bytes after the end mark".into()));
        }
        return Ok(None);
    }
    let key = read_snapshot_field(data, klen)?;
    if !matches!(key.first(), Some(&DATA | &CLIENT)) {
        return Err(corrupt(format!("record {records} has a key outside the state")));
    }
    let vlen = read_u32(data)?;
    let value = read_snapshot_field(data, vlen)?;
    Ok(Some((key, value)))
}

/// Reads a key or value of `len` bytes. The buffer grows with the bytes that arrive, not with
/// the length the snapshot claims: a damaged or forged length (up to 4 GiB) costs only as much
/// memory as the snapshot really holds.
fn read_snapshot_field(data: &mut dyn Read, len: u32) -> Result<Vec<u8>> {
    let mut field = Vec::with_capacity((len as usize).min(1 << 16));
    data.take(u64::from(len)).read_to_end(&mut field)?;
    if field.len() != len as usize {
        return Err(crate::Error::Corrupt("the snapshot ends in the middle of a record".into()));
    }
    Ok(field)
}

impl KvStateMachine {
    /// Stages one write command: its effect and its dedup entry go into `stage`.
    fn write_op(&self, stage: &mut Stage, request: &Request) -> Result<Outcome> {
        let last = self.last_write(stage, request.client_id)?;
        if let Some((seq, outcome)) = &last
            && request.seq <= *seq
        {
            // A retry of a write already applied: answer it as it was answered, if that is
            // still known (only the last outcome is kept).
            return Ok(if request.seq == *seq {
                outcome.clone()
            } else if matches!(request.op, Op::Put { .. } | Op::Delete { .. } | Op::PutMany { .. })
            {
                Outcome::Written
            } else {
                Outcome::Forgotten
            });
        }
        if request.ordered && request.seq != last.map_or(0, |(seq, _)| seq) + 1 {
            return Ok(Outcome::OutOfOrder);
        }
        let outcome = match &request.op {
            Op::Put { key, value } => {
                stage.put(prefixed(DATA, key), value.clone());
                Outcome::Written
            }
            Op::Append { key, value } => {
                let data_key = prefixed(DATA, key);
                let mut joined = BytesMut::new();
                if let Some(old) = stage.get(&self.db, &data_key)? {
                    joined.extend_from_slice(&old);
                }
                joined.extend_from_slice(value);
                let len = joined.len() as u64;
                stage.put(data_key, joined.freeze());
                Outcome::Length(len)
            }
            Op::Delete { key } => {
                stage.delete(prefixed(DATA, key));
                Outcome::Written
            }
            Op::PutMany { pairs } => {
                for (key, value) in pairs {
                    stage.put(prefixed(DATA, key), value.clone());
                }
                Outcome::Written
            }
            Op::DeleteMany { keys } => {
                let mut existed = std::collections::BTreeSet::new();
                for key in keys {
                    let data_key = prefixed(DATA, key);
                    if stage.get(&self.db, &data_key)?.is_some() {
                        existed.insert(key);
                    }
                    stage.delete(data_key);
                }
                Outcome::Count(existed.len() as u64)
            }
            Op::Get { .. } | Op::GetMany { .. } | Op::Count | Op::Scan { .. } => {
                unreachable!("reads are not staged")
            }
        };
        let mut entry = request.seq.to_le_bytes().to_vec();
        entry.extend_from_slice(&postcard::to_allocvec(&outcome).expect("outcomes encode"));
        stage.put(client_key(request.client_id), entry.into());
        Ok(outcome)
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: Index, request: &Request) -> Result<Outcome> {
        Ok(self.apply_batch(&[(index, Some(request))])?.pop().expect("one command, one outcome"))
    }

    /// Applies the whole batch in one atomic database write (one WAL record), with the
    /// applied index of its last entry. A read through the log sees the writes before it: the
    /// writes staged so far are written first.
    fn apply_batch(&mut self, entries: &[(Index, Option<&Request>)]) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut stage = Stage::default();
        for &(index, request) in entries {
            let Some(request) = request else { continue };
            if request.op.is_write() {
                outcomes.push(self.write_op(&mut stage, request)?);
            } else {
                // A read through the log: answered at this point of the log, nothing recorded
                // (a retry is simply read again, later, which is as linearizable).
                if !stage.batch.is_empty() {
                    let before = index.saturating_sub(1).max(self.applied);
                    self.write(before, std::mem::take(&mut stage).batch, false)?;
                }
                outcomes.push(self.read(&request.op)?);
            }
        }
        if let Some(&(last, _)) = entries.last() {
            self.write(last, stage.batch, false)?;
        }
        Ok(outcomes)
    }

    fn skip(&mut self, index: Index) -> Result<()> {
        self.write(index, WriteBatch::new(), false)
    }

    fn applied_index(&self) -> Index {
        self.applied
    }

    fn read(&self, op: &Op) -> Result<Outcome> {
        match op {
            Op::Get { key } => Ok(Outcome::Value(self.db.get(&prefixed(DATA, key))?)),
            Op::GetMany { keys } => {
                // One LSM snapshot, so the values are all from the same point.
                let snapshot = self.db.snapshot();
                let values = keys
                    .iter()
                    .map(|k| self.db.get_at(&prefixed(DATA, k), &snapshot))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Outcome::Values(values))
            }
            Op::Count => {
                let snapshot = self.db.snapshot();
                let mut n = 0;
                for pair in self.db.iter(&[DATA], Some(&[DATA + 1]), &snapshot)? {
                    pair?;
                    n += 1;
                }
                Ok(Outcome::Count(n))
            }
            Op::Scan { start, end, limit } => {
                let limit = (*limit).clamp(1, MAX_SCAN_PAGE) as usize;
                let from = prefixed(DATA, start);
                let to = match end {
                    Some(e) => prefixed(DATA, e),
                    None => vec![DATA + 1],
                };
                let snapshot = self.db.snapshot();
                let mut pairs = Vec::new();
                let mut next = None;
                for pair in self.db.iter(&from, Some(&to), &snapshot)? {
                    let (k, v) = pair?;
                    if pairs.len() == limit {
                        next = Some(k.slice(1..));
                        break;
                    }
                    pairs.push((k.slice(1..), v));
                }
                Ok(Outcome::Page { pairs, next })
            }
            write => Err(crate::Error::Corrupt(format!("{write:?} is not a read"))),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<()> {
        let snapshot = self.db.snapshot();
        let mut records = 0u64;
        for pair in self.db.iter(&[CLIENT], Some(&[DATA + 1]), &snapshot)? {
            let (k, v) = pair?;
            let too_long = |what| crate::Error::Corrupt(format!("a {what} longer than 4 GiB"));
            let klen = u32::try_from(k.len()).ok().filter(|&n| n != END_MARK);
            out.write_all(&klen.ok_or_else(|| too_long("key"))?.to_le_bytes())?;
            out.write_all(&k)?;
            let vlen = u32::try_from(v.len()).map_err(|_| too_long("value"))?;
            out.write_all(&vlen.to_le_bytes())?;
            out.write_all(&v)?;
            records += 1;
        }
        out.write_all(&END_MARK.to_le_bytes())?;
        out.write_all(&records.to_le_bytes())?;
        out.flush()?;
        Ok(())
    }

    fn restore(&mut self, index: Index, data: &mut dyn Read) -> Result<()> {
        let mut data = std::io::BufReader::with_capacity(1 << 16, data);
        // Out with the old state, in batches; the first also marks the state as unusable.
        let mut batch = WriteBatch::new();
        batch.put(APPLIED.to_vec(), 0u64.to_le_bytes().to_vec());
        let mut bytes = 0;
        let snapshot = self.db.snapshot();
        for pair in self.db.iter(&[CLIENT], Some(&[DATA + 1]), &snapshot)? {
            let key = pair?.0;
            bytes += key.len();
            batch.delete(key);
            if bytes >= RESTORE_BATCH_BYTES {
                self.db.write(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        drop(snapshot);
        self.applied = 0;
        // In with the snapshot's pairs, in batches, as they are read.
        let mut records = 0;
        while let Some((key, value)) = read_record(&mut data, records)? {
            records += 1;
            bytes += key.len() + value.len();
            batch.put(key, value);
            if bytes >= RESTORE_BATCH_BYTES {
                self.db.write(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        self.write(index, batch, true)
    }

    fn sync(&mut self) -> Result<()> {
        self.write(self.applied, WriteBatch::new(), true)
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
