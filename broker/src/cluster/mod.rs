//! A cluster of brokers: topics replicated over Raft (openraft), see
//! docs/cluster.md.
//!
//! Each node runs one metadata group over every node (which replicated
//! topics exist, with which settings, on which nodes) and one group per
//! replicated topic it holds a replica of. A publish to a replicated topic
//! is proposed to that topic's group by its leader and confirmed once a
//! majority has the entry on disk and the leader has applied it to its own
//! copy of the topic ([`machine::TopicMachine`]); subscribers and groups
//! read that copy on any node as they read any topic.
//!
//! - `config`: `--node-id`, `--peers`, `--join`.
//! - `peers`: where each node is (from `--peers`, then the metadata).
//! - `membership`: adding and removing nodes, moving and deleting topics.
//! - `catchup`: a node that knows it is behind keeps out of elections.
//! - `failover`: a node that sees its leader die elects another at once.
//! - `types`: what a Raft entry carries and what applying it answers.
//! - `raft_log`: each group's Raft log, kept in a Herald log.
//! - `machine`: the state machines (a topic's log, the metadata).
//! - `propose`: client batches into Raft entries, many per entry when busy.
//! - `positions`: consumer groups' floors, replicated with the topic.
//! - `rpc`: what nodes say to each other; `network`: saying it.

// openraft's `StorageError` (the error type its traits require) is large;
// it is returned on failures only.
#![allow(clippy::result_large_err)]

pub mod catchup;
pub mod config;
pub mod failover;
pub mod machine;
pub mod membership;
pub mod network;
pub mod peers;
pub mod positions;
pub mod propose;
pub mod raft_log;
pub mod rpc;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use herald_protocol::{
    ClusterInfo, ClusterNode, ErrorCode, RaftGroupInfo, ReplicaInfo, TopicConfig,
};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::ClusterConfig;
use machine::{MetaMachine, Metadata, Placement, TopicMachine};
use network::Network;
use peers::Peers;
use propose::Write;
use raft_log::RaftLog;
use rpc::{Answer, Call, CallBody, META_GROUP, TOPIC_GROUP_PREFIX};
use types::{Command, NodeId, Outcome, Raft};

use crate::storage::LogConfig;
use crate::topic::{Registry, Topic};
use crate::BrokerError;

/// Replicas of each replicated topic (fewer when the cluster is smaller).
pub const REPLICAS: usize = 3;

/// How long a metadata change waits for a leader to be elected.
const PROPOSE_PATIENCE: Duration = Duration::from_secs(10);

/// This node's replica of one replicated topic.
pub struct Replica {
    pub raft: Raft,
    pub topic: Arc<Topic>,
    /// Where publishes to the topic queue to become entries.
    pub proposer: propose::Proposer,
    /// Where the topic's groups tell their floors.
    pub floors: Arc<positions::Floors>,
    catchup: Arc<catchup::Catchup>,
    log: RaftLog,
    /// Stops the replica's own tasks when it is let go.
    stop: CancellationToken,
}

/// This node's part in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    peers: Arc<Peers>,
    raft_config: Arc<openraft::Config>,
    root: PathBuf,
    registry: Arc<Registry>,
    max_frame: usize,
    meta: Raft,
    meta_catchup: Arc<catchup::Catchup>,
    meta_log: RaftLog,
    metadata: Arc<Metadata>,
    replicas: DashMap<String, Arc<Replica>>,
    suspects: Arc<failover::Suspects>,
    shutdown: CancellationToken,
}

fn fatal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("cluster: {e}"))
}

