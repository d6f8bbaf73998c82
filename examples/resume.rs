//! A consumer that is killed and restarted carries on exactly where it left
//! off: its group's committed position lives in the broker.
//!
//! Run a broker (`cargo run --release --bin herald -- serve`), then:
//!
//! ```text
//! cargo run -p herald-examples --example resume -- produce 100
//! cargo run -p herald-examples --example resume -- consume 30   # "crashes" after 30 messages
//! cargo run -p herald-examples --example resume -- consume      # carries on from message 31
//! ```
//! The broker address is `--server HOST:PORT`, else `HERALD_SERVER`, else
//! 127.0.0.1:7400, as for the `herald` command line.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use herald_client::{Client, Start};

const TOPIC: &str = "resume-demo";
const GROUP: &str = "resume-demo-consumer";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (addr, args) = herald_examples::args()?;
    let client = Client::builder(addr.as_str())
        .client_id("resume-demo")
        .connect()
        .await
        .context("connect")?;
    match args.first().map(String::as_str) {
        Some("produce") => {
            let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
            let producer = client.producer(TOPIC);
            let mut last = None;
            for i in 0..n {
                last = Some(producer.send(format!("message {i}")).await?);
            }
            if let Some(last) = last {
                println!(
                    "published {}, the last at offset {}",
                    herald_examples::count(n, "message"),
                    last.await?.offset
                );
            }
            client.close().await;
        }
        Some("consume") => {
            let crash_after: Option<usize> = args.get(1).map(|s| s.parse()).transpose()?;
            let mut sub = client
                .subscribe(TOPIC)
                .group(GROUP)
                .start(Start::Resume)
                .await?;
            println!("resuming at offset {}", sub.start_offset());
            let mut handled = 0;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(2), sub.next()).await;
                let Ok(Some(msg)) = next else {
                    println!("nothing more for 2 s; handled {handled}, exiting cleanly");
                    break;
                };
                let msg = msg?;
                println!(
                    "offset {}: {}",
                    msg.offset(),
                    String::from_utf8_lossy(msg.payload())
                );
                handled += 1;
                if Some(handled) == crash_after {
                    // The client batches acks, and a few may wait up to 2 s
                    // (docs/client.md): this one goes at once, with every
                    // ack still pending, and returns once the broker has
                    // recorded them. Then die without any cleanup, like a
                    // killed process.
                    msg.ack_confirmed().await?;
                    println!(
                        "crashing after {}",
                        herald_examples::count(handled, "message")
                    );
                    std::process::exit(1);
                }
                msg.ack().await?;
            }
            client.close().await;
        }
        _ => bail!(
            "usage: resume produce [N] | resume consume [CRASH_AFTER]  (and --server HOST:PORT)"
        ),
    }
    Ok(())
}
