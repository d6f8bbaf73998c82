//! Command-line parsing and dispatch to one module per subcommand.

mod bench;
mod common;
mod groups;
mod publish;
mod serve;
mod subscribe;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Herald: a durable message broker in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a durable message broker in one binary",
    after_help = "Examples:\n  herald serve                               # broker on 127.0.0.1:7400, data in ./herald-data\n  seq 1 5 | herald pub orders                # each line one message, confirmed\n  herald sub orders --group billing          # durable consumer, acks after printing\n  herald topics describe orders\n  herald groups orders\n  herald bench pub --embedded --count 1000000"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
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
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Pub(a) => publish::run(a),
        Command::Sub(a) => subscribe::run(a),
        Command::Topics(a) => topics::run(a),
        Command::Groups(a) => groups::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
