//! Record-batch codec: building a batch (encode) and validating it and
//! walking its records (decode), for 100 messages of 100 B and of 1 KiB.
//!
//! Run: `cargo bench -p herald-benches --bench codec`. The same benches are
//! reported twice, per message (`codec-messages`) and per byte of batch
//! (`codec-bytes`).
//!
//! Figures from one run on the 2-core development VM (median; a batch of
//! 100 x 100 B is 16,056 bytes, of 100 x 1 KiB 108,456 bytes, each record
//! with an 8-byte key and one header):
//! ```text
//! encode 100x100B   4.1 us   24.7 Melem/s   3.3 GiB/s
//! decode 100x100B   7.2 us   13.9 Melem/s   2.5 GiB/s
//! encode 100x1KiB  13.1 us    7.6 Melem/s   7.9 GiB/s
//! decode 100x1KiB  10.5 us    9.5 Melem/s  10.4 GiB/s
//! ```

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use herald_protocol::{Batch, BatchBuilder, RecordRef};

/// Messages per batch.
const RECORDS: usize = 100;
/// Payload sizes measured.
const SIZES: [(usize, &str); 2] = [(100, "100B"), (1024, "1KiB")];

/// One batch's worth of payloads, distinct so nothing is trivially shared.
fn payloads(size: usize) -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| (0..size).map(|j| (i * 31 + j) as u8).collect())
        .collect()
}

fn encode(builder: &mut BatchBuilder, payloads: &[Vec<u8>]) -> Bytes {
    for (i, p) in payloads.iter().enumerate() {
        builder.push(&RecordRef {
            key: b"order-42",
            headers: &[("content-type", b"application/json")],
            payload: p,
            timestamp: 1_700_000_000_000 + i as i64,
        });
    }
    builder.finish(1, 0)
}

/// Validates and reads every record; returns the payload bytes seen.
fn decode(bytes: &Bytes) -> usize {
    let batch = Batch::validate(bytes.clone()).expect("benchmark batch is valid");
    batch.records().map(|r| r.payload.len()).sum()
}

/// Registers encode and decode for each size, with the throughput `per`
/// gives for a batch of that encoded length.
fn register(g: &mut BenchmarkGroup<'_, WallTime>, per: fn(usize) -> Throughput) {
    for (size, label) in SIZES {
        let payloads = payloads(size);
        let mut builder = BatchBuilder::new();
        let bytes = encode(&mut builder, &payloads);
        g.throughput(per(bytes.len()));
        g.bench_function(format!("encode/{RECORDS}x{label}"), |b| {
            b.iter(|| encode(&mut builder, black_box(&payloads)))
        });
        g.bench_function(format!("decode/{RECORDS}x{label}"), |b| {
            b.iter(|| decode(black_box(&bytes)))
        });
    }
}

fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g
}

fn codec(c: &mut Criterion) {
    let mut g = short(c, "codec-messages");
    register(&mut g, |_| Throughput::Elements(RECORDS as u64));
    g.finish();
    let mut g = short(c, "codec-bytes");
    register(&mut g, |len| Throughput::Bytes(len as u64));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
