//! The service's state machine: the key-value data, the client sessions (the dedup table), the
//! log clock and the applied index, all in one LSM database and changed together in one atomic
//! write per batch of commands.
//!
//! ```text
//! key layout:  'a' ‖ "clock"           -> log clock, ms (u64 LE)
//!              'b' ‖ session id (u64 BE) -> last seq (u64 LE) ‖ expires at, ms (u64 LE)
//!                                         ‖ TTL, ms (u64 LE) ‖ encoded reply
//!              'c' ‖ client id (u64 BE)  -> last seq (u64 LE) ‖ encoded reply   (release 1)
//!              'd' ‖ user key          -> value
//!              'm' ‖ "applied"         -> applied index (u64 LE)
//! snapshot  := record* end     record := klen:u32le key vlen:u32le value (every 'a'..'d' pair)
//!              end := 0xffffffff count:u64le (the number of records before it)
//! ```
//!
//! # Sessions and expiry
//!
//! A write names a session (`Request::client_id`), registered through the log by
//! [`Op::Register`], whose id the leader drew at random and wrote into the entry
//! ([`command`](crate::command)). A write is applied only if it is the session's next number;
//! a retry of its last write is answered from the table; anything else is refused
//! ([`Outcome::OutOfOrder`], [`Outcome::NoSession`]) and changes nothing. So a client cannot
//! write under an id it was not given, nor skip a session's numbers ahead.
//!
//! Sessions expire as in the Raft thesis §6.3: every version 2 entry carries the leader's clock,
//! the **log clock** is the largest stamp applied so far (it never runs backwards), and before
//! applying an entry the state machine evicts every session whose expiry time (last applied
//! write, or registration, plus the session's TTL, both from the log) is before the log clock.
//! All of that is a function of the log, so every replica evicts the same sessions at the same
//! index. An in-memory index (expiry time, id) finds the expired ones without a scan: each
//! entry costs one look at the index's first element, each eviction O(log n). It is rebuilt
//! from the sessions on open and after a restore (16 bytes and a B-tree slot per session).
//!
//! Version 1 entries (the previous release: no stamp, no registration) are applied as that
//! release did: an unknown client id gets a session at once, and an unordered write may skip
//! numbers. Their sessions, and dedup entries of that release ('c'), expire at the first entry
//! stamped after them.
//!
//! # Snapshots and durability
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
use std::collections::BTreeSet;

use kvproto::proto::{Op, Outcome, Request};
use lsm::{Db, WriteBatch, WriteOptions};
use raft::Index;

use crate::Result;

use crate::command::Command;

const CLOCK: &[u8] = b"aclock";
const SESSION: u8 = b'b';
/// Dedup entries of release 1, read (as sessions that expire at the first stamped entry).
const LEGACY_CLIENT: u8 = b'c';
const DATA: u8 = b'd';
const APPLIED: &[u8] = b"mapplied";
/// The first and the last prefix a snapshot holds ('a' to 'd').
const FIRST_PREFIX: u8 = b'a';
const LAST_PREFIX: u8 = DATA;

/// The TTL of a session a version 1 entry creates (such entries have no leader to give one).
pub(crate) const LEGACY_TTL_MS: u64 = 3_600_000;

/// Restoring a snapshot writes it to the database in batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// Marks the end of a snapshot's records (no key is this long).
const END_MARK: u32 = u32::MAX;

/// The largest page a scan returns, whatever the client asks.
pub const MAX_SCAN_PAGE: u32 = 1000;

