//! The `herald` binary: the broker (`herald serve`) and the user's and
//! operator's tools, one subcommand each under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            match cli::hint(&e) {
                Some(h) => eprintln!("herald: error: {e:#} ({h})"),
                None => eprintln!("herald: error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}
