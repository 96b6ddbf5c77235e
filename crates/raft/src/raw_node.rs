//! The Raft state machine: no threads, no clock, and no I/O except writing an incoming snapshot
//! to its spool file when [`Config::snapshot_spool`] names a directory.
//!
//! The code is laid out as the paper is. Each role has a `become_*` that sets it up; `step`
//! first applies the term rules every role shares (Figure 2, "All Servers"), then dispatches to
//! the handler for the message; `tick` drives the two timers (election, heartbeat). Every outgoing
//! message goes into `msgs` and leaves through the next [`Ready`].

use std::collections::{BTreeMap, VecDeque};

use std::io::Write;

use crate::rng::Rng;
use bytes::Bytes;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::{AppendOutcome, Body, Message, Rejected};
#[cfg(feature = "planted-bugs")]
use crate::planted::PlantedBug;
use crate::progress::{Progress, ProgressState};
use crate::raft_log::RaftLog;
use crate::ready::{Apply, PersistedState, ReadState, Ready};
use crate::snapshot::{SnapshotData, SnapshotWriter};
use crate::types::{Entry, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

/// A node's role in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether a majority would vote for it, without changing any term (PreVote).
    PreCandidate,
    /// Campaigning for votes in its own new term.
    Candidate,
    /// Leads the cluster in its term.
    Leader,
}

/// A read-only summary of a node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Figure 2's `current_term`.
    pub current_term: Term,
    /// Figure 2's `voted_for`.
    pub voted_for: Option<NodeId>,
    /// The leader it knows of in `current_term`, if any.
    pub leader_id: Option<NodeId>,
    /// Figure 2's `commit_index`.
    pub commit_index: Index,
    /// Figure 2's `last_applied`: handed to the service and acknowledged by `advance`.
    pub last_applied: Index,
    /// The last index in the log.
    pub last_index: Index,
    /// The last index covered by a snapshot (0 if none).
    pub snapshot_index: Index,
    /// How many messages [`RawNode::step`] refused since the node started.
    pub rejected_messages: u64,
}

/// What the current `Ready` promised; `advance` makes it true.
#[derive(Debug)]
struct InFlight {
    applying_to: Index,
}

/// A linearizable read waiting for a majority to confirm the leadership it was registered under.
#[derive(Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    /// The follower that forwarded the read, or `None` for this node's own.
    from: Option<NodeId>,
    /// Confirmed once a majority has echoed this round (or a later one).
    round: u64,
}

/// How many round start times a leader remembers (for leases); older rounds give no lease.
const ROUNDS_KEPT: usize = 256;

/// A snapshot arriving chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_len: u64,
    data: SnapshotWriter,
}

/// The Raft consensus algorithm as a deterministic state machine.
///
/// See the crate documentation for the driving loop. All methods run in constant or
/// log-proportional time and never block.
#[derive(Debug)]
pub struct RawNode {
    id: NodeId,
    voters: Vec<NodeId>,
    config: Config,
    rng: Rng,

    // Figure 2: persistent state on all servers (and the log, in `log`).
    current_term: Term,
    voted_for: Option<NodeId>,
    log: RaftLog,

    role: Role,
    leader_id: Option<NodeId>,
    /// Ticks since the last election-timer reset (leader: since the last CheckQuorum round).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Votes (or pre-votes) received in the current campaign: id -> granted.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other voter (Figure 2's `next_index[]`, `match_index[]`).
    progress: BTreeMap<NodeId, Progress>,

    /// The latest snapshot (local or installed), kept to send to lagging followers.
    snapshot: Option<Snapshot>,
    snapshot_to_persist: Option<Snapshot>,
    snapshot_to_apply: Option<Snapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,

    msgs: Vec<Message>,
    /// Entries were proposed since the last broadcast; send them when the `Ready` is taken, so
    /// that proposals arriving together travel in one AppendEntries.
    pending_broadcast: bool,
    /// Leader: the commit index moved since the last heartbeat. The next tick tells the
    /// followers (so they apply within a tick, not a heartbeat interval), and commits that
    /// happen within one tick share that one message.
    commit_unannounced: bool,
    /// The hard state of the latest `Ready` handed out (durable once that one is advanced).
    handed_hard_state: HardState,
    /// The `Ready`s handed out and not yet advanced, oldest first.
    in_flight: VecDeque<InFlight>,

    // Reads without log writes: ReadIndex and leases (thesis §6.4).
    /// Ticks since the node started: the leader's clock for leases.
    ticks: u64,
    /// Until `ticks` reaches this, the node refuses (pre-)votes as if it had just heard from a
    /// leader (see [`in_lease`](Self::in_lease)): an election timeout for a node that restarts
    /// (its term is above 0), 0 for one that never joined a term.
    start_lease_ticks: u64,
    /// Leader: the last index when it was elected. Entries earlier leaders committed are all
    /// at or below it, so no read may be served from an index below it.
    term_start_index: Index,
    /// Leader: the latest read round. Each heartbeat broadcast starts one, and every
    /// AppendEntries carries the latest; a follower's answer echoes it.
    read_round: u64,
    /// Leader: the tick at which each recent round started, oldest first.
    round_started: VecDeque<(u64, u64)>,
    /// Leader: the highest round each follower has echoed in this term.
    acked_round: BTreeMap<NodeId, u64>,
    /// Leader: reads waiting for their round to be confirmed, oldest first.
    pending_reads: VecDeque<PendingRead>,
    /// A read was registered since the last broadcast: start a round with the next `Ready`.
    read_round_wanted: bool,
    /// Confirmed reads, for the next `Ready`.
    read_states: Vec<ReadState>,
    /// Messages `step` refused.
    rejected_messages: u64,
    /// Test only: the bug planted in this node, if any.
    #[cfg(feature = "planted-bugs")]
    planted: Option<PlantedBug>,
}

