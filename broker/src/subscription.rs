//! Ephemeral subscriptions: a live reader of a topic with no group, no acks
//! and no stored state. One task per subscription reads the log (the tail
//! cache when caught up) and pushes batches within its credit.
//!
//! A read that fails (damaged data, an I/O error) ends the subscription
//! with a pushed SubscriptionError naming the topic and the offsets
//! ([`push_read_error`], which group actors use too): a reader is told,
//! never left waiting for records that cannot come.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use herald_protocol::{ErrorCode, Message, SubscriptionError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::memory::MemoryBudget;
use crate::outbox::{Out, Outbox};
use crate::storage::StorageError;
use crate::topic::Topic;
use crate::BrokerError;

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
                    report_read_error(&topic, &e);
                    tracing::warn!(topic = %topic.name, subscription_id, "ending an ephemeral subscription: its next records cannot be read");
                    push_read_error(&outbox, subscription_id, &topic.name, &e);
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
                topic.record_delivered(last - from + 1);
                next = last + 1;
            }
        }
    });
    credit
}

/// Logs a read of `topic` that failed: at ERROR the first time for a given
/// damaged batch, at DEBUG when other readers (or a group's next member)
/// run into the same damage.
pub fn report_read_error(topic: &Topic, e: &StorageError) {
    if topic.log.first_report(e) {
        tracing::error!(topic = %topic.name, error = %e, "cannot read topic {}: {e}; its readers are stopped until `herald topics repair {}` skips the damage", topic.name, topic.name);
    } else {
        tracing::debug!(topic = %topic.name, error = %e, "damaged data read again");
    }
}

/// Ends subscription `subscription_id` for a read that failed: pushes a
/// SubscriptionError (code `Corrupt` for damaged data) whose message names
/// the topic, the offsets, the file and what to do. Returns false once the
/// connection is gone.
pub fn push_read_error(
    outbox: &Outbox,
    subscription_id: u64,
    topic: &str,
    e: &StorageError,
) -> bool {
    let (code, message) = read_error(topic, e);
    let m = Message::SubscriptionError(SubscriptionError {
        subscription_id,
        code: code.as_u16(),
        message,
    });
    let mut b = BytesMut::new();
    m.encode(0, &mut b);
    outbox.push(Out::Frame(b.freeze()))
}

/// The code and text a subscriber is told when a read of `topic` failed.
fn read_error(topic: &str, e: &StorageError) -> (ErrorCode, String) {
    match e {
        StorageError::Corrupt {
            path,
            position,
            offsets,
            reason,
        } => {
            let which = match offsets {
                Some((first, end)) if end > first => {
                    format!("records at offsets {first}..={}", end - 1)
                }
                Some((first, _)) => format!("the records after offset {first}"),
                None => "records".to_string(),
            };
            let msg = format!(
                "topic {topic:?}: {which} are damaged on disk and cannot be delivered \
                 ({}, byte {position}: {reason}); `herald topics repair {topic}` skips them",
                path.display()
            );
            (ErrorCode::Corrupt, msg)
        }
        other => {
            let code = BrokerError::Storage(other.duplicate()).code();
            (
                code,
                format!("topic {topic:?}: reading the log failed: {other}"),
            )
        }
    }
}
