//! The pipelined, idempotent producer.
//!
//! `send` queues a record and returns at once (unless the publish buffer is
//! full); a background batcher per producer packs whatever is queued into
//! one batch whenever the connection can take another (linger zero: no
//! waiting for a batch to fill), with up to `max_inflight_batches` batches
//! awaiting confirms. Each batch carries the producer's id and the sequence
//! number of its first record, so re-sending it after a reconnect stores it
//! once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use herald_protocol::batch::BATCH_HEADER_LEN;
use herald_protocol::{BatchBuilder, RecordRef};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::command::{Command, Permits, PublishBatch};
use crate::config::{ClientConfig, OverflowPolicy};
use crate::connection::ConnShared;
use crate::message::now_ms;
use crate::{Error, Receipt, Record, Result};

/// Longest topic name the broker accepts.
pub const MAX_TOPIC_LEN: usize = 200;

/// The client-wide publish buffer: messages and bytes accepted by `send`
/// and not yet confirmed or failed.
#[derive(Debug)]
pub(crate) struct Budget {
    messages: Semaphore,
    bytes: Semaphore,
    max_bytes: usize,
    policy: OverflowPolicy,
}

impl Budget {
    pub(crate) fn new(cfg: &ClientConfig) -> Budget {
        let cap = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            messages: Semaphore::new(cap(cfg.max_buffered_messages)),
            bytes: Semaphore::new(cap(cfg.max_buffered_bytes)),
            max_bytes: cap(cfg.max_buffered_bytes),
            policy: cfg.overflow,
        }
    }

    /// Takes room for one record of `bytes` bytes; the caller counts it
    /// into a [`Permits`] that gives it back.
    async fn acquire(&self, bytes: usize) -> Result<usize> {
        let bytes = u32::try_from(bytes.max(1))
            .map_err(|_| Error::InvalidArgument("record over 4 GiB".into()))?;
        if bytes as usize > self.max_bytes {
            return Err(Error::InvalidArgument(format!(
                "record of {bytes} bytes exceeds the publish buffer of {} bytes",
                self.max_bytes
            )));
        }
        let closed = |_| Error::ConnectionLost("client closed".into());
        match self.policy {
            OverflowPolicy::Wait => {
                self.messages.acquire().await.map_err(closed)?.forget();
                match self.bytes.acquire_many(bytes).await {
                    Ok(p) => p.forget(),
                    Err(e) => {
                        self.messages.add_permits(1);
                        return Err(closed(e));
                    }
                }
            }
            OverflowPolicy::Fail => {
                let m = self.messages.try_acquire();
                let b = self.bytes.try_acquire_many(bytes);
                match (m, b) {
                    (Ok(m), Ok(b)) => {
                        m.forget();
                        b.forget();
                    }
                    _ => return Err(Error::BufferFull),
                }
            }
        }
        Ok(bytes as usize)
    }

    /// Gives back room taken by [`Budget::acquire`].
    pub(crate) fn release(&self, messages: usize, bytes: usize) {
        if messages > 0 {
            self.messages.add_permits(messages);
        }
        if bytes > 0 {
            self.bytes.add_permits(bytes);
        }
    }
}

/// A record waiting for the batcher.
struct Queued {
    record: Record,
    timestamp: Option<i64>,
    waiter: oneshot::Sender<Result<Receipt>>,
    /// Bytes of the publish buffer this record holds (and one message).
    bytes: usize,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Queued>,
    /// Every [`Producer`] handle is gone: drain and stop.
    closed: bool,
}

/// State shared by a producer's handles and its batcher task.
struct ProducerShared {
    topic: Arc<str>,
    /// A std mutex: held for a push or a drain, never across an await.
    queue: Mutex<Queue>,
    notify: Notify,
    budget: Arc<Budget>,
    conn: Arc<ConnShared>,
    max_batch_records: usize,
    max_batch_bytes: usize,
}

