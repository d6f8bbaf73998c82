//! What the client subcommands share: the `--server` flag, connecting
//! (failing fast for one-shot commands, riding through restarts for `pub`
//! and `sub`), output to stdout, and parsing of sizes and positions.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, StartPosition};

/// Default broker address of every client subcommand and of the examples.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

/// Reconnect attempts of one-shot commands (`topics`, `groups`) after a
/// drop: an operator's command should fail within seconds, not wait.
const ONE_SHOT_RECONNECTS: u32 = 3;

/// Flags every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Broker address: HOST:PORT (TCP), or ws://HOST:PORT/ws (wss:// with
    /// TLS) for its WebSocket listener; a cluster's nodes as a
    /// comma-separated list (publishes follow each topic's leader).
    #[arg(
        long,
        env = "HERALD_SERVER",
        default_value = DEFAULT_SERVER,
        value_parser = parse_server,
        global = true
    )]
    pub server: String,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub security: super::security::ClientSecurity,
}

impl ServerArgs {
    /// Connects for a one-shot command: the first attempt must succeed, and
    /// a drop later is retried only a few times.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_as("herald-cli", Some(ONE_SHOT_RECONNECTS), None)
            .await
    }

    /// [`Self::connect`] for requests that may take long (a repair reads a
    /// whole log): replies may take up to `request_timeout`.
    pub async fn connect_with_timeout(&self, request_timeout: Duration) -> anyhow::Result<Client> {
        self.connect_as(
            "herald-cli",
            Some(ONE_SHOT_RECONNECTS),
            Some(request_timeout),
        )
        .await
    }

    /// Connects for a long-running command (`pub`, `sub`): the first
    /// attempt must succeed (a wrong address fails at once), but later
    /// drops are retried forever like the client library does; see
    /// [`ReconnectArgs`] for a limit.
    pub async fn connect_riding(&self, name: &str) -> anyhow::Result<Client> {
        self.connect_as(name, None, None).await
    }

    async fn connect_as(
        &self,
        name: &str,
        reconnects: Option<u32>,
        request_timeout: Option<Duration>,
    ) -> anyhow::Result<Client> {
        let mut b = Client::builder(self.server.clone())
            .client_name(name)
            .max_reconnect_attempts(reconnects);
        b = self.security.apply(b)?;
        if let Some(t) = request_timeout {
            b = b.request_timeout(t);
        }
        b.connect()
            .await
            .map_err(|e| connect_failed(&self.server, e))
    }
}

/// Says why the first connection to `server` failed in the words that
/// help: "cannot reach a broker" only when none answered.
fn connect_failed(server: &str, e: herald_client::Error) -> anyhow::Error {
    // What a frame decoder makes of "HTTP/1.1 ...": a length of b"HTTP".
    let http_as_length = format!("frame of {} bytes", u32::from_le_bytes(*b"HTTP") as u64 + 4);
    let hint = match &e {
        herald_client::Error::Connect { reason, .. } if reason.starts_with("handshake refused") => {
            format!("the broker at {server} refused the connection (with authentication on, pass --token or set HERALD_TOKEN)")
        }
        herald_client::Error::Connect { reason, .. } if reason.contains(&http_as_length) => format!(
            "{server} answered in HTTP: that is the broker's HTTP port; pass its TCP port (7400 by default) or ws://HOST:PORT/ws"
        ),
        herald_client::Error::Connect { reason, .. } if reason.contains("WebSocket upgrade") => format!(
            "no WebSocket session at {server}: the broker's WebSocket endpoint is ws://HOST:PORT/ws on its HTTP port (7480 by default)"
        ),
        _ => format!(
            "cannot reach a broker at {server} (start one with `herald serve`, or pass --server)"
        ),
    };
    anyhow::Error::new(e).context(hint)
}

/// Checks that `s` is `HOST:PORT`, or a `ws://` / `wss://` URL with a
/// host, before anything tries to connect, so a typo such as `--server
/// 7400` is reported as such rather than as a missing broker.
pub fn parse_server(s: &str) -> Result<String, String> {
    // The nodes of a cluster: each address checked alone.
    if s.contains(',') {
        for a in s.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            parse_one_server(a)?;
        }
        return Ok(s.to_owned());
    }
    parse_one_server(s)
}

fn parse_one_server(s: &str) -> Result<String, String> {
    // clap prefixes this with "invalid value '7400' for '--server <SERVER>'".
    let bad = || {
        format!("expected HOST:PORT (e.g. {DEFAULT_SERVER}), ws://HOST:PORT/ws, or a comma-separated list of them (a cluster's nodes)")
    };
    if let Some((scheme, rest)) = s.split_once("://") {
        if !matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "wss") {
            return Err(bad());
        }
        // The host and port end where the path starts; the port may be
        // left out (80 or 443).
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'));
        let ok = if has_port {
            host_port_ok(authority)
        } else {
            host_ok(authority)
        };
        return if ok { Ok(s.to_owned()) } else { Err(bad()) };
    }
    if host_port_ok(s) {
        Ok(s.to_owned())
    } else {
        Err(bad())
    }
}

