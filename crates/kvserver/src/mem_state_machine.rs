//! [`MemStateMachine`]: the key-value state machine in plain memory, a second implementation of
//! [`StateMachine`] beside the LSM one.
//!
//! It keeps the data in a `BTreeMap`, the sessions in a `HashMap` with the same expiry index,
//! and applies every command by the rules [`KvStateMachine`](crate::KvStateMachine) follows
//! (the trait's contract): the same outcomes, entry for entry, which a differential test
//! checks on random logs. Written for clarity rather than speed, it is the reference a reader
//! can hold in their head, and the proof that the service runs on any `StateMachine`: the
//! classic 3A/3B tests and the KV simulation run against both.
//!
//! Nothing survives the process, which the contract allows: a restarted replica starts at
//! applied index 0, restores Raft's snapshot, and Raft delivers the log after it again.
//! [`sync`](StateMachine::sync) has nothing to do. A snapshot is the whole state encoded with
//! postcard; it is only ever restored by another `MemStateMachine` (a cluster runs one kind).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use kvproto::proto::{Op, Outcome, Request};
use raft::Index;
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::state_machine::{LEGACY_TTL_MS, MAX_SCAN_PAGE, StateMachine};
use crate::{Error, Result};

/// The largest snapshot [`MemStateMachine::restore`] reads (it holds the whole state in memory
/// anyway); a longer one is refused.
pub const MAX_MEM_SNAPSHOT_BYTES: u64 = 1 << 30;

/// A client session: the number of its last applied write and that write's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    expires_at: u64,
    ttl_ms: u64,
    outcome: Outcome,
}

/// What a snapshot holds.
#[derive(Serialize, Deserialize)]
struct Image {
    clock: u64,
    sessions: Vec<(u64, Session)>,
    data: Vec<(Bytes, Bytes)>,
}

/// The key-value state machine in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct MemStateMachine {
    data: BTreeMap<Bytes, Bytes>,
    sessions: HashMap<u64, Session>,
    /// Every session by (expiry time, id): the expired ones come first.
    expiry: BTreeSet<(u64, u64)>,
    /// The log clock: the largest leader stamp applied (ms since the Unix epoch).
    clock: u64,
    applied: Index,
}

impl MemStateMachine {
    /// An empty state machine, at applied index 0.
    pub fn new() -> MemStateMachine {
        MemStateMachine::default()
    }

    /// Moves the log clock to `time_ms` (if later) and drops the sessions expired by then.
    fn advance_clock(&mut self, time_ms: u64) {
        self.clock = self.clock.max(time_ms);
        while let Some(&(expires_at, id)) = self.expiry.first()
            && expires_at < self.clock
        {
            self.expiry.pop_first();
            self.sessions.remove(&id);
        }
    }

    /// Sets session `id` to `session`, keeping the expiry index in step.
    fn put_session(&mut self, id: u64, session: Session) {
        if let Some(old) = self.sessions.insert(id, session) {
            self.expiry.remove(&(old.expires_at, id));
        }
        let expires_at = self.sessions[&id].expires_at;
        self.expiry.insert((expires_at, id));
    }

    fn end_session(&mut self, id: u64) {
        if let Some(old) = self.sessions.remove(&id) {
            self.expiry.remove(&(old.expires_at, id));
        }
    }

    /// Applies one write. `stamped`: the entry is of version 2 (sessions must be registered
    /// and numbered without gaps); a version 1 entry follows the previous release's rules.
    fn write(&mut self, request: &Request, stamped: bool) -> Outcome {
        match request.op {
            Op::Register { id, ttl_ms, retire } => {
                if !stamped {
                    return Outcome::NoSession;
                }
                if let Some(old) = retire {
                    self.end_session(old);
                }
                if id == 0 || self.sessions.contains_key(&id) {
                    return Outcome::NoSession;
                }
                let ttl_ms = ttl_ms.max(1);
                let outcome = Outcome::Registered { id };
                let expires_at = self.clock.saturating_add(ttl_ms);
                let session = Session { seq: 0, expires_at, ttl_ms, outcome: outcome.clone() };
                self.put_session(id, session);
                return outcome;
            }
            Op::EndSession { id } => {
                if !stamped {
                    return Outcome::NoSession;
                }
                self.end_session(id);
                return Outcome::Written;
            }
            _ => {}
        }
        let id = request.client_id;
        let old = self.sessions.get(&id).cloned();
        if old.is_none() && stamped {
            return Outcome::NoSession;
        }
        let last = old.as_ref().map_or(0, |s| s.seq);
        if let Some(session) = &old
            && request.seq <= last
            && (request.seq > 0 || !stamped)
        {
            // A retry: the last write's outcome is kept, earlier ones are not.
            return if request.seq == last {
                session.outcome.clone()
            } else if matches!(request.op, Op::Put { .. } | Op::Delete { .. } | Op::PutMany { .. })
            {
                Outcome::Written
            } else {
                Outcome::Forgotten
            };
        }
        if (stamped || request.ordered) && request.seq != last.saturating_add(1) {
            return Outcome::OutOfOrder;
        }
        let outcome = self.change(&request.op);
        let ttl_ms = old.as_ref().map_or(LEGACY_TTL_MS, |s| s.ttl_ms);
        let expires_at = self.clock.saturating_add(ttl_ms);
        self.put_session(
            id,
            Session { seq: request.seq, expires_at, ttl_ms, outcome: outcome.clone() },
        );
        outcome
    }