impl Cluster {
    /// Joins the cluster: opens the metadata group (forming it on first
    /// start: every node proposes the same members, which Raft allows),
    /// then this node's replicas, as the metadata names them.
    ///
    /// # Errors
    /// The Raft logs cannot be opened.
    pub async fn start(
        config: ClusterConfig,
        registry: Arc<Registry>,
        max_frame: usize,
        shutdown: CancellationToken,
    ) -> Result<Arc<Cluster>, BrokerError> {
        let raft_config = openraft::Config {
            cluster_name: "herald".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            // The logs are kept whole for now (see `machine`).
            snapshot_policy: SnapshotPolicy::Never,
            // A follower gets everything queued since its last answer in
            // one call (openraft sends one call at a time per follower):
            // many client batches per round trip and per follower fsync.
            // The frame limit still bounds it (`network`: PayloadTooLarge).
            max_payload_entries: 4096,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(fatal)?);
        let root = registry.config().data_dir.join("cluster");
        let metadata = Arc::new(Metadata::default());
        let peers = Arc::new(Peers::new(config.node_id, config.peers.clone()));
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
        let meta_log = open_raft_log(root.join("meta"), registry.config().direct_io).await?;
        let meta_restarted = meta_log.has_entries();
        let meta = Raft::new(
            config.node_id,
            raft_config.clone(),
            network_for(&config, META_GROUP.into(), max_frame),
            meta_log.clone(),
            MetaMachine::new(metadata.clone(), changed_tx, peers.clone()),
        )
        .await
        .map_err(fatal)?;
        let meta_catchup = catchup::Catchup::start(meta.clone(), meta_restarted);
        let cluster = Arc::new(Cluster {
            config,
            peers,
            raft_config,
            root,
            registry,
            max_frame,
            meta,
            meta_catchup,
            meta_log,
            metadata,
            replicas: DashMap::new(),
            suspects: Arc::default(),
            shutdown,
        });
        // A node started with `--join` waits to be added (`herald cluster
        // add`); the others form the cluster the first time they start.
        if !cluster.config.join && !cluster.meta.is_initialized().await.map_err(fatal)? {
            let members: BTreeMap<NodeId, BasicNode> = cluster
                .config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(e) = cluster.meta.initialize(members).await {
                tracing::debug!(error = %e, "metadata group already formed");
            }
        }
        // Replicas this node held before it stopped serve at once, before
        // the metadata is applied again (their peers may be calling).
        for name in cluster.replicas_on_disk() {
            if let Err(e) = cluster.open_replica(&name, None).await {
                tracing::error!(topic = %name, error = %e, "replica cannot be opened");
            }
        }
        // Each topic the metadata changes: this node's replica is opened or
        // let go to match. One at a time, in the order applied.
        let c = Arc::downgrade(&cluster);
        tokio::spawn(async move {
            while let Some(name) = changed_rx.recv().await {
                let Some(c) = c.upgrade() else { return };
                c.reconcile(&name).await;
            }
        });
        tracing::info!(node = cluster.config.node_id, peers = ?cluster.peers.all(), join = cluster.config.join, "cluster member started");
        Ok(cluster)
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The replicated topics and where they live.
    pub fn topics(&self) -> Vec<(String, Placement)> {
        self.metadata.topics()
    }

    /// This node's replica of `topic`, if the topic is replicated here.
    pub fn replica(&self, topic: &str) -> Option<Arc<Replica>> {
        self.replicas.get(topic).map(|r| r.value().clone())
    }

    /// Whether `topic` is a replicated topic (here or elsewhere).
    pub fn is_replicated(&self, topic: &str) -> bool {
        self.replicas.contains_key(topic) || self.metadata.topic(topic).is_some()
    }

    fn replicas_on_disk(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join("topics")) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The metadata group's voters (the cluster's members) and their
    /// addresses.
    fn members(&self) -> BTreeMap<NodeId, String> {
        let voters = types::voters(&self.meta);
        let book = self.peers.all();
        voters
            .into_iter()
            .map(|id| (id, book.get(&id).cloned().unwrap_or_default()))
            .collect()
    }

