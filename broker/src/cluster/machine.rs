//! The state machines Raft applies committed entries to: a replicated
//! topic's log ([`TopicMachine`]) and the cluster's metadata
//! ([`MetaMachine`]).
//!
//! Neither keeps a snapshot: the Raft logs are not purged yet, so a node
//! that falls behind (or starts empty) catches up from the log, and a node
//! that restarts applies its log again. Applying again must therefore
//! change nothing: [`TopicMachine`] finds each entry's batch already in
//! the topic's log and skips it, and [`MetaMachine`] records what it
//! already had.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use herald_protocol::{Batch, ErrorCode, TopicConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use tokio::sync::mpsc;

use super::peers::Peers;
use super::types::{
    Appended, Command, Entry, LogId, Membership, Node, NodeId, Outcome, StorageError, TypeConfig,
};
use crate::storage::PendingAppend;
use crate::storage::StorageError as LogError;
use crate::topic::Topic;

fn sm_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn sm_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

/// Snapshots are not kept (see the module doc); Raft never asks for one
/// while its logs are not purged (`SnapshotPolicy::Never`).
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(sm_read(
            "snapshots are not supported: Raft logs are kept whole",
        ))
    }
}

/// The snapshot half of `RaftStateMachine`, the same for both machines:
/// none kept, none installed (see the module doc).
macro_rules! no_snapshots {
    () => {
        async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
            NoSnapshots
        }

        async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            _meta: &SnapshotMeta<NodeId, Node>,
            _snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), StorageError> {
            Err(sm_write(
                "snapshots are not supported: Raft logs are kept whole",
            ))
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
            Ok(None)
        }
    };
}

/// A replicated topic: committed publishes are appended to the topic's own
/// log, which is what its subscribers and groups read on every node.
pub struct TopicMachine {
    topic: Arc<Topic>,
    applied: Option<LogId>,
    membership: Membership,
    /// The topic offset where the next applied batch belongs. Below the
    /// log's end (after a restart) entries are checked against what is
    /// stored there instead of appended again.
    cursor: u64,
}

impl TopicMachine {
    pub fn new(topic: Arc<Topic>) -> TopicMachine {
        TopicMachine {
            topic,
            applied: None,
            membership: Membership::default(),
            cursor: 0,
        }
    }

    /// Whether `batch` is the one stored at the cursor (applied before a
    /// restart): the same checksum (over producer, sequence and records)
    /// and the same count.
    fn stored_at_cursor(&self, batch: &Batch) -> Result<bool, StorageError> {
        let log = &self.topic.log;
        if self.cursor < log.first_offset() {
            // Removed by retention since: it was stored.
            return Ok(true);
        }
        let found = log.read(self.cursor, 1, 1).map_err(sm_read)?;
        Ok(found.first().is_some_and(|b| {
            b.base_offset() == self.cursor
                && b.crc() == batch.crc()
                && b.record_count() == batch.record_count()
        }))
    }

    fn stored(&mut self, o: &crate::storage::AppendOutcome) -> Appended {
        if !o.duplicate {
            self.cursor = self.cursor.max(o.base_offset + u64::from(o.count));
            self.topic.record_appended(o.count);
        }
        Appended::Stored {
            base_offset: o.base_offset,
            count: o.count,
            duplicate: o.duplicate,
        }
    }