/// What the service plugs into Raft: it applies committed commands in log order, answers
/// reads, and snapshots and restores its whole state.
///
/// Two implementations ship: [`KvStateMachine`] (in an LSM database, durable) and
/// [`MemStateMachine`](crate::MemStateMachine) (in memory). `testing::state_machine_suite`
/// (feature `testing`) checks the rules below on any implementation.
///
/// # Contract
///
/// 1. **Log order, once, deterministic.** [`apply`](Self::apply),
///    [`apply_batch`](Self::apply_batch) and [`skip`](Self::skip) receive increasing indexes,
///    each once per life of the machine.
///    The outcome and the new state depend only on the state and the command (its request
///    and its leader stamp): no local clock, randomness or configuration, so every replica
///    that applies the same log reaches the same state and answers the same.
/// 2. **Exactly once per session.** A write must name a live session ([`Op::Register`] starts
///    one, with the id the leader drew) and be its next number; a retry of the session's last
///    write is answered with the recorded outcome and changes nothing; anything else is
///    refused ([`Outcome::NoSession`], [`Outcome::OutOfOrder`]) and changes nothing. Sessions
///    expire on the log clock (the largest stamp applied): one whose last write plus its TTL
///    lies before the clock is gone before the next command applies.
/// 3. **Reads in the log** (a `Get` or `Scan` applied as a command) see every write before
///    them, the earlier commands of the same batch included. [`read`](Self::read) answers
///    from the state as applied so far, and refuses a write.
/// 4. **Batches.** `apply_batch` gives the same outcomes and the same state as applying its
///    entries one by one.
/// 5. **The applied index is stored with the effects.** [`applied_index`](Self::applied_index)
///    is the last index applied or skipped. After a crash, a durable machine holds exactly the
///    effects of the entries up to the applied index it reports, never a part of a command;
///    Raft delivers the rest again. A machine that keeps nothing (in memory) restarts at 0.
/// 6. **`sync`**: once it returns, everything applied so far survives a crash; Raft may then
///    discard its log up to there.
/// 7. **Snapshots.** [`snapshot`](Self::snapshot) writes a consistent image of the whole state
///    (data, sessions, log clock) at the applied index; [`restore`](Self::restore) replaces the
///    whole state with one, at the index given. A machine restored from another's snapshot
///    answers every later command as that one would. A snapshot that does not parse is
///    refused with an error, and a restore that fails part way leaves no mix of two states:
///    either the state before it, or an empty one at applied index 0.
pub trait StateMachine: Send {
    /// Applies the committed `command` at log `index` (indexes come in order, each once) and
    /// returns its outcome. A write whose (session, sequence number) was already applied is
    /// answered with the recorded outcome and not applied again; one naming no live session,
    /// or skipping the session's numbers, is refused and changes nothing (see the module
    /// documentation).
    ///
    /// # Errors
    /// If the state cannot be read or written; the server must then stop.
    fn apply(&mut self, index: Index, command: &Command) -> Result<Outcome>;

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
    fn apply_batch(&mut self, entries: &[(Index, Option<&Command>)]) -> Result<Vec<Outcome>> {
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

    /// Writes the whole state (data, sessions, log clock) to `out`, front to back.
    ///
    /// # Errors
    /// If the state cannot be read or `out` cannot be written.
    fn snapshot(&self, out: &mut dyn Write) -> Result<()>;

    /// Replaces the whole state with a snapshot taken at `index`, read from `data` to its end.
    ///
    /// # Errors
    /// If the snapshot does not parse or the state cannot be written.
    fn restore(&mut self, index: Index, data: &mut dyn Read) -> Result<()>;

    /// How many client sessions the dedup table holds, and the log clock (ms since the Unix
    /// epoch), for `INFO`.
    fn session_stats(&self) -> (usize, u64);

    /// Every live session, as (id, expiry time on the log clock), by id: what replicas must
    /// agree on at each index (rule 2).
    fn sessions(&self) -> Vec<(u64, u64)>;

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
    /// The log clock: the largest stamp applied (ms since the Unix epoch).
    clock: u64,
    /// The log clock as last written to the database (with the applied index).
    clock_saved: u64,
    /// Every session by (expiry time, id): the expired ones come first.
    expiry: BTreeSet<(u64, u64)>,
}

/// A client session's entry in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    /// The number of its last applied write (0 before the first).
    seq: u64,
    /// When it expires, on the log clock.
    expires_at: u64,
    ttl_ms: u64,
    /// The outcome of its last applied write.
    outcome: Outcome,
    /// A dedup entry of release 1 ('c').
    legacy: bool,
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

fn session_key(id: u64) -> Vec<u8> {
    prefixed(SESSION, &id.to_be_bytes())
}

fn legacy_key(id: u64) -> Vec<u8> {
    prefixed(LEGACY_CLIENT, &id.to_be_bytes())
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let word =
        bytes.try_into().map_err(|_| crate::Error::Corrupt(format!("{what}: not 8 bytes")))?;
    Ok(u64::from_le_bytes(word))
}

/// Decodes a session entry: `legacy` for a release 1 dedup entry ('c').
fn decode_session(id: u64, value: &[u8], legacy: bool) -> Result<Session> {
    let corrupt = || crate::Error::Corrupt(format!("the session entry of client {id}"));
    let fixed = if legacy { 8 } else { 24 };
    let (head, reply) = value.split_at_checked(fixed).ok_or_else(corrupt)?;
    let word = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let outcome = postcard::from_bytes(reply).map_err(|_| corrupt())?;
    Ok(if legacy {
        Session { seq: word(0), expires_at: 0, ttl_ms: LEGACY_TTL_MS, outcome, legacy }
    } else {
        Session { seq: word(0), expires_at: word(1), ttl_ms: word(2), outcome, legacy }
    })
}

fn encode_session(session: &Session) -> Bytes {
    let mut value = Vec::with_capacity(32);
    value.extend_from_slice(&session.seq.to_le_bytes());
    value.extend_from_slice(&session.expires_at.to_le_bytes());
    value.extend_from_slice(&session.ttl_ms.to_le_bytes());
    value.extend_from_slice(&postcard::to_allocvec(&session.outcome).expect("outcomes encode"));
    value.into()
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
    /// If the applied index, the clock or a session cannot be read.
    pub fn new(db: Db) -> Result<KvStateMachine> {
        let applied = match db.get(APPLIED)? {
            Some(v) => decode_u64(&v, "the applied index")?,
            None => 0,
        };
        let mut machine =
            KvStateMachine { db, applied, clock: 0, clock_saved: 0, expiry: BTreeSet::new() };
        machine.load_sessions()?;
        Ok(machine)
    }

    /// Reads the log clock and rebuilds the expiry index from the sessions in the database.
    fn load_sessions(&mut self) -> Result<()> {
        self.clock = match self.db.get(CLOCK)? {
            Some(v) => decode_u64(&v, "the log clock")?,
            None => 0,
        };
        self.clock_saved = self.clock;
        self.expiry.clear();
        let snapshot = self.db.snapshot();
        for pair in self.db.iter(&[SESSION], Some(&[LEGACY_CLIENT + 1]), &snapshot)? {
            let (key, value) = pair?;
            let id = key
                .get(1..)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| crate::Error::Corrupt("a session key is not 9 bytes".into()))?;
            let session = decode_session(id, &value, key[0] == LEGACY_CLIENT)?;
            self.expiry.insert((session.expires_at, id));
        }
        Ok(())
    }

