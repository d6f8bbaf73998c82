//! A node's place in a cluster: its id and every member's address
//! (`--node-id`, `--peers`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::types::NodeId;

/// The cluster settings of one node. Without them the broker runs alone,
/// exactly as it always did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id; it must be one of `peers`.
    pub node_id: NodeId,
    /// Every node of the cluster, this one included: its id and the address
    /// of its broker listener (clients and peers use the same one).
    pub peers: BTreeMap<NodeId, String>,
    /// The token this node presents to its peers when authentication is
    /// on (it needs the `cluster` permission); `None` with auth off.
    pub token: Option<String>,
    /// Started with `--join`: the node does not form a cluster with
    /// `peers` on its first start, it waits to be added to a running one
    /// (`herald cluster add`).
    pub join: bool,
    /// Raft timings: a leader's heartbeat, and the range a follower waits
    /// without one before it stands for election.
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
}

impl ClusterConfig {
    /// Parses `--peers` (`1=127.0.0.1:7501,2=127.0.0.1:7502,...`) for node
    /// `node_id`.
    ///
    /// # Errors
    /// A malformed list, a repeated id, or `node_id` missing from it.
    pub fn parse(node_id: NodeId, peers: &str) -> Result<ClusterConfig, String> {
        let mut map = BTreeMap::new();
        for part in peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("peer {part:?}: expected ID=HOST:PORT"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("peer {part:?}: {id:?} is not a node id (a number)"))?;
            let addr = addr.trim();
            if !addr.contains(':') {
                return Err(format!("peer {part:?}: {addr:?} is not HOST:PORT"));
            }
            if map.insert(id, addr.to_owned()).is_some() {
                return Err(format!("node id {id} appears twice in --peers"));
            }
        }
        if !map.contains_key(&node_id) {
            return Err(format!(
                "--node-id {node_id} is not in --peers ({})",
                map.keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(ClusterConfig {
            node_id,
            peers: map,
            token: None,
            join: false,
            // openraft gives each AppendEntries call one heartbeat interval
            // to be answered, and a follower's answer waits for its fsync:
            // 150 ms leaves room for a loaded disk (at 50 ms, a follower
            // catching up on large entries timed out call after call and
            // the group fell into elections). A follower that heard from a
            // leader stands for election once the leader's lease (the
            // range's top) and then a pick in the range have passed
            // without a word from it: 1.5-2 s. With 200-400 ms (0.6-0.8 s)
            // three nodes sharing one disk with a node catching up 1 GiB
            // missed heartbeats behind each other's fsyncs and re-elected
            // every few seconds (docs/cluster.md).
            heartbeat: Duration::from_millis(150),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_peer_list() {
        let c = ClusterConfig::parse(2, "1=127.0.0.1:7501, 2=127.0.0.1:7502,3=h:1").unwrap();
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[&c.node_id], "127.0.0.1:7502");
    }

    #[test]
    fn refuses_bad_lists() {
        assert!(ClusterConfig::parse(4, "1=a:1,2=b:2")
            .unwrap_err()
            .contains("not in --peers"));
        assert!(ClusterConfig::parse(1, "1=a:1,1=b:2")
            .unwrap_err()
            .contains("twice"));
        assert!(ClusterConfig::parse(1, "x=a:1")
            .unwrap_err()
            .contains("not a node id"));
        assert!(ClusterConfig::parse(1, "1=a")
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(ClusterConfig::parse(1, "1")
            .unwrap_err()
            .contains("ID=HOST:PORT"));
    }
}
