//! `herald sub`: print messages of a topic, acking each after printing.
//!
//! Like the client library, it rides through broker restarts: a dropped
//! connection is retried forever (unless `--give-up-after`), and the
//! subscription resumes where it was, a group at its committed position.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::common::{parse_duration, parse_start, runtime, ReconnectArgs, ServerArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald sub orders                                 # live, ephemeral\n  herald sub orders --group billing                 # durable: resumes where billing left off\n  herald sub orders --from earliest --count 10 --json\n  herald sub orders --group audit --from 2026-12-01T00:00:00Z --timeout 5s\n  herald sub orders --group billing --give-up-after 1m   # exit 1 if the broker is gone a minute"
)]
pub struct SubArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    reconnect: ReconnectArgs,
    /// The topic.
    topic: String,
    /// Durable consumer group; without it the subscription is ephemeral.
    #[arg(long)]
    group: Option<String>,
    /// resume, earliest, latest, an offset, or an RFC 3339 time.
    #[arg(long, value_parser = parse_start, default_value = "resume")]
    from: herald_client::StartPosition,
    /// Exit after N messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this long with nothing new (e.g. 5s).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Do not ack (group messages will be redelivered).
    #[arg(long)]
    no_ack: bool,
    /// Prefetch window in messages.
    #[arg(long, default_value_t = 1000)]
    prefetch: u32,
}

pub fn run(a: SubArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let client = a.server.connect_riding("herald-sub").await?;
        let give_up = a.reconnect.give_up(&client, &a.server.server);
        tokio::select! {
            r = consume(&a, &client) => if let Err(e) = r {
                // The broker ended the subscription (damaged data, say):
                // what was printed stays printed and acked, and the error
                // says which topic and offsets.
                client.close().await;
                return Err(e);
            },
            e = give_up => return Err(e),
        }
        client.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Subscribes and prints until `--count` or `--timeout` (or the end of an
/// ephemeral subscription).
async fn consume(a: &SubArgs, client: &herald_client::Client) -> anyhow::Result<()> {
    let mut b = client
        .subscribe(&a.topic)
        .start(a.from)
        // No more in flight than will be printed: the rest would only
        // be released at exit and counted as redelivered.
        .prefetch(
            a.count
                .map_or(a.prefetch, |c| a.prefetch.min(c.max(1) as u32)),
        );
    if let Some(g) = &a.group {
        b = b.group(g.clone());
    }
    let mut sub = b.await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut n = 0u64;
    while a.count.is_none_or(|c| n < c) {
        let next = match a.timeout {
            Some(t) => match tokio::time::timeout(t, sub.next()).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => sub.next().await,
        };
        let Some(msg) = next else { break };
        let msg = msg?;
        print(&mut out, &msg, a.server.json)?;
        // Printed (and flushed) before it is acked: a crash in between
        // means a redelivery, never a lost message.
        out.flush()?;
        if a.group.is_some() && !a.no_ack {
            msg.ack().await?;
        }
        n += 1;
    }
    out.flush()?;
    Ok(())
}

/// One message: its payload as a line, or a JSON object with its metadata.
fn print(out: &mut impl Write, msg: &herald_client::Message, json: bool) -> std::io::Result<()> {
    if !json {
        out.write_all(msg.payload())?;
        return out.write_all(b"\n");
    }
    let payload = msg.payload();
    let (field, value) = match std::str::from_utf8(payload) {
        Ok(s) => ("payload", s.to_owned()),
        Err(_) => (
            "payload_base64",
            base64::engine::general_purpose::STANDARD.encode(payload),
        ),
    };
    let headers: serde_json::Map<String, serde_json::Value> = msg
        .headers()
        .map(|(k, v)| (k.to_owned(), json!(String::from_utf8_lossy(v))))
        .collect();
    let mut o = json!({
        "offset": msg.offset(),
        "timestamp": msg.timestamp(),
        "key": msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": headers,
        "delivery_count": msg.delivery_count(),
    });
    o[field] = json!(value);
    writeln!(out, "{o}")
}