    /// The log clock: the largest leader stamp applied (ms since the Unix epoch).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The session `id`, if it is live (or a release 1 dedup entry).
    fn session(&self, stage: &Stage, id: u64) -> Result<Option<Session>> {
        if let Some(v) = stage.get(&self.db, &session_key(id))? {
            return Ok(Some(decode_session(id, &v, false)?));
        }
        match stage.get(&self.db, &legacy_key(id))? {
            Some(v) => Ok(Some(decode_session(id, &v, true)?)),
            None => Ok(None),
        }
    }

    /// Stages `session` as the entry of `id`, which had `old` before (if any).
    fn put_session(&mut self, stage: &mut Stage, id: u64, old: Option<&Session>, new: &Session) {
        if let Some(old) = old {
            self.expiry.remove(&(old.expires_at, id));
            if old.legacy {
                stage.delete(legacy_key(id));
            }
        }
        self.expiry.insert((new.expires_at, id));
        stage.put(session_key(id), encode_session(new));
    }

    /// Stages the end of session `id`, if it is live.
    fn end_session(&mut self, stage: &mut Stage, id: u64) -> Result<()> {
        if let Some(session) = self.session(stage, id)? {
            self.expiry.remove(&(session.expires_at, id));
            stage.delete(if session.legacy { legacy_key(id) } else { session_key(id) });
        }
        Ok(())
    }

    /// Moves the log clock to `time_ms` (if later) and evicts the sessions expired by then.
    fn advance_clock(&mut self, stage: &mut Stage, time_ms: u64) {
        // Written to the database with the applied index (`write`).
        self.clock = self.clock.max(time_ms);
        while let Some(&(expires_at, id)) = self.expiry.first()
            && expires_at < self.clock
        {
            self.expiry.pop_first();
            stage.delete(session_key(id));
            stage.delete(legacy_key(id));
        }
    }

