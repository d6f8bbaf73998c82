//! `herald pub`: publish arguments, stdin lines or generated payloads, each
//! confirmed; exits 0 only when every message is confirmed. Like the client
//! library it rides through broker restarts, re-sending what was not yet
//! confirmed (unless `--give-up-after`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use herald_client::{PendingReceipt, Producer, Record};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use super::common::{count, parse_size, runtime, ReconnectArgs, ServerArgs};

/// Confirms awaited at once; bounds memory for endless stdin.
const MAX_PENDING: usize = 50_000;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald pub orders '{\"id\":1}' '{\"id\":2}'\n  seq 1 1000000 | herald pub numbers\n  herald pub bench --count 100000 --size 100\n  herald pub orders --key customer-7 --header source=cli hello\n  tail -f app.log | herald pub logs --json"
)]
pub struct PubArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    reconnect: ReconnectArgs,
    /// The topic (created with defaults if missing, unless the broker forbids it).
    topic: String,
    /// Messages to publish; without any, each line of stdin is one message.
    messages: Vec<String>,
    /// Key of every message.
    #[arg(long)]
    key: Option<String>,
    /// A header `name=value` on every message (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Producer id for idempotent publishing: re-running the same input with
    /// the same id stores nothing twice. Default: a fresh id per run.
    #[arg(long)]
    producer_id: Option<u64>,
    /// Publish N generated messages instead (see --size).
    #[arg(long)]
    count: Option<u64>,
    /// Size of generated messages.
    #[arg(long, value_parser = parse_size, default_value = "100")]
    size: u64,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("header {s:?} must be name=value"))
}

struct Out {
    json: bool,
    w: std::io::BufWriter<std::io::Stdout>,
    confirmed: u64,
    /// Of those, messages the broker had stored already (a re-run with the
    /// same producer id): stored once, not again.
    duplicates: u64,
}

impl Out {
    /// Records the outcome of message `seq`; a failure ends the command.
    fn take(
        &mut self,
        seq: u64,
        r: herald_client::Result<herald_client::Receipt>,
    ) -> anyhow::Result<()> {
        let r = r.with_context(|| format!("message {seq} was not confirmed"))?;
        self.confirmed(seq, r)
    }

    fn confirmed(&mut self, seq: u64, r: herald_client::Receipt) -> anyhow::Result<()> {
        self.confirmed += 1;
        self.duplicates += u64::from(r.duplicate);
        if self.json {
            writeln!(
                self.w,
                "{}",
                json!({
                    "seq": seq,
                    // null: a duplicate whose first offsets the broker forgot.
                    "offset": (r.offset != u64::MAX).then_some(r.offset),
                    "duplicate": r.duplicate,
                })
            )?;
        }
        Ok(())
    }
}

pub fn run(a: PubArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let client = a.server.connect_riding("herald-pub").await?;
        let give_up = a.reconnect.give_up(&client, &a.server.server);
        let confirmed = tokio::select! {
            r = publish(&a, &client) => r?,
            e = give_up => return Err(e),
        };
        let (confirmed, duplicates) = confirmed;
        if !a.server.json {
            if duplicates == 0 {
                eprintln!("published {} to {}", count(confirmed, "message"), a.topic);
            } else {
                eprintln!(
                    "published {} to {}: {} new, {} stored before with this producer id (not stored again)",
                    count(confirmed, "message"),
                    a.topic,
                    confirmed - duplicates,
                    duplicates
                );
            }
        }
        client.close().await;
        Ok(ExitCode::SUCCESS)
    });
    // stdin is read on a blocking thread that returns only at the next line
    // or EOF; a runtime dropped the usual way would wait for it, so a pub
    // that fails while stdin stays open (`tail -f log | herald pub t`)
    // would never exit.
    rt.shutdown_background();
    result
}

/// Publishes everything the arguments ask for; returns how many messages
/// were confirmed (all of them: the first failure is an error), and how
/// many of those the broker had stored before (a re-run, same producer id).
async fn publish(a: &PubArgs, client: &herald_client::Client) -> anyhow::Result<(u64, u64)> {
    let producer = match a.producer_id {
        Some(id) => client.producer_with_id(&a.topic, id),
        None => client.producer(&a.topic),
    };
    let key = a.key.clone().map(Bytes::from);
    let make = |payload: Bytes| {
        let mut r = Record::new(payload);
        if let Some(k) = &key {
            r = r.key(k.clone());
        }
        for (n, v) in &a.headers {
            r = r.header(n.clone(), Bytes::from(v.clone()));
        }
        r
    };
    let mut out = Out {
        json: a.server.json,
        w: std::io::BufWriter::new(std::io::stdout()),
        confirmed: 0,
        duplicates: 0,
    };
    let mut pending = Pending::new();
    let mut seq = 0u64;
    if let Some(n) = a.count {
        let payload = Bytes::from(vec![b'x'; a.size as usize]);
        for _ in 0..n {
            send(&producer, make(payload.clone()), &mut seq, &mut pending).await?;
            drain(&mut pending, &mut out, MAX_PENDING).await?;
        }
    } else if !a.messages.is_empty() {
        for m in &a.messages {
            send(
                &producer,
                make(Bytes::from(m.clone())),
                &mut seq,
                &mut pending,
            )
            .await?;
        }
    } else {
        // Confirms are taken while waiting for the next line too: with
        // a slow or idle stdin (`tail -f`), each one is printed as it
        // arrives rather than when the next line or EOF comes.
        // Lines are bytes, not text: any payload that has no newline can
        // be piped in. A trailing `\r` is dropped, as `lines()` would.
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
        loop {
            tokio::select! {
                // `next_segment` keeps a half-read line in the `Split`
                // itself, so losing the race to a confirm drops nothing.
                line = lines.next_segment(), if pending.len() < MAX_PENDING => {
                    let Some(mut line) = line.context("reading stdin")? else { break };
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    send(&producer, make(Bytes::from(line)), &mut seq, &mut pending).await?;
                }
                Some((n, r)) = pending.next(), if !pending.is_empty() => {
                    out.take(n, r)?;
                }
            }
            drain(&mut pending, &mut out, MAX_PENDING).await?;
        }
    }
    drain(&mut pending, &mut out, 0).await?;
    out.w.flush()?;
    Ok((out.confirmed, out.duplicates))
}

type Pending = FuturesOrdered<
    futures::future::BoxFuture<'static, (u64, herald_client::Result<herald_client::Receipt>)>,
>;

/// Queues one record and keeps its receipt in `pending`.
async fn send(
    producer: &Producer,
    rec: Record,
    seq: &mut u64,
    pending: &mut Pending,
) -> anyhow::Result<()> {
    let p: PendingReceipt = producer.send_record(rec).await.context("publishing")?;
    let n = *seq;
    *seq += 1;
    pending.push_back(Box::pin(async move { (n, p.await) }));
    Ok(())
}

/// Takes finished confirms (waiting while more than `keep` are open), and
/// flushes output whenever nothing more is ready, so a script sees each
/// confirm within milliseconds.
async fn drain(pending: &mut Pending, out: &mut Out, keep: usize) -> anyhow::Result<()> {
    loop {
        let next = if pending.len() > keep {
            pending.next().await
        } else {
            match futures::FutureExt::now_or_never(pending.next()) {
                Some(n) => n,
                None => {
                    out.w.flush()?;
                    return Ok(());
                }
            }
        };
        match next {
            None => {
                out.w.flush()?;
                return Ok(());
            }
            Some((seq, r)) => out.take(seq, r)?,
        }
    }
}
