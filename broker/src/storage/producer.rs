//! Idempotent-producer state: which sequence each producer is at, and where
//! its recent batches went, so a retried batch is answered with its original
//! offsets instead of being stored twice.
//!
//! Sequence numbers count records: after a batch with `base_sequence` s and
//! `record_count` n, the next expected base sequence is s + n.

use std::collections::{HashMap, VecDeque};

/// Recent batches remembered per producer.
pub const PRODUCER_WINDOW: usize = 64;
/// Producers remembered per log; past this, the one that appended least
/// recently is forgotten (and would be accepted at any sequence).
pub const MAX_PRODUCERS: usize = 65_536;

/// One stored batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    base_sequence: u64,
    count: u32,
    base_offset: u64,
}

/// The window of one producer.
#[derive(Debug, Clone, Default)]
pub struct ProducerState {
    /// Oldest first, at most [`PRODUCER_WINDOW`].
    window: VecDeque<Stored>,
}

impl ProducerState {
    fn next_expected(&self) -> Option<u64> {
        self.window
            .back()
            .map(|s| s.base_sequence + u64::from(s.count))
    }

    fn last_offset(&self) -> u64 {
        self.window.back().map_or(0, |s| s.base_offset)
    }

    /// Judges a batch starting at sequence `seq` with `count` records.
    pub fn check(&self, seq: u64, count: u32) -> Verdict {
        let Some(expected) = self.next_expected() else {
            return Verdict::Accept;
        };
        if seq == expected {
            return Verdict::Accept;
        }
        if seq > expected {
            return Verdict::Gap { expected };
        }
        if seq + u64::from(count) > expected {
            // Starts in what was stored but runs past it: part of it is new.
            // Calling it a duplicate would confirm records never stored.
            return Verdict::Gap { expected };
        }
        // Within one stored batch (a retry cut at other boundaries than the
        // first send, as `herald pub` re-run line by line does): its
        // records have that batch's offsets, which are consecutive.
        let end = seq + u64::from(count);
        let within =
            |s: &&Stored| s.base_sequence <= seq && end <= s.base_sequence + u64::from(s.count);
        match self.window.iter().rev().find(within) {
            Some(s) => Verdict::Duplicate {
                base_offset: s.base_offset + (seq - s.base_sequence),
                count,
            },
            // Older than the window, or across stored batches (whose
            // offsets need not follow each other): certainly seen before,
            // offsets unknown.
            None => Verdict::Duplicate {
                base_offset: u64::MAX,
                count,
            },
        }
    }

    /// Remembers a stored batch, forgetting the oldest past the window.
    pub fn record(&mut self, seq: u64, count: u32, base_offset: u64) {
        if self.window.len() == PRODUCER_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(Stored {
            base_sequence: seq,
            count,
            base_offset,
        });
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Accept,
    /// Already stored: answer with these offsets (`base_offset` is
    /// `u64::MAX` when the batch is older than the window).
    Duplicate { base_offset: u64, count: u32 },
    /// The producer skipped sequence numbers.
    Gap { expected: u64 },
}

/// All producers of one log. Owned by the writer task.
#[derive(Debug, Default, Clone)]
pub struct ProducerMap {
    producers: HashMap<u64, ProducerState>,
}

impl ProducerMap {
    /// Judges a batch from `producer_id` (non-zero) starting at sequence
    /// `seq`, with `count` records.
    pub fn check(&self, producer_id: u64, seq: u64, count: u32) -> Verdict {
        self.producers
            .get(&producer_id)
            .map_or(Verdict::Accept, |p| p.check(seq, count))
    }

    /// The state of one producer.
    pub fn get(&self, producer_id: u64) -> Option<&ProducerState> {
        self.producers.get(&producer_id)
    }

    /// Replaces the state of one producer (merging a committed overlay).
    pub fn insert(&mut self, producer_id: u64, state: ProducerState) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= MAX_PRODUCERS {
            self.evict_oldest();
        }
        self.producers.insert(producer_id, state);
    }

    /// Records a stored batch.
    pub fn record(&mut self, producer_id: u64, seq: u64, count: u32, base_offset: u64) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= MAX_PRODUCERS {
            self.evict_oldest();
        }
        self.producers
            .entry(producer_id)
            .or_default()
            .record(seq, count, base_offset);
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, p)| p.last_offset())
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_duplicate_gap() {
        let mut m = ProducerMap::default();
        assert_eq!(m.check(7, 100, 3), Verdict::Accept);
        m.record(7, 100, 3, 0);
        assert_eq!(m.check(7, 103, 2), Verdict::Accept);
        m.record(7, 103, 2, 3);
        assert_eq!(
            m.check(7, 100, 3),
            Verdict::Duplicate {
                base_offset: 0,
                count: 3
            }
        );
        assert_eq!(
            m.check(7, 103, 2),
            Verdict::Duplicate {
                base_offset: 3,
                count: 2
            }
        );
        assert_eq!(m.check(7, 106, 1), Verdict::Gap { expected: 105 });
        // Overlapping the end of what is stored: refused, not a duplicate.
        assert_eq!(m.check(7, 104, 3), Verdict::Gap { expected: 105 });
        assert_eq!(m.check(8, 999, 1), Verdict::Accept);
    }

    /// A retry cut at other boundaries than the first send gets the offsets
    /// of its records when they lie in one stored batch, and "unknown"
    /// when they span two (their offsets need not follow each other).
    #[test]
    fn a_retry_inside_a_stored_batch_gets_its_offsets() {
        let mut m = ProducerMap::default();
        m.record(7, 0, 3, 1012);
        m.record(7, 3, 2, 2000);
        for (seq, count, base) in [
            (0, 1, 1012),
            (1, 1, 1013),
            (1, 2, 1013),
            (2, 1, 1014),
            (4, 1, 2001),
        ] {
            assert_eq!(
                m.check(7, seq, count),
                Verdict::Duplicate {
                    base_offset: base,
                    count
                },
                "seq {seq} count {count}"
            );
        }
        assert_eq!(
            m.check(7, 2, 2),
            Verdict::Duplicate {
                base_offset: u64::MAX,
                count: 2
            },
            "across two stored batches"
        );
    }

    #[test]
    fn window_is_bounded() {
        let mut m = ProducerMap::default();
        for i in 0..200u64 {
            m.record(1, i, 1, i);
        }
        assert_eq!(
            m.check(1, 150, 1),
            Verdict::Duplicate {
                base_offset: 150,
                count: 1
            }
        );
        assert_eq!(
            m.check(1, 5, 1),
            Verdict::Duplicate {
                base_offset: u64::MAX,
                count: 1
            }
        );
        assert_eq!(m.producers[&1].window.len(), PRODUCER_WINDOW);
    }
}
