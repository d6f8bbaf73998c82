//! Ephemeral subscriptions: a live reader of a topic with no group, no acks
//! and no stored state. One task per subscription reads the log (the tail
//! cache when caught up) and pushes batches within its credit.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::memory::MemoryBudget;
use crate::outbox::Outbox;
use crate::topic::Topic;

/// Most bytes read for one round of deliveries.
const MAX_READ_BYTES: usize = 1 << 20;

/// The credit window of an ephemeral subscription: spent by deliveries,
/// given back by the client's Flow frames.
#[derive(Debug)]
pub struct Credit {
    messages: AtomicI64,
    bytes: AtomicI64,
    notify: Notify,
}

impl Credit {
    fn new(messages: u32, bytes: u32) -> Self {
        Credit {
            messages: AtomicI64::new(messages as i64),
            bytes: AtomicI64::new(bytes as i64),
            notify: Notify::new(),
        }
    }

    /// Returns credit (a Flow frame). The sum is capped at the window so a
    /// buggy client cannot grant itself unbounded credit.
    pub fn grant(&self, messages: u32, bytes: u32, window: (u32, u32)) {
        let add = |a: &AtomicI64, v: u32, max: u32| {
            let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some((cur + v as i64).min(max as i64))
            });
        };
        add(&self.messages, messages, window.0);
        add(&self.bytes, bytes, window.1);
        self.notify.notify_one();
    }
}

/// Starts the delivery task of an ephemeral subscription at offset `start`.
pub fn spawn(
    topic: Arc<Topic>,
    subscription_id: u64,
    start: u64,
    outbox: Outbox,
    window: (u32, u32),
    cancel: CancellationToken,
) -> Arc<Credit> {
    let credit = Arc::new(Credit::new(window.0, window.1));
    let c = credit.clone();
    tokio::spawn(async move {
        let log = topic.log.clone();
        let memory = topic
            .registry()
            .map_or_else(MemoryBudget::unlimited, |r| r.memory().clone());
        let mut watch = log.watch_next_offset();
        let mut next = start;
        loop {
            let (m, b) = (
                c.messages.load(Ordering::Acquire),
                c.bytes.load(Ordering::Acquire),
            );
            if m <= 0 || b <= 0 {
                tokio::select! {
                    _ = c.notify.notified() => continue,
                    _ = cancel.cancelled() => break,
                    _ = outbox.closed() => break,
                }
            }
            // Past the memory budget, wait (the slowest readers first).
            let level = memory.delivery_level(outbox.queued_bytes());
            if !memory.admits(level) {
                tokio::select! {
                    _ = memory.recheck(level) => continue,
                    _ = cancel.cancelled() => break,
                    _ = outbox.closed() => break,
                }
            }
            next = next.max(log.first_offset());
            let max_bytes = (b as usize).min(MAX_READ_BYTES).min(memory.allowance());
            let batches = match log.read(next, max_bytes, m as u32) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(topic = %topic.name, error = %e, "ephemeral subscription read failed");
                    break;
                }
            };
            if batches.is_empty() {
                tokio::select! {
                    r = watch.changed() => if r.is_err() { break },
                    _ = cancel.cancelled() => break,
                    _ = outbox.closed() => break,
                }
                continue;
            }
            for batch in batches {
                let m = c.messages.load(Ordering::Acquire);
                let from = next.max(batch.base_offset());
                if m <= 0 || from > batch.last_offset() {
                    continue;
                }
                let last = batch.last_offset().min(from + m as u64 - 1);
                c.messages
                    .fetch_sub((last - from + 1) as i64, Ordering::AcqRel);
                c.bytes
                    .fetch_sub(batch.len_bytes() as i64, Ordering::AcqRel);
                if !outbox.deliver(subscription_id, from, last, 1, batch.into_bytes()) {
                    return;
                }
                next = last + 1;
            }
        }
    });
    credit
}
