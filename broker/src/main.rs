//! The `herald` binary: the broker (`herald serve`) and the user's and
//! operator's tools, one subcommand each under `cli/`.

mod cli;

/// jemalloc: the publish path allocates small objects at high rates (a
/// receipt per message in the client, buffers per batch). Measured side by
/// side, glibc's malloc cost about a fifth of `herald bench pub` throughput;
/// mimalloc was as fast but held 80 KiB per idle connection.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // A closed stdout (`herald sub t | head -1`) ends the command
        // quietly, as it does for other command-line tools.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            match cli::hint(&e) {
                Some(h) => eprintln!("herald: error: {e:#} ({h})"),
                None => eprintln!("herald: error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