/// Whether the planted bug `$bug` is switched on in `$node`; always `false` (and the bug's
/// code unreachable) without the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        $node.planted == Some(PlantedBug::$bug)
    };
}
#[cfg(not(feature = "planted-bugs"))]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        false
    };
}

impl RawNode {
    /// Creates a node from `config` and what its storage holds (empty for a new node).
    ///
    /// The service is assumed to have restored the snapshot in `state` (if any); committed
    /// entries after it are delivered again through `Ready::to_apply`.
    ///
    /// # Errors
    /// [`Error::Config`] if `config` is invalid.
    pub fn new(config: Config, state: PersistedState) -> Result<RawNode> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        let (snapshot_index, snapshot_term) = state
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_included_index, s.meta.last_included_term));
        let voters = match &state.snapshot {
            Some(s) if !s.meta.voters.is_empty() => s.meta.voters.clone(),
            _ => config.voters.clone(),
        };
        // Entries the snapshot covers may linger after a crash between the two writes.
        let entries: Vec<Entry> =
            state.entries.into_iter().filter(|e| e.index > snapshot_index).collect();
        let log =
            RaftLog::restore(snapshot_index, snapshot_term, entries, state.hard_state.commit_index);
        let start_lease_ticks =
            if state.hard_state.current_term > 0 { u64::from(config.election_ticks) } else { 0 };
        let mut node = RawNode {
            id: config.id,
            voters,
            config,
            rng,
            current_term: state.hard_state.current_term,
            voted_for: state.hard_state.voted_for,
            log,
            role: Role::Follower,
            leader_id: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            snapshot: state.snapshot,
            snapshot_to_persist: None,
            snapshot_to_apply: None,
            incoming_snapshot: None,
            msgs: Vec::new(),
            pending_broadcast: false,
            commit_unannounced: false,
            handed_hard_state: state.hard_state,
            in_flight: VecDeque::new(),
            ticks: 0,
            start_lease_ticks,
            term_start_index: 0,
            read_round: 0,
            round_started: VecDeque::new(),
            acked_round: BTreeMap::new(),
            pending_reads: VecDeque::new(),
            read_round_wanted: false,
            read_states: Vec::new(),
            rejected_messages: 0,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        };
        node.reset_election_timer();
        Ok(node)
    }

    /// Test only: makes this node wrong on purpose, with `bug`, so that a test can show that
    /// its checkers catch it.
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub fn plant_bug(&mut self, bug: PlantedBug) {
        self.planted = Some(bug);
    }

    // ----- Inputs ---------------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    /// Proposes `data` as a new log entry. Returns its index and term; that it will commit is
    /// not guaranteed (the leader may lose its leadership first).
    ///
    /// # Errors
    /// [`Error::NotLeader`] if this node is not the leader; [`Error::EntryTooLarge`] or
    /// [`Error::InvalidProposal`] if `data` is over [`Config::max_entry_bytes`] or fails the
    /// [`Config::proposal_check`].
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term)> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader_hint: self.leader_id });
        }
        self.check_proposal(&data)?;
        let data = self.stamp_proposal(data)?;
        let index = self.log.append(self.current_term, data);
        self.pending_broadcast = true;
        Ok((index, self.current_term))
    }

    /// On a follower: sends `data` to the leader, which proposes it as if a client had given
    /// it there (proposal forwarding). Nothing comes back: the service learns the outcome when
    /// the entry applies, and must retry after a timeout if it never does (the message was lost
    /// or the leader was deposed), so commands must be safe to apply twice (the KV service's
    /// dedup table makes them so). Commands forwarded in a row travel in one message.
    ///
    /// # Errors
    /// [`Error::NotLeader`] with no hint if this node knows no leader, or is the leader (then
    /// use [`propose`](Self::propose)); [`Error::EntryTooLarge`] or [`Error::InvalidProposal`]
    /// as for [`propose`](Self::propose).
    pub fn forward(&mut self, data: Bytes) -> Result<NodeId> {
        let leader = match self.leader_id {
            Some(leader) if self.role == Role::Follower => leader,
            _ => return Err(Error::NotLeader { leader_hint: None }),
        };
        self.check_proposal(&data)?;
        let max_bytes = self.config.max_append_bytes;
        let size = |batch: &[Bytes]| {
            batch.iter().map(|d| Entry::size_bytes_for(d.len() as u64)).sum::<u64>()
        };
        // Commands forwarded in a row share a message, up to an append's worth of bytes (a
        // command larger than that travels alone), so that the message fits the transport.
        if let Some(Message { to, body: Body::Propose { data: batch }, .. }) = self.msgs.last_mut()
            && *to == leader
            && size(batch) + Entry::size_bytes_for(data.len() as u64) <= max_bytes
        {
            batch.push(data);
        } else {
            self.send(leader, self.current_term, Body::Propose { data: vec![data] });
        }
        Ok(leader)
    }

    /// Asks for a linearizable read (thesis §6.4): once this leader has confirmed that it still
    /// leads, a [`ReadState`] with `ctx` and a read index comes out in a `Ready`. The service
    /// may then answer the read from its state as soon as it has applied the read index; no
    /// log entry is written.
    ///
    /// The confirmation is a heartbeat round answered by a majority; reads registered close
    /// together share one round. With [`Config::lease_reads`] (and CheckQuorum), a leader
    /// whose lease still holds answers at once; see the field's documentation for the clock
    /// assumption that takes. A leader that loses its leadership drops its pending reads
    /// without answering: the caller times out and retries elsewhere.
    ///
    /// A follower that knows the leader forwards the request to it (follower reads): the
    /// leader confirms the read index as for its own reads and sends it back, and the
    /// follower's `ReadState` comes out once it arrives. The service on the follower then
    /// answers the read once the follower has applied that index.
    ///
    /// # Errors
    /// [`Error::NotLeader`] if this node is not the leader and knows of no leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<()> {
        if self.role == Role::Leader {
            self.register_read(ctx, None);
            return Ok(());
        }
        match self.leader_id {
            Some(leader) if self.role == Role::Follower => {
                self.send(leader, self.current_term, Body::ReadIndex { ctx });
                Ok(())
            }
            _ => Err(Error::NotLeader { leader_hint: self.leader_id }),
        }
    }

    /// Leader: answers a read now if no round is needed (a single node, or a lease with no
    /// read waiting before it), else queues it for the next round.
    fn register_read(&mut self, ctx: u64, from: Option<NodeId>) {
        let floor =
            if planted!(self, ReadIndexWithoutTermStart) { 0 } else { self.term_start_index };
        let index = self.log.commit_index.max(floor);
        let at_once = self.voters.len() == 1
            || (self.config.lease_reads && self.pending_reads.is_empty() && self.lease_holds());
        if at_once {
            self.answer_read(ctx, index, from);
            return;
        }
        self.read_round_wanted = true;
        let read = PendingRead { ctx, index, from, round: self.read_round + 1 };
        self.pending_reads.push_back(read);
    }

    fn answer_read(&mut self, ctx: u64, index: Index, from: Option<NodeId>) {
        match from {
            None => self.read_states.push(ReadState { ctx, index }),
            Some(follower) => {
                let body = Body::ReadIndexResponse { ctx, index: Some(index) };
                self.send(follower, self.current_term, body);
            }
        }
    }

    /// The service has a snapshot of its state through `index`: compact the log up to it (§7).
    ///
    /// A request for an index already covered by a snapshot is ignored.
    ///
    /// # Errors
    /// [`Error::SnapshotNotApplied`] if `index` has not been handed to the service yet.
    pub fn snapshot(&mut self, index: Index, data: impl Into<SnapshotData>) -> Result<()> {
        if index <= self.log.snapshot_index() {
            return Ok(());
        }
        let handed_out = self.in_flight.back().map_or(0, |f| f.applying_to);
        let applied = self.log.last_applied.max(handed_out);
        if index > applied {
            return Err(Error::SnapshotNotApplied { index, last_applied: applied });
        }
        let term = self.log.term(index).expect("applied entries are held or snapshotted");
        self.log.last_applied = applied; // Compaction needs the cursor; advance agrees later.
        self.log.compact(index);
        let meta = SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            voters: self.voters.clone(),
        };
        let snapshot = Snapshot { meta, data: data.into() };
        self.snapshot_to_persist = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Handles one message from a peer.
    ///
    /// Nothing a peer sends can make the node panic or break its invariants: the message is
    /// first checked against what a correct peer could have sent ([`Message::validate`], then
    /// against this node's state: the sender is another voter, a leader hears no other leader
    /// of its own term, a follower is never told to overwrite a committed entry, a leader is
    /// never told of a match beyond what it sent, a forwarded command passes the
    /// [`ProposalCheck`](crate::ProposalCheck)). A message that fails is dropped whole and
    /// counted in [`Status::rejected_messages`].
    ///
    /// # Errors
    /// [`Rejected`], saying why, if the message was dropped. The node's state is unchanged (a
    /// refused request is answered with a refusal, as a stale one is, so that every request
    /// still gets exactly one response); the driver should log it, at a limited rate, and
    /// carry on.
    pub fn step(&mut self, m: Message) -> std::result::Result<(), Rejected> {
        let checked = m.validate().and_then(|()| self.check_message(&m));
        if let Err(rejected) = checked {
            self.rejected_messages += 1;
            // A request still gets the one response it is owed, a refusal that changes
            // nothing, so that transports pairing requests with responses stay in step.
            self.reject_stale(&m);
            return Err(rejected);
        }
        self.step_valid(m);
        Ok(())
    }

    /// The checks of [`step`](Self::step) that need this node's state.
    fn check_message(&self, m: &Message) -> std::result::Result<(), Rejected> {
        let reject = |reason: String| Err(m.rejected(reason));
        if m.to != self.id {
            return reject(format!("it is addressed to node {}, not {}", m.to, self.id));
        }
        if !self.voters.contains(&m.from) {
            return reject(format!("node {} is not a voter ({:?})", m.from, self.voters));
        }
        if m.term < self.current_term {
            return Ok(()); // Answered as stale without looking inside.
        }
        // Messages of a later term make this node a follower: only what a follower does with
        // them needs checking. Those of this term meet this node in its current role.
        let leading = self.role == Role::Leader && m.term == self.current_term;
        let sent = |from: NodeId| self.progress.get(&from).map_or(0, |p| p.sent_index);
        match &m.body {
            Body::AppendEntries { .. } | Body::InstallSnapshot { .. } if leading => {
                reject(format!("this node leads term {} itself", self.current_term))
            }
            Body::AppendEntries { entries, .. } => match self.log.committed_conflict(entries) {
                Some(index) => reject(format!(
                    "entry {index} differs from the committed entry there (commit index {})",
                    self.log.commit_index
                )),
                None => Ok(()),
            },
            Body::AppendEntriesResponse { outcome, .. } if leading => {
                let claimed = match outcome {
                    AppendOutcome::Success { match_index } => *match_index,
                    AppendOutcome::Conflict { prev_log_index, .. } => *prev_log_index,
                    AppendOutcome::StaleTerm => 0,
                };
                if claimed > sent(m.from) {
                    return reject(format!(
                        "it answers index {claimed}, but only up to {} was sent",
                        sent(m.from)
                    ));
                }
                Ok(())
            }
            Body::InstallSnapshotResponse { last_included_index, done: true, .. }
                if leading && *last_included_index > sent(m.from) =>
            {
                reject(format!(
                    "it acknowledges a snapshot through {last_included_index}, but only up to {} \
                     was sent",
                    sent(m.from)
                ))
            }
            Body::Propose { data } if leading => {
                for command in data {
                    if let Err(e) = self.check_proposal(command) {
                        return reject(format!("a forwarded command is refused: {e}"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `command` may be appended: within `max_entry_bytes`, and passing the service's
    /// [`ProposalCheck`](crate::ProposalCheck).
    fn check_proposal(&self, command: &[u8]) -> Result<()> {
        let max = self.config.max_entry_bytes;
        if command.len() as u64 > max {
            return Err(Error::EntryTooLarge { len: command.len() as u64, max });
        }
        if let Some(check) = &self.config.proposal_check {
            check.check(command).map_err(Error::InvalidProposal)?;
        }
        Ok(())
    }

    /// What the leader appends for a checked `command`: stamped by the
    /// [`ProposalCheck`](crate::ProposalCheck), if it stamps, and still within
    /// `max_entry_bytes`.
    fn stamp_proposal(&self, command: Bytes) -> Result<Bytes> {
        let Some(check) = &self.config.proposal_check else { return Ok(command) };
        let stamped = check.stamp(command).map_err(Error::InvalidProposal)?;
        let max = self.config.max_entry_bytes;
        if stamped.len() as u64 > max {
            return Err(Error::EntryTooLarge { len: stamped.len() as u64, max });
        }
        Ok(stamped)
    }

    fn step_valid(&mut self, m: Message) {
        let response = matches!(
            m.body,
            Body::RequestVoteResponse { .. }
                | Body::AppendEntriesResponse { .. }
                | Body::InstallSnapshotResponse { .. }
        );
        if planted!(self, NoTermCheckOnResponses) && response {
            // Planted bug: straight to the handler, whatever the response's term.
        } else if m.term > self.current_term {
            match &m.body {
                Body::RequestVote { pre_vote, .. } if self.in_lease() => {
                    // CheckQuorum: we heard from a live leader recently, so this candidate is
                    // disruptive (usually a node rejoining after a partition). Refuse without
                    // adopting its term.
                    let pre_vote = *pre_vote;
                    self.send(
                        m.from,
                        self.current_term,
                        Body::RequestVoteResponse { pre_vote, vote_granted: false },
                    );
                    return;
                }
                // A pre-vote (or a grant of one) is about a term nobody has entered yet.
                Body::RequestVote { pre_vote: true, .. } => {}
                Body::RequestVoteResponse { pre_vote: true, vote_granted: true } => {}
                Body::AppendEntries { .. } | Body::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.current_term {
            self.reject_stale(&m);
            return;
        }

        match m.body {
            Body::RequestVote { pre_vote, last_log_index, last_log_term } => {
                self.handle_request_vote(m.from, m.term, pre_vote, last_log_index, last_log_term);
            }
            Body::RequestVoteResponse { pre_vote, vote_granted } => {
                self.handle_vote_response(m.from, pre_vote, vote_granted);
            }
            Body::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            } => {
                self.accept_leader(m.from);
                let outcome = self.handle_append_entries(
                    prev_log_index,
                    prev_log_term,
                    &entries,
                    leader_commit,
                );
                let body = Body::AppendEntriesResponse { outcome, read_round };
                self.send(m.from, self.current_term, body);
            }
            Body::AppendEntriesResponse { outcome, read_round } => {
                self.handle_append_response(m.from, outcome, read_round);
            }
            Body::InstallSnapshot { meta, offset, total_len, data } => {
                self.accept_leader(m.from);
                self.handle_install_snapshot(m.from, meta, offset, total_len, data);
            }
            Body::InstallSnapshotResponse { last_included_index, received_bytes, done } => {
                self.handle_snapshot_response(m.from, last_included_index, received_bytes, done);
            }
            Body::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.register_read(ctx, Some(m.from));
                } else {
                    self.send(
                        m.from,
                        self.current_term,
                        Body::ReadIndexResponse { ctx, index: None },
                    );
                }
            }
            Body::ReadIndexResponse { ctx, index } => {
                if let Some(index) = index
                    && self.role == Role::Follower
                {
                    self.read_states.push(ReadState { ctx, index });
                }
            }
            Body::Propose { data } => {
                // Only the leader of the sender's term appends; anyone else drops the commands,
                // and the sender's service retries.
                if self.role == Role::Leader {
                    for command in data {
                        // Checked in `check_message`; a stamp that still refuses one drops
                        // it alone (the follower's service retries).
                        match self.stamp_proposal(command) {
                            Ok(command) => {
                                self.log.append(self.current_term, command);
                            }
                            Err(e) => log::warn!("a forwarded command is refused: {e}"),
                        }
                    }
                    self.pending_broadcast = true;
                }
            }
        }
    }

    // ----- Outputs --------------------------------------------------------------------------

    /// Whether [`ready`](Self::ready) has anything to hand out.
    pub fn has_ready(&self) -> bool {
        self.pending_broadcast
            || self.read_round_wanted
            || (self.commit_unannounced && self.config.announce_commit)
            || !self.read_states.is_empty()
            || !self.msgs.is_empty()
            || self.hard_state() != self.handed_hard_state
            || self.snapshot_to_persist.is_some()
            || self.snapshot_to_apply.is_some()
            || self.log.handed_to() < self.log.last_index()
            || self.apply_cursor() < self.log.commit_index
    }

    /// Takes what must be persisted, sent and applied (see [`Ready`] for the order); then call
    /// [`advance`](Self::advance) once it is done. Other methods may be called meanwhile: what
    /// they produce goes into the next `Ready`. Several `Ready`s may be out at once (a driver
    /// that persists on another thread takes the next while the last is being written); they
    /// must be persisted in the order taken, and advanced in that order.
    pub fn ready(&mut self) -> Ready {
        let announce = self.role == Role::Leader
            && (self.read_round_wanted || (self.commit_unannounced && self.config.announce_commit));
        if announce {
            // Start the round waiting reads belong to before anything goes out, so that the
            // appends below carry it too.
            self.start_read_round();
        }
        let mut appended = Vec::new();
        if self.pending_broadcast {
            self.pending_broadcast = false;
            appended = self.broadcast_append();
        }
        if announce {
            // The round and the new commit index reach every follower: on the appends just
            // sent, or on a heartbeat to those that got none.
            self.heartbeat_to(|id| !appended.contains(&id));
        }
        self.read_round_wanted = false;
        let mut hard_state = self.hard_state();
        let vote_sent = |m: &Message| {
            matches!(m.body, Body::RequestVoteResponse { pre_vote: false, vote_granted: true })
        };
        if planted!(self, UnpersistedVote) && self.msgs.iter().any(vote_sent) {
            // Planted bug: the vote goes out with this Ready but is written with the next.
            let same_term = hard_state.current_term == self.handed_hard_state.current_term;
            hard_state.voted_for = self.handed_hard_state.voted_for.filter(|_| same_term);
        }
        let last = self.log.last_index();
        let entries = self.log.slice(self.log.handed_to() + 1, last).to_vec();
        self.log.persisting.push_back(last);

        let mut to_apply = Vec::new();
        let mut applying_to =
            self.log.last_applied.max(self.in_flight.back().map_or(0, |f| f.applying_to));
        if let Some(snapshot) = self.snapshot_to_apply.take() {
            applying_to = snapshot.meta.last_included_index;
            to_apply.push(Apply::Snapshot(snapshot));
        }
        let commit = self.log.commit_index;
        if commit > applying_to {
            let committed = self.log.slice(applying_to + 1, commit);
            to_apply.extend(committed.iter().cloned().map(Apply::Entry));
            applying_to = commit;
        }
        self.in_flight.push_back(InFlight { applying_to });
        let changed = hard_state != self.handed_hard_state;
        self.handed_hard_state = hard_state;
        Ready {
            hard_state: changed.then_some(hard_state),
            snapshot: self.snapshot_to_persist.take(),
            entries,
            messages: std::mem::take(&mut self.msgs),
            to_apply,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Confirms that everything in the oldest [`Ready`] still out was persisted, sent and
    /// applied.
    ///
    /// # Panics
    /// If there is no outstanding `Ready`.
    pub fn advance(&mut self) {
        let done = self.in_flight.pop_front().expect("advance() without a ready()");
        if let Some(to) = self.log.persisting.pop_front() {
            self.log.stable_index = self.log.stable_index.max(to);
        }
        self.log.last_applied = self.log.last_applied.max(done.applying_to);
        if self.role == Role::Leader {
            // Our own copy of the new entries is durable now: it counts toward a majority.
            self.maybe_commit();
        }
    }

    /// How many `Ready`s are out (taken and not yet advanced).
    pub fn readies_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    // ----- Queries --------------------------------------------------------------------------

    /// A summary of the node's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            current_term: self.current_term,
            voted_for: self.voted_for,
            leader_id: self.leader_id,
            commit_index: self.log.commit_index,
            last_applied: self.log.last_applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            rejected_messages: self.rejected_messages,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Figure 2's `current_term`.
    pub fn current_term(&self) -> Term {
        self.current_term
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The term of the entry at `index`, if it is held (or is the snapshot's last entry).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    // ----- Roles ----------------------------------------------------------------------------

    fn become_follower(&mut self, term: Term, leader_id: Option<NodeId>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
        }
        self.role = Role::Follower;
        self.leader_id = leader_id;
        self.progress.clear();
        self.pending_broadcast = false;
        // Our own pending reads go unanswered (their callers time out and retry); forwarded
        // ones are owed a response, in order.
        for read in std::mem::take(&mut self.pending_reads) {
            if let Some(follower) = read.from {
                let body = Body::ReadIndexResponse { ctx: read.ctx, index: None };
                self.send(follower, self.current_term, body);
            }
        }
        self.acked_round.clear();
        self.round_started.clear();
        self.read_round_wanted = false;
        self.reset_election_timer();
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.reset_election_timer();
        self.votes.insert(self.id, true);
        let term = self.current_term + 1;
        self.request_votes(term, true);
        self.check_election_won(true);
    }

    fn become_candidate(&mut self) {
        self.current_term += 1;
        self.voted_for = Some(self.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes.clear();
        self.reset_election_timer();
        self.votes.insert(self.id, true);
        self.request_votes(self.current_term, false);
        self.check_election_won(false);
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index() + 1;
        self.term_start_index = self.log.last_index();
        self.progress =
            self.other_voters().into_iter().map(|id| (id, Progress::new(next))).collect();
        if self.config.no_op_on_election {
            self.log.append(self.current_term, Bytes::new());
        }
        // Assert leadership at once (and, with the no-op, start replicating).
        self.broadcast_heartbeat();
    }

    fn campaign(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    // ----- Timers ---------------------------------------------------------------------------

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let spread = u64::from(self.config.election_ticks);
        self.randomized_election_timeout =
            self.config.election_ticks + self.rng.below(spread) as u32;
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout {
            self.campaign();
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                if !self.quorum_recently_active() {
                    // CheckQuorum: we cannot reach a majority, so we cannot commit anything;
                    // stepping down lets clients find the leader on the other side.
                    self.become_follower(self.current_term, None);
                    return;
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks || self.commit_unannounced {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// CheckQuorum's lease: a follower that heard from a leader within the minimum election
    /// timeout (and a leader itself) refuses to help depose it.
    ///
    /// So does a node for the first election timeout after it restarts (thesis §4.2.3,
    /// §6.4.1): before the crash it may have answered a leader that still counts that answer
    /// towards its lease, and it has forgotten when. A node still in term 0 never heard from a
    /// leader and promised nothing, so a new cluster's first election is not held up.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && ((self.leader_id.is_some() && self.election_elapsed < self.config.election_ticks)
                || self.ticks < self.start_lease_ticks)
    }

    fn quorum_recently_active(&self) -> bool {
        let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
        active >= self.quorum()
    }

    // ----- Elections (§5.2, §5.4.1, PreVote) ------------------------------------------------

    fn request_votes(&mut self, term: Term, pre_vote: bool) {
        let body = Body::RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for to in self.other_voters() {
            self.send(to, term, body.clone());
        }
    }

    fn handle_request_vote(
        &mut self,
        candidate: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let up_to_date = planted!(self, VoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term);
        if pre_vote {
            // Would we vote in `term`? Only if it is ahead of ours and the log qualifies.
            let granted = term > self.current_term && up_to_date;
            let reply_term = if granted { term } else { self.current_term };
            self.send(
                candidate,
                reply_term,
                Body::RequestVoteResponse { pre_vote, vote_granted: granted },
            );
            return;
        }
        let can_vote = self.voted_for.is_none_or(|v| v == candidate) && self.leader_id.is_none();
        let granted = can_vote && up_to_date;
        if granted {
            self.voted_for = Some(candidate);
            self.reset_election_timer();
        }
        let body = Body::RequestVoteResponse { pre_vote, vote_granted: granted };
        self.send(candidate, self.current_term, body);
    }

    fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool) {
        let expected = if pre_vote { Role::PreCandidate } else { Role::Candidate };
        if self.role != expected {
            return; // A late answer from an election already decided.
        }
        self.votes.entry(from).or_insert(granted);
        self.check_election_won(pre_vote);
    }

    fn check_election_won(&mut self, pre_vote: bool) {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        if granted >= self.quorum() {
            if pre_vote {
                self.become_candidate();
            } else {
                self.become_leader();
            }
        } else if rejected >= self.quorum() {
            self.become_follower(self.current_term, None);
        }
    }

    // ----- Replication (§5.3, §5.4.2) -------------------------------------------------------

    /// A valid AppendEntries or InstallSnapshot for our term: its sender leads this term.
    fn accept_leader(&mut self, leader: NodeId) {
        assert!(
            self.role != Role::Leader,
            "election safety violated: node {} and node {leader} both lead term {}",
            self.id,
            self.current_term
        );
        if self.role != Role::Follower || self.leader_id != Some(leader) {
            self.become_follower(self.current_term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    fn handle_append_entries(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: Index,
    ) -> AppendOutcome {
        let prev_log_term = if planted!(self, AppendWithoutPrevTermCheck) {
            // Planted bug: whatever term we hold at `prev_log_index` passes for the leader's.
            self.log.term(prev_log_index).unwrap_or(prev_log_term)
        } else {
            prev_log_term
        };
        match self.log.try_append(prev_log_index, prev_log_term, entries) {
            Ok(match_index) => {
                // Figure 2, receiver step 5: the new commit is capped by what we know matches.
                self.log.commit_to(leader_commit.min(match_index));
                self.planted_truncate_after(match_index);
                AppendOutcome::Success { match_index }
            }
            Err(c) => AppendOutcome::Conflict {
                prev_log_index,
                conflict_term: c.conflict_term,
                conflict_index: c.conflict_index,
            },
        }
    }

    /// Planted bug `TruncateMatchingSuffix`: drops the entries after `match_index`, matching
    /// or not (never committed ones: the log refuses that with a panic, not a checker).
    #[cfg(feature = "planted-bugs")]
    fn planted_truncate_after(&mut self, match_index: Index) {
        let uncommitted = match_index >= self.log.commit_index;
        if planted!(self, TruncateMatchingSuffix) && uncommitted {
            self.log.planted_truncate_after(match_index);
        }
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn planted_truncate_after(&mut self, _match_index: Index) {}

    fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome, read_round: u64) {
        if self.role != Role::Leader || !self.progress.contains_key(&from) {
            return;
        }
        let acked = self.acked_round.entry(from).or_insert(0);
        if read_round > *acked {
            *acked = read_round;
            self.confirm_reads();
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        match outcome {
            AppendOutcome::Success { match_index } => {
                let advanced = pr.update_match(match_index);
                match pr.state {
                    ProgressState::Probe { .. } => pr.become_replicate(),
                    ProgressState::Snapshot { index, .. } if pr.match_index >= index => {
                        pr.become_probe();
                    }
                    _ => {}
                }
                if advanced {
                    self.maybe_commit();
                }
                self.send_append(from, false);
            }
            AppendOutcome::Conflict { prev_log_index, conflict_term, conflict_index } => {
                // A conflict at or below what the follower already acknowledged contradicts
                // that acknowledgement: no correct follower sends one in this term (its log
                // holds our entries through match_index). Acting on it would re-send the same
                // probe, draw the same answer, and loop without a tick in between.
                let stale = prev_log_index <= pr.match_index
                    || matches!(pr.state, ProgressState::Probe { .. }
                        if prev_log_index + 1 != pr.next_index);
                if stale || matches!(pr.state, ProgressState::Snapshot { .. }) {
                    return;
                }
                // Fast backup: skip the follower's whole conflicting term at once.
                let hint = match conflict_term {
                    Some(term) => {
                        self.log.last_index_of_term(term).map_or(conflict_index, |i| i + 1)
                    }
                    None => conflict_index,
                };
                let next = hint.min(prev_log_index).max(pr.match_index + 1);
                pr.next_index = next;
                pr.state = ProgressState::Probe { paused: false };
                self.send_append(from, true);
            }
            AppendOutcome::StaleTerm => {}
        }
    }

    /// §5.4.2: commit the highest index stored on a majority, if it is from our own term.
    fn maybe_commit(&mut self) {
        let mut matched: Vec<Index> = self
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    self.log.stable_index
                } else {
                    self.progress.get(id).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let majority_index = matched[self.quorum() - 1];
        if majority_index > self.log.commit_index
            && (planted!(self, CommitEarlierTermByCounting)
                || self.log.term(majority_index) == Some(self.current_term))
        {
            self.log.commit_to(majority_index);
            self.commit_unannounced = self.voters.len() > 1;
        }
    }

    /// Sends each follower what it needs next; returns those sent an AppendEntries.
    fn broadcast_append(&mut self) -> Vec<NodeId> {
        self.other_voters().into_iter().filter(|&id| self.send_append(id, false)).collect()
    }

    /// Sends `to` what it needs next, if its progress state allows. With `even_if_empty`, a
    /// probe without entries is sent too (to learn where the follower's log stands).
    fn send_append(&mut self, to: NodeId, even_if_empty: bool) -> bool {
        let max_inflight = self.config.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else { return false };
        if matches!(pr.state, ProgressState::Snapshot { .. }) {
            self.send_snapshot_chunk(to);
            return false;
        }
        if !pr.can_send(max_inflight) {
            return false;
        }
        let next = pr.next_index;
        if next <= self.log.snapshot_index() {
            self.start_snapshot(to);
            return false;
        }
        let entries = self.log.entries_from(next, self.config.max_append_bytes);
        let is_probe = matches!(pr.state, ProgressState::Probe { .. });
        if entries.is_empty() && !even_if_empty && !is_probe {
            return false;
        }
        let prev_log_index = next - 1;
        let prev_log_term = self.log.term(prev_log_index).expect("prev entry is held");
        let last = prev_log_index + entries.len() as u64;
        let carried = !entries.is_empty();
        let body = Body::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.log.commit_index,
            read_round: self.read_round,
        };
        self.send(to, self.current_term, body);
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_append(last, carried);
        }
        true
    }

    /// Heartbeats (§5.2): an empty AppendEntries to each follower, which also carries the commit
    /// index and, for a follower in Replicate state, checks that the appends in flight arrived.
    /// Each broadcast starts a new read round.
    fn broadcast_heartbeat(&mut self) {
        self.start_read_round();
        self.heartbeat_to(|_| true);
    }

    /// Starts a read round; what the leader sends from now on carries it, and the commit index.
    fn start_read_round(&mut self) {
        self.commit_unannounced = false;
        self.read_round += 1;
        self.round_started.push_back((self.read_round, self.ticks));
        if self.round_started.len() > ROUNDS_KEPT {
            self.round_started.pop_front();
        }
    }

    /// A heartbeat to each follower `wanted` accepts.
    fn heartbeat_to(&mut self, wanted: impl Fn(NodeId) -> bool) {
        for id in self.other_voters().into_iter().filter(|&id| wanted(id)) {
            let Some(pr) = self.progress.get_mut(&id) else { continue };
            pr.unpause();
            match pr.state {
                ProgressState::Snapshot { .. } => self.send_snapshot_chunk(id),
                ProgressState::Probe { .. } | ProgressState::Replicate { .. } => {
                    let prev_log_index = pr.next_index - 1;
                    if prev_log_index < self.log.snapshot_index() {
                        self.start_snapshot(id);
                        continue;
                    }
                    let prev_log_term = self.log.term(prev_log_index).expect("prev entry is held");
                    let body = Body::AppendEntries {
                        prev_log_index,
                        prev_log_term,
                        entries: Vec::new(),
                        leader_commit: self.log.commit_index,
                        read_round: self.read_round,
                    };
                    self.send(id, self.current_term, body);
                    if let Some(pr) = self.progress.get_mut(&id) {
                        pr.sent_append(prev_log_index, false);
                    }
                }
            }
        }
    }

    // ----- Reads without log writes (thesis §6.4) --------------------------------------------

    /// Answers, oldest first, the pending reads whose round a majority has echoed.
    fn confirm_reads(&mut self) {
        while let Some(read) = self.pending_reads.front() {
            let echoed = self.acked_round.values().filter(|&&r| r >= read.round).count();
            if 1 + echoed < self.quorum() {
                break;
            }
            let (ctx, index, from) = (read.ctx, read.index, read.from);
            self.pending_reads.pop_front();
            self.answer_read(ctx, index, from);
        }
    }

    /// Whether this leader's lease holds: a majority (counting itself) echoed rounds that
    /// started less than `election_ticks - lease_margin_ticks` ticks ago. Each of them refuses
    /// to vote until `election_ticks` of its own ticks after hearing from us (CheckQuorum), so
    /// no other leader can be elected before then, given clocks that drift by less than the
    /// margin.
    fn lease_holds(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        let started = |round: u64| {
            self.round_started.iter().find(|(r, _)| *r == round).map(|&(_, tick)| tick)
        };
        let mut starts: Vec<u64> = self
            .other_voters()
            .iter()
            .filter_map(|id| self.acked_round.get(id).and_then(|&r| started(r)))
            .collect();
        starts.push(self.ticks);
        starts.sort_unstable_by(|a, b| b.cmp(a));
        let lease =
            u64::from(self.config.election_ticks.saturating_sub(self.config.lease_margin_ticks));
        starts.get(self.quorum() - 1).is_some_and(|&start| self.ticks < start + lease)
    }

    // ----- Snapshots (§7) -------------------------------------------------------------------

    fn start_snapshot(&mut self, to: NodeId) {
        let index = self.snapshot.as_ref().map(|s| s.meta.last_included_index);
        let index = index.expect("entries are compacted only into a snapshot");
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(snapshot) = &self.snapshot else { return };
        let Some(pr) = self.progress.get_mut(&to) else { return };
        let ProgressState::Snapshot { index, acked_bytes, paused } = &mut pr.state else { return };
        if *paused {
            return;
        }
        if *index != snapshot.meta.last_included_index {
            // A newer snapshot replaced the one being sent: start over with it.
            *index = snapshot.meta.last_included_index;
            *acked_bytes = 0;
        }
        *paused = true;
        let total_len = snapshot.data.len();
        let offset = (*acked_bytes).min(total_len);
        let max = usize::try_from(self.config.snapshot_chunk_bytes).unwrap_or(usize::MAX);
        let data = match snapshot.data.chunk(offset, max) {
            Ok(data) => data,
            Err(e) => {
                // Left paused: the next heartbeat's probe of this follower tries again.
                log::error!("raft {}: cannot read snapshot chunk at {offset}: {e}", self.id);
                return;
            }
        };
        pr.sent_index = pr.sent_index.max(snapshot.meta.last_included_index);
        let body = Body::InstallSnapshot { meta: snapshot.meta.clone(), offset, total_len, data };
        self.send(to, self.current_term, body);
    }

    fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: Bytes,
    ) {
        let index = meta.last_included_index;
        let respond = |node: &mut RawNode, received_bytes: u64, done: bool| {
            let body =
                Body::InstallSnapshotResponse { last_included_index: index, received_bytes, done };
            node.send(leader, node.current_term, body);
        };
        if index <= self.log.commit_index {
            // We already have everything it covers (§7: "if existing log entry has same index
            // and term as snapshot's last included entry, retain log entries following it").
            respond(self, total_len, true);
            return;
        }
        // The same snapshot has the same length too: a first chunk of another length starts
        // over (else the old length would be awaited forever).
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total_len == total_len);
        if offset == 0 && !same {
            self.incoming_snapshot = match self.config.snapshot_spool.writer() {
                Ok(data) => Some(IncomingSnapshot { meta, total_len, data }),
                Err(e) => {
                    log::error!("raft {}: cannot spool an incoming snapshot: {e}", self.id);
                    None
                }
            };
        }
        let Some(incoming) =
            self.incoming_snapshot.as_mut().filter(|s| s.meta.last_included_index == index)
        else {
            respond(self, 0, false); // A chunk of a snapshot we have not seen the start of.
            return;
        };
        if offset == incoming.data.len()
            && let Err(e) = incoming.data.write_all(&data)
        {
            log::error!("raft {}: cannot spool an incoming snapshot: {e}", self.id);
            self.incoming_snapshot = None;
            respond(self, 0, false); // Start over.
            return;
        }
        let have = incoming.data.len();
        if have < incoming.total_len {
            respond(self, have, false);
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("checked above");
        let data = match incoming.data.finish() {
            Ok(data) => data,
            Err(e) => {
                log::error!("raft {}: cannot spool an incoming snapshot: {e}", self.id);
                respond(self, 0, false);
                return;
            }
        };
        let snapshot = Snapshot { meta: incoming.meta, data };
        self.log.install(&snapshot.meta);
        if !snapshot.meta.voters.is_empty() {
            self.voters = snapshot.meta.voters.clone();
        }
        self.snapshot_to_persist = Some(snapshot.clone());
        self.snapshot_to_apply = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        respond(self, have, true);
    }

    fn handle_snapshot_response(&mut self, from: NodeId, index: Index, received: u64, done: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if done {
            pr.update_match(index);
            if let ProgressState::Snapshot { .. } = pr.state {
                pr.become_probe();
            }
            self.maybe_commit();
            self.send_append(from, true);
            return;
        }
        if let ProgressState::Snapshot { index: sending, acked_bytes, paused } = &mut pr.state
            && *sending == index
        {
            // The next chunk goes at once only if this one got somewhere. An answer that does
            // not advance (a follower that lost the start, or one that cannot take the chunk)
            // waits for the next heartbeat: answering it at once could loop without a tick.
            let advanced = received > *acked_bytes;
            *acked_bytes = received;
            if advanced {
                *paused = false;
                self.send_snapshot_chunk(from);
            }
        }
    }

    // ----- Helpers --------------------------------------------------------------------------

    /// Answers a message from an older term, or one `step` refused: requests get the one
    /// response they are owed, a refusal carrying our term (so a stale sender learns it is).
    fn reject_stale(&mut self, m: &Message) {
        let body = match &m.body {
            Body::RequestVote { pre_vote, .. } => {
                Body::RequestVoteResponse { pre_vote: *pre_vote, vote_granted: false }
            }
            Body::AppendEntries { read_round, .. } => Body::AppendEntriesResponse {
                outcome: AppendOutcome::StaleTerm,
                read_round: *read_round,
            },
            Body::InstallSnapshot { meta, .. } => Body::InstallSnapshotResponse {
                last_included_index: meta.last_included_index,
                received_bytes: 0,
                done: false,
            },
            Body::ReadIndex { ctx } => Body::ReadIndexResponse { ctx: *ctx, index: None },
            _ => return, // Responses to an old term's requests are simply dropped.
        };
        self.send(m.from, self.current_term, body);
    }

    fn send(&mut self, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message { from: self.id, to, term, body });
    }

    fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
            commit_index: self.log.commit_index,
        }
    }

    /// The index up to which the service has been (or is being) handed entries.
    fn apply_cursor(&self) -> Index {
        let handed = self.in_flight.back().map_or(0, |f| f.applying_to);
        let snapshot = self.snapshot_to_apply.as_ref().map_or(0, |s| s.meta.last_included_index);
        self.log.last_applied.max(handed).max(snapshot)
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.voters.iter().copied().filter(|&id| id != self.id).collect()
    }
}
