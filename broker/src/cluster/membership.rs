//! Changing the cluster (`herald cluster add|remove|move`, and deleting a
//! replicated topic), asked of any node and carried out from it.
//!
//! - **Adding a node**: the new node starts with `--join` (it forms
//!   nothing, and waits); the metadata group takes it as a learner, waits
//!   until it has copied the metadata, then makes it a voter. From then on
//!   every node's address book knows it, and it can hold replicas.
//! - **Moving a topic** onto other nodes, in three steps, each of which can
//!   be repeated if the move was cut short (running the same move again
//!   finishes it):
//!   1. the metadata places the topic on the old and the new nodes: the
//!      new ones open an empty replica that waits to be added;
//!   2. the topic's leader adds each new node as a learner, waits until it
//!      has copied the whole log (the leader keeps serving meanwhile), then
//!      makes the voters exactly the new nodes (Raft's joint consensus: no
//!      moment without a majority of either set);
//!   3. the metadata places the topic on the new nodes only: the old ones
//!      let their replica go (a removed leader steps down first).
//! - **Removing a node** that holds no replica takes it out of the
//!   metadata group; it can then be stopped.
//! - **Deleting a replicated topic** is one metadata write: every node
//!   lets its replica go as it applies it, and a node that was down does
//!   so when it comes back and applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald_protocol::{ClusterChange, ErrorCode};

use super::network::{self, Network};
use super::propose::Write;
use super::rpc::{self, Answer, ProposeError};
use super::types::{Command, NodeId, Outcome};
use super::{network_for, Cluster, PROPOSE_PATIENCE};
use crate::BrokerError;

/// How long a change may take, most of it a new replica copying the
/// topic's log (about a minute per GiB on this project's test machine).
pub const CHANGE_PATIENCE: Duration = Duration::from_secs(600);

impl Cluster {
    /// Carries out `change` (see the module docs); returns once it is
    /// committed.
    ///
    /// # Errors
    /// `InvalidArgument` for a change that cannot be made (unknown node or
    /// topic, a node still holding replicas); `Busy` when no leader could
    /// be reached in time.
    pub async fn change(&self, change: ClusterChange) -> Result<(), BrokerError> {
        match change {
            ClusterChange::AddNode { id, addr } => self.add_node(id, addr).await,
            ClusterChange::RemoveNode { id } => self.remove_node(id).await,
            ClusterChange::MoveTopic { topic, replicas } => {
                self.move_topic(&topic, &replicas).await
            }
        }
    }

    async fn add_node(&self, id: NodeId, addr: String) -> Result<(), BrokerError> {
        if !addr.contains(':') {
            return Err(BrokerError::InvalidArgument(format!(
                "{addr:?} is not HOST:PORT (the new node's broker listener)"
            )));
        }
        let mut voters = self.members();
        match voters.get(&id) {
            Some(a) if *a == addr => return Ok(()),
            Some(a) => {
                return Err(BrokerError::InvalidArgument(format!(
                    "node {id} is already a member, at {a}"
                )))
            }
            None => {}
        }
        voters.insert(id, addr);
        self.change_meta(Write::Voters(voters)).await?;
        self.seen_here(|| self.members().contains_key(&id)).await;
        Ok(())
    }

