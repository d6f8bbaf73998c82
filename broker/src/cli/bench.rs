//! `herald bench`: the load generator. Measures the whole system through
//! the client library, against any broker or an embedded one.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use herald_client::{Client, StartPosition, TopicConfig};
use herald_protocol::FsyncPolicy;
use serde_json::json;

use super::common::{parse_server, parse_size, runtime, DEFAULT_SERVER};
use herald_broker::config::{fsync_name, parse_fsync};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Publish, each message confirmed.
    Pub,
    /// Consume and ack a pre-filled backlog with one group.
    Sub,
    /// Publish and consume at once; publish-to-deliver latency.
    Pubsub,
    /// Publish to N ephemeral subscribers, each receiving everything.
    Fanout,
    /// Emit events to durable rooms of N members (`--rooms`; each member
    /// reads every event from its room's log and acks it); deliveries/s
    /// and emit-to-deliver latency.
    Rooms,
    /// `--consumers` durable room members (default 1) go offline while
    /// `--count` events are emitted to their room, then all come back at
    /// once: events/s they catch up at, together
    Catchup,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald bench pub --embedded --count 1000000 --size 100\n  herald bench pub --server 127.0.0.1:7400 --size 1024 --count 200000 --json\n  herald bench sub --embedded --count 500000\n  herald bench pubsub --embedded --rate 20000 --count 200000 --fsync never\n  herald bench pubsub --server ws://127.0.0.1:7480/ws --rate 20000 --count 200000\n  herald bench fanout --embedded --consumers 4 --count 1000000\n  herald bench rooms --embedded --consumers 10 --producers 4 --count 10000\n  herald bench catchup --embedded --count 1000000\n  herald bench catchup --embedded --consumers 100 --count 100000"
)]
pub struct BenchArgs {
    mode: Mode,
    /// Broker address, HOST:PORT or ws://HOST:PORT/ws, or a cluster's nodes
    /// comma-separated (ignored with
    /// --embedded).
    #[arg(long, env = "HERALD_SERVER", default_value = DEFAULT_SERVER, value_parser = parse_server)]
    server: String,
    /// Start a broker in this process on a temporary folder.
    #[arg(long)]
    embedded: bool,
    /// Messages in total (per subscriber for fanout: every subscriber gets all).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Payload size.
    #[arg(long, value_parser = parse_size, default_value = "100")]
    size: u64,
    /// Publishing tasks, each with its own producer.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consuming tasks (members of one group for sub/pubsub; subscribers for fanout).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Groups for sub/pubsub (each gets every message).
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Most records per batch (the client library's batching).
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Fixed publish rate in messages/s for latency runs (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Durability of the bench topic (created with it): always, interval:<ms>, never.
    #[arg(long, value_parser = parse_fsync, default_value = "always")]
    fsync: FsyncPolicy,
    /// Consumer prefetch window.
    #[arg(long, default_value_t = 10_000)]
    prefetch: u32,
    /// rooms: how many rooms the members are spread over (emits go to
    /// them in turn).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// rooms: emits each emitter keeps in flight (each still confirmed).
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Topic name (default: a fresh one).
    #[arg(long)]
    topic: Option<String>,
    /// Print one JSON result object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    security: super::security::ClientSecurity,
}

/// Room members joining at once during a rooms run's setup.
const SETUP_CONCURRENCY: usize = 64;

/// Receipts a producer task keeps open before it waits; bounds memory.
const MAX_OPEN_RECEIPTS: usize = 20_000;

struct Lat(Histogram<u64>);

impl Lat {
    fn new() -> Lat {
        Lat(Histogram::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())))
    }
    fn record(&mut self, us: u64) {
        let _ = self.0.record(us.max(1));
    }
    fn json(&self) -> serde_json::Value {
        let h = &self.0;
        json!({
            "samples": h.len(),
            "p50_us": h.value_at_quantile(0.5),
            "p90_us": h.value_at_quantile(0.9),
            "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(),
        })
    }
    fn line(&self) -> String {
        let h = &self.0;
        format!(
            "p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    }
}

/// Microseconds since an epoch shared by producer and consumer (one process).
fn now_us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// A payload of `size` bytes starting with the send time (8 bytes) and a
/// sequence (8 bytes), as peerbench does.
/// The event a rooms run emits to each room once every member is in.
const START_MARKER: &str = "bench-start";

fn payload(size: usize, t_us: u64, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(16));
    b.put_u64_le(t_us);
    b.put_u64_le(seq);
    b.resize(size.max(16), b'x');
    b.freeze()
}

fn sent_at(p: &[u8]) -> u64 {
    if p.len() < 8 {
        return 0;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&p[..8]);
    u64::from_le_bytes(a)
}

fn progress(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
    {
        pb.set_style(style);
    }
    pb
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let tmp;
        let mut embedded = None;
        let server = if a.embedded {
            tmp = tempfile::Builder::new()
                .prefix("herald-bench-")
                .tempdir()
                .context("temporary folder")?;
            let cfg = herald_broker::BrokerConfig {
                listen: "127.0.0.1:0".parse()?,
                data_dir: tmp.path().to_path_buf(),
                fsync: a.fsync,
                ..Default::default()
            };
            let b = herald_broker::server::start(cfg).await?;
            let addr = b.local_addr().to_string();
            embedded = Some(b);
            addr
        } else {
            a.server.clone()
        };
        let builder = a.security.apply(
            Client::builder(server.clone())
                .client_name("herald-bench")
                .batching(a.batch, 1 << 20, 32),
        )?;
        let connect = || builder.clone().connect();
        let admin = connect()
            .await
            .with_context(|| format!("cannot reach a broker at {server}"))?;
        let topic = a
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{:08x}", rand::random::<u32>()));
        admin
            .create_topic(
                &topic,
                TopicConfig {
                    fsync: Some(a.fsync),
                    ..Default::default()
                },
            )
            .await
            .context("creating the bench topic")?;
        let epoch = Instant::now();
        let result = match a.mode {
            Mode::Pub => {
                let (secs, lat) = publish(&a, &connect, &topic, epoch, true).await?;
                json!({"published": a.count, "secs": secs, "confirm_latency": lat.json()})
                    .with_rates(a.count, a.size, secs, &lat, "publish-to-confirm")
            }
            Mode::Sub => {
                publish(&a, &connect, &topic, epoch, false).await?;
                let t0 = Instant::now();
                let (n, lat) = consume_groups(&a, &connect, &topic, epoch, a.count).await?;
                let secs = t0.elapsed().as_secs_f64();
                json!({"consumed": n, "secs": secs}).with_rates(n, a.size, secs, &lat, "")
            }
            Mode::Pubsub => {
                let t0 = Instant::now();
                let consumers = {
                    let a2 = BenchArgs { ..a.clone_args() };
                    let connect2 = connect;
                    let topic2 = topic.clone();
                    async move { consume_groups(&a2, &connect2, &topic2, epoch, a2.count).await }
                };
                let (p, c) = tokio::join!(publish(&a, &connect, &topic, epoch, true), consumers);
                let (_, confirm) = p?;
                let (n, deliver) = c?;
                let secs = t0.elapsed().as_secs_f64();
                json!({"consumed": n, "secs": secs, "confirm_latency": confirm.json()}).with_rates(
                    n,
                    a.size,
                    secs,
                    &deliver,
                    "publish-to-deliver",
                )
            }
            Mode::Rooms => {
                let (n, lat, secs) = rooms(&a, &connect, epoch).await?;
                json!({"deliveries": n, "members": a.consumers, "rooms": a.rooms, "emitted": a.count, "inflight": a.inflight, "secs": secs})
                    .with_rates(n, a.size, secs, &lat, "emit-to-deliver")
            }
            Mode::Catchup => {
                let (n, secs) = catch_up(&a, &builder, &connect, epoch).await?;
                json!({"caught_up": n, "members": a.consumers, "emitted": a.count, "inflight": a.inflight, "secs": secs})
                    .with_rates(n, a.size, secs, &Lat::new(), "")
            }
            Mode::Fanout => {
                let t0 = Instant::now();
                let subs = fanout_subscribers(&a, &connect, &topic, epoch).await?;
                let (p, c) = tokio::join!(publish(&a, &connect, &topic, epoch, false), subs);
                p?;
                let (n, lat) = c?;
                let secs = t0.elapsed().as_secs_f64();
                json!({"deliveries": n, "subscribers": a.consumers, "secs": secs}).with_rates(
                    n,
                    a.size,
                    secs,
                    &lat,
                    "publish-to-deliver",
                )
            }
        };
        let mut result = result;
        result["mode"] = json!(format!("{:?}", a.mode).to_lowercase());
        result["size"] = json!(a.size);
        result["fsync"] = json!(fsync_name(a.fsync));
        result["producers"] = json!(a.producers);
        result["consumers"] = json!(a.consumers);
        if a.json {
            writeln!(std::io::stdout(), "{result}")?;
        } else {
            print_human(&result)?;
        }
        admin.close().await;
        if let Some(b) = embedded {
            b.shutdown().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

impl BenchArgs {
    fn clone_args(&self) -> BenchArgs {
        BenchArgs {
            mode: self.mode,
            server: self.server.clone(),
            embedded: self.embedded,
            count: self.count,
            size: self.size,
            producers: self.producers,
            consumers: self.consumers,
            groups: self.groups,
            batch: self.batch,
            rate: self.rate,
            fsync: self.fsync,
            prefetch: self.prefetch,
            rooms: self.rooms,
            inflight: self.inflight,
            topic: self.topic.clone(),
            json: self.json,
            security: self.security.clone(),
        }
    }
}

trait WithRates {
    fn with_rates(
        self,
        n: u64,
        size: u64,
        secs: f64,
        lat: &Lat,
        lat_name: &str,
    ) -> serde_json::Value;
}

impl WithRates for serde_json::Value {
    fn with_rates(
        mut self,
        n: u64,
        size: u64,
        secs: f64,
        lat: &Lat,
        lat_name: &str,
    ) -> serde_json::Value {
        let secs = secs.max(1e-9);
        self["msgs_per_sec"] = json!(n as f64 / secs);
        self["mib_per_sec"] = json!(n as f64 * size as f64 / secs / (1 << 20) as f64);
        if !lat_name.is_empty() && !lat.0.is_empty() {
            self["latency_kind"] = json!(lat_name);
            self["latency"] = lat.json();
            self["latency_line"] = json!(lat.line());
        }
        self
    }
}

fn print_human(r: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {} B x {}: {:.0} msgs/s, {:.1} MiB/s in {:.2} s (fsync {})",
        r["mode"].as_str().unwrap_or(""),
        r["size"],
        r.get("published")
            .or(r.get("consumed"))
            .or(r.get("deliveries"))
            .or(r.get("caught_up"))
            .cloned()
            .unwrap_or_default(),
        r["msgs_per_sec"].as_f64().unwrap_or(0.0),
        r["mib_per_sec"].as_f64().unwrap_or(0.0),
        r["secs"].as_f64().unwrap_or(0.0),
        r["fsync"].as_str().unwrap_or(""),
    )?;
    if let Some(l) = r.get("latency_line").and_then(|v| v.as_str()) {
        writeln!(
            out,
            "  {}: {l}",
            r["latency_kind"].as_str().unwrap_or("latency")
        )?;
    }
    if let Some(c) = r.get("confirm_latency") {
        if r.get("latency_kind").and_then(|v| v.as_str()) != Some("publish-to-confirm")
            && c["samples"].as_u64().unwrap_or(0) > 0
        {
            writeln!(
                out,
                "  publish-to-confirm: p50 {} us  p99 {} us  max {} us",
                c["p50_us"], c["p99_us"], c["max_us"]
            )?;
        }
    }
    Ok(())
}

/// Publishes `a.count` messages over `a.producers` producers; returns the
/// elapsed seconds and the publish-to-confirm histogram.
async fn publish<F, Fut>(
    a: &BenchArgs,
    connect: &F,
    topic: &str,
    epoch: Instant,
    track: bool,
) -> anyhow::Result<(f64, Lat)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let per = a.count / a.producers as u64;
    let extra = a.count % a.producers as u64;
    let pb = progress(a.count);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..a.producers {
        let n = per + if (p as u64) < extra { 1 } else { 0 };
        let client = connect().await?;
        let producer = client.producer(topic);
        let size = a.size as usize;
        let rate = a.rate / a.producers as u64;
        let pb = pb.clone();
        // Receipts are awaited in order by a second task: awaiting an
        // already-resolved receipt costs no wake-up, unlike polling a set
        // of hundreds of thousands of futures.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(u64, herald_client::PendingReceipt)>(MAX_OPEN_RECEIPTS);
        let waiter = tokio::spawn(async move {
            let mut lat = Lat::new();
            while let Some((t, r)) = rx.recv().await {
                r.await?;
                if track && t > 0 {
                    lat.record(now_us(epoch) - t);
                }
                pb.inc(1);
            }
            Ok::<Lat, anyhow::Error>(lat)
        });
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..n {
                if rate > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                // Clock reads cost as much as a send: at full speed only
                // every 16th message carries a time (and is measured).
                let t = if rate > 0 || i % 16 == 0 {
                    now_us(epoch).max(1)
                } else {
                    0
                };
                let r = producer.send(payload(size, t, i)).await?;
                if tx.send((t, r)).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let lat = waiter.await.context("receipt task")??;
            client.close().await;
            Ok::<Lat, anyhow::Error>(lat)
        }));
    }
    let mut all = Lat::new();
    for t in tasks {
        let l = t.await.context("producer task")??;
        let _ = all.0.add(&l.0);
    }
    pb.finish_and_clear();
    Ok((t0.elapsed().as_secs_f64(), all))
}

