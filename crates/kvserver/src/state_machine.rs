//! The service's state machine: the key-value data, the clients' dedup table and the applied
//! index, all in one LSM database and changed together in one atomic write per command.
//!
//! ```text
//! key layout:  'd' ‖ user key        -> value
//!              'c' ‖ client id (u64 BE) -> last seq (u64 LE) ‖ encoded reply
//!              'm' ‖ "applied"        -> applied index (u64 LE)
//! snapshot  := record*    record := klen:u32le key vlen:u32le value   (every 'd' and 'c' pair)
//! ```

use bytes::{Bytes, BytesMut};
use kvclient::proto::{Op, Outcome, Request};
use lsm::{Db, WriteBatch, WriteOptions};
use raft::Index;

use crate::Result;

const DATA: u8 = b'd';
const CLIENT: u8 = b'c';
const APPLIED: &[u8] = b"mapplied";

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

    /// The last index applied.
    fn applied_index(&self) -> Index;

    /// Answers a read (`Get` or `Scan`) from the current state.
    ///
    /// # Errors
    /// If the state cannot be read.
    fn read(&self, op: &Op) -> Result<Outcome>;

    /// The whole state (data and dedup table) as bytes.
    ///
    /// # Errors
    /// If the state cannot be read.
    fn snapshot(&self) -> Result<Bytes>;

    /// Replaces the whole state with a snapshot taken at `index`.
    ///
    /// # Errors
    /// If the snapshot does not parse or the state cannot be written.
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<()>;

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
    fn last_write(&self, client_id: u64) -> Result<Option<(u64, Outcome)>> {
        let Some(v) = self.db.get(&client_key(client_id))? else { return Ok(None) };
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

/// The (key, value) records of a snapshot, or `None` if it does not parse.
fn parse_snapshot(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut records = Vec::new();
    let mut rest = data;
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head)
    }
    while !rest.is_empty() {
        let klen = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let key = take(&mut rest, klen)?;
        let vlen = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let value = take(&mut rest, vlen)?;
        records.push((key, value));
    }
    Some(records)
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: Index, request: &Request) -> Result<Outcome> {
        if !request.op.is_write() {
            // A read through the log: answered at this point of the log, nothing recorded (a
            // retry is simply read again, later, which is as linearizable).
            let outcome = self.read(&request.op)?;
            self.write(index, WriteBatch::new(), false)?;
            return Ok(outcome);
        }
        if let Some((seq, outcome)) = self.last_write(request.client_id)?
            && request.seq <= seq
        {
            // A retry of a write already applied: answer it as it was answered.
            self.write(index, WriteBatch::new(), false)?;
            return Ok(if request.seq == seq { outcome } else { Outcome::Written });
        }
        let mut batch = WriteBatch::new();
        match &request.op {
            Op::Put { key, value } => {
                batch.put(prefixed(DATA, key), value.clone());
            }
            Op::Append { key, value } => {
                let data_key = prefixed(DATA, key);
                let mut joined = BytesMut::new();
                if let Some(old) = self.db.get(&data_key)? {
                    joined.extend_from_slice(&old);
                }
                joined.extend_from_slice(value);
                batch.put(data_key, joined.freeze());
            }
            Op::Delete { key } => {
                batch.delete(prefixed(DATA, key));
            }
            Op::Get { .. } | Op::Scan { .. } => unreachable!("reads returned above"),
        }
        let outcome = Outcome::Written;
        let mut entry = request.seq.to_le_bytes().to_vec();
        entry.extend_from_slice(&postcard::to_allocvec(&outcome).expect("outcomes encode"));
        batch.put(client_key(request.client_id), entry);
        self.write(index, batch, false)?;
        Ok(outcome)
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

    fn snapshot(&self) -> Result<Bytes> {
        let mut out = Vec::new();
        let snapshot = self.db.snapshot();
        for pair in self.db.iter(&[CLIENT], Some(&[DATA + 1]), &snapshot)? {
            let (k, v) = pair?;
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(&v);
        }
        Ok(Bytes::from(out))
    }

    fn restore(&mut self, index: Index, data: &[u8]) -> Result<()> {
        let records = parse_snapshot(data)
            .ok_or_else(|| crate::Error::Corrupt("the snapshot does not parse".into()))?;
        // Everything there now goes, then the snapshot's pairs come in, in one batch.
        let mut batch = WriteBatch::new();
        let snapshot = self.db.snapshot();
        for pair in self.db.iter(&[CLIENT], Some(&[DATA + 1]), &snapshot)? {
            batch.delete(pair?.0);
        }
        for (key, value) in records {
            batch.put(key.to_vec(), value.to_vec());
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