    /// The effect of a data write on the map, and its outcome.
    fn change(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                Outcome::Written
            }
            Op::Append { key, value } => {
                let mut joined = BytesMut::new();
                if let Some(old) = self.data.get(key) {
                    joined.extend_from_slice(old);
                }
                joined.extend_from_slice(value);
                let len = joined.len() as u64;
                self.data.insert(key.clone(), joined.freeze());
                Outcome::Length(len)
            }
            Op::Delete { key } => {
                self.data.remove(key);
                Outcome::Written
            }
            Op::PutMany { pairs } => {
                for (key, value) in pairs {
                    self.data.insert(key.clone(), value.clone());
                }
                Outcome::Written
            }
            Op::DeleteMany { keys } => {
                // A key named twice is gone by its second mention: it counts once.
                let existed = keys.iter().filter(|k| self.data.remove(*k).is_some()).count();
                Outcome::Count(existed as u64)
            }
            Op::Get { .. }
            | Op::GetMany { .. }
            | Op::Count
            | Op::Scan { .. }
            | Op::Register { .. }
            | Op::EndSession { .. } => unreachable!("only data writes reach `change`"),
        }
    }
}

impl StateMachine for MemStateMachine {
    fn apply(&mut self, index: Index, command: &Command) -> Result<Outcome> {
        Ok(self.apply_batch(&[(index, Some(command))])?.pop().expect("one command, one outcome"))
    }

    fn apply_batch(&mut self, entries: &[(Index, Option<&Command>)]) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for &(index, command) in entries {
            if let Some(Command { time_ms, request }) = command {
                if let Some(time_ms) = *time_ms {
                    self.advance_clock(time_ms);
                }
                outcomes.push(if request.op.is_write() {
                    self.write(request, time_ms.is_some())
                } else {
                    self.read(&request.op)?
                });
            }
            self.applied = index;
        }
        Ok(outcomes)
    }

    fn skip(&mut self, index: Index) -> Result<()> {
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }

    fn read(&self, op: &Op) -> Result<Outcome> {
        Ok(match op {
            Op::Get { key } => Outcome::Value(self.data.get(key).cloned()),
            Op::GetMany { keys } => {
                Outcome::Values(keys.iter().map(|k| self.data.get(k).cloned()).collect())
            }
            Op::Count => Outcome::Count(self.data.len() as u64),
            Op::Scan { start, end, limit } => {
                let limit = (*limit).clamp(1, MAX_SCAN_PAGE) as usize;
                let mut range = self
                    .data
                    .range(start.clone()..)
                    .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e));
                let pairs: Vec<(Bytes, Bytes)> =
                    range.by_ref().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect();
                let next = range.next().map(|(k, _)| k.clone());
                Outcome::Page { pairs, next }
            }
            write => return Err(Error::Corrupt(format!("{write:?} is not a read"))),
        })
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<()> {
        let mut sessions: Vec<(u64, Session)> =
            self.sessions.iter().map(|(&id, s)| (id, s.clone())).collect();
        sessions.sort_unstable_by_key(|&(id, _)| id);
        let data = self.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let image = Image { clock: self.clock, sessions, data };
        let bytes = postcard::to_allocvec(&image)
            .map_err(|e| Error::Corrupt(format!("the state does not encode: {e}")))?;
        out.write_all(&bytes)?;
        out.flush()?;
        Ok(())
    }

    fn restore(&mut self, index: Index, data: &mut dyn Read) -> Result<()> {
        let mut bytes = Vec::new();
        data.take(MAX_MEM_SNAPSHOT_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_MEM_SNAPSHOT_BYTES {
            return Err(Error::Corrupt(format!(
                "the snapshot is larger than {MAX_MEM_SNAPSHOT_BYTES} bytes"
            )));
        }
        let (image, rest) = postcard::take_from_bytes::<Image>(&bytes)
            .map_err(|e| Error::Corrupt(format!("the snapshot does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::Corrupt(format!("{} bytes after the snapshot", rest.len())));
        }
        let mut restored =
            MemStateMachine { clock: image.clock, applied: index, ..Default::default() };
        for (id, session) in image.sessions {
            if restored.sessions.contains_key(&id) {
                return Err(Error::Corrupt(format!("the snapshot holds session {id} twice")));
            }
            restored.put_session(id, session);
        }
        restored.data = image.data.into_iter().collect();
        *self = restored;
        Ok(())
    }

    fn session_stats(&self) -> (usize, u64) {
        (self.sessions.len(), self.clock)
    }

    fn sessions(&self) -> Vec<(u64, u64)> {
        let mut sessions: Vec<(u64, u64)> =
            self.sessions.iter().map(|(&id, s)| (id, s.expires_at)).collect();
        sessions.sort_unstable();
        sessions
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}
