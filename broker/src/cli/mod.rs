//! Command-line parsing and dispatch to one module per subcommand.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Herald: a durable message broker in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a durable message broker in one binary",
    after_help = "Examples:\n  herald serve                          # broker on 127.0.0.1:7400, data in ./herald-data\n  herald serve --listen 0.0.0.0:7400 --fsync interval:100"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
    }
}
