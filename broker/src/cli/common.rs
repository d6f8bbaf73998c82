//! What the client subcommands share: the `--server` flag, connecting,
//! output in text or JSON lines, and parsing of sizes and positions.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herald_client::{Client, StartPosition};

/// Flags every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Broker address.
    #[arg(
        long,
        env = "HERALD_SERVER",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub server: String,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ServerArgs {
    /// Connects, failing after a few attempts with a message saying what to do.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_with_timeout(herald_client::ClientConfig::new(&self.server).request_timeout)
            .await
    }

    /// [`Self::connect`] for requests that may take long (a repair reads a
    /// whole log): replies may take up to `request_timeout`.
    pub async fn connect_with_timeout(&self, request_timeout: Duration) -> anyhow::Result<Client> {
        Client::builder(self.server.clone())
            .client_name("herald-cli")
            .request_timeout(request_timeout)
            .max_reconnect_attempts(Some(3))
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot reach a broker at {} (start one with `herald serve`, or pass --server)",
                    self.server
                )
            })
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
    }
}
