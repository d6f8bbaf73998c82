//! `herald groups`: lag and health of a topic's groups; reset a group.

use std::process::ExitCode;

use clap::Args;
use herald_client::GroupInfo;
use serde_json::json;

use super::common::{parse_reset_position, runtime, ServerArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald groups orders\n  herald groups orders billing --reset-to earliest\n  herald groups orders billing --reset-to 1500"
)]
pub struct GroupsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The topic.
    topic: String,
    /// One group (required with --reset-to).
    group: Option<String>,
    /// Move the group to earliest, latest, an offset or an RFC 3339 time
    /// (only while it has no members). Also replaces the state of a group
    /// listed as damaged.
    #[arg(long, value_parser = parse_reset_position, requires = "group")]
    reset_to: Option<herald_client::StartPosition>,
}

pub fn group_json(g: &GroupInfo) -> serde_json::Value {
    json!({
        "name": g.name,
        "ack_floor": g.ack_floor,
        "lag": g.lag,
        "in_flight": g.in_flight,
        "redelivered": g.redelivered,
        "dead_lettered": g.dead_lettered,
        "members": g.members,
        "damaged": g.damaged,
    })
}

pub fn run(a: GroupsArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let client = a.server.connect().await?;
        if let (Some(to), Some(g)) = (a.reset_to, &a.group) {
            client.reset_group(&a.topic, g, to).await?;
            if a.server.json {
                println!("{}", json!({"topic": a.topic, "group": g, "reset": true}));
            } else {
                println!("group {g} of {} reset", a.topic);
            }
            client.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        let groups = client.list_groups(&a.topic).await?;
        let shown: Vec<&GroupInfo> = groups
            .iter()
            .filter(|g| a.group.as_deref().is_none_or(|n| n == g.name))
            .collect();
        if shown.is_empty() {
            if let Some(g) = &a.group {
                client.close().await;
                anyhow::bail!(
                    "topic {} has no group {g} (see `herald groups {}`)",
                    a.topic,
                    a.topic
                );
            }
        }
        if a.server.json {
            for g in &shown {
                println!("{}", group_json(g));
            }
        } else {
            println!(
                "{:<24} {:>12} {:>12} {:>10} {:>12} {:>10}  members",
                "group", "ack floor", "lag", "in-flight", "redelivered", "dead"
            );
            for g in &shown {
                if let Some(why) = &g.damaged {
                    println!("{:<24} DAMAGED: {why}", g.name);
                    continue;
                }
                println!(
                    "{:<24} {:>12} {:>12} {:>10} {:>12} {:>10}  {}",
                    g.name,
                    g.ack_floor,
                    g.lag,
                    g.in_flight,
                    g.redelivered,
                    g.dead_lettered,
                    g.members.join(",")
                );
            }
        }
        client.close().await;
        Ok(ExitCode::SUCCESS)
    })
}
