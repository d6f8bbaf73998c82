//! A fixed-bucket histogram of atomics: what an event on a hot path records
//! (an fsync's duration, a group commit's size) without a lock or an
//! allocation. Encoded as a Prometheus histogram at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (inclusive) of the fsync-latency buckets, in seconds: from
/// 100 µs (an NVMe write cache) to 2.5 s (a disk in trouble).
pub const FSYNC_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the group-commit size buckets, in batches per commit.
pub const GROUP_BATCHES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Most buckets a histogram has (the bounds above, plus `+Inf`).
const MAX_BUCKETS: usize = 16;

/// Counts of observations per bucket, their sum and their number.
///
/// ### Invariants
/// `bounds` is sorted and shorter than [`MAX_BUCKETS`]; `counts[i]` counts
/// observations in `(bounds[i-1], bounds[i]]`, the last one those above
/// every bound (not cumulative: cumulated when read).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    counts: [AtomicU64; MAX_BUCKETS],
    /// The sum, in micro-units (µs for seconds), so that it is an integer
    /// atomic; summing f64s would need a compare-and-swap loop.
    sum_micros: AtomicU64,
}

/// A histogram read at one moment, in the shape `prometheus-client`'s
/// encoder takes (it cumulates the buckets itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations above the previous bound and at or
    /// below this one)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (sorted, fewer than 16).
    pub const fn new(bounds: &'static [f64]) -> AtomicHistogram {
        assert!(bounds.len() < MAX_BUCKETS);
        AtomicHistogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation: two relaxed additions.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Adds this histogram's counts into `into` (same bounds), for
    /// aggregating topics when per-topic labels are off.
    pub fn add_to(&self, into: &mut HistogramSnapshot) {
        let s = self.snapshot();
        if into.buckets.is_empty() {
            *into = s;
            return;
        }
        for (a, b) in into.buckets.iter_mut().zip(&s.buckets) {
            a.1 += b.1;
        }
        into.sum += s.sum;
        into.count += s.count;
    }

    /// The buckets, sum and count now. Buckets are read one by
    /// one while others may record, so the counts of one scrape can be off
    /// by the observations made during it; never inconsistent across
    /// scrapes.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        let mut total = 0;
        for (i, bound) in self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
        {
            let n = self.counts[i].load(Ordering::Relaxed);
            total += n;
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive() {
        let h = AtomicHistogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(1.0, 2), (2.0, 1), (4.0, 1), (f64::INFINITY, 1)]
        );
        assert_eq!(s.count, 5);
        assert!((s.sum - 15.0).abs() < 1e-9);
        let mut agg = HistogramSnapshot::default();
        h.add_to(&mut agg);
        h.add_to(&mut agg);
        assert_eq!(agg.count, 10);
        assert_eq!(agg.buckets[0], (1.0, 4));
    }
}