/// Consumes `count` messages per group with `a.consumers` members per
/// group, acking each; returns total messages and publish-to-deliver latency.
async fn consume_groups<F, Fut>(
    a: &BenchArgs,
    connect: &F,
    topic: &str,
    epoch: Instant,
    count: u64,
) -> anyhow::Result<(u64, Lat)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let mut tasks = Vec::new();
    for g in 0..a.groups {
        let remaining = Arc::new(AtomicU64::new(count));
        for _ in 0..a.consumers {
            let client = connect().await?;
            let mut sub = client
                .subscribe(topic)
                .group(format!("bench-{g}"))
                .start(StartPosition::Earliest)
                .prefetch(a.prefetch)
                .await?;
            let remaining = remaining.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Lat::new();
                let mut n = 0u64;
                while remaining.load(Ordering::Acquire) > 0 {
                    let next = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
                    let Ok(Some(m)) = next else { break };
                    let m = m?;
                    let sent = sent_at(m.payload());
                    if sent > 0 {
                        lat.record(now_us(epoch).saturating_sub(sent));
                    }
                    m.ack().await?;
                    n += 1;
                    if remaining.fetch_sub(1, Ordering::AcqRel) <= 1 {
                        break;
                    }
                }
                client.close().await;
                Ok::<(u64, Lat), anyhow::Error>((n, lat))
            }));
        }
    }
    let mut total = 0;
    let mut all = Lat::new();
    for t in tasks {
        let (n, l) = t.await.context("consumer task")??;
        total += n;
        let _ = all.0.add(&l.0);
    }
    Ok((total, all))
}

