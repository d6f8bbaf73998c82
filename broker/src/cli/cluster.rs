//! `herald cluster status`: a cluster as one of its nodes sees it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_protocol::{ClusterInfo, RaftGroupInfo};
use serde_json::json;

use super::common::{runtime, ServerArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald cluster status --server 127.0.0.1:7501\n  herald cluster status --server 127.0.0.1:7501 --json"
)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Nodes, and each Raft group's leader, term, log and (asked of the
    /// leader) how far behind each replica is.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn run(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Status { server } = a.command;
    runtime()?.block_on(async move {
        let client = server.connect().await?;
        let info = client.cluster_status().await;
        client.close().await;
        let info = info?;
        if server.json {
            println!("{}", status_json(&info));
        } else {
            print!("{}", status_text(&info));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn status_json(i: &ClusterInfo) -> serde_json::Value {
    json!({
        "node_id": i.node_id,
        "nodes": i.nodes.iter().map(|n| json!({"id": n.id, "addr": n.addr})).collect::<Vec<_>>(),
        "groups": i.groups.iter().map(|g| json!({
            "name": g.name,
            "leader": g.leader,
            "term": g.term,
            "last_index": g.last_index,
            "applied": g.applied,
            "replicas": g.replicas.iter().map(|r| json!({
                "node": r.node,
                "matched": r.matched,
                "lag": lag(g, r.matched),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Entries a replica is behind the leader's log (known on the leader).
fn lag(g: &RaftGroupInfo, matched: Option<u64>) -> Option<u64> {
    let last = g.last_index?;
    Some(last.saturating_sub(matched?))
}

fn status_text(i: &ClusterInfo) -> String {
    let mut out = String::new();
    let nodes: Vec<String> = i
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.addr))
        .collect();
    out.push_str(&format!(
        "node {} of {}: {}\n",
        i.node_id,
        i.nodes.len(),
        nodes.join(" ")
    ));
    out.push_str(&format!(
        "{:<28} {:>6} {:>6} {:>10} {:>10}  replicas (node: entries behind the leader)\n",
        "group", "leader", "term", "last", "applied"
    ));
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for g in &i.groups {
        let leads = g.leader == Some(i.node_id);
        let replicas: Vec<String> = g
            .replicas
            .iter()
            .map(|r| match (leads, lag(g, r.matched)) {
                (true, Some(l)) => format!("{}: {l}", r.node),
                (true, None) => format!("{}: unreachable", r.node),
                (false, _) => r.node.to_string(),
            })
            .collect();
        out.push_str(&format!(
            "{:<28} {:>6} {:>6} {:>10} {:>10}  {}{}\n",
            g.name,
            opt(g.leader),
            g.term,
            opt(g.last_index),
            opt(g.applied),
            replicas.join(", "),
            if leads {
                ""
            } else {
                " (ask the leader for lag)"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use herald_protocol::{ClusterNode, ReplicaInfo};

    use super::*;

    #[test]
    fn the_leader_shows_each_replica_behind() {
        let i = ClusterInfo {
            node_id: 1,
            nodes: vec![
                ClusterNode {
                    id: 1,
                    addr: "a:1".into(),
                },
                ClusterNode {
                    id: 2,
                    addr: "b:2".into(),
                },
            ],
            groups: vec![RaftGroupInfo {
                name: "topic/orders".into(),
                leader: Some(1),
                term: 2,
                last_index: Some(10),
                applied: Some(10),
                replicas: vec![
                    ReplicaInfo {
                        node: 1,
                        matched: Some(10),
                    },
                    ReplicaInfo {
                        node: 2,
                        matched: Some(7),
                    },
                ],
            }],
        };
        let t = status_text(&i);
        assert!(t.contains("node 1 of 2: 1=a:1 2=b:2"), "{t}");
        assert!(t.contains("1: 0, 2: 3"), "{t}");
        assert_eq!(status_json(&i)["groups"][0]["replicas"][1]["lag"], 3);
    }
}
