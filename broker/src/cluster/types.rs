//! The Raft types of a Herald cluster: what a log entry carries
//! ([`Command`]) and what applying it answers ([`Outcome`]).
//!
//! One type configuration serves every Raft group of a node (the metadata
//! group and each replicated topic's), so one network and one log store
//! serve them all.

use std::io::Cursor;

use bytes::Bytes;
use herald_protocol::TopicConfig;
use serde::{Deserialize, Serialize};

/// A node's id in the cluster (`--node-id`).
pub type NodeId = u64;

/// A node as Raft knows it: the address its clients and its peers reach it
/// at (the broker's TCP listener).
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The type configuration of every Raft group of the broker.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What a log entry asks the state machines to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// In a replicated topic's group: client record batches, byte for byte
    /// as published (validated by the leader before they were proposed), in
    /// the order they arrived. The leader puts every batch that arrived
    /// while earlier entries were in flight into one entry (see
    /// `cluster::propose`), so Raft's cost per entry is paid per group of
    /// publishes, like an fsync per group commit.
    Publish(Vec<Bytes>),
    /// In the metadata group: a replicated topic exists, with these settings,
    /// on these nodes.
    CreateTopic {
        name: String,
        config: TopicConfig,
        replicas: Vec<NodeId>,
    },
    /// In a replicated topic's group: consumer groups' positions, so that
    /// a group resumes where its acks got to on whichever node it is read
    /// from next (see `cluster::positions`).
    Positions(Vec<GroupPosition>),
    /// In the metadata group: a replicated topic now lives on these nodes
    /// (`herald cluster move`; see `cluster::membership`). Nodes newly
    /// named open a replica that waits to be added to the topic's group;
    /// nodes no longer named let theirs go.
    PlaceTopic { name: String, replicas: Vec<NodeId> },
    /// In the metadata group: a replicated topic is deleted; every node
    /// lets its replica go.
    DeleteTopic { name: String },
}

/// Where a consumer group of a replicated topic stands, as the node that
/// serves it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPosition {
    pub group: String,
    /// Every offset below it is acked.
    pub floor: u64,
    /// `herald groups reset` moved the group to `floor`, backwards maybe;
    /// otherwise a replica only moves its copy of the group forward.
    pub reset: bool,
}

/// What applying a [`Command`] answers the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    None,
    /// What became of each batch of a `Publish`, in its order.
    Appended(Vec<Appended>),
    /// A command the state machine refused; nothing changed. `code` is the
    /// wire error code ([`herald_protocol::ErrorCode`]) the proposer
    /// answers its client with.
    Failed { code: u16, message: String },
    /// The metadata group recorded a topic (`existed`: it was already there
    /// with these settings).
    TopicCreated { existed: bool },
}

/// What became of one batch of a `Publish` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Appended {
    /// Stored (or found already stored: `duplicate`) at these offsets.
    Stored {
        base_offset: u64,
        count: u32,
        duplicate: bool,
    },
    /// Refused (a sequence gap, an invalid batch); `code` as in
    /// [`Outcome::Failed`].
    Failed { code: u16, message: String },
}

/// The voters of `raft`'s group as this node sees them now (its effective
/// membership: a change shows before it is committed).
pub fn voters(raft: &Raft) -> std::collections::BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// Shorthands for openraft's generic types.
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Membership = openraft::StoredMembership<NodeId, Node>;
