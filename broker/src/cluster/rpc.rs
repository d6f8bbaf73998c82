//! What nodes say to each other: one Raft call per `Cluster` frame of the
//! Herald protocol, answered by one `ClusterReply` (docs/cluster.md).
//!
//! Calls travel over ordinary broker connections (the peer's listener,
//! after a Hello with the node's token), so TLS, authentication (the
//! `cluster` permission), limits and heartbeats are those of any client.
//! The bodies are postcard of the types below; only brokers of the same
//! version are meant to talk to each other.

use std::collections::BTreeMap;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{Command, NodeId, Outcome, TypeConfig};

/// The metadata group's name in [`Call::group`].
pub const META_GROUP: &str = "meta";
/// Prefix of a replicated topic's group name.
pub const TOPIC_GROUP_PREFIX: &str = "topic/";

/// The group of topic `name`.
pub fn topic_group(name: &str) -> String {
    format!("{TOPIC_GROUP_PREFIX}{name}")
}

/// One call to a peer, for one Raft group.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    pub group: String,
    pub body: CallBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CallBody {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write for the group, sent to its leader by a node that does not
    /// lead it (a metadata change asked of any node).
    Propose(Command),
    /// A change of the group's voters (`herald cluster add|move`), sent to
    /// its leader: new nodes are added as learners, waited for until they
    /// caught up, then the voters become exactly these.
    Reconfigure(BTreeMap<NodeId, String>),
}

impl Call {
    /// The node that made a leader's call (AppendEntries), if it is one.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.body {
            CallBody::Append(r) => r.vote.leader_id().voted_for(),
            _ => None,
        }
    }
}

/// The answer to a [`Call`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Proposed(Result<Outcome, ProposeError>),
    /// This node has no such group (not yet: its metadata has not reached
    /// it). The caller retries later.
    NoGroup(String),
    /// The call's body could not be decoded.
    Malformed(String),
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// Not the leader; the leader's address when known.
    #[error("not the leader{}", .0.as_ref().map(|a| format!("; leader: {a}")).unwrap_or_else(|| "; no leader elected yet".into()))]
    NotLeader(Option<String>),
    #[error("{0}")]
    Failed(String),
}
