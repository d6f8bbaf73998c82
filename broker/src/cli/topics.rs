//! `herald topics`: list, create, delete, describe, repair.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_broker::config::{fsync_name, parse_fsync};
use herald_client::{RepairReport, TopicConfig, TopicInfo};
use serde_json::json;

use super::common::{human_bytes, parse_duration, parse_size, runtime, ServerArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald topics list\n  herald topics create orders --retention-bytes 10GiB --retention 7d --fsync always\n  herald topics describe orders --json\n  herald topics delete orders\n  herald topics repair orders --dry-run"
)]
pub struct TopicsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    cmd: TopicsCmd,
}

#[derive(Debug, Subcommand)]
enum TopicsCmd {
    /// List every topic.
    #[command(
        after_help = "Examples:\n  herald topics list\n  herald topics list --json --server 10.0.0.5:7400"
    )]
    List,
    /// Create a topic (succeeds if it exists with the same settings).
    #[command(
        after_help = "Examples:\n  herald topics create orders\n  herald topics create orders --retention-bytes 10GiB --retention 7d --segment-bytes 64MiB --fsync interval:100\n  herald topics create orders --replicas 3 --server 127.0.0.1:7501,127.0.0.1:7502"
    )]
    Create {
        name: String,
        /// Delete old segments past this total size (e.g. 10GiB).
        #[arg(long, value_parser = parse_size)]
        retention_bytes: Option<u64>,
        /// Delete segments older than this (e.g. 7d).
        #[arg(long, value_parser = parse_duration)]
        retention: Option<std::time::Duration>,
        /// Segment file size (e.g. 64MiB).
        #[arg(long, value_parser = parse_size)]
        segment_bytes: Option<u64>,
        /// always, interval:<ms> or never (default: the broker's).
        #[arg(long, value_parser = parse_fsync)]
        fsync: Option<herald_protocol::FsyncPolicy>,
        /// In a cluster, on how many nodes the topic is replicated
        /// (default: 3, or every node of a smaller cluster).
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// Delete a topic and its data.
    #[command(after_help = "Examples:\n  herald topics delete orders")]
    Delete { name: String },
    /// Offsets, size on disk, rate and groups of a topic.
    #[command(
        after_help = "Examples:\n  herald topics describe orders\n  herald topics describe orders --json"
    )]
    Describe { name: String },
    /// Find damaged data in a topic's log and skip it for good, so readers
    /// can go past it; prints every range dropped (offsets, records, bytes).
    #[command(
        after_help = "Examples:\n  herald topics repair orders --dry-run   # only report what would be dropped\n  herald topics repair orders\n\nThe damaged records are lost; everything else stays. Reads every byte of the log."
    )]
    Repair {
        name: String,
        /// Only report what would be dropped.
        #[arg(long)]
        dry_run: bool,
    },
}

/// How long `repair` waits for the broker, which reads the whole log.
const REPAIR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