    async fn remove_node(&self, id: NodeId) -> Result<(), BrokerError> {
        let mut voters = self.members();
        if voters.remove(&id).is_none() {
            return Err(BrokerError::InvalidArgument(format!(
                "node {id} is not a member (members: {:?})",
                self.members().keys().collect::<Vec<_>>()
            )));
        }
        if voters.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "the last member cannot be removed".into(),
            ));
        }
        let held: Vec<String> = self
            .metadata
            .topics()
            .into_iter()
            .filter(|(_, p)| p.replicas.contains(&id))
            .map(|(n, _)| n)
            .collect();
        if !held.is_empty() {
            return Err(BrokerError::InvalidArgument(format!(
                "node {id} still holds replicas of {held:?}: move them first (herald cluster move TOPIC --to ...)"
            )));
        }
        self.change_meta(Write::Voters(voters)).await?;
        self.seen_here(|| !self.members().contains_key(&id)).await;
        Ok(())
    }

    async fn move_topic(&self, topic: &str, replicas: &[NodeId]) -> Result<(), BrokerError> {
        let Some(placement) = self.metadata.topic(topic) else {
            return Err(BrokerError::InvalidArgument(format!(
                "{topic:?} is not a replicated topic"
            )));
        };
        let members = self.members();
        let mut seen = BTreeSet::new();
        for id in replicas {
            if !members.contains_key(id) {
                return Err(BrokerError::InvalidArgument(format!(
                    "node {id} is not a member (members: {:?}); add it first (herald cluster add)",
                    members.keys().collect::<Vec<_>>()
                )));
            }
            if !seen.insert(*id) {
                return Err(BrokerError::InvalidArgument(format!(
                    "node {id} is named twice"
                )));
            }
        }
        if replicas.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a topic needs at least one replica".into(),
            ));
        }
        // 1. Old and new nodes hold a replica.
        let mut both = placement.replicas.clone();
        both.extend(
            replicas
                .iter()
                .filter(|id| !placement.replicas.contains(id)),
        );
        let place = |replicas: Vec<NodeId>| {
            Write::Entry(Command::PlaceTopic {
                name: topic.to_owned(),
                replicas,
            })
        };
        self.change_meta(place(both.clone())).await?;
        // 2. The topic's voters become the new nodes.
        let voters: BTreeMap<NodeId, String> = replicas
            .iter()
            .map(|id| (*id, members[id].clone()))
            .collect();
        self.change_topic_group(topic, &both, Write::Voters(voters))
            .await?;
        // 3. The old nodes let go.
        self.change_meta(place(replicas.to_vec())).await?;
        self.seen_here(|| {
            self.metadata
                .topic(topic)
                .is_some_and(|p| p.replicas == replicas)
        })
        .await;
        Ok(())
    }

    /// Waits (bounded) until this node sees a change committed through
    /// another node, so that what it answers next (the cluster's status,
    /// a topic's description) shows the change.
    async fn seen_here(&self, seen: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + PROPOSE_PATIENCE;
        while !seen() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Deletes replicated topic `name` on every node, and waits (bounded)
    /// until this node has let its replica go.
    ///
    /// # Errors
    /// `UnknownTopic`, or `Busy` when no leader could be reached in time.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let command = Write::Entry(Command::DeleteTopic {
            name: name.to_owned(),
        });
        match self.write_meta(command, PROPOSE_PATIENCE).await {
            Ok(Outcome::Failed { code, message }) => {
                return Err(match ErrorCode::from_u16(code) {
                    ErrorCode::UnknownTopic => BrokerError::UnknownTopic(name.to_owned()),
                    _ => BrokerError::InvalidArgument(message),
                })
            }
            Ok(_) => {}
            Err(e) => {
                return Err(BrokerError::Busy(format!(
                    "cluster metadata cannot be written now ({e})"
                )))
            }
        }
        let deadline = tokio::time::Instant::now() + PROPOSE_PATIENCE;
        while self.replicas.contains_key(name) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// A change of the metadata group, as a client error when it fails.
    async fn change_meta(&self, w: Write) -> Result<Outcome, BrokerError> {
        match self.write_meta(w, CHANGE_PATIENCE).await {
            Ok(Outcome::Failed { message, .. }) => Err(BrokerError::InvalidArgument(message)),
            Ok(o) => Ok(o),
            Err(e) => Err(BrokerError::Busy(format!(
                "the cluster cannot be changed now ({e})"
            ))),
        }
    }

    /// Makes `w` in topic `name`'s group: through this node's replica if
    /// it holds one, else sent to the nodes in `holders` (the leader they
    /// name, or the next one), until [`CHANGE_PATIENCE`] runs out.
    async fn change_topic_group(
        &self,
        name: &str,
        holders: &[NodeId],
        w: Write,
    ) -> Result<(), BrokerError> {
        let net = network_for(&self.config, rpc::topic_group(name), self.max_frame);
        let r = match self.replica(name) {
            Some(r) => {
                super::propose::anywhere(&r.raft, &net, &self.peers, w, CHANGE_PATIENCE).await
            }
            None => self.write_elsewhere(&net, holders, w).await,
        };
        match r {
            Ok(Outcome::Failed { message, .. }) => Err(BrokerError::InvalidArgument(message)),
            Ok(_) => Ok(()),
            Err(e) => Err(BrokerError::Busy(format!(
                "topic {name:?}'s replicas cannot be changed now ({e})"
            ))),
        }
    }

    /// [`super::propose::anywhere`] for a group this node holds no replica
    /// of: asks the nodes that do, following the leader they name.
    async fn write_elsewhere(
        &self,
        net: &Network,
        holders: &[NodeId],
        w: Write,
    ) -> Result<Outcome, String> {
        if holders.is_empty() {
            return Err("no node holds the topic".into());
        }
        let deadline = tokio::time::Instant::now() + CHANGE_PATIENCE;
        let mut next: Option<String> = None;
        let mut turn = 0usize;
        let mut last = String::from("no node holds the topic");
        while tokio::time::Instant::now() < deadline {
            let addr = match next.take() {
                Some(a) => a,
                None => {
                    let id = holders[turn % holders.len()];
                    turn += 1;
                    self.peers.get(id).unwrap_or_default()
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match network::propose(net, &addr, w.clone(), left).await {
                Ok(Answer::Proposed(Ok(o))) => return Ok(o),
                Ok(Answer::Proposed(Err(ProposeError::NotLeader(Some(leader))))) => {
                    next = Some(leader);
                    continue;
                }
                Ok(Answer::Proposed(Err(e))) => last = e.to_string(),
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }
}
