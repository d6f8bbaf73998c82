//! Fewer, bigger batches for logs the broker writes itself (room logs and
//! inboxes, [`super::LogConfig::coalesce`]): the plain batches of one
//! group commit are merged into one stored batch (up to
//! [`MAX_RECORDS`] records and [`MAX_BYTES`] bytes), each appender still
//! answered with the offsets of its own records.
//!
//! Why: an emit is one record, so a busy room's log held one batch per
//! event, and every reader paid per batch: a Deliver frame, a CRC check,
//! a chunk in its group's ack tracker, an actor wake-up. A room of 1,000
//! members paid that 1,000 times per event. Merged, those costs are paid
//! once per group commit. Appends of idempotent producers are left as they
//! are (their sequence numbers identify their batches), and so are
//! client-published topics: their batches are stored as received.

use herald_protocol::batch::concat;
use herald_protocol::Batch;
use tokio::sync::oneshot;

use super::error::StorageError;
use super::writer::Reply;
use super::AppendOutcome;

/// Most records in a merged batch: a reader with less credit gets part of
/// a batch and the whole batch again later, so batches stay well below
/// clients' usual prefetch windows.
pub const MAX_RECORDS: u32 = 256;
/// Most bytes in a merged batch.
pub const MAX_BYTES: usize = 256 * 1024;

/// The appenders whose batches went into one merged batch.
pub struct Merged {
    outcome: oneshot::Receiver<Result<AppendOutcome, StorageError>>,
    /// Each appender: its reply, its first record's index in the merged
    /// batch, its record count.
    parts: Vec<(Reply<AppendOutcome>, u32, u32)>,
}

/// Merges runs of plain batches in `group`, each merged batch at most
/// `max_bytes` (and [`MAX_BYTES`]); returns the group to commit and the
/// merged batches' appenders, to answer with [`answer`] once the group is
/// committed.
pub fn coalesce(
    group: Vec<(Batch, Reply<AppendOutcome>)>,
    max_bytes: usize,
) -> (Vec<(Batch, Reply<AppendOutcome>)>, Vec<Merged>) {
    let max_bytes = max_bytes.min(MAX_BYTES);
    let mut out = Vec::with_capacity(group.len());
    let mut merged = Vec::new();
    let mut run: Vec<(Batch, Reply<AppendOutcome>)> = Vec::new();
    let (mut records, mut bytes) = (0u32, 0usize);
    for (batch, reply) in group {
        let plain = batch.producer_id() == 0;
        let fits =
            records + batch.record_count() <= MAX_RECORDS && bytes + batch.len_bytes() <= max_bytes;
        if !plain || !fits {
            flush(&mut run, &mut out, &mut merged);
            (records, bytes) = (0, 0);
        }
        if plain {
            records += batch.record_count();
            bytes += batch.len_bytes();
            run.push((batch, reply));
        } else {
            out.push((batch, reply));
        }
    }
    flush(&mut run, &mut out, &mut merged);
    (out, merged)
}

/// Moves `run` into `out`: as it is if it holds one batch, else as one
/// merged batch whose outcome `merged` splits later.
fn flush(
    run: &mut Vec<(Batch, Reply<AppendOutcome>)>,
    out: &mut Vec<(Batch, Reply<AppendOutcome>)>,
    merged: &mut Vec<Merged>,
) {
    if run.len() < 2 {
        out.append(run);
        return;
    }
    let batches: Vec<Batch> = run.iter().map(|(b, _)| b.clone()).collect();
    let Some(bytes) = concat(&batches) else {
        // Not mergeable after all (cannot happen for plain batches within
        // the limits): committed one by one.
        out.append(run);
        return;
    };
    let (tx, rx) = oneshot::channel();
    let mut parts = Vec::with_capacity(run.len());
    let mut first = 0u32;
    for (b, reply) in run.drain(..) {
        parts.push((reply, first, b.record_count()));
        first += b.record_count();
    }
    out.push((Batch::from_trusted(bytes), tx));
    merged.push(Merged { outcome: rx, parts });
}

