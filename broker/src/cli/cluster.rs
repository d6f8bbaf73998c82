//! `herald cluster status|add|remove|move`: a cluster as one of its nodes
//! sees it, and changes to it (docs/cluster.md, "Changing the cluster").

use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_protocol::{ClusterChange, ClusterInfo, RaftGroupInfo};
use serde_json::json;

use super::common::{runtime, ServerArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald cluster status --server 127.0.0.1:7501\n  herald cluster status --server 127.0.0.1:7501 --json\n  herald cluster add 4 127.0.0.1:7504 --server 127.0.0.1:7501\n  herald cluster move orders --to 2,3,4 --server 127.0.0.1:7501\n  herald cluster remove 1 --server 127.0.0.1:7502"
)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Nodes, and each Raft group's leader, term, log and (asked of the
    /// leader) how far behind each replica is.
    #[command(
        after_help = "Examples:\n  herald cluster status --server 127.0.0.1:7501\n  herald cluster status --server 127.0.0.1:7501 --json"
    )]
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Makes a node started with `--join` a member of the cluster.
    #[command(
        after_help = "Examples:\n  herald cluster add 4 127.0.0.1:7504 --server 127.0.0.1:7501"
    )]
    Add {
        /// The new node's id (its --node-id).
        id: u64,
        /// Its broker listener, as the other nodes reach it (HOST:PORT).
        addr: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Takes a node that holds no replica out of the cluster (move its
    /// topics away first); it can then be stopped.
    #[command(
        after_help = "Examples:\n  herald cluster move orders --to 2,3 --server 127.0.0.1:7501   # first, off node 1\n  herald cluster remove 1 --server 127.0.0.1:7502"
    )]
    Remove {
        id: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Moves a replicated topic onto other nodes: the new ones copy it while
    /// the old ones serve, then the old ones let it go. Running the same
    /// move again finishes one that was cut short.
    #[command(
        after_help = "Examples:\n  herald cluster move orders --to 2,3,4 --server 127.0.0.1:7501\n  herald cluster move orders --to 2,3,4 --timeout 1h --server 127.0.0.1:7501"
    )]
    Move {
        topic: String,
        /// The nodes that hold the topic afterwards, e.g. 2,3,4.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<u64>,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Args)]
struct ChangeArgs {
    /// How long to wait for the change (copying a big topic takes a while).
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(a: ClusterArgs) -> anyhow::Result<ExitCode> {
    let (change, args) = match a.command {
        ClusterCommand::Status { server } => return status(server),
        ClusterCommand::Add { id, addr, change } => (ClusterChange::AddNode { id, addr }, change),
        ClusterCommand::Remove { id, change } => (ClusterChange::RemoveNode { id }, change),
        ClusterCommand::Move { topic, to, change } => (
            ClusterChange::MoveTopic {
                topic,
                replicas: to,
            },
            change,
        ),
    };
    runtime()?.block_on(async move {
        let client = args.server.connect_with_timeout(args.timeout).await?;
        let info = client.cluster_change(change).await;
        client.close().await;
        let info = info?;
        if args.server.json {
            println!("{}", status_json(&info));
        } else {
            print!("{}", status_text(&info));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn status(server: ServerArgs) -> anyhow::Result<ExitCode> {
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