    /// Every node of the cluster as this node's metadata group sees it now
    /// (a change just made shows at once, before it is applied here); the
    /// address book before the group has a membership.
    fn nodes(&self) -> Vec<ClusterNode> {
        let from_membership: Vec<ClusterNode> = self
            .meta
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| ClusterNode {
                id: *id,
                addr: n.addr.clone(),
            })
            .collect();
        if !from_membership.is_empty() {
            return from_membership;
        }
        self.peers
            .all()
            .iter()
            .map(|(id, addr)| ClusterNode {
                id: *id,
                addr: addr.clone(),
            })
            .collect()
    }

    /// The `n` nodes holding `topic` (0: [`REPLICAS`], or every member of
    /// a smaller cluster): consecutive members from a place the name picks.
    ///
    /// # Errors
    /// `InvalidArgument` when the cluster has fewer than `n` members.
    fn choose_replicas(&self, topic: &str, n: u32) -> Result<Vec<NodeId>, BrokerError> {
        let mut ids: Vec<NodeId> = self.members().keys().copied().collect();
        if ids.is_empty() {
            ids = self.peers.all().keys().copied().collect();
        }
        let n = match n as usize {
            0 => REPLICAS.min(ids.len()),
            n if n > ids.len() => {
                return Err(BrokerError::InvalidArgument(format!(
                    "{n} replicas asked, but the cluster has {} nodes",
                    ids.len()
                )))
            }
            n => n,
        };
        if n == ids.len() {
            return Ok(ids);
        }
        let start = crc32c::crc32c(topic.as_bytes()) as usize % ids.len();
        Ok((0..n).map(|i| ids[(start + i) % ids.len()]).collect())
    }

    /// Opens this node's replica of `name` (creating the topic's local log
    /// and the group's Raft log if new). With `placement` (from the
    /// metadata) of a topic never moved, a new group is formed over its
    /// nodes; a moved topic's new replica waits to be added to its group.
    async fn open_replica(
        &self,
        name: &str,
        placement: Option<&Placement>,
    ) -> Result<(), BrokerError> {
        if let Some(p) = placement {
            if !p.replicas.contains(&self.config.node_id) {
                return Ok(());
            }
        }
        if self.replicas.contains_key(name) || self.shutdown.is_cancelled() {
            return Ok(());
        }
        let config = placement.map(|p| p.config.clone()).unwrap_or_default();
        let topic = match self.registry.get(name) {
            Ok(t) => t,
            Err(BrokerError::UnknownTopic(_)) => self.registry.create_placed(name, &config)?,
            Err(e) => return Err(e),
        };
        let log = open_raft_log(
            self.root.join("topics").join(name),
            self.registry.config().direct_io,
        )
        .await?;
        let restarted = log.has_entries();
        let raft = Raft::new(
            self.config.node_id,
            self.raft_config.clone(),
            network_for(&self.config, rpc::topic_group(name), self.max_frame),
            log.clone(),
            TopicMachine::new(topic.clone()),
        )
        .await
        .map_err(fatal)?;
        if let Some(p) = placement.filter(|p| p.moves == 0) {
            if !raft.is_initialized().await.map_err(fatal)? {
                let members: BTreeMap<NodeId, BasicNode> = p
                    .replicas
                    .iter()
                    .filter_map(|id| self.peers.get(*id).map(|a| (*id, BasicNode::new(a))))
                    .collect();
                if let Err(e) = raft.initialize(members).await {
                    tracing::debug!(topic = %name, error = %e, "group already formed");
                }
            }
        }
        let proposer = propose::Proposer::start(raft.clone(), self.peers.clone());
        let floors = Arc::new(positions::Floors::new(
            raft.clone(),
            network_for(&self.config, rpc::topic_group(name), self.max_frame),
            self.peers.clone(),
        ));
        topic.report_floors_to(floors.clone());
        let stop = self.shutdown.child_token();
        tokio::spawn(positions::run(floors.clone(), stop.clone()));
        let catchup = catchup::Catchup::start(raft.clone(), restarted);
        let replica = Arc::new(Replica {
            raft,
            topic,
            proposer,
            floors,
            catchup,
            log,
            stop,
        });
        if self
            .replicas
            .insert(name.to_owned(), replica.clone())
            .is_some()
        {
            // Opened twice at once (metadata and disk): keep one.
            tracing::debug!(topic = %name, "replica opened twice");
        }
        tracing::info!(topic = %name, "replica serving");
        Ok(())
    }

    /// Opens or lets go of this node's replica of `name` to match the
    /// metadata as it stands now (not as it stood when the change that
    /// called this was applied: a restarted node applying its metadata log
    /// again acts on where it ends, mostly).
    async fn reconcile(&self, name: &str) {
        let wanted = self
            .metadata
            .topic(name)
            .filter(|p| p.replicas.contains(&self.config.node_id));
        let open = self.replicas.contains_key(name);
        match wanted {
            Some(p) if !open => {
                if let Err(e) = self.open_replica(name, Some(&p)).await {
                    tracing::error!(topic = %name, error = %e, "replica cannot be opened");
                }
            }
            None if open => {
                if let Err(e) = self.close_replica(name).await {
                    tracing::error!(topic = %name, error = %e, "replica cannot be let go");
                }
            }
            _ => {}
        }
    }

    /// Lets go of this node's replica of `name` (the topic was moved off
    /// this node, or deleted): stops its group, then deletes the topic's
    /// copy here and the group's Raft log. The topic goes first: a crash
    /// in between leaves the Raft log, which opens the replica again at
    /// the next start, and the metadata lets it go again.
    async fn close_replica(&self, name: &str) -> Result<(), BrokerError> {
        let Some((_, r)) = self.replicas.remove(name) else {
            return Ok(());
        };
        r.stop.cancel();
        let _ = r.raft.shutdown().await;
        r.log.close().await;
        match self.registry.delete(name).await {
            Ok(()) | Err(BrokerError::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = self.root.join("topics").join(name);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(fatal)?
        .map_err(|e| BrokerError::Internal(format!("removing {name}'s Raft log: {e}")))?;
        tracing::info!(topic = %name, "replica let go");
        Ok(())
    }

    /// Makes a rare write in the metadata group, wherever its leader is.
    async fn write_meta(&self, w: Write, patience: Duration) -> Result<Outcome, String> {
        let net = network_for(&self.config, META_GROUP.into(), self.max_frame);
        propose::anywhere(&self.meta, &net, &self.peers, w, patience).await
    }

    /// A connection on which node `node` made Raft calls closed: if it
    /// leads groups here, find out whether it is gone ([`failover`]).
    pub fn peer_closed(&self, node: NodeId) {
        if node == self.config.node_id || self.shutdown.is_cancelled() {
            return;
        }
        let leads = |raft: &Raft| raft.metrics().borrow().current_leader == Some(node);
        let mut led = Vec::new();
        if leads(&self.meta) {
            led.push(failover::Led {
                raft: self.meta.clone(),
                catchup: self.meta_catchup.clone(),
            });
        }
        for r in self.replicas.iter() {
            if leads(&r.raft) {
                led.push(failover::Led {
                    raft: r.raft.clone(),
                    catchup: r.catchup.clone(),
                });
            }
        }
        tracing::debug!(
            me = self.config.node_id,
            node,
            led = led.len(),
            "a peer's connection closed"
        );
        let (Some(addr), false) = (self.peers.get(node), led.is_empty()) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let check =
                failover::check(self.suspects.clone(), self.config.node_id, node, addr, led);
            rt.spawn(check);
        }
    }

    /// Serves one call from a peer.
    pub async fn serve(&self, call: Call) -> Answer {
        let (raft, catchup) = if call.group == META_GROUP {
            (self.meta.clone(), self.meta_catchup.clone())
        } else if let Some(name) = call.group.strip_prefix(TOPIC_GROUP_PREFIX) {
            match self.replicas.get(name) {
                Some(r) => (r.raft.clone(), r.catchup.clone()),
                None => return Answer::NoGroup(call.group),
            }
        } else {
            return Answer::NoGroup(call.group);
        };
        match call.body {
            CallBody::Append(r) => {
                catchup.on_append(&r);
                Answer::Append(raft.append_entries(r).await)
            }
            CallBody::Vote(r) => Answer::Vote(raft.vote(r).await),
            CallBody::Snapshot(r) => Answer::Snapshot(raft.install_snapshot(r).await),
            CallBody::Propose(c) => {
                Answer::Proposed(propose::here(&raft, &self.peers, Write::Entry(c)).await)
            }
            CallBody::Reconfigure(voters) => {
                Answer::Proposed(propose::here(&raft, &self.peers, Write::Voters(voters)).await)
            }
        }
    }

    /// The address of the node leading `raft`'s group, as this node knows it.
    pub fn leader_address(&self, raft: &Raft) -> Option<String> {
        let leader = raft.metrics().borrow().current_leader?;
        self.peers.get(leader)
    }

    /// Creates a replicated topic: a metadata write, proposed here or sent
    /// to the metadata leader, waiting (bounded) for an election.
    ///
    /// # Errors
    /// `TopicExists` with other settings; `Busy` while no leader can be
    /// found, or when this node holds its limit of topics (checked here,
    /// before the metadata places the topic; see
    /// [`crate::topic::Registry::check_limit`]); `Internal` otherwise.
    pub async fn create_topic(
        &self,
        name: &str,
        config: &TopicConfig,
        replicas: u32,
    ) -> Result<bool, BrokerError> {
        self.registry.check_limit(name)?;
        let command = Command::CreateTopic {
            name: name.to_owned(),
            config: config.clone(),
            replicas: self.choose_replicas(name, replicas)?,
        };
        let deadline = tokio::time::Instant::now() + PROPOSE_PATIENCE;
        let r = self
            .write_meta(Write::Entry(command), PROPOSE_PATIENCE)
            .await;
        match r {
            Ok(Outcome::TopicCreated { existed }) => {
                self.wait_for_replica(name, deadline).await;
                Ok(!existed)
            }
            Ok(Outcome::Failed { code, message }) => Err(match ErrorCode::from_u16(code) {
                ErrorCode::TopicExists => BrokerError::TopicExists(name.to_owned()),
                _ => BrokerError::InvalidArgument(message),
            }),
            Ok(other) => Err(BrokerError::Internal(format!(
                "unexpected outcome {other:?}"
            ))),
            Err(e) => Err(BrokerError::Busy(format!(
                "cluster metadata cannot be written now ({e})"
            ))),
        }
    }

    /// Tells every replica of `topic` that group `group` was reset to
    /// `floor` on this node (`herald groups reset`), once committed.
    ///
    /// # Errors
    /// `Busy` while no leader can be reached.
    pub async fn reset_group(
        &self,
        topic: &str,
        group: &str,
        floor: u64,
    ) -> Result<(), BrokerError> {
        let Some(r) = self.replica(topic) else {
            return Err(BrokerError::InvalidArgument(format!(
                "topic {topic:?} has no replica on this node: reset its groups on a node that holds one"
            )));
        };
        r.floors
            .reset(group, floor, PROPOSE_PATIENCE)
            .await
            .map_err(|e| BrokerError::Busy(format!("the reset cannot be replicated now ({e})")))
    }

    /// Waits (until `deadline`) for this node to have applied a
    /// just-created topic and opened its replica when it holds one: a
    /// creation forwarded to the metadata leader is answered before this
    /// node applies it, and the creator expects to describe the topic and
    /// publish to it at once.
    async fn wait_for_replica(&self, name: &str, deadline: tokio::time::Instant) {
        while tokio::time::Instant::now() < deadline {
            if let Some(p) = self.metadata.topic(name) {
                if !p.replicas.contains(&self.config.node_id) || self.replicas.contains_key(name) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How the cluster looks from this node: the metadata group, then each
    /// replica this node holds whose topic `visible` allows.
    pub fn status(&self, mut visible: impl FnMut(&str) -> bool) -> ClusterInfo {
        let mut groups = vec![group_info(META_GROUP, &self.meta)];
        let mut names: Vec<String> = self
            .replicas
            .iter()
            .map(|r| r.key().clone())
            .filter(|n| visible(n))
            .collect();
        names.sort();
        for n in names {
            if let Some(r) = self.replica(&n) {
                groups.push(group_info(&rpc::topic_group(&n), &r.raft));
            }
        }
        ClusterInfo {
            node_id: self.config.node_id,
            nodes: self.nodes(),
            groups,
        }
    }

    /// Stops every group of this node and closes their Raft logs.
    pub async fn shutdown(&self) {
        let replicas: Vec<Arc<Replica>> = self.replicas.iter().map(|r| r.value().clone()).collect();
        for r in &replicas {
            let _ = r.raft.shutdown().await;
            r.log.close().await;
        }
        let _ = self.meta.shutdown().await;
        self.meta_log.close().await;
    }
}

/// One group's state from its Raft metrics.
fn group_info(name: &str, raft: &Raft) -> RaftGroupInfo {
    let m = raft.metrics().borrow().clone();
    let replication = m.replication.as_ref();
    RaftGroupInfo {
        name: name.to_owned(),
        leader: m.current_leader,
        term: m.current_term,
        last_index: m.last_log_index,
        applied: m.last_applied.map(|l| l.index),
        replicas: m
            .membership_config
            .voter_ids()
            .map(|node| ReplicaInfo {
                node,
                matched: replication
                    .and_then(|r| r.get(&node))
                    .and_then(|l| l.map(|l| l.index)),
            })
            .collect(),
    }
}

fn network_for(config: &ClusterConfig, group: String, max_frame: usize) -> Network {
    Network {
        group,
        node_id: config.node_id,
        token: config.token.clone(),
        max_frame,
    }
}

/// Opens a Raft log off the async threads (recovery reads the files).
async fn open_raft_log(dir: PathBuf, direct_io: bool) -> Result<RaftLog, BrokerError> {
    tokio::task::spawn_blocking(move || {
        let config = LogConfig {
            direct_io,
            ..LogConfig::default()
        };
        RaftLog::open(&dir.join("raft"), config)
    })
    .await
    .map_err(fatal)?
    .map_err(fatal)
}