    /// Applies one batch of entry `i` (its `j`th): appended, queued in
    /// `queued` to be awaited with the others, or, when applying again
    /// after a restart, found already stored.
    async fn apply_batch(
        &mut self,
        bytes: bytes::Bytes,
        at: (usize, usize),
        out: &mut [Outcome],
        queued: &mut Vec<(usize, usize, PendingAppend)>,
    ) -> Result<(), StorageError> {
        let batch = match Batch::validate(bytes) {
            Ok(b) => b,
            Err(err) => {
                let a = Appended::Failed {
                    code: ErrorCode::InvalidArgument.as_u16(),
                    message: format!("invalid batch: {err}"),
                };
                set(out, at, a);
                return Ok(());
            }
        };
        if self.cursor < self.topic.log.next_offset() {
            // Applying again after a restart: one at a time, so the cursor
            // is exact for the next check.
            for (i, j, p) in queued.drain(..) {
                let a = self.finish(p).await?;
                set(out, (i, j), a);
            }
            if self.stored_at_cursor(&batch)? {
                let count = batch.record_count();
                let a = Appended::Stored {
                    base_offset: self.cursor,
                    count,
                    duplicate: false,
                };
                self.cursor += u64::from(count);
                set(out, at, a);
                return Ok(());
            }
            let p = self.topic.log.enqueue(batch).await.map_err(sm_write)?;
            let a = self.finish(p).await?;
            set(out, at, a);
            return Ok(());
        }
        let p = self.topic.log.enqueue(batch).await.map_err(sm_write)?;
        queued.push((at.0, at.1, p));
        Ok(())
    }
}

/// Records what became of batch `j` of entry `i`.
fn set(out: &mut [Outcome], (i, j): (usize, usize), a: Appended) {
    if let Some(Outcome::Appended(v)) = out.get_mut(i) {
        if let Some(slot) = v.get_mut(j) {
            *slot = a;
        }
    }
}

fn failed(code: ErrorCode, message: String) -> Outcome {
    Outcome::Failed {
        code: code.as_u16(),
        message,
    }
}

/// An append the log refused for this batch alone (the next ones may
/// succeed), as opposed to a failing log.
fn refused(e: &LogError) -> bool {
    matches!(e, LogError::SequenceGap { .. })
}

impl RaftStateMachine<TypeConfig> for TopicMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        // Appends queued in order and awaited together: one group commit
        // for everything Raft applies at once.
        let mut queued = Vec::new();
        for e in entries {
            self.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Outcome::None),
                EntryPayload::Membership(m) => {
                    self.membership = Membership::new(Some(e.log_id), m);
                    out.push(Outcome::None);
                }
                EntryPayload::Normal(Command::Publish(batches)) => {
                    let i = out.len();
                    let unset = Appended::Failed {
                        code: ErrorCode::Internal.as_u16(),
                        message: "not applied".into(),
                    };
                    out.push(Outcome::Appended(vec![unset; batches.len()]));
                    for (j, bytes) in batches.into_iter().enumerate() {
                        self.apply_batch(bytes, (i, j), &mut out, &mut queued)
                            .await?;
                    }
                }
                EntryPayload::Normal(Command::Positions(positions)) => {
                    // The floors count records of the entries before:
                    // those appends end first.
                    for (i, j, p) in queued.drain(..) {
                        let a = self.finish(p).await?;
                        set(&mut out, (i, j), a);
                    }
                    for p in positions {
                        let r = self.topic.follow_group(&p.group, p.floor, p.reset).await;
                        if let Err(e) = r {
                            tracing::warn!(topic = %self.topic.name, group = %p.group, error = %e, "a group's replicated position was not applied");
                        }
                    }
                    out.push(Outcome::None);
                }
                EntryPayload::Normal(other) => out.push(failed(
                    ErrorCode::InvalidArgument,
                    format!("not a topic command: {other:?}"),
                )),
            }
        }
        for (i, j, p) in queued {
            let a = self.finish(p).await?;
            set(&mut out, (i, j), a);
        }
        Ok(out)
    }

    no_snapshots!();
}

impl TopicMachine {
    async fn finish(&mut self, p: PendingAppend) -> Result<Appended, StorageError> {
        match p.wait().await {
            Ok(o) => Ok(self.stored(&o)),
            Err(e) if refused(&e) => {
                let e = crate::BrokerError::from(e);
                Ok(Appended::Failed {
                    code: e.code().as_u16(),
                    message: e.to_string(),
                })
            }
            // The topic's log failed: this node cannot go on applying (Raft
            // stops it; the others carry on).
            Err(e) => Err(sm_write(format!("topic {}: {e}", self.topic.name))),
        }
    }
}

