//! Cluster: a Raft call from a peer node (see `crate::cluster::rpc`), and
//! ClusterStatus.

use bytes::Bytes;
use herald_protocol::{ClusterChange, ErrorCode, Message};

use super::Handler;
use crate::auth::Need;
use crate::cluster::failover::PeerLink;
use crate::cluster::rpc::{Answer, Call};
use crate::session::{Close, Session};

pub(crate) struct ClusterCall(pub(crate) Bytes);

impl Handler for ClusterCall {
    fn needs(&self) -> Need<'_> {
        Need::Cluster
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let Some(c) = s.shared.cluster.clone() else {
            return s.reply(id, not_in_a_cluster()).await;
        };
        let answer = match postcard::from_bytes::<Call>(&self.0) {
            Ok(call) => {
                if s.cluster_peer.is_none() {
                    if let Some(node) = call.leader() {
                        s.cluster_peer = Some(PeerLink {
                            cluster: c.clone(),
                            node,
                        });
                    }
                }
                c.serve(call).await
            }
            Err(e) => Answer::Malformed(format!("cluster call: {e}")),
        };
        match postcard::to_allocvec(&answer) {
            Ok(b) => s.reply(id, Message::ClusterReply(b.into())).await,
            Err(e) => {
                s.reply(id, Message::error(ErrorCode::Internal, e.to_string()))
                    .await
            }
        }
    }
}

/// ClusterStatus: the cluster as this node sees it; topics the connection
/// may not see are left out.
pub(crate) struct Status;

impl Handler for Status {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let Some(c) = s.shared.cluster.clone() else {
            return s.reply(id, not_in_a_cluster()).await;
        };
        let info = c.status(|topic| s.access.may_see(topic));
        s.reply(id, Message::ClusterInfo(info)).await
    }
}

/// ClusterChange: adds or removes a node, or moves a topic's replicas
/// (`crate::cluster::membership`); answered by how the cluster looks once
/// the change is committed.
pub(crate) struct Change(pub(crate) ClusterChange);

impl Handler for Change {
    fn needs(&self) -> Need<'_> {
        Need::Cluster
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let Some(c) = s.shared.cluster.clone() else {
            return s.reply(id, not_in_a_cluster()).await;
        };
        s.later(id, async move {
            c.change(self.0).await?;
            Ok(Message::ClusterInfo(c.status(|_| true)))
        })
    }
}

/// The answer of a broker that runs alone.
fn not_in_a_cluster() -> Message {
    Message::error(
        ErrorCode::InvalidArgument,
        "this broker is not in a cluster (no --node-id/--peers)",
    )
}
