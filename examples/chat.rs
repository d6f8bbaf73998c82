//! A terminal chat on top of topics: every line typed is published to topic
//! `chat.<room>`, and every participant reads the room through a group named
//! after themselves, so a user who leaves and comes back first sees what
//! they missed.
//!
//! Run a broker (`cargo run --release --bin herald -- serve`), then in two
//! terminals:
//!
//! ```text
//! cargo run -p herald-examples --example chat -- lobby alice
//! cargo run -p herald-examples --example chat -- lobby bob
//! ```
//! An optional third argument is the broker address (default
//! 127.0.0.1:7400).

use anyhow::bail;
use futures::StreamExt;
use herald_client::{Client, ConnectionEvent, Record, Start};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(room), Some(user)) = (args.first(), args.get(1)) else {
        bail!("usage: chat ROOM USER [ADDR]");
    };
    let addr = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7400".into());
    let topic = format!("chat.{room}");
    let client = Client::builder(addr.as_str())
        .client_id(format!("chat-{user}"))
        .connect()
        .await?;

    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            match ev {
                ConnectionEvent::Disconnected { reason } => eprintln!("* disconnected: {reason}"),
                ConnectionEvent::Reconnected => eprintln!("* reconnected"),
                _ => {}
            }
        }
    });

    let mut sub = client
        .subscribe(&topic)
        .group(format!("user.{user}"))
        .start(Start::Resume)
        .await?;
    let me = user.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(msg) = msg else { break };
            let from = msg
                .header("from")
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            if from != me.as_str() {
                println!("<{from}> {}", String::from_utf8_lossy(msg.payload()));
            }
            if msg.ack().await.is_err() {
                break;
            }
        }
    });

    println!("* you are {user} in {room}; type lines, Ctrl-D to leave");
    // Terminal input is blocking I/O: read it on its own thread.
    let (tx, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        client
            .publish_record(&topic, Record::new(line).header("from", user.clone()))
            .await?;
    }
    client.close().await;
    Ok(())
}
