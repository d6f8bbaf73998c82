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

/// The exit status of a command whose stdout was closed, as a shell reports
/// a process ended by SIGPIPE (128 + 13).
const BROKEN_PIPE_EXIT: u8 = 141;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // A closed stdout (`herald sub t | head -1`) ends the command
        // quietly, as it does for other command-line tools.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            let msg = render(&e);
            match cli::hint(&e) {
                Some(h) => eprintln!("herald: error: {msg} ({h})"),
                None => eprintln!("herald: error: {msg}"),
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

/// The error and its causes on one line, each cause once: a layer whose
/// message already quotes its source (`I/O error: {source}`) would
/// otherwise print that source twice.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `println!` panics when stdout is a closed pipe (Rust ignores SIGPIPE, so
/// the write fails with EPIPE). Command output goes through
/// `cli::common::write_line`, which returns the error instead; this hook is
/// the net for any `println!` left: that one panic exits quietly with the
/// status of a closed pipe instead of printing a panic message. Any other
/// panic is reported as before.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        let epipe = format!("(os error {})", libc::EPIPE);
        if msg.starts_with("failed printing to stdout") && msg.contains(&epipe) {
            std::process::exit(BROKEN_PIPE_EXIT.into());
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        #[derive(Debug, thiserror::Error)]
        #[error("I/O error: {0}")]
        struct Wraps(#[from] std::io::Error);
        let e = anyhow::Error::new(Wraps(io)).context("starting the broker");
        assert_eq!(render(&e), "starting the broker: I/O error: address in use");
    }
}
