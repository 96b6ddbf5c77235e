//! A leader's view of one follower: how much of the log it has, and how to send it more.
//!
//! Each follower is in one of three states:
//!
//! * **Probe**: the leader does not know where the follower's log diverges. It sends one
//!   AppendEntries and waits for the answer (or the next heartbeat) before sending another,
//!   moving `next_index` back with each conflict hint.
//! * **Replicate**: the follower is known to match up to `match_index`. The leader streams
//!   entries to it without waiting, up to `max_inflight_appends` unanswered appends (pipelining),
//!   moving `next_index` forward as it sends.
//! * **Snapshot**: the entries the follower needs are compacted away; the leader sends its
//!   snapshot chunk by chunk, and returns to Probe once it is installed.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe {
        /// An append is out and unanswered; send nothing more until a reply or heartbeat.
        paused: bool,
    },
    Replicate {
        /// The last index of each unanswered append, oldest first.
        inflight: VecDeque<Index>,
    },
    Snapshot {
        /// The snapshot being sent.
        index: Index,
        /// Bytes the follower has acknowledged: where the next chunk starts.
        acked_bytes: u64,
        /// A chunk is out and unanswered.
        paused: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Figure 2: the highest index known to be replicated on the follower.
    pub(crate) match_index: Index,
    /// Figure 2: the index of the next entry to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// The highest index sent to the follower in this term: the last index of an append
    /// (or the `prev_log_index` of an empty one), or a snapshot's last index. No truthful
    /// answer claims a match beyond it.
    pub(crate) sent_index: Index,
}

impl Progress {
    /// A follower just after an election: assumed to match everything (Figure 2 initialises
    /// `next_index` to the leader's last index + 1), probed until it confirms.
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe { paused: false },
            recent_active: true,
            sent_index: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot the follower has at least the snapshot's index.
        if let ProgressState::Snapshot { index, .. } = self.state {
            self.next_index = self.next_index.max(index + 1).max(self.match_index + 1);
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe { paused: false };
    }

    pub(crate) fn become_replicate(&mut self) {
        self.next_index = self.match_index + 1;
        self.state = ProgressState::Replicate { inflight: VecDeque::new() };
    }

    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { index, acked_bytes: 0, paused: false };
    }

    /// Whether the leader may send another append now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match &self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate { inflight } => inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records that an append ending at `last` was sent.
    pub(crate) fn sent_append(&mut self, last: Index, carried_entries: bool) {
        self.sent_index = self.sent_index.max(last);
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = true,
            ProgressState::Replicate { inflight } => {
                if carried_entries {
                    inflight.push_back(last);
                    self.next_index = last + 1;
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower confirmed a match up to `index`. Returns false if that tells nothing new.
    pub(crate) fn update_match(&mut self, index: Index) -> bool {
        if let ProgressState::Replicate { inflight } = &mut self.state {
            while inflight.front().is_some_and(|&i| i <= index) {
                inflight.pop_front();
            }
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
            true
        } else {
            false
        }
    }

    /// A heartbeat is due: a paused probe may try again.
    pub(crate) fn unpause(&mut self) {
        match &mut self.state {
            ProgressState::Probe { paused } | ProgressState::Snapshot { paused, .. } => {
                *paused = false;
            }
            ProgressState::Replicate { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5);
        assert!(p.can_send(8));
        p.sent_append(4, true);
        assert!(!p.can_send(8));
        p.unpause();
        assert!(p.can_send(8));
    }

    #[test]
    fn replicate_pipelines_up_to_the_limit() {
        let mut p = Progress::new(1);
        p.update_match(3);
        p.become_replicate();
        assert_eq!(p.next_index, 4);
        p.sent_append(5, true);
        p.sent_append(7, true);
        assert_eq!(p.next_index, 8);
        assert!(!p.can_send(2));
        assert!(p.update_match(5));
        assert!(p.can_send(2));
        assert!(!p.update_match(4), "an old acknowledgement tells nothing new");
        p.sent_append(7, false);
        assert_eq!(p.next_index, 8, "a heartbeat does not move next_index");
    }

    /// A confirmed match beyond `next_index` (a probe that carried entries) moves `next_index`
    /// to just past it: the follower already holds everything up to the match.
    #[test]
    fn a_match_past_next_index_moves_next_index_beyond_it() {
        let mut p = Progress::new(5);
        p.sent_append(9, true);
        assert!(p.update_match(9));
        assert_eq!((p.match_index, p.next_index), (9, 10), "next_index must be match_index + 1");
    }

    /// Acknowledging the current match again reports nothing new.
    #[test]
    fn a_repeated_acknowledgement_tells_nothing_new() {
        let mut p = Progress::new(1);
        assert!(p.update_match(3));
        assert!(!p.update_match(3), "the same match index again is not an advance");
        assert_eq!((p.match_index, p.next_index), (3, 4));
    }

    /// Falling back to Probe from Replicate restarts from just past the confirmed match,
    /// forgetting how far the pipeline had sent.
    #[test]
    fn probe_from_replicate_restarts_after_the_match() {
        let mut p = Progress::new(1);
        p.update_match(5);
        p.become_replicate();
        p.sent_append(8, true);
        assert_eq!(p.next_index, 9);
        p.become_probe();
        assert_eq!(p.next_index, 6, "a probe starts at match_index + 1");
        assert!(p.can_send(8), "a fresh probe is not paused");
    }

    #[test]
    fn after_a_snapshot_probe_starts_past_it() {
        let mut p = Progress::new(3);
        p.become_snapshot(10);
        assert!(!p.can_send(8));
        p.become_probe();
        assert_eq!(p.next_index, 11);
    }
}
