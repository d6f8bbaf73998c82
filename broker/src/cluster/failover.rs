//! A follower that sees its leader's connection close finds out at once
//! whether the leader is gone and, if so, elects a new one at once.
//!
//! openraft 0.9 gives a leader a lease as long as the longest election
//! timeout: a follower that heard from it rejects any vote until the lease
//! has passed, and stands itself only after the lease and then a random
//! election timeout (1.5-2 s with this cluster's timings, see
//! `config`). Shorter timeouts cannot live with a shared, busy disk
//! (docs/cluster.md). But a leader that dies is usually seen at once: the
//! connection it called this node on closes. Then:
//!
//! 1. This node says Hello to the leader's listener. Refused, or the
//!    connection closed unanswered: the leader's process is gone. Answered:
//!    it lives (it closed a call it gave up on), and nothing happens. No
//!    answer within [`PROBE`]: nothing happens either (a busy leader, or a
//!    machine that is down; openraft's timers decide).
//! 2. Every group that leader led here stands for election at once
//!    (`trigger().elect()`), even while catching up ([`super::catchup`]
//!    keeps a node that is behind from deposing a live leader; this one is
//!    dead). Its vote for itself is not a committed one, so it no longer
//!    holds the dead leader's lease against others.
//! 3. The other followers did the same, so this first round splits. The
//!    follower with the lowest id stands again [`SECOND_ROUND`] later, at a
//!    higher term, and the others, whose votes are no longer committed,
//!    grant it if its log is as long as theirs. If it is not (or it is
//!    catching up, and does not try), the others try in turn a little
//!    later, still campaigning and unanswered; openraft's random election
//!    timeouts remain the last resort.
//!
//! A wrong guess costs what a follower's election timeout costs without
//! this: an election. It never costs safety, which is Raft's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::catchup::Catchup;
use super::network;
use super::types::{NodeId, Raft};
use openraft::ServerState;

/// How long the probe waits for a leader to answer. Only a refusal or a
/// closed connection counts as gone: a leader busy past this (a loaded
/// machine, a disk saturated by a catch-up) must not be deposed for it, and
/// a machine that is down is left to openraft's timers.
pub const PROBE: Duration = Duration::from_secs(2);
/// How long after the first, split round the lowest follower stands again.
pub const SECOND_ROUND: Duration = Duration::from_millis(50);

/// One group a suspected leader led on this node.
pub struct Led {
    pub raft: Raft,
    pub catchup: Arc<Catchup>,
}

/// The leaders being checked now (one check per leader at a time: it
/// called on one connection per group).
#[derive(Default)]
pub struct Suspects(Mutex<HashSet<NodeId>>);

impl Suspects {
    fn begin(&self, node: NodeId) -> bool {
        self.0.lock().map(|mut s| s.insert(node)).unwrap_or(false)
    }

    fn end(&self, node: NodeId) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&node);
        }
    }
}

/// Held by a session that serves a peer's Raft calls: when the session
/// ends, that peer's connection closed.
pub struct PeerLink {
    pub cluster: Arc<super::Cluster>,
    pub node: NodeId,
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.cluster.peer_closed(self.node);
    }
}

/// Checks whether `leader` (at `addr`) is gone and, if so, elects a new
/// leader of each of the groups in `led` (see the module docs).
pub async fn check(
    suspects: Arc<Suspects>,
    me: NodeId,
    leader: NodeId,
    addr: String,
    led: Vec<Led>,
) {
    if !suspects.begin(leader) {
        return;
    }
    let gone = network::probe(&addr, PROBE).await == network::Probe::Gone;
    suspects.end(leader);
    if !gone {
        return;
    }
    tracing::info!(me, leader, %addr, groups = led.len(), "the leader's connection closed and it does not answer: electing a new one");
    // The second round: the lowest follower first, the others later.
    let mut first = Vec::new();
    let mut later = Vec::new();
    for g in led {
        let m = g.raft.metrics().borrow().clone();
        if m.current_leader != Some(leader) || m.state != ServerState::Follower {
            continue;
        }
        let lowest = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != leader)
            .min();
        let _ = g.raft.trigger().elect().await;
        if g.catchup.holding() {
            continue;
        }
        if lowest == Some(me) {
            first.push(g.raft);
        } else {
            later.push(g.raft);
        }
    }
    for (round, rafts) in [(1, first), (3, later)] {
        if rafts.is_empty() {
            continue;
        }
        tokio::time::sleep(SECOND_ROUND * round).await;
        for raft in rafts {
            let m = raft.metrics().borrow().clone();
            // Still standing for itself, with nobody elected: nobody
            // granted the first round's vote, nor did it grant another's.
            let campaigning = m.state == ServerState::Candidate
                && m.current_leader.is_none()
                && m.vote.leader_id().voted_for() == Some(me);
            if campaigning {
                let _ = raft.trigger().elect().await;
            }
        }
    }
}