impl ProducerShared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The batch size limit: ours, capped by the broker's.
    fn batch_limit(&self) -> usize {
        let broker = self
            .conn
            .max_batch
            .load(std::sync::atomic::Ordering::Relaxed);
        if broker == 0 {
            self.max_batch_bytes
        } else {
            self.max_batch_bytes.min(broker)
        }
    }
}

/// Marks the queue closed when the last [`Producer`] clone is dropped.
struct CloseOnDrop(Arc<ProducerShared>);
impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.notify.notify_one();
    }
}

/// A pipelined, idempotent producer for one topic; from
/// [`crate::Client::producer`]. Cheap to clone; clones share the batcher.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> herald_client::Result<()> {
/// let producer = client.producer("orders");
/// let mut pending = Vec::new();
/// for i in 0..1000 {
///     pending.push(producer.send(format!("order {i}")).await?);
/// }
/// for p in pending {
///     let receipt = p.await?;
///     println!("stored at {}", receipt.offset);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.inner.0.topic)
            .finish()
    }
}

impl Producer {
    pub(crate) fn spawn(
        local_id: u64,
        producer_id: u64,
        topic: &str,
        cfg: &ClientConfig,
        budget: Arc<Budget>,
        conn: Arc<ConnShared>,
        cmd_tx: mpsc::Sender<Command>,
    ) -> Producer {
        let shared = Arc::new(ProducerShared {
            topic: topic.into(),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            budget,
            conn,
            max_batch_records: cfg.max_batch_records.max(1),
            max_batch_bytes: cfg.max_batch_bytes.max(BATCH_HEADER_LEN + 64),
        });
        let inflight = Arc::new(Semaphore::new(cfg.max_inflight_batches.max(1)));
        tokio::spawn(batcher(
            local_id,
            producer_id,
            shared.clone(),
            inflight,
            cmd_tx,
        ));
        Producer {
            inner: Arc::new(CloseOnDrop(shared)),
        }
    }

    /// The topic this producer publishes to.
    pub fn topic(&self) -> &str {
        &self.inner.0.topic
    }

    /// Queues a payload; see [`Producer::send_record`].
    ///
    /// # Errors
    /// As [`Producer::send_record`].
    pub async fn send(&self, payload: impl Into<bytes::Bytes>) -> Result<PendingReceipt> {
        self.send_record(Record::new(payload)).await
    }

    /// Queues a record and returns a future of its [`Receipt`], which
    /// resolves once the broker confirmed the record durable (or failed).
    ///
    /// Waits only when the client's publish buffer is full and the overflow
    /// policy is [`OverflowPolicy::Wait`].
    ///
    /// # Errors
    /// [`Error::BufferFull`] (policy `Fail`), [`Error::InvalidArgument`] for
    /// a record too large for one batch, [`Error::ConnectionLost`] once the
    /// client is closed.
    pub async fn send_record(&self, record: impl Into<Record>) -> Result<PendingReceipt> {
        let record = record.into();
        let shared = &self.inner.0;
        if shared.topic.is_empty() || shared.topic.len() > MAX_TOPIC_LEN {
            return Err(Error::InvalidArgument(format!(
                "topic name must be 1 to {MAX_TOPIC_LEN} bytes, got {}",
                shared.topic.len()
            )));
        }
        record.validate()?;
        let size = record.encoded_len();
        let limit = shared.batch_limit();
        if size + BATCH_HEADER_LEN > limit {
            return Err(Error::InvalidArgument(format!(
                "record of {size} bytes does not fit a batch of at most {limit} bytes"
            )));
        }
        let bytes = shared.budget.acquire(size).await?;
        let (tx, rx) = oneshot::channel();
        // Records without a time of their own get their batch's time: one
        // clock read per batch rather than per record.
        let timestamp = record.timestamp;
        {
            let mut q = shared.lock();
            if q.closed {
                shared.budget.release(1, bytes);
                return Err(Error::ConnectionLost("producer closed".into()));
            }
            q.records.push_back(Queued {
                record,
                timestamp,
                waiter: tx,
                bytes,
            });
        }
        shared.notify.notify_one();
        Ok(PendingReceipt { rx })
    }
}

