//! Publish: append a batch to a topic; the confirm leaves once durable, in
//! the order the publishes came.

use std::sync::Arc;

use crate::cluster::propose::Rejected;
use crate::cluster::types::Appended;
use crate::cluster::{Cluster, Replica};
use herald_protocol::{Batch, ErrorCode, Message, PublishOk, TopicConfig};

use super::Handler;
use crate::auth::Need;
use crate::session::{Close, Session, Shared};
use crate::storage::StorageError;
use crate::BrokerError;

pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) batch: Batch,
}

impl Handler for Publish {
    fn needs(&self) -> Need<'_> {
        Need::Publish(&self.topic)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let max_batch = s.shared.config.max_frame_bytes - 1024;
        if self.batch.len_bytes() > max_batch {
            let e = Message::error(
                ErrorCode::TooLarge,
                format!(
                    "batch of {} bytes exceeds {max_batch}",
                    self.batch.len_bytes()
                ),
            );
            return s.reply(id, e).await;
        }
        if let Some(c) = s.shared.cluster.clone() {
            let shared = s.shared.clone();
            if let Some(r) = replicated(&shared, &c, &self.topic).await {
                return match r {
                    Ok(replica) => publish_replicated(s, id, &c, replica, self.batch).await,
                    Err(e) => s.reply(id, e.to_message()).await,
                };
            }
        }
        let t = match s.shared.registry.for_publish(&self.topic) {
            Ok(t) => t,
            Err(e) => return s.reply(id, e.to_message()).await,
        };
        // Queue now, in arrival order; await the confirm in `publishes` so
        // later frames keep flowing.
        let queued = t.log.enqueue(self.batch).await;
        let shutdown = s.shared.shutdown.clone();
        s.publishes.push_back(Box::pin(async move {
            let r = match queued {
                Ok(p) => p.wait().await,
                Err(e) => Err(e),
            };
            let m = match r {
                Ok(o) => {
                    if !o.duplicate {
                        t.record_appended(o.count);
                    }
                    Message::PublishOk(PublishOk {
                        base_offset: o.base_offset,
                        count: o.count,
                        duplicate: o.duplicate,
                    })
                }
                // The log closed under the publish and the broker is not
                // stopping: the topic was deleted.
                Err(StorageError::Closed) if !shutdown.is_cancelled() => {
                    BrokerError::UnknownTopic(t.name.clone()).to_message()
                }
                Err(e) => BrokerError::from(e).to_message(),
            };
            (id, m)
        }));
        Ok(())
    }
}

/// In a cluster: this node's replica of `topic` when the topic is
/// replicated (created through the cluster if it is new and the broker
/// auto-creates topics); `None` for a topic served locally (the broker's
/// own `_` topics, and topics created before the node joined a cluster).
async fn replicated(
    s: &Shared,
    c: &Cluster,
    topic: &str,
) -> Option<Result<Arc<Replica>, BrokerError>> {
    if let Some(r) = c.replica(topic) {
        return Some(Ok(r));
    }
    if topic.starts_with('_') {
        return None;
    }
    if !c.is_replicated(topic) {
        if s.registry.get(topic).is_ok() {
            return None;
        }
        if !s.config.auto_create_topics {
            return Some(Err(BrokerError::UnknownTopic(topic.to_owned())));
        }
        if let Err(e) = c.create_topic(topic, &TopicConfig::default(), 0).await {
            return Some(Err(e));
        }
    }
    Some(c.replica(topic).ok_or_else(|| {
        BrokerError::NotLeader(format!(
            "node {} holds no replica of topic {topic:?}; publish to one that does",
            c.node_id()
        ))
    }))
}

/// Proposes the batch to the topic's Raft group: confirmed once a majority
/// of its replicas has it on disk and this node (the leader) has stored it
/// in its copy of the topic.
async fn publish_replicated(
    s: &mut Session,
    id: u64,
    c: &Arc<Cluster>,
    replica: Arc<Replica>,
    batch: Batch,
) -> Result<(), Close> {
    // Queued now, in arrival order (the proposer and Raft keep it);
    // awaited in `publishes`.
    let answer = replica.proposer.propose(batch.into_bytes()).await;
    let c = c.clone();
    s.publishes.push_back(Box::pin(async move {
        let m = match answer.await {
            Ok(Ok(Appended::Stored {
                base_offset,
                count,
                duplicate,
            })) => Message::PublishOk(PublishOk {
                base_offset,
                count,
                duplicate,
            }),
            Ok(Ok(Appended::Failed { code, message })) => {
                Message::error(ErrorCode::from_u16(code), message)
            }
            Ok(Err(Rejected::NotLeader(leader))) => {
                let leader = leader.or_else(|| c.leader_address(&replica.raft));
                BrokerError::NotLeader(match leader {
                    Some(a) => format!(
                        "node {} does not lead topic {:?}; leader: {a}",
                        c.node_id(),
                        replica.topic.name
                    ),
                    None => format!(
                        "topic {:?} has no leader yet (an election is under way); retry",
                        replica.topic.name
                    ),
                })
                .to_message()
            }
            Ok(Err(Rejected::Failed(e))) => BrokerError::Internal(e).to_message(),
            // Raft stopped under the publish (the broker is stopping): not
            // confirmed.
            Ok(Err(Rejected::Stopped)) | Err(_) => BrokerError::ShuttingDown.to_message(),
        };
        (id, m)
    }));
    Ok(())
}