/// Where a replicated topic lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub config: TopicConfig,
    pub replicas: Vec<NodeId>,
    /// How many times the topic was moved (`PlaceTopic`). Only a topic
    /// never moved forms its group from its placement; a moved topic's
    /// group exists, and new replicas wait to be added to it.
    pub moves: u64,
}

/// The metadata every node agrees on: the replicated topics. Shared between
/// the state machine (which writes it) and the cluster (which reads it).
#[derive(Default)]
pub struct Metadata {
    topics: Mutex<BTreeMap<String, Placement>>,
}

impl Metadata {
    pub fn topic(&self, name: &str) -> Option<Placement> {
        self.topics.lock().ok()?.get(name).cloned()
    }

    pub fn topics(&self) -> Vec<(String, Placement)> {
        self.topics
            .lock()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// The metadata group's state machine. The name of each topic it changes
/// is handed to the cluster (`changed`), which opens or lets go of this
/// node's replica to match; each membership it applies goes to the address
/// book (`peers`).
pub struct MetaMachine {
    data: Arc<Metadata>,
    changed: mpsc::UnboundedSender<String>,
    peers: Arc<Peers>,
    applied: Option<LogId>,
    membership: Membership,
}

impl MetaMachine {
    pub fn new(
        data: Arc<Metadata>,
        changed: mpsc::UnboundedSender<String>,
        peers: Arc<Peers>,
    ) -> MetaMachine {
        MetaMachine {
            data,
            changed,
            peers,
            applied: None,
            membership: Membership::default(),
        }
    }

    fn create(&self, name: String, config: TopicConfig, replicas: Vec<NodeId>) -> Outcome {
        let Ok(mut topics) = self.data.topics.lock() else {
            return failed(ErrorCode::Internal, "metadata lock poisoned".into());
        };
        match topics.get(&name) {
            Some(p) if p.config == config => {
                let _ = self.changed.send(name);
                Outcome::TopicCreated { existed: true }
            }
            Some(_) => failed(
                ErrorCode::TopicExists,
                format!("topic {name:?} already exists with different settings"),
            ),
            None => {
                let placement = Placement {
                    config,
                    replicas,
                    moves: 0,
                };
                topics.insert(name.clone(), placement);
                let _ = self.changed.send(name);
                Outcome::TopicCreated { existed: false }
            }
        }
    }

    fn place(&self, name: String, replicas: Vec<NodeId>) -> Outcome {
        let Ok(mut topics) = self.data.topics.lock() else {
            return failed(ErrorCode::Internal, "metadata lock poisoned".into());
        };
        let Some(p) = topics.get_mut(&name) else {
            return failed(
                ErrorCode::UnknownTopic,
                format!("no replicated topic {name:?}"),
            );
        };
        if p.replicas != replicas {
            p.replicas = replicas;
            p.moves += 1;
        }
        let _ = self.changed.send(name);
        Outcome::None
    }

    fn delete(&self, name: String) -> Outcome {
        let Ok(mut topics) = self.data.topics.lock() else {
            return failed(ErrorCode::Internal, "metadata lock poisoned".into());
        };
        if topics.remove(&name).is_none() {
            return failed(
                ErrorCode::UnknownTopic,
                format!("no replicated topic {name:?}"),
            );
        }
        let _ = self.changed.send(name);
        Outcome::None
    }
}

impl RaftStateMachine<TypeConfig> for MetaMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Outcome::None,
                EntryPayload::Membership(m) => {
                    self.peers.learn(m.nodes());
                    self.membership = Membership::new(Some(e.log_id), m);
                    Outcome::None
                }
                EntryPayload::Normal(Command::CreateTopic {
                    name,
                    config,
                    replicas,
                }) => self.create(name, config, replicas),
                EntryPayload::Normal(Command::PlaceTopic { name, replicas }) => {
                    self.place(name, replicas)
                }
                EntryPayload::Normal(Command::DeleteTopic { name }) => self.delete(name),
                EntryPayload::Normal(other) => failed(
                    ErrorCode::InvalidArgument,
                    format!("not a metadata command: {other:?}"),
                ),
            });
        }
        Ok(out)
    }

    no_snapshots!();
}
