//! The `herald` binary: the broker (`herald serve`) and the user's and
//! operator's tools, one subcommand each under `cli/`.

mod cli;

/// jemalloc: the publish path allocates small objects at high rates (a
/// receipt per message in the client, buffers per batch). Measured side by
/// side, glibc's malloc cost about a fifth of `herald bench pub` throughput;
/// mimalloc was as fast but held 80 KiB per idle connection.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: freed pages go back to the
/// system within about a second (jemalloc keeps them for ten by default),
/// purged by its background thread, so that the broker's resident memory
/// follows its memory budget (`--max-memory`) rather than the last ten
/// seconds of churn: measured with a thousand stalled subscribers, resident
/// memory was twice the data the budget counted with the defaults.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static libc::c_char> = Some(
    // SAFETY: a pointer to the first byte of a 'static C string.
    unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() },
);

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
