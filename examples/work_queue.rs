//! A work queue: one producer, several competing workers in one group, each
//! job acked when done. Worker 0 "crashes" (panics) in the middle of its
//! first job; since it never acked, the broker redelivers that job to
//! another worker: at once, as the panic ends its subscription (a worker
//! that hung instead would lose it after the short ack timeout).
//!
//! Run a broker (`cargo run --release --bin herald -- serve`), then:
//!
//! ```text
//! cargo run -p herald-examples --example work_queue
//! ```
//! The broker address is `--server HOST:PORT`, else `HERALD_SERVER`, else
//! 127.0.0.1:7400, as for the `herald` command line.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use herald_client::{Client, Start};

const JOBS: usize = 20;
const WORKERS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (addr, args) = herald_examples::args()?;
    if !args.is_empty() {
        anyhow::bail!("usage: work_queue [--server HOST:PORT]");
    }
    let topic = format!("jobs.{}", std::process::id());
    let done = Arc::new(Mutex::new(HashSet::new()));
    // Subscribing does not create a topic (a misspelled one would be
    // waited on forever), so the queue is created before the workers join.
    let admin = Client::connect(addr.as_str()).await.context("connect")?;
    admin
        .create_topic(&topic, Default::default())
        .await
        .context("create the topic")?;

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        // Each worker is its own client, as separate processes would be.
        let client = Client::connect(addr.as_str()).await.context("connect")?;
        let mut sub = client
            .subscribe(&topic)
            .group("workers")
            .start(Start::Earliest)
            .prefetch(1)
            .ack_timeout(Duration::from_secs(2))
            .await?;
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let msg = msg?;
                let job = String::from_utf8_lossy(msg.payload()).into_owned();
                if w == 0 {
                    println!("worker 0 takes {job:?} and crashes before acking it");
                    panic!("worker 0 crashed");
                }
                let again = if msg.delivery_count() > 1 {
                    " (redelivered)"
                } else {
                    ""
                };
                println!("worker {w} does {job:?}{again}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                msg.ack().await?;
                let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                d.insert(job);
                if d.len() == JOBS {
                    break;
                }
            }
            drop(client);
            anyhow::Ok(())
        }));
    }

    let client = admin;
    let producer = client.producer(&topic);
    let mut receipts = Vec::new();
    for i in 0..JOBS {
        receipts.push(producer.send(format!("job {i}")).await?);
    }
    for r in receipts {
        r.await?;
    }
    println!("{JOBS} jobs queued on {topic}");

    // Wait until every job is done, then stop the surviving workers.
    while done.lock().unwrap_or_else(|p| p.into_inner()).len() < JOBS {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (w, h) in workers.into_iter().enumerate() {
        h.abort();
        if let Err(e) = h.await {
            if e.is_panic() {
                println!("worker {w} had crashed");
            }
        }
    }
    println!("all {JOBS} jobs done, the crashed worker's job included");
    client.delete_topic(&topic).await?;
    Ok(())
}
