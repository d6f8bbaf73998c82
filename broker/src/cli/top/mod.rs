//! `herald top`: a live view of a broker, refreshed every second, read
//! from its `/metrics` endpoint: the busiest topics' rates, the groups'
//! lag, connections and memory. For operators without Prometheus.
//!
//! # Layout
//! - this file: arguments, the terminal (raw mode, alternate screen,
//!   restored on every way out) and the refresh loop;
//! - `scrape`: the HTTP GET; `parse`: the Prometheus text format;
//! - `model`: rates from two scrapes; `view`: the drawing;
//! - `input`: keys, and noticing that the terminal is gone.
//!
//! It leaves on `q` (or Ctrl-C), and when its terminal goes away
//! (SIGHUP, or the terminal failing under it), always restoring the
//! terminal first.

mod input;
mod model;
mod parse;
mod scrape;
mod view;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use model::{Scrape, View};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald top\n  herald top --http 10.0.0.5:7480 --interval 2s\n  herald top --http 10.0.0.5:7480 --tls-ca ca.pem\n\nReads GET /metrics on the broker's HTTP listener (HTTPS with --tls-ca).\nq or Ctrl-C quits."
)]
pub struct TopArgs {
    /// The broker's HTTP listener.
    #[arg(long, env = "HERALD_HTTP", default_value = "127.0.0.1:7480")]
    http: SocketAddr,
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_parser = super::common::parse_duration)]
    interval: Duration,
    /// The listener speaks HTTPS (the broker has --tls-cert): trust the CA
    /// certificates in this PEM file. The address must be the one the
    /// certificate names (an IP address here).
    #[arg(long, env = "HERALD_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// Set by SIGHUP and SIGTERM: the terminal is gone, or we are told to go.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

/// Notes SIGHUP and SIGTERM in [`HANGUP`] instead of dying at once, so
/// the loop can restore the terminal and exit normally.
fn catch_hangup() {
    for sig in [libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, on_hangup as *const () as libc::sighandler_t);
        }
    }
}

/// Points standard output and error at /dev/null, once the terminal is
/// gone.
fn detach_output() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: dup2 of a valid descriptor onto a standard one.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Raw mode and the alternate screen, undone on drop (every way out of
/// [`run`], a panic included).
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        enable_raw_mode().context("putting the terminal in raw mode")?;
        let screen = Screen;
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // A terminal that is gone cannot be restored: errors are moot.
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
    }
}

/// Why the loop ended.
enum Exit {
    Quit,
    Hangup,
}

pub fn run(a: TopArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("herald top draws on a terminal; stdin or stdout is not one (curl the broker's /metrics instead)");
    }
    let target = scrape::Target::new(a.http, a.tls_ca.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    catch_hangup();
    let screen = Screen::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let result = refresh_loop(&mut terminal, &rt, &a, &target);
    let gone = matches!(result, Ok(Exit::Hangup)) || HANGUP.load(Ordering::Relaxed);
    if gone {
        // What is still written on the way out (ratatui shows the cursor
        // again on drop and prints to stderr if it cannot) goes nowhere
        // rather than failing: a failed print to stderr panics.
        detach_output();
    }
    drop(terminal);
    drop(screen);
    match result {
        Ok(Exit::Quit) | Ok(Exit::Hangup) => Ok(ExitCode::SUCCESS),
        // The terminal failed under us after a hangup: that is the hangup.
        Err(_) if HANGUP.load(Ordering::Relaxed) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

fn refresh_loop(
    terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    rt: &tokio::runtime::Runtime,
    a: &TopArgs,
    target: &scrape::Target,
) -> anyhow::Result<Exit> {
    let addr = a.http.to_string();
    let mut last: Option<(Instant, Scrape)> = None;
    let mut view = View::default();
    let mut next = Instant::now();
    loop {
        if HANGUP.load(Ordering::Relaxed) {
            return Ok(Exit::Hangup);
        }
        if Instant::now() >= next {
            next = Instant::now() + a.interval;
            let scraped = rt.block_on(target.fetch()).and_then(|text| {
                parse::parse(&text).map_err(|e| anyhow::anyhow!("reading /metrics: {e}"))
            });
            let error = match scraped {
                Ok(samples) => {
                    let now = (Instant::now(), Scrape::from_samples(&samples));
                    view = View::new(&now, last.as_ref());
                    last = Some(now);
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };
            let status = view::Status {
                addr: &addr,
                error: error.as_deref(),
            };
            terminal.draw(|f| view::draw(f, &view, &status))?;
        }
        // Wake for keys, for the next refresh, and often enough to notice
        // a hangup.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match input::wait(wait)? {
            input::Input::Nothing => {}
            input::Input::Quit => return Ok(Exit::Quit),
            input::Input::Gone => return Ok(Exit::Hangup),
        }
    }
}
