//! Storage engine throughput: appends (by fsync policy, message size and
//! concurrency) and reads (tail cache vs segment files).
//!
//! Run: `cargo bench -p herald-benches --bench storage` (add `-- --quick`
//! for a fast pass).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_broker::storage::{FsyncPolicy, Log, LogConfig};
use herald_protocol::{Batch, BatchBuilder, RecordRef};
use tokio::runtime::Runtime;

const MESSAGES_PER_BATCH: u32 = 100;

fn make_batch(msg_size: usize) -> Batch {
    let payload = vec![0xabu8; msg_size];
    let mut b = BatchBuilder::new();
    for _ in 0..MESSAGES_PER_BATCH {
        b.push(&RecordRef {
            payload: &payload,
            timestamp: 1,
            ..RecordRef::default()
        });
    }
    Batch::validate(b.finish(0, 0)).expect("valid batch")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_bytes: 16 * 1024 * 1024,
        retention_bytes: Some(64 * 1024 * 1024),
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("storage_append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(u64::from(MESSAGES_PER_BATCH)));
    let policies = [
        ("always", FsyncPolicy::Always),
        ("interval10ms", FsyncPolicy::Interval { ms: 10 }),
        ("never", FsyncPolicy::Never),
    ];
    for (name, policy) in policies {
        for msg_size in [100usize, 1024] {
            for appenders in [1usize, 8] {
                let dir = tempfile::TempDir::new().expect("tmp");
                let log = rt
                    .block_on(async { Log::open(dir.path(), bench_config(policy)) })
                    .expect("open");
                let batch = make_batch(msg_size);
                let id = BenchmarkId::new(format!("{name}/{msg_size}B"), format!("{appenders}x"));
                g.bench_function(id, |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let log = log.clone();
                        let batch = batch.clone();
                        async move { run_appenders(log, batch, appenders, iters).await }
                    });
                });
                rt.block_on(log.close()).expect("close");
            }
        }
    }
    g.finish();
}

/// Appends `iters` batches split over `appenders` tasks; returns the time.
async fn run_appenders(log: Arc<Log>, batch: Batch, appenders: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(appenders);
    for t in 0..appenders as u64 {
        let n = iters / appenders as u64 + u64::from(t < iters % appenders as u64);
        let log = log.clone();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                log.append(batch.clone()).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("appender");
    }
    let elapsed = start.elapsed();
    log.apply_retention().expect("retention");
    elapsed
}

fn read(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("storage_read");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, cache) in [("tail_cache", 64 * 1024 * 1024), ("disk", 0usize)] {
        for msg_size in [100usize, 1024] {
            let dir = tempfile::TempDir::new().expect("tmp");
            let cfg = LogConfig {
                tail_cache_bytes: cache,
                ..bench_config(FsyncPolicy::Never)
            };
            let log = rt
                .block_on(async { Log::open(dir.path(), cfg) })
                .expect("open");
            let batch = make_batch(msg_size);
            rt.block_on(async {
                for _ in 0..200 {
                    log.append(batch.clone()).await.expect("append");
                }
            });
            let per_read = 1024 * 1024;
            let records: u64 = log
                .read(0, per_read, u32::MAX)
                .expect("read")
                .iter()
                .map(|b| u64::from(b.record_count()))
                .sum();
            g.throughput(Throughput::Elements(records));
            g.bench_function(BenchmarkId::new(name, format!("{msg_size}B")), |b| {
                b.iter(|| log.read(0, per_read, u32::MAX).expect("read"));
            });
            rt.block_on(log.close()).expect("close");
        }
    }
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
