//! Topic and group administration: thin calls returning the protocol's
//! [`TopicInfo`] and [`GroupInfo`].

use herald_protocol::{
    CreateTopic, GroupInfo, Message as Wire, RepairReport, RepairTopic, ResetGroup, StartPosition,
    TopicConfig, TopicInfo, TopicName,
};

use crate::{Client, Error, Result};

fn unexpected(m: Wire) -> Error {
    Error::Protocol(format!("unexpected {:?} reply", m.opcode()))
}

impl Client {
    /// Creates a topic (in a cluster, replicated on the broker's default
    /// number of nodes: see [`Client::create_replicated_topic`]).
    ///
    /// # Errors
    /// [`Error::Broker`] with `TopicExists` if it exists (also when a
    /// reconnect made the client re-send a create that had succeeded).
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.create_replicated_topic(name, config, 0).await
    }

    /// Creates a topic replicated on `replicas` nodes of a cluster (0: the
    /// broker's default, 3 or every node of a smaller cluster).
    ///
    /// # Errors
    /// As [`Client::create_topic`]; `InvalidArgument` when the cluster has
    /// fewer nodes, or the broker runs alone and `replicas` is over 1.
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        config: TopicConfig,
        replicas: u32,
    ) -> Result<TopicInfo> {
        let msg = Wire::CreateTopic(CreateTopic {
            name: name.into(),
            config,
            replicas,
        });
        match self.inner.request(msg).await? {
            Wire::TopicInfo(t) => Ok(t),
            m => Err(unexpected(m)),
        }
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// [`Error::Broker`] with `UnknownTopic` if there is no such topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        match self
            .inner
            .request(Wire::DeleteTopic(TopicName { name: name.into() }))
            .await?
        {
            Wire::Ok => Ok(()),
            m => Err(unexpected(m)),
        }
    }

    /// Lists every topic.
    ///
    /// # Errors
    /// As any request: [`Error::Timeout`], [`Error::ConnectionLost`].
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        match self.inner.request(Wire::ListTopics).await? {
            Wire::TopicList(l) => Ok(l.topics),
            m => Err(unexpected(m)),
        }
    }

    /// How a cluster looks from the node this client is connected to: its
    /// nodes, and each Raft group's leader, term, log and (on the leader)
    /// each replica's progress.
    ///
    /// # Errors
    /// [`Error::Broker`] with `InvalidArgument` from a broker that is not in
    /// a cluster.
    pub async fn cluster_status(&self) -> Result<herald_protocol::ClusterInfo> {
        match self.inner.request(Wire::ClusterStatus).await? {
            Wire::ClusterInfo(i) => Ok(i),
            m => Err(unexpected(m)),
        }
    }

    /// Changes the cluster (adds or removes a node, moves a topic's
    /// replicas) through the node this client is connected to; answers how
    /// the cluster looks once the change is committed. Copying a big topic
    /// to a new replica takes a while: give the client a request timeout
    /// to match ([`crate::ClientBuilder::request_timeout`]).
    ///
    /// # Errors
    /// [`Error::Broker`] with `InvalidArgument` (unknown node or topic, a
    /// node that still holds replicas), `Busy` (no leader reachable in
    /// time), `Unauthorized` (no `cluster` permission).
    pub async fn cluster_change(
        &self,
        change: herald_protocol::ClusterChange,
    ) -> Result<herald_protocol::ClusterInfo> {
        match self.inner.request(Wire::ClusterChange(change)).await? {
            Wire::ClusterInfo(i) => Ok(i),
            m => Err(unexpected(m)),
        }
    }

    /// Describes one topic (offsets, size, groups).
    ///
    /// # Errors
    /// [`Error::Broker`] with `UnknownTopic`.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        match self
            .inner
            .request(Wire::DescribeTopic(TopicName { name: name.into() }))
            .await?
        {
            Wire::TopicInfo(t) => Ok(t),
            m => Err(unexpected(m)),
        }
    }

    /// The groups of a topic, with their positions and lag.
    ///
    /// # Errors
    /// [`Error::Broker`] with `UnknownTopic`.
    pub async fn list_groups(&self, topic: &str) -> Result<Vec<GroupInfo>> {
        match self
            .inner
            .request(Wire::ListGroups(TopicName { name: topic.into() }))
            .await?
        {
            Wire::GroupList(l) => Ok(l.groups),
            m => Err(unexpected(m)),
        }
    }

    /// Moves a group's committed position.
    ///
    /// # Errors
    /// [`Error::Broker`] (`GroupActive` while members are subscribed).
    pub async fn reset_group(&self, topic: &str, group: &str, to: StartPosition) -> Result<()> {
        let msg = Wire::ResetGroup(ResetGroup {
            topic: topic.into(),
            group: group.into(),
            to,
        });
        match self.inner.request(msg).await? {
            Wire::Ok => Ok(()),
            m => Err(unexpected(m)),
        }
    }

    /// Finds every damaged range of a topic's log and, unless `dry_run`,
    /// has the broker skip them for good: readers then go past those
    /// offsets, which are lost. The report lists each range. The broker
    /// reads the whole log, so give the client a request timeout to match
    /// ([`crate::ClientBuilder::request_timeout`]).
    ///
    /// # Errors
    /// [`Error::Broker`] with `UnknownTopic`, or `TopicUnavailable` if the
    /// topic's files still cannot be opened.
    pub async fn repair_topic(&self, name: &str, dry_run: bool) -> Result<RepairReport> {
        let msg = Wire::RepairTopic(RepairTopic {
            name: name.into(),
            dry_run,
        });
        match self.inner.request(msg).await? {
            Wire::RepairReport(r) => Ok(r),
            m => Err(unexpected(m)),
        }
    }
}