fn print_repair(r: &RepairReport, json_out: bool) {
    if json_out {
        let ranges: Vec<_> = r
            .ranges
            .iter()
            .map(|d| {
                json!({
                    "segment": d.segment,
                    "position": d.position,
                    "bytes": d.bytes,
                    "first_offset": d.first_offset,
                    "end_offset": d.end_offset,
                    "records": d.end_offset - d.first_offset,
                    "reason": d.reason,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "topic": r.topic,
                "dry_run": r.dry_run,
                "ranges": ranges,
                "records": r.records,
                "bytes": r.bytes,
            })
        );
        return;
    }
    let verb = if r.dry_run { "would drop" } else { "dropped" };
    for d in &r.ranges {
        let offsets = if d.end_offset > d.first_offset {
            format!("offsets {}..={}", d.first_offset, d.end_offset - 1)
        } else {
            format!("no records (before offset {})", d.first_offset)
        };
        println!(
            "{verb} {offsets} ({} records, {} bytes) in {} at byte {}: {}",
            d.end_offset - d.first_offset,
            d.bytes,
            d.segment,
            d.position,
            d.reason
        );
    }
    if r.ranges.is_empty() {
        println!("topic {}: no damaged data found", r.topic);
    } else {
        println!(
            "topic {}: {verb} {} records in {} damaged ranges ({} bytes)",
            r.topic,
            r.records,
            r.ranges.len(),
            r.bytes
        );
    }
}

fn info_json(t: &TopicInfo) -> serde_json::Value {
    json!({
        "name": t.name,
        "first_offset": t.first_offset,
        "next_offset": t.next_offset,
        "bytes_on_disk": t.bytes_on_disk,
        "segments": t.segments,
        "messages_per_sec": t.messages_per_sec,
        "retention_bytes": t.config.retention_bytes,
        "retention_ms": t.config.retention_ms,
        "segment_bytes": t.config.segment_bytes,
        "fsync": t.config.fsync.map(fsync_name),
        "groups": t.groups.iter().map(super::groups::group_json).collect::<Vec<_>>(),
    })
}

fn print_info(t: &TopicInfo) {
    println!("topic {}", t.name);
    println!(
        "  offsets        {} .. {} ({} messages)",
        t.first_offset,
        t.next_offset,
        t.next_offset - t.first_offset
    );
    println!(
        "  on disk        {} in {} segments",
        human_bytes(t.bytes_on_disk),
        t.segments
    );
    println!(
        "  rate           {:.1} msg/s since start",
        t.messages_per_sec
    );
    let c = &t.config;
    println!(
        "  settings       retention {} / {}, segment {}, fsync {}",
        c.retention_bytes
            .map(human_bytes)
            .unwrap_or_else(|| "unlimited".into()),
        c.retention_ms
            .map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
            .unwrap_or_else(|| "forever".into()),
        c.segment_bytes
            .map(human_bytes)
            .unwrap_or_else(|| "default".into()),
        c.fsync
            .map(fsync_name)
            .unwrap_or_else(|| "broker default".into())
    );
    for g in &t.groups {
        if let Some(why) = &g.damaged {
            println!("  group {:<20} DAMAGED: {why}", g.name);
            continue;
        }
        println!(
            "  group {:<20} lag {:>10}  in-flight {:>6}  members {}",
            g.name,
            g.lag,
            g.in_flight,
            g.members.len()
        );
    }
}

pub fn run(a: TopicsArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let client = match a.cmd {
            TopicsCmd::Repair { .. } => a.server.connect_with_timeout(REPAIR_TIMEOUT).await?,
            _ => a.server.connect().await?,
        };
        match a.cmd {
            TopicsCmd::List => {
                let topics = client.list_topics().await?;
                for t in &topics {
                    if a.server.json {
                        println!("{}", info_json(t));
                    } else {
                        println!(
                            "{:<30} {:>12} messages {:>12}",
                            t.name,
                            t.next_offset - t.first_offset,
                            human_bytes(t.bytes_on_disk)
                        );
                    }
                }
                if topics.is_empty() && !a.server.json {
                    eprintln!("no topics");
                }
            }
            TopicsCmd::Create {
                name,
                retention_bytes,
                retention,
                segment_bytes,
                fsync,
                replicas,
            } => {
                let cfg = TopicConfig {
                    retention_bytes,
                    retention_ms: retention.map(|d| d.as_millis() as u64),
                    segment_bytes,
                    fsync,
                };
                let t = client
                    .create_replicated_topic(&name, cfg, replicas.unwrap_or(0))
                    .await?;
                if a.server.json {
                    println!("{}", info_json(&t));
                } else {
                    println!("created topic {}", t.name);
                }
            }
            TopicsCmd::Delete { name } => {
                client.delete_topic(&name).await?;
                if a.server.json {
                    println!("{}", json!({"deleted": name}));
                } else {
                    println!("deleted topic {name}");
                }
            }
            TopicsCmd::Describe { name } => {
                let t = client.describe_topic(&name).await?;
                if a.server.json {
                    println!("{}", info_json(&t));
                } else {
                    print_info(&t);
                }
            }
            TopicsCmd::Repair { name, dry_run } => {
                let r = client.repair_topic(&name, dry_run).await?;
                print_repair(&r, a.server.json);
            }
        }
        client.close().await;
        Ok(ExitCode::SUCCESS)
    })
}
