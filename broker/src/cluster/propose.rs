//! A replicated topic's proposer: client batches become Raft entries.
//!
//! Raft's costs are per entry (its bookkeeping, a record in the Raft log,
//! a slot in each AppendEntries), so one entry per client batch would make
//! a replicated topic slow under many small publishes. Instead publishes
//! queue here in arrival order, and each entry takes every batch that
//! queued while the previous entries were in flight ([`IN_FLIGHT`] at
//! most): one entry per publish when the topic is quiet, many when it is
//! busy, the way group commit makes one fsync per group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::network::{self, Network};
use super::peers::Peers;
use super::rpc::{Answer, ProposeError};
use super::types::{Appended, Command, Node, NodeId, Outcome, Raft};

/// Entries of one topic proposed and not yet applied, at most.
const IN_FLIGHT: usize = 8;
/// An entry takes queued batches up to about this many bytes (it must fit
/// in one AppendEntries call with room to spare).
const ENTRY_BYTES: usize = 1 << 20;
/// Publishes queued for the proposer, at most; past it publishers wait.
const QUEUE: usize = 4096;

/// Why a publish was not applied.
#[derive(Debug, Clone)]
pub enum Rejected {
    /// This node does not lead the topic; the leader's address if known.
    NotLeader(Option<String>),
    /// Raft stopped (the broker is shutting down).
    Stopped,
    /// Raft failed otherwise.
    Failed(String),
}

type Reply = oneshot::Sender<Result<Appended, Rejected>>;

/// The proposer's queue (cloned into the replica).
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(Bytes, Reply)>,
}

impl Proposer {
    /// Starts the proposer of `raft`'s group; `peers` name leaders.
    pub fn start(raft: Raft, peers: Arc<Peers>) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx, peers));
        Proposer { tx }
    }

    /// Queues `batch` (in the caller's order) and returns where its answer
    /// will come.
    pub async fn propose(&self, batch: Bytes) -> oneshot::Receiver<Result<Appended, Rejected>> {
        let (reply, rx) = oneshot::channel();
        // A closed queue drops `reply`: the receiver sees the proposer gone.
        let _ = self.tx.send((batch, reply)).await;
        rx
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<(Bytes, Reply)>, peers: Arc<Peers>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting here for an entry to be applied is what lets the queue
        // fill: the next entry takes everything that came meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.len();
        let mut batches = vec![first.0];
        let mut replies = vec![first.1];
        while bytes < ENTRY_BYTES {
            match rx.try_recv() {
                Ok((b, r)) => {
                    bytes += b.len();
                    batches.push(b);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        let queued = raft.client_write_ff(Command::Publish(batches)).await;
        let peers = peers.clone();
        tokio::spawn(async move {
            let answer = match queued {
                Ok(rx) => rx.await.ok(),
                Err(_) => None,
            };
            drop(permit);
            answer_all(answer, replies, &peers);
        });
    }
}

/// Hands each publish of an entry its own answer.
fn answer_all(
    answer: Option<
        Result<
            openraft::raft::ClientWriteResponse<super::types::TypeConfig>,
            ClientWriteError<NodeId, Node>,
        >,
    >,
    replies: Vec<Reply>,
    peers: &Peers,
) {
    let rejected = match answer {
        Some(Ok(r)) => match r.data {
            Outcome::Appended(results) if results.len() == replies.len() => {
                for (reply, a) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(a));
                }
                return;
            }
            other => Rejected::Failed(format!("unexpected outcome {other:?}")),
        },
        Some(Err(ClientWriteError::ForwardToLeader(f))) => {
            Rejected::NotLeader(leader_of(&f, peers))
        }
        Some(Err(e)) => Rejected::Failed(e.to_string()),
        None => Rejected::Stopped,
    };
    for reply in replies {
        let _ = reply.send(Err(rejected.clone()));
    }
}

/// The leader a ForwardToLeader names, by address.
fn leader_of(f: &ForwardToLeader<NodeId, Node>, peers: &Peers) -> Option<String> {
    f.leader_node
        .as_ref()
        .map(|n| n.addr.clone())
        .or_else(|| f.leader_id.and_then(|id| peers.get(id)))
}

/// A rare write to a group: an entry, or a change of its voters.
#[derive(Debug, Clone)]
pub enum Write {
    Entry(Command),
    /// The group's voters from now on, with their addresses.
    Voters(BTreeMap<NodeId, String>),
}

/// Why a write this node made failed.
fn refused(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>, peers: &Peers) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ProposeError::NotLeader(leader_of(&f, peers))
        }
        e => ProposeError::Failed(e.to_string()),
    }
}

/// Makes `write` in `raft`'s group on this node.
pub async fn here(raft: &Raft, peers: &Peers, write: Write) -> Result<Outcome, ProposeError> {
    match write {
        Write::Entry(c) => match raft.client_write(c).await {
            Ok(r) => Ok(r.data),
            Err(e) => Err(refused(e, peers)),
        },
        Write::Voters(voters) => {
            // A node not yet a voter first follows as a learner until it
            // has caught up (add_learner waits for that), so that the
            // change of voters does not stall commits behind its copying.
            let current = super::types::voters(raft);
            for (id, addr) in &voters {
                if !current.contains(id) {
                    raft.add_learner(*id, Node::new(addr), true)
                        .await
                        .map_err(|e| refused(e, peers))?;
                }
            }
            let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
            raft.change_membership(ids, false)
                .await
                .map_err(|e| refused(e, peers))?;
            Ok(Outcome::None)
        }
    }
}

/// Makes a rare write (metadata, positions, voters) in `raft`'s group:
/// here if this node leads it, else sent to the leader through `net`,
/// retried while no leader answers, for `patience` at most.
///
/// # Errors
/// The last failure (with the leaders tried) once `patience` ran out.
pub async fn anywhere(
    raft: &Raft,
    net: &Network,
    peers: &Peers,
    write: Write,
    patience: Duration,
) -> Result<Outcome, String> {
    let deadline = tokio::time::Instant::now() + patience;
    let own = peers.own_address();
    let mut tried: BTreeSet<String> = BTreeSet::new();
    loop {
        let r = match here(raft, peers, write.clone()).await {
            Err(ProposeError::NotLeader(Some(addr))) if addr != own => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match network::propose(net, &addr, write.clone(), left).await {
                    Ok(Answer::Proposed(r)) => r,
                    Ok(other) => Err(ProposeError::Failed(format!("unexpected answer {other:?}"))),
                    Err(e) => {
                        tried.insert(addr);
                        Err(ProposeError::Failed(e))
                    }
                }
            }
            r => r,
        };
        match r {
            Ok(outcome) => return Ok(outcome),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{e}; tried {tried:?}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