/// `HOST:PORT` with a port from 1 up.
fn host_port_ok(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => host_ok(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// A host name, an IPv4 address or a bracketed IPv6 one.
fn host_ok(host: &str) -> bool {
    !host.is_empty()
        && !host.chars().any(|c| c.is_whitespace() || c == '@')
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
}

/// How long `pub` and `sub` keep reconnecting to a broker that went away.
#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    /// Give up (exit 1) once the broker has been unreachable this long
    /// (e.g. 30s). Default: keep reconnecting, riding through restarts.
    #[arg(long, value_parser = parse_duration, env = "HERALD_GIVE_UP_AFTER")]
    pub give_up_after: Option<Duration>,
}

impl ReconnectArgs {
    /// Resolves with an error once `client` has been without a connection
    /// for `--give-up-after` (never without the flag, or while connected).
    /// Start it right after connecting so it sees every drop.
    pub fn give_up(
        &self,
        client: &Client,
        server: &str,
    ) -> impl std::future::Future<Output = anyhow::Error> + Send + 'static {
        let mut events = client.events();
        let limit = self.give_up_after;
        let server = server.to_owned();
        async move {
            let Some(limit) = limit else {
                return std::future::pending().await;
            };
            // When the connection dropped; None while connected.
            let mut down_since: Option<tokio::time::Instant> = None;
            let mut last_reason = String::new();
            loop {
                let deadline = down_since.map(|t| t + limit);
                let ev = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                        Ok(ev) => ev,
                        Err(_) => {
                            return anyhow::anyhow!(
                                "gave up: no broker at {server} for {} ({last_reason}; --give-up-after)",
                                humantime::format_duration(limit)
                            )
                        }
                    },
                    None => events.next().await,
                };
                match ev {
                    Some(ConnectionEvent::Disconnected { reason }) => {
                        last_reason = reason;
                        down_since.get_or_insert_with(tokio::time::Instant::now);
                    }
                    Some(ConnectionEvent::Reconnected | ConnectionEvent::Connected) => {
                        down_since = None;
                    }
                    Some(_) => {}
                    // The client closed: the command is finishing anyway.
                    None => return std::future::pending().await,
                }
            }
        }
    }
}

/// Writes one line to stdout, returning the error instead of panicking as
/// `println!` does: a closed pipe (`herald sub t | head -1`) then ends the
/// command quietly (see `main`).
pub fn write_line(args: fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")
}

/// `println!` for command output, returning an `io::Result`.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::common::write_line(format_args!($($t)*))
    };
}
pub(crate) use outln;

/// `1 message`, `2 messages`: a count with its noun.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Parses `1000`, `64KiB`, `1.5 GiB`, `10MB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e} (e.g. 1000, 64KiB, 1GiB)"))
}

/// Parses `30s`, `5m`, `100ms`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 100ms, 30s, 7d)"))
}

/// Parses `resume`, `earliest`, `latest`, an offset, or an RFC 3339 time.
pub fn parse_start(s: &str) -> Result<StartPosition, String> {
    Ok(match s {
        "resume" => StartPosition::Resume,
        "earliest" => StartPosition::Earliest,
        "latest" => StartPosition::Latest,
        _ => {
            if let Ok(o) = s.parse::<u64>() {
                StartPosition::Offset(o)
            } else {
                let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
                    format!("invalid position {s:?}: expected resume, earliest, latest, an offset or an RFC 3339 time")
                })?;
                let ms = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{s:?} is before 1970"))?
                    .as_millis() as i64;
                StartPosition::Timestamp(ms)
            }
        }
    })
}

/// Parses a position to reset a group to: `earliest`, `latest`, an offset
/// or an RFC 3339 time. `resume` is refused: it names no position (a reset
/// to it would change nothing).
pub fn parse_reset_position(s: &str) -> Result<StartPosition, String> {
    match parse_start(s) {
        Ok(StartPosition::Resume) => Err(
            "resume is not a position to reset to: use earliest, latest, an offset or an RFC 3339 time"
                .into(),
        ),
        Ok(p) => Ok(p),
        Err(_) => Err(format!(
            "invalid position {s:?}: expected earliest, latest, an offset or an RFC 3339 time"
        )),
    }
}

/// Renders a byte count for people.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string_as(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_positions() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_start("42"), Ok(StartPosition::Offset(42)));
        assert_eq!(parse_start("earliest"), Ok(StartPosition::Earliest));
        assert_eq!(
            parse_start("1970-01-01T00:00:01Z"),
            Ok(StartPosition::Timestamp(1000))
        );
        assert!(parse_start("soon").is_err());
        assert_eq!(parse_reset_position("latest"), Ok(StartPosition::Latest));
        assert!(parse_reset_position("resume").is_err());
    }

    #[test]
    fn server_addresses() {
        for ok in [
            "127.0.0.1:7400",
            "localhost:1",
            "broker.example:65535",
            "[::1]:7400",
            "ws://127.0.0.1:7480/ws",
            "wss://broker.example/ws",
            "ws://[::1]:7480/ws",
            "ws://[::1]",
            "127.0.0.1:7501,127.0.0.1:7502,127.0.0.1:7503",
        ] {
            assert_eq!(parse_server(ok), Ok(ok.to_owned()));
        }
        for bad in [
            "7400",
            "host:",
            ":7400",
            ":x",
            "host:0",
            "host:70000",
            "::1:7400",
            "a b:1",
            "",
            "http://127.0.0.1:7480/ws",
            "ws://",
            "ws:///ws",
            "ws://host:0/ws",
            "ws://host:x/ws",
            "ws://u@host/ws",
            "127.0.0.1:7501,7502",
            "ws://::1:7480/ws",
        ] {
            let e = parse_server(bad).unwrap_err();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(0, "message"), "0 messages");
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(2, "message"), "2 messages");
    }
}
