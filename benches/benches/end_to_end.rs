//! End to end through a broker on loopback, in one process, with the client
//! library: publish-and-confirm (100 B and 1 KiB, `always` and `never`),
//! consume-and-ack from a backlog, and fan-out to 4 groups.
//!
//! Run: `cargo bench -p herald-benches --bench end_to_end`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use herald_broker::server::BrokerHandle;
use herald_client::{Client, StartPosition, TopicConfig};
use herald_protocol::FsyncPolicy;
use tokio::runtime::Runtime;

/// Messages per measured iteration.
const N: u64 = 20_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn broker(dir: &std::path::Path) -> BrokerHandle {
    let cfg = herald_broker::BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    herald_broker::server::start(cfg).await.expect("broker")
}

async fn publish_n(client: &Client, topic: &str, n: u64, payload: &Bytes) {
    let producer = client.producer(topic);
    let (tx, mut rx) = tokio::sync::mpsc::channel(20_000);
    let waiter = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let r: herald_client::PendingReceipt = r;
            r.await.expect("confirmed");
        }
    });
    for _ in 0..n {
        let r = producer.send(payload.clone()).await.expect("send");
        if tx.send(r).await.is_err() {
            break;
        }
    }
    drop(tx);
    waiter.await.expect("waiter");
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tmp");
    let b = rt.block_on(broker(dir.path()));
    let client = rt
        .block_on(Client::connect(b.local_addr().to_string()))
        .expect("client");
    let mut g = c.benchmark_group("e2e_publish_confirm");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N));
    for (name, fsync) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
    ] {
        for size in [100usize, 1024] {
            let topic = format!("pub-{name}-{size}");
            rt.block_on(client.create_topic(
                &topic,
                TopicConfig {
                    fsync: Some(fsync),
                    ..Default::default()
                },
            ))
            .expect("topic");
            let payload = Bytes::from(vec![b'x'; size]);
            g.bench_with_input(BenchmarkId::new(name, size), &size, |bench, _| {
                bench
                    .to_async(&rt)
                    .iter(|| publish_n(&client, &topic, N, &payload));
            });
        }
    }
    g.finish();
    rt.block_on(async {
        client.close().await;
        b.shutdown().await;
    });
}

async fn consume(client: &Client, topic: &str, group: &str, n: u64, ack: bool) {
    let mut sub = client
        .subscribe(topic)
        .group(group)
        .start(StartPosition::Earliest)
        .prefetch(10_000)
        .await
        .expect("subscribe");
    let mut got = 0;
    while got < n {
        let m = sub.next().await.expect("open").expect("message");
        if ack {
            m.ack().await.expect("ack");
        }
        got += 1;
    }
}

fn consume_ack(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tmp");
    let b = rt.block_on(broker(dir.path()));
    let client = rt
        .block_on(Client::connect(b.local_addr().to_string()))
        .expect("client");
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut g = c.benchmark_group("e2e_consume_ack");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N));
    g.bench_function("100B", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let client = client.clone();
            let payload = payload.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let topic = format!("consume-{:x}", rand_id());
                    publish_n(&client, &topic, N, &payload).await;
                    let t0 = Instant::now();
                    consume(&client, &topic, "g", N, true).await;
                    total += t0.elapsed();
                    client.delete_topic(&topic).await.expect("delete");
                }
                total
            }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("e2e_fanout_4_groups");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(4 * N));
    g.bench_function("100B", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let client = client.clone();
            let payload = payload.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let topic = format!("fanout-{:x}", rand_id());
                    publish_n(&client, &topic, N, &payload).await;
                    let t0 = Instant::now();
                    let groups = (0..4).map(|i| {
                        let client = client.clone();
                        let topic = topic.clone();
                        tokio::spawn(async move {
                            consume(&client, &topic, &format!("g{i}"), N, true).await
                        })
                    });
                    for g in futures::future::join_all(groups).await {
                        g.expect("group task");
                    }
                    total += t0.elapsed();
                    client.delete_topic(&topic).await.expect("delete");
                }
                total
            }
        });
    });
    g.finish();
    rt.block_on(async {
        client.close().await;
        b.shutdown().await;
    });
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u64) << 32
}

criterion_group!(benches, publish, consume_ack);
criterion_main!(benches);