/// Answers every appender of a merged batch with its own records'
/// offsets, or the merged batch's error. Call once the group is committed
/// (the writer has answered every reply by then).
pub fn answer(merged: Vec<Merged>) {
    for Merged { mut outcome, parts } in merged {
        let result = outcome.try_recv().unwrap_or(Err(StorageError::Closed));
        for (reply, first, count) in parts {
            let _ = reply.send(match &result {
                Ok(o) => Ok(AppendOutcome {
                    base_offset: o.base_offset + u64::from(first),
                    count,
                    duplicate: false,
                }),
                Err(e) => Err(e.duplicate()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{BatchBuilder, RecordRef};

    fn batch(records: u32, producer: u64) -> Batch {
        let mut b = BatchBuilder::new();
        for i in 0..records {
            b.push(&RecordRef {
                key: b"k",
                headers: &[],
                payload: &i.to_le_bytes(),
                timestamp: 1,
            });
        }
        Batch::from_trusted(b.finish(producer, if producer == 0 { 0 } else { 1 }))
    }

    /// Plain batches merge, an idempotent one splits the run, and each
    /// appender is answered with its own offsets from the merged outcome.
    #[tokio::test]
    async fn runs_of_plain_batches_merge_and_each_appender_gets_its_offsets() {
        let mut group = Vec::new();
        let mut answers = Vec::new();
        for (n, producer) in [(1, 0), (2, 0), (1, 9), (1, 0), (3, 0)] {
            let (tx, rx) = oneshot::channel();
            group.push((batch(n, producer), tx));
            answers.push(rx);
        }
        let (out, merged) = coalesce(group, MAX_BYTES);
        let shapes: Vec<(u32, u64)> = out
            .iter()
            .map(|(b, _)| (b.record_count(), b.producer_id()))
            .collect();
        assert_eq!(shapes, [(3, 0), (1, 9), (4, 0)]);
        // The writer's answers: offsets 10.., then 13, then 14...
        let mut base = 10;
        for (b, reply) in out {
            let count = b.record_count();
            let _ = reply.send(Ok(AppendOutcome {
                base_offset: base,
                count,
                duplicate: false,
            }));
            base += u64::from(count);
        }
        answer(merged);
        let mut got = Vec::new();
        for rx in answers {
            let o = rx.await.unwrap().unwrap();
            got.push((o.base_offset, o.count));
        }
        assert_eq!(got, [(10, 1), (11, 2), (13, 1), (14, 1), (15, 3)]);
    }

    /// A merged batch stays within its limits.
    #[test]
    fn merged_batches_stay_within_the_limits() {
        let group: Vec<_> = (0..MAX_RECORDS + 10)
            .map(|_| (batch(1, 0), oneshot::channel().0))
            .collect();
        let (out, merged) = coalesce(group, MAX_BYTES);
        let counts: Vec<u32> = out.iter().map(|(b, _)| b.record_count()).collect();
        assert_eq!(counts, [MAX_RECORDS, 10]);
        assert_eq!(merged.len(), 2);
    }

    /// A smaller byte limit (a broker with a small frame limit) gives
    /// smaller merged batches, each within it.
    #[test]
    fn merged_batches_stay_within_a_smaller_byte_limit() {
        let one = batch(1, 0).len_bytes();
        let group: Vec<_> = (0..40)
            .map(|_| (batch(1, 0), oneshot::channel().0))
            .collect();
        let (out, _merged) = coalesce(group, one * 10);
        let counts: Vec<u32> = out.iter().map(|(b, _)| b.record_count()).collect();
        assert_eq!(counts.iter().sum::<u32>(), 40);
        assert!(out.len() >= 4, "{counts:?}");
        assert!(
            out.iter().all(|(b, _)| b.len_bytes() <= one * 10),
            "{counts:?}"
        );
    }

    /// A failed commit reaches every appender of the merged batch.
    #[tokio::test]
    async fn a_failure_reaches_every_appender() {
        let (a, ra) = oneshot::channel();
        let (b, rb) = oneshot::channel();
        let (out, merged) = coalesce(vec![(batch(1, 0), a), (batch(1, 0), b)], MAX_BYTES);
        for (_, reply) in out {
            let _ = reply.send(Err(StorageError::Closed));
        }
        answer(merged);
        assert!(ra.await.unwrap().is_err());
        assert!(rb.await.unwrap().is_err());
    }

    /// Through a real log: appends queued together are stored as one
    /// batch, each appender gets its own offset, and a reader gets every
    /// record once, in the order the appends were queued.
    #[tokio::test]
    async fn a_log_that_coalesces_stores_fewer_batches_and_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::super::LogConfig {
            coalesce: true,
            ..Default::default()
        };
        let log = super::super::Log::open(dir.path(), cfg).unwrap();
        let mut pending = Vec::new();
        for i in 0..100u32 {
            let mut b = BatchBuilder::new();
            b.push(&RecordRef {
                key: b"k",
                headers: &[],
                payload: &i.to_le_bytes(),
                timestamp: 1,
            });
            pending.push(
                log.enqueue(Batch::from_trusted(b.finish(0, 0)))
                    .await
                    .unwrap(),
            );
        }
        let mut offsets = Vec::new();
        for p in pending {
            let o = p.wait().await.unwrap();
            assert_eq!(o.count, 1);
            offsets.push(o.base_offset);
        }
        assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
        let batches = log.read(0, 1 << 20, 1000).unwrap();
        assert!(batches.len() < 100, "merged: {} batches", batches.len());
        let payloads: Vec<u32> = batches
            .iter()
            .flat_map(|b| b.records())
            .map(|r| u32::from_le_bytes(r.payload[..4].try_into().unwrap()))
            .collect();
        assert_eq!(payloads, (0..100).collect::<Vec<u32>>());
        log.close().await.unwrap();
    }
}
