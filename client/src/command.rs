//! What user-facing handles send to the connection task, and what the
//! connection task sends to subscriptions.

use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::{Deliver, Message as Wire, StartPosition};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::acks::SubShared;
use crate::{Receipt, Result};

/// Commands buffered between the handles and the connection task. Small:
/// the connection task drains them as fast as the socket takes bytes, and a
/// full queue is how a slow network pushes back on callers.
pub(crate) const COMMAND_QUEUE: usize = 1024;

/// A request to the connection task.
pub(crate) enum Command {
    /// Send a sealed batch and report each record's receipt.
    Publish(PublishBatch),
    /// Register a subscription (kept and restored across reconnects).
    Subscribe {
        reg: SubRegistration,
        /// Answered with the broker's start offset once subscribed.
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Drop a subscription.
    Unsubscribe {
        local_id: u64,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Return credit of an ephemeral subscription.
    Flow {
        local_id: u64,
        /// The subscription epoch the consumed deliveries came from; credit
        /// of an earlier connection is meaningless on the current one.
        epoch: u64,
        messages: u32,
        bytes: u32,
    },
    /// An admin request; answered with the broker's reply message.
    Request {
        msg: Wire,
        reply: oneshot::Sender<Result<Wire>>,
    },
    /// Flush acks, wait for in-flight publishes (bounded), then stop.
    Close { reply: oneshot::Sender<()> },
}

/// Permits a queued publish holds until it is confirmed or failed: room in
/// the client's publish buffer and, for a batch, one of its producer's
/// in-flight slots. Dropping them frees the room.
///
/// Counted rather than held one by one, so that a batch of thousands of
/// records releases its room with two additions instead of thousands of
/// semaphore operations.
#[derive(Debug)]
pub(crate) struct Permits {
    pub(crate) budget: Arc<crate::producer::Budget>,
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
    /// The producer's in-flight slot, for a sealed batch.
    pub(crate) _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.budget.release(self.messages, self.bytes);
    }
}

/// One sealed batch on its way to the broker.
pub(crate) struct PublishBatch {
    /// The producer it came from (client-local id).
    pub(crate) producer: u64,
    pub(crate) topic: Arc<str>,
    /// The batch exactly as it will be (re-)sent.
    pub(crate) bytes: Bytes,
    pub(crate) producer_id: u64,
    pub(crate) base_sequence: u64,
    pub(crate) count: u32,
    /// One per record, in record order.
    pub(crate) waiters: Vec<oneshot::Sender<Result<Receipt>>>,
    /// Held for their drop: released when the batch is confirmed or failed.
    pub(crate) _permits: Permits,
}

/// A subscription as the connection task keeps it.
pub(crate) struct SubRegistration {
    pub(crate) shared: Arc<SubShared>,
    pub(crate) topic: String,
    pub(crate) group: Option<String>,
    pub(crate) start: StartPosition,
    pub(crate) prefetch_messages: u32,
    pub(crate) prefetch_bytes: u32,
    pub(crate) ack_timeout_ms: u32,
    pub(crate) max_deliveries: u32,
    /// To the subscription stream. Unbounded on purpose: the connection task
    /// must never wait on one slow consumer (that would stall every other
    /// subscription and every publish confirm). The broker's credit window
    /// bounds it instead: at most `prefetch_messages` deliveries per
    /// connection epoch are unconsumed at once.
    pub(crate) tx: mpsc::UnboundedSender<SubItem>,
}

/// What a subscription stream receives.
pub(crate) enum SubItem {
    /// A delivery, tagged with the epoch (one per (re)subscribe) it came in.
    Deliver { epoch: u64, deliver: Deliver },
    /// The broker recorded these acks durably; the filter may forget them.
    AcksDurable(Vec<(u64, u64)>),
    /// The subscription ended with an error (re-subscribe refused, the
    /// broker ended it with SubscriptionError, reconnecting gave up).
    Failed(crate::Error),
    /// Records deleted by retention before they were delivered (the
    /// broker's Skipped push); the subscription goes on.
    Skipped { first: u64, last: u64 },
}
