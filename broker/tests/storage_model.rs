//! Model-based test: random appends, reads, rolls, retention and
//! close/reopen against an in-memory model of the log.

#[path = "common_storage/mod.rs"]
mod common;

use common::{batch, read_all, tmpdir};
use herald_broker::storage::{FsyncPolicy, Log, LogConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// One batch with these payload sizes.
    Append(Vec<usize>),
    /// Read from `pick % (next + 2)`.
    Read {
        pick: u64,
        max_bytes: usize,
        max_records: u32,
    },
    Reopen,
    Roll,
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0usize..300, 1..5).prop_map(Op::Append),
        // Big enough for a direct write under `always`.
        1 => prop::collection::vec(20_000usize..40_000, 2..4).prop_map(Op::Append),
        4 => (any::<u64>(), 0usize..3000, 0u32..12).prop_map(|(pick, max_bytes, max_records)| Op::Read {
            pick,
            max_bytes,
            max_records,
        }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Roll),
        1 => Just(Op::Retention),
    ]
}

fn payload(offset: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{offset}:").into_bytes();
    p.extend((0..size).map(|i| (offset as usize + i) as u8));
    p
}

/// The model: every record ever appended, by offset, and the first offset
/// retention kept.
struct Model {
    records: Vec<Vec<u8>>,
    first: u64,
}

async fn run(
    ops: Vec<Op>,
    tail_cache_bytes: usize,
    fsync: FsyncPolicy,
) -> Result<(), TestCaseError> {
    // `always` writes with O_DIRECT: on disk, where a misaligned write
    // fails, rather than in RAM.
    let dir = if fsync == FsyncPolicy::Always {
        tempfile::TempDir::new().expect("tmp")
    } else {
        tmpdir()
    };
    let cfg = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        tail_cache_bytes,
        retention_bytes: Some(3000),
        fsync,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).expect("open");
    let mut m = Model {
        records: Vec::new(),
        first: 0,
    };
    for op in ops {
        let next = m.records.len() as u64;
        match op {
            Op::Append(sizes) => {
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| payload(next + i as u64, s))
                    .collect();
                let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
                let out = log.append(batch(&refs)).await.expect("append");
                prop_assert_eq!(out.base_offset, next);
                prop_assert_eq!(out.count as usize, sizes.len());
                m.records.extend(payloads);
                prop_assert_eq!(log.next_offset(), m.records.len() as u64);
            }
            Op::Read {
                pick,
                max_bytes,
                max_records,
            } => {
                let from = pick % (next + 2);
                let got = log.read(from, max_bytes, max_records).expect("read");
                let eff = from.max(m.first);
                if eff >= next {
                    prop_assert!(got.is_empty(), "read past the end at {}", from);
                    continue;
                }
                prop_assert!(!got.is_empty(), "empty read at {} of {}", from, next);
                prop_assert!(got[0].base_offset() <= eff && eff <= got[0].last_offset());
                let mut expect = got[0].base_offset();
                let (mut bytes, mut recs) = (0usize, 0u64);
                for b in &got {
                    prop_assert_eq!(b.base_offset(), expect);
                    for r in b.records() {
                        prop_assert_eq!(&r.payload[..], &m.records[r.offset as usize][..]);
                    }
                    expect = b.last_offset() + 1;
                    bytes += b.len_bytes();
                    recs += u64::from(b.record_count());
                }
                if got.len() > 1 {
                    prop_assert!(bytes <= max_bytes && recs <= u64::from(max_records));
                }
            }
            Op::Reopen => {
                log.close().await.expect("close");
                log = Log::open(dir.path(), cfg.clone()).expect("reopen");
                prop_assert_eq!(log.next_offset(), next);
                prop_assert_eq!(log.first_offset(), m.first);
            }
            Op::Roll => log.roll().await.expect("roll"),
            Op::Retention => {
                let deleted = log.apply_retention().expect("retention");
                let first = log.first_offset();
                prop_assert!(first >= m.first && first <= next);
                let stats = log.stats();
                // Size retention keeps at least `retention_bytes`.
                prop_assert!(deleted == 0 || stats.bytes_on_disk >= 3000, "{:?}", stats);
                prop_assert_eq!(deleted > 0, first > m.first);
                m.first = first;
            }
        }
    }
    let all = read_all(&log, 0);
    prop_assert_eq!(all.len() as u64, m.records.len() as u64 - m.first);
    for (off, p) in all {
        prop_assert_eq!(&p[..], &m.records[off as usize][..]);
    }
    log.close().await.expect("close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..60),
        cache in prop_oneof![Just(0usize), Just(4096)],
        fsync in prop_oneof![Just(FsyncPolicy::Never), Just(FsyncPolicy::Always)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(ops, cache, fsync))?;
    }
}