/// The receipt of a queued publish, as a future: resolves once the broker
/// confirmed the record (with its offset) or the publish failed for good.
#[derive(Debug)]
#[must_use = "a publish is only known to be stored once its receipt resolves"]
pub struct PendingReceipt {
    rx: oneshot::Receiver<Result<Receipt>>,
}

impl Future for PendingReceipt {
    type Output = Result<Receipt>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Receipt>> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(_) => Err(Error::ConnectionLost("client closed".into())),
        })
    }
}

/// Bytes of records the next batch will take from `records`, by the same
/// rule the batcher's loop applies (at least one record, then up to the
/// record and byte limits).
fn batch_bytes(records: &VecDeque<Queued>, max_records: usize, limit: usize) -> usize {
    let mut total = BATCH_HEADER_LEN;
    for (n, qd) in records.iter().enumerate() {
        let size = qd.record.encoded_len();
        if n > 0 && (n >= max_records || total + size > limit) {
            break;
        }
        total += size;
    }
    total - BATCH_HEADER_LEN
}

/// Packs queued records into batches and hands them to the connection
/// task, keeping at most `inflight` batches unconfirmed.
async fn batcher(
    local_id: u64,
    producer_id: u64,
    shared: Arc<ProducerShared>,
    inflight: Arc<Semaphore>,
    cmd_tx: mpsc::Sender<Command>,
) {
    let mut next_seq: u64 = 0;
    let mut builder = BatchBuilder::new();
    loop {
        let notified = shared.notify.notified();
        let (empty, closed) = {
            let q = shared.lock();
            (q.records.is_empty(), q.closed)
        };
        if empty {
            if closed {
                return;
            }
            notified.await;
            continue;
        }
        let Ok(slot) = inflight.clone().acquire_owned().await else {
            return;
        };
        let limit = shared.batch_limit();
        let mut waiters = Vec::new();
        let mut permits = Permits {
            budget: shared.budget.clone(),
            messages: 0,
            bytes: 0,
            _slot: Some(slot),
        };
        let batch_time = now_ms();
        {
            let mut q = shared.lock();
            builder.reserve(batch_bytes(&q.records, shared.max_batch_records, limit));
            while let Some(next) = q.records.front() {
                let size = next.record.encoded_len();
                if !builder.is_empty()
                    && (builder.len() as usize >= shared.max_batch_records
                        || builder.encoded_len() + size > limit)
                {
                    break;
                }
                let Some(qd) = q.records.pop_front() else {
                    break;
                };
                let headers: Vec<(&str, &[u8])> = qd
                    .record
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), &v[..]))
                    .collect();
                builder.push(&RecordRef {
                    key: &qd.record.key,
                    headers: &headers,
                    payload: &qd.record.payload,
                    timestamp: qd.timestamp.unwrap_or(batch_time),
                });
                waiters.push(qd.waiter);
                permits.messages += 1;
                permits.bytes += qd.bytes;
            }
        }
        if builder.is_empty() {
            continue;
        }
        let count = builder.len();
        let bytes = builder.finish(producer_id, next_seq);
        let batch = PublishBatch {
            producer: local_id,
            topic: shared.topic.clone(),
            bytes,
            producer_id,
            base_sequence: next_seq,
            count,
            waiters,
            _permits: permits,
        };
        next_seq += u64::from(count);
        if cmd_tx.send(Command::Publish(batch)).await.is_err() {
            // The connection task is gone; the waiters were dropped with
            // the batch and report the loss. Fail whatever is still queued.
            let mut q = shared.lock();
            let (n, bytes) = (q.records.len(), q.records.iter().map(|r| r.bytes).sum());
            q.records.clear();
            shared.budget.release(n, bytes);
            return;
        }
    }
}
