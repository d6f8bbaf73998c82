//! Process-level crash test of the client's reconnect and resume: a real
//! `herald serve` child is SIGKILLed and restarted three times at random
//! moments while 100,000 messages are published and consumed by clients
//! that reconnect by themselves. Every publish reported confirmed is
//! consumed, nothing is stored twice, and the app sees each message exactly
//! once.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use herald_client::{Client, Error, Start};
use rand::Rng;
use tokio::sync::watch;

const N: u32 = 100_000;
const KILLS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(90);

/// Starts `herald serve` and waits for its `listening on` line.
fn spawn_broker(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("listening on") => break,
            Some(Ok(_)) => continue,
            _ => anyhow::bail!("broker exited before listening"),
        }
    }
    // Keep draining stdout so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_survives_broker_sigkills() -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, run()).await?
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_broker(port, dir.path())?;

    let connect = |id: &'static str| {
        Client::builder(addr.as_str())
            .client_id(id)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(250))
            .connect()
    };
    let pub_client = connect("crash-producer").await?;
    let sub_client = connect("crash-consumer").await?;
    pub_client.create_topic("crash", Default::default()).await?;

    let mut sub = sub_client
        .subscribe("crash")
        .group("g")
        .start(Start::Earliest)
        .prefetch(2000)
        // Longer than the whole run may take: a restarted broker redelivers
        // what was in flight at once, so nothing should ever wait for an
        // ack deadline. A message that does (an ack the client failed to
        // re-send) makes the run miss DEADLINE instead of merely slowing it.
        .ack_timeout(2 * DEADLINE)
        .await?;
    let (progress_tx, progress) = watch::channel(0usize);
    let consumer = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut first_at = std::collections::HashMap::new();
        let mut twice = 0usize;
        let mut examples = Vec::new();
        while seen.len() < N as usize {
            let m = match sub.next().await {
                Some(m) => m?,
                None => break,
            };
            if !seen.insert(m.payload().clone()) {
                twice += 1;
                if examples.len() < 5 {
                    examples.push((
                        first_at.get(m.payload()).copied(),
                        m.offset(),
                        m.delivery_count(),
                    ));
                }
            } else {
                first_at.insert(m.payload().clone(), m.offset());
            }
            m.ack().await?;
            let _ = progress_tx.send(seen.len());
        }
        Ok::<_, Error>((seen, twice, examples))
    });

    let producer = pub_client.producer("crash");
    let publisher = tokio::spawn(async move {
        let mut pending = Vec::with_capacity(N as usize);
        for i in 0..N {
            pending.push((i, producer.send(format!("m{i}")).await?));
        }
        let mut confirmed = Vec::with_capacity(N as usize);
        for (i, p) in pending {
            confirmed.push((i, p.await?.offset));
        }
        Ok::<_, Error>(confirmed)
    });

    for k in 0..KILLS {
        // Kill at a random point of the consumer's progress.
        let at = rand::thread_rng().gen_range(1..N as usize / (KILLS + 1)) * (k + 1);
        let mut p = progress.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), p.wait_for(|n| *n >= at)).await;
        child.kill()?;
        child.wait()?;
        child = spawn_broker(port, dir.path())?;
    }

    let confirmed = publisher.await??;
    let (seen, twice, examples) = consumer.await??;
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(
        twice, 0,
        "the app saw messages twice: (first offset, offset again, delivery count) {examples:?}"
    );
    let offsets: HashSet<u64> = confirmed.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        offsets.len(),
        confirmed.len(),
        "two publishes share an offset"
    );
    assert!(
        offsets.iter().all(|o| *o < u64::from(N)),
        "offsets beyond {N}: a batch was stored twice"
    );
    for (i, _) in &confirmed {
        assert!(
            seen.contains(format!("m{i}").as_bytes()),
            "m{i} confirmed but not consumed"
        );
    }
    Ok(())
}