/// Subscribes `a.consumers` ephemeral subscribers (each on its own
/// connection) and returns a future that completes when each got `count`.
async fn fanout_subscribers<F, Fut>(
    a: &BenchArgs,
    connect: &F,
    topic: &str,
    epoch: Instant,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<(u64, Lat)>>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let mut tasks = Vec::new();
    for _ in 0..a.consumers {
        let client = connect().await?;
        let mut sub = client
            .subscribe(topic)
            .start(StartPosition::Latest)
            .prefetch(a.prefetch)
            .await?;
        let count = a.count;
        tasks.push(tokio::spawn(async move {
            let mut lat = Lat::new();
            let mut n = 0u64;
            while n < count {
                let next = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
                let Ok(Some(m)) = next else { break };
                let m = m?;
                let sent = sent_at(m.payload());
                if sent > 0 && n % 16 == 0 {
                    lat.record(now_us(epoch).saturating_sub(sent));
                }
                n += 1;
            }
            client.close().await;
            Ok::<(u64, Lat), anyhow::Error>((n, lat))
        }));
    }
    Ok(async move {
        let mut total = 0;
        let mut all = Lat::new();
        for t in tasks {
            let (n, l) = t.await.context("subscriber task")??;
            total += n;
            let _ = all.0.add(&l.0);
        }
        Ok((total, all))
    })
}

