//! Command-line parsing and dispatch to one module per subcommand.

mod bench;
mod cluster;
mod common;
mod groups;
mod publish;
mod security;
mod serve;
mod subscribe;
mod token;
mod top;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Herald: a durable message broker in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a durable message broker in one binary",
    after_help = "Examples:\n  herald serve                               # broker on 127.0.0.1:7400, data in ./herald-data\n  seq 1 5 | herald pub orders                # each line one message, confirmed\n  herald sub orders --group billing          # durable consumer, acks after printing\n  herald topics describe orders\n  herald groups orders\n  herald bench pub --embedded --count 1000000\n  herald top                                 # live view of the broker on this host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(Box<serve::ServeArgs>),
    /// Publish messages (arguments, stdin lines, or generated).
    Pub(publish::PubArgs),
    /// Print messages of a topic (durable with --group).
    Sub(subscribe::SubArgs),
    /// Manage topics.
    Topics(topics::TopicsArgs),
    /// Lag and health of a topic's consumer groups.
    Groups(groups::GroupsArgs),
    /// Load generator: throughput and latency of the whole system.
    Bench(bench::BenchArgs),
    /// Make a token: a signed one (JWT) for a user, or a static one for a service.
    Token(token::TokenArgs),
    /// Live view of a broker: busiest topics, groups' lag, connections, memory.
    Top(top::TopArgs),
    /// A cluster's nodes, leaders and replicas' progress.
    Cluster(cluster::ClusterArgs),
}

/// What to do about a broker's refusal, for the one error line on stderr.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use herald_protocol::ErrorCode;
    let herald_client::Error::Broker { code, .. } = e.downcast_ref::<herald_client::Error>()?
    else {
        return None;
    };
    Some(match code {
        ErrorCode::UnknownTopic => {
            "see `herald topics list`, or create it with `herald topics create NAME`"
        }
        ErrorCode::GroupActive => {
            "stop the group's consumers first; `herald groups TOPIC` lists them"
        }
        ErrorCode::TopicExists => {
            "it exists with other settings; see `herald topics describe NAME`"
        }
        ErrorCode::UnknownGroup => "see `herald groups TOPIC` for the topic's groups",
        ErrorCode::GroupUnavailable => {
            "its state file is damaged; `herald groups TOPIC GROUP --reset-to POSITION` replaces it (the damaged file is kept aside)"
        }
        ErrorCode::Unauthorized => {
            "the token does not allow this (or is missing: --token / HERALD_TOKEN); see docs/security.md"
        }
        ErrorCode::TokenExpired => "the token has expired; get a new one (`herald token`)",
        ErrorCode::StorageFull => "the broker's disk is full; free space or lower retention",
        ErrorCode::ShuttingDown => "the broker is shutting down; retry once it is back",
        ErrorCode::Corrupt => {
            "`herald topics repair TOPIC --dry-run` first shows what a repair would drop"
        }
        _ => return None,
    })
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(*a),
        Command::Pub(a) => publish::run(a),
        Command::Sub(a) => subscribe::run(a),
        Command::Topics(a) => topics::run(a),
        Command::Groups(a) => groups::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Token(a) => token::run(a),
        Command::Top(a) => top::run(a),
        Command::Cluster(a) => cluster::run(a),
    }
}