    /// Writes `batch` with the applied index `index` (and the log clock, if it moved).
    fn write(&mut self, index: Index, mut batch: WriteBatch, sync: bool) -> Result<()> {
        batch.put(APPLIED.to_vec(), index.to_le_bytes().to_vec());
        if self.clock != self.clock_saved {
            batch.put(CLOCK.to_vec(), self.clock.to_le_bytes().to_vec());
            self.clock_saved = self.clock;
        }
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
    if !matches!(key.first(), Some(&(FIRST_PREFIX..=LAST_PREFIX))) {
        return Err(corrupt(format!("record {records} has a key outside the state")));
    }
    let vlen = read_u32(data)?;
    let value = read_snapshot_field(data, vlen)?;
    // The clock and the sessions must decode: they are read back into memory after the restore.
    match key[0] {
        DATA => {}
        FIRST_PREFIX if key == CLOCK && value.len() == 8 => {}
        prefix @ (SESSION | LEGACY_CLIENT) if key.len() == 9 => {
            let id = u64::from_be_bytes(key[1..].try_into().expect("8 bytes"));
            decode_session(id, &value, prefix == LEGACY_CLIENT)
                .map_err(|e| corrupt(format!("record {records}: {e}")))?;
        }
        _ => return Err(corrupt(format!("record {records} is not a valid clock or session"))),
    }
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
    /// Stages a registration: ends `retire` (if live) and starts session `id`.
    fn register(
        &mut self,
        stage: &mut Stage,
        id: u64,
        ttl_ms: u64,
        retire: Option<u64>,
    ) -> Result<Outcome> {
        if let Some(old) = retire {
            self.end_session(stage, old)?;
        }
        if id == 0 || self.session(stage, id)?.is_some() {
            // Not filled in by a leader, or (with odds of 2^-64) taken: the client asks again.
            return Ok(Outcome::NoSession);
        }
        let ttl_ms = ttl_ms.max(1);
        let outcome = Outcome::Registered { id };
        let session = Session {
            seq: 0,
            expires_at: self.clock.saturating_add(ttl_ms),
            ttl_ms,
            outcome: outcome.clone(),
            legacy: false,
        };
        self.put_session(stage, id, None, &session);
        Ok(outcome)
    }

    /// Stages one write command: its effect and its session's new entry go into `stage`.
    /// `stamped`: the command is of version 2 (sessions must be registered, no gaps).
    fn write_op(&mut self, stage: &mut Stage, request: &Request, stamped: bool) -> Result<Outcome> {
        if let Op::Register { id, ttl_ms, retire } = request.op {
            if !stamped {
                return Ok(Outcome::NoSession); // Release 1 wrote no registrations.
            }
            return self.register(stage, id, ttl_ms, retire);
        }
        if let Op::EndSession { id } = request.op {
            if !stamped {
                return Ok(Outcome::NoSession);
            }
            self.end_session(stage, id)?;
            return Ok(Outcome::Written);
        }
        let id = request.client_id;
        let old = match self.session(stage, id)? {
            Some(session) => Some(session),
            None if stamped => return Ok(Outcome::NoSession),
            None => None, // Release 1: a client's first write starts its session.
        };
        let last = old.as_ref().map_or(0, |s| s.seq);
        if let Some(session) = &old
            && request.seq <= last
            && (request.seq > 0 || !stamped)
        {
            // A retry of a write already applied: answer it as it was answered, if that is
            // still known (only the last outcome is kept).
            return Ok(if request.seq == last {
                session.outcome.clone()
            } else if matches!(request.op, Op::Put { .. } | Op::Delete { .. } | Op::PutMany { .. })
            {
                Outcome::Written
            } else {
                Outcome::Forgotten
            });
        }
        if (stamped || request.ordered) && request.seq != last.saturating_add(1) {
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
            Op::Register { .. } | Op::EndSession { .. } => {
                unreachable!("registrations and ends of sessions are staged above")
            }
        };
        let ttl_ms = old.as_ref().map_or(LEGACY_TTL_MS, |s| s.ttl_ms);
        let session = Session {
            seq: request.seq,
            expires_at: self.clock.saturating_add(ttl_ms),
            ttl_ms,
            outcome: outcome.clone(),
            legacy: false,
        };
        self.put_session(stage, id, old.as_ref(), &session);
        Ok(outcome)
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: Index, command: &Command) -> Result<Outcome> {
        Ok(self.apply_batch(&[(index, Some(command))])?.pop().expect("one command, one outcome"))
    }

    /// Applies the whole batch in one atomic database write (one WAL record), with the
    /// applied index of its last entry. A read through the log sees the writes before it: the
    /// writes staged so far are written first.
    fn apply_batch(&mut self, entries: &[(Index, Option<&Command>)]) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut stage = Stage::default();
        for &(index, command) in entries {
            let Some(Command { time_ms, request }) = command else { continue };
            if let Some(time_ms) = *time_ms {
                self.advance_clock(&mut stage, time_ms);
            }
            if request.op.is_write() {
                outcomes.push(self.write_op(&mut stage, request, time_ms.is_some())?);
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
        for pair in self.db.iter(&[FIRST_PREFIX], Some(&[LAST_PREFIX + 1]), &snapshot)? {
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
        for pair in self.db.iter(&[FIRST_PREFIX], Some(&[LAST_PREFIX + 1]), &snapshot)? {
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
        // The snapshot brings its own clock: none of ours goes into the batches.
        (self.clock, self.clock_saved) = (0, 0);
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
        self.write(index, batch, true)?;
        // The snapshot's sessions and clock: a session that does not decode fails the restore.
        self.load_sessions()
    }

    fn sync(&mut self) -> Result<()> {
        self.write(self.applied, WriteBatch::new(), true)
    }

    fn session_stats(&self) -> (usize, u64) {
        (self.expiry.len(), self.clock)
    }

    fn sessions(&self) -> Vec<(u64, u64)> {
        let mut sessions: Vec<(u64, u64)> = self.expiry.iter().map(|&(at, id)| (id, at)).collect();
        sessions.sort_unstable();
        sessions
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