/// `a.consumers` clients join durable rooms (`a.rooms` of them, members
/// spread evenly); `a.producers` emitters send `a.count` events in all,
/// round-robin over the rooms; every member receives its room's events.
/// Returns the deliveries, their latency and the seconds from the first
/// emit until the last member had its last event: joining members is
/// setup, not counted (it would dominate large rooms), as in the Socket.IO
/// peer (benches/peers/socketio).
async fn rooms<F, Fut>(
    a: &BenchArgs,
    connect: &F,
    epoch: Instant,
) -> anyhow::Result<(u64, Lat, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let tag = format!("{:08x}", rand::random::<u32>());
    let rooms: Vec<String> = (0..a.rooms.max(1))
        .map(|r| format!("bench-{tag}-{r}"))
        .collect();
    // Each member, in one room, expects the emits to its room.
    let per_room = |r: usize| {
        a.count / rooms.len() as u64 + u64::from((r as u64) < a.count % rooms.len() as u64)
    };
    // Members connect and join 64 at a time: a sequential setup of
    // 100,000 members would take longer than the run.
    let members: Vec<_> = futures::stream::iter(0..a.consumers)
        .map(|m| {
            let r = m % rooms.len();
            let room = &rooms[r];
            async move {
                let client = connect().await?;
                client.join_durable(room).await?;
                let inbox = client.inbox().await?;
                Ok::<_, anyhow::Error>((client, inbox, per_room(r)))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    // Each member first reads up to a start marker emitted to its room once
    // everyone is in, so the presence events of the joins (each member
    // hears of every member who joined after it) are drained before the
    // clock starts: the run measures the room's steady state, as the
    // Socket.IO peer does (it has no presence).
    let mut readers = Vec::new();
    let mut ready = Vec::new();
    let mut progress = Vec::new();
    for (client, mut inbox, count) in members {
        let (started, started_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(started_rx);
        let got = Arc::new(AtomicU64::new(0));
        progress.push(got.clone());
        readers.push(tokio::spawn(async move {
            let mut started = Some(started);
            // Latencies are kept as plain samples and put into one
            // histogram at the end, as the Socket.IO peer keeps one per
            // process: a histogram per member (about 150 KiB, touched at
            // random) cost more cache misses than a delivery in 200 rooms.
            let mut lat = Vec::with_capacity(count.min(1 << 20) as usize);
            let mut n = 0u64;
            // No timer per event (a clock read and a timer entry each):
            // `stall_guard` ends a run in which nothing arrives.
            while n < count {
                let Some(ev) = inbox.next().await else { break };
                let ev = ev?;
                if ev.name() == START_MARKER {
                    if let Some(s) = started.take() {
                        let _ = s.send(());
                    }
                } else if started.is_none() && !ev.is_presence() {
                    let sent = sent_at(ev.payload());
                    if sent > 0 {
                        let us = now_us(epoch).saturating_sub(sent);
                        lat.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    n += 1;
                    got.store(n, Ordering::Relaxed);
                }
                ev.ack().await?;
            }
            client.close().await;
            Ok::<(u64, Vec<u32>), anyhow::Error>((n, lat))
        }));
    }
    let starter = connect().await?;
    for room in &rooms {
        starter
            .emit(
                herald_client::Target::room(room.clone()),
                START_MARKER,
                Bytes::new(),
            )
            .await?;
    }
    starter.close().await;
    for r in ready {
        tokio::time::timeout(Duration::from_secs(300), r)
            .await
            .context("members did not all reach the start marker in 300 s")?
            .context("a member stopped before the start marker")?;
    }
    let guard = stall_guard(progress, readers.iter().map(|r| r.abort_handle()).collect());
    let t0 = Instant::now();
    emit_to(a, connect, &rooms, epoch).await?;
    let mut total = 0;
    let mut all = Lat::new();
    for m in readers {
        let (n, samples) = match m.await {
            Ok(r) => r?,
            Err(e) if e.is_cancelled() => anyhow::bail!(
                "no member received an event for {} s: the run stalled",
                STALL.as_secs()
            ),
            Err(e) => return Err(e).context("member task"),
        };
        total += n;
        for us in samples {
            all.record(u64::from(us));
        }
    }
    guard.abort();
    Ok((total, all, t0.elapsed().as_secs_f64()))
}

/// How long a rooms run may go without any member receiving an event.
const STALL: Duration = Duration::from_secs(30);

/// Watches the members' counts once a second and, when none moved for
/// [`STALL`], aborts them (their tasks then end as cancelled): one watcher
/// instead of a timer per event.
fn stall_guard(
    progress: Vec<Arc<AtomicU64>>,
    members: Vec<tokio::task::AbortHandle>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = u64::MAX;
        let mut still = Duration::ZERO;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            still = if now == last {
                still + Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            last = now;
            if still >= STALL {
                members.iter().for_each(|m| m.abort());
                return;
            }
        }
    })
}

/// `a.producers` emitters send `a.count` events in all, `a.inflight` each
/// in flight, round-robin over `rooms`, each emit confirmed; returns when
/// every emit is.
async fn emit_to<F, Fut>(
    a: &BenchArgs,
    connect: &F,
    rooms: &[String],
    epoch: Instant,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let per = a.count / a.producers as u64;
    let mut emitters = Vec::new();
    for p in 0..a.producers {
        let n = per + u64::from((p as u64) < a.count % a.producers as u64);
        let client = connect().await?;
        let rooms = rooms.to_vec();
        let size = a.size as usize;
        let inflight = a.inflight.max(1);
        let rate = a.rate / a.producers as u64;
        let producers = a.producers;
        emitters.push(tokio::spawn(async move {
            let start = Instant::now();
            let emits = futures::stream::iter(0..n).map(|i| {
                let client = client.clone();
                // Emit i of emitter p is emit i*P+p overall; emit g goes to
                // room g mod R, as `per_room` counts.
                let g = i as usize * producers + p;
                let room = rooms[g % rooms.len()].clone();
                async move {
                    if rate > 0 {
                        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let t = now_us(epoch).max(1);
                    client
                        .emit(
                            herald_client::Target::room(room),
                            "bench",
                            payload(size, t, i),
                        )
                        .await
                }
            });
            let mut emits = std::pin::pin!(emits.buffered(inflight));
            while let Some(r) = emits.next().await {
                r?;
            }
            client.close().await;
            Ok::<(), anyhow::Error>(())
        }));
    }
    for e in emitters {
        e.await.context("emitter task")??;
    }
    Ok(())
}

/// One durable member joins a room and goes offline; `a.count` events are
/// emitted to the room; the member comes back with the same client id.
/// Returns the events it received and the seconds from its reconnect to
/// its last event (Centrifugo's and Socket.IO's "recovery", from disk).
async fn catch_up<F, Fut>(
    a: &BenchArgs,
    builder: &herald_client::ClientBuilder,
    connect: &F,
    epoch: Instant,
) -> anyhow::Result<(u64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = herald_client::Result<Client>>,
{
    let tag = format!("{:08x}", rand::random::<u32>());
    let room = format!("bench-{tag}");
    let ids: Vec<String> = (0..a.consumers.max(1))
        .map(|i| format!("bench-{tag}-member-{i}"))
        .collect();
    for id in &ids {
        let member = builder.clone().client_id(id.clone()).connect().await?;
        member.join_durable(&room).await?;
        member.close().await;
    }
    emit_to(a, connect, std::slice::from_ref(&room), epoch).await?;
    let t0 = Instant::now();
    let bar = progress(a.count * ids.len() as u64);
    let count = a.count;
    let members = ids.into_iter().map(|id| {
        let (builder, bar) = (builder.clone(), bar.clone());
        tokio::spawn(async move {
            let member = builder.client_id(id).connect().await?;
            let mut inbox = member.inbox().await?;
            let mut n = 0u64;
            while n < count {
                let next = tokio::time::timeout(Duration::from_secs(30), inbox.next()).await;
                let ev = next
                    .context("no event for 30 s")?
                    .context("the inbox ended")??;
                if ev.name() == "bench" {
                    n += 1;
                    bar.inc(1);
                }
                ev.ack().await?;
            }
            member.close().await;
            anyhow::Ok(n)
        })
    });
    let mut n = 0;
    for joined in futures::future::join_all(members).await {
        n += joined.context("a member's task")??;
    }
    let secs = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((n, secs))
}
