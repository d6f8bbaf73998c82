//! Subscriptions: a builder that subscribes, and the [`Subscription`]
//! stream of messages.
//!
//! Deliveries, and the broker's confirmations that acks are durable, reach
//! the stream through one FIFO channel in the order the broker sent them.
//! That order is what makes the ack filter exact: the broker answers an ack
//! only after every delivery it queued before the ack took effect
//! (docs/protocol.md, section 6.4), so a redelivery of an acked offset is
//! still checked against the filter before the filter forgets the offset.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use herald_protocol::batch::Records;
use herald_protocol::StartPosition;
use tokio::sync::{mpsc, oneshot};

use crate::acks::SubShared;
use crate::command::{Command, SubItem, SubRegistration};
use crate::{Client, Error, Message, Result};

/// Default prefetch window in messages. 10,000 small messages keep the
/// pipe full: a group consumer with 1,000 took 395-416 k msg/s where 10,000
/// took 1.21-1.27 M (`herald bench sub --embedded --count 500000`, three
/// rounds each, 2026-12-02). The byte window below still bounds large
/// messages, and the broker's memory budget bounds what it buffers.
pub const DEFAULT_PREFETCH: u32 = 10_000;
/// Default prefetch window in bytes.
pub const DEFAULT_PREFETCH_BYTES: u32 = 16 << 20;

/// Configures a subscription; `.await` it to subscribe. From
/// [`Client::subscribe`].
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> herald_client::Result<()> {
/// use herald_client::Start;
/// let sub = client
///     .subscribe("orders")
///     .group("billing")
///     .start(Start::Earliest)
///     .prefetch(500)
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a subscription is only made when the builder is awaited"]
#[derive(Debug)]
pub struct SubscribeBuilder {
    client: Client,
    topic: String,
    group: Option<String>,
    start: StartPosition,
    prefetch: u32,
    prefetch_bytes: u32,
    ack_timeout: Option<Duration>,
    max_deliveries: u32,
}

impl SubscribeBuilder {
    pub(crate) fn new(client: Client, topic: String) -> SubscribeBuilder {
        SubscribeBuilder {
            client,
            topic,
            group: None,
            start: StartPosition::Resume,
            prefetch: DEFAULT_PREFETCH,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            ack_timeout: None,
            max_deliveries: 0,
        }
    }

    /// Joins a durable group: members share the messages, acks are kept by
    /// the broker, and `Start::Resume` is the group's committed position.
    /// Without a group the subscription is ephemeral (no acks).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Where to start (default [`StartPosition::Resume`]). After a
    /// reconnect the client always resumes, whatever was asked here.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Most messages delivered and not yet acked (group) or consumed
    /// (ephemeral). Default [`DEFAULT_PREFETCH`].
    pub fn prefetch(mut self, messages: u32) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// Most bytes delivered and not yet released. Default
    /// [`DEFAULT_PREFETCH_BYTES`].
    pub fn prefetch_bytes(mut self, bytes: u32) -> Self {
        self.prefetch_bytes = bytes.max(1);
        self
    }

    /// How long a delivery may stay unacked before the group redelivers it
    /// (default: the broker's).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }

    /// Deliveries before a message is dead-lettered (default: the broker's).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    async fn subscribe(self) -> Result<Subscription> {
        if self.topic.is_empty() {
            return Err(Error::InvalidArgument("empty topic name".into()));
        }
        let inner = &self.client.inner;
        let local_id = inner.next_id();
        let shared = Arc::new(SubShared::new(
            local_id,
            self.group.is_some(),
            inner.conn.acks.clone(),
            self.topic.as_str().into(),
            (self.prefetch, self.prefetch_bytes),
            self.ack_timeout,
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        let ack_timeout_ms = self
            .ack_timeout
            .map(|d| d.as_millis().clamp(1, u32::MAX as u128) as u32)
            .unwrap_or(0);
        let reg = SubRegistration {
            shared: shared.clone(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            start: self.start,
            prefetch_messages: self.prefetch,
            prefetch_bytes: self.prefetch_bytes,
            ack_timeout_ms,
            max_deliveries: self.max_deliveries,
            tx,
        };
        let (reply, answer) = oneshot::channel();
        inner.command(Command::Subscribe { reg, reply }).await?;
        let start_offset = inner.await_reply(answer).await?;
        Ok(Subscription {
            shared,
            rx,
            cmd_tx: inner.cmd_tx.clone(),
            current: None,
            flow: Flow {
                epoch: 0,
                messages: 0,
                bytes: 0,
                window_messages: self.prefetch,
                window_bytes: self.prefetch_bytes,
            },
            start_offset,
            ended: false,
        })
    }
}

impl IntoFuture for SubscribeBuilder {
    type Output = Result<Subscription>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Subscription>> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.subscribe())
    }
}

/// The delivery being handed out record by record.
struct Current {
    epoch: u64,
    records: Records,
    first: u64,
    last: u64,
    delivery_count: u32,
    batch_bytes: u32,
}

/// Credit consumed and not yet returned (ephemeral subscriptions).
struct Flow {
    epoch: u64,
    messages: u32,
    bytes: u32,
    window_messages: u32,
    window_bytes: u32,
}

/// A stream of [`Message`]s from one subscription; from
/// [`Client::subscribe`]. It survives reconnects: the client re-subscribes
/// (resuming the group, or after the last message handed out for an
/// ephemeral subscription) and never yields a message it already acked.
///
/// Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<SubShared>,
    rx: mpsc::UnboundedReceiver<SubItem>,
    cmd_tx: mpsc::Sender<Command>,
    current: Option<Current>,
    flow: Flow,
    start_offset: u64,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.shared.topic)
            .field("group", &self.shared.group)
            .finish()
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The first offset the broker offered when the subscription was made.
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }

    /// Acks every offset up to and including `offset` (group
    /// subscriptions; a no-op otherwise). Queued like [`Message::ack`].
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] once the subscription is closed.
    pub async fn ack_up_to(&self, offset: u64) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::ConnectionLost("subscription closed".into()));
        }
        self.shared.record_up_to(offset);
        Ok(())
    }

    /// Unsubscribes and waits for the broker's answer. Acks recorded before
    /// are sent first.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] if the client is gone, [`Error::Timeout`].
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.ended = true;
        let client_gone = || Error::ConnectionLost("client closed".into());
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Unsubscribe {
            local_id: self.shared.local_id,
            reply: Some(reply),
        };
        self.cmd_tx.send(cmd).await.map_err(|_| client_gone())?;
        answer.await.map_err(|_| client_gone())?
    }

    /// Counts credit consumed in `epoch` and returns it to the broker once
    /// half the window is used.
    fn credit(&mut self, epoch: u64, messages: u32, bytes: u32) {
        if self.shared.group {
            return;
        }
        let f = &mut self.flow;
        if f.epoch != epoch {
            // Credit of an earlier connection is gone with it.
            f.epoch = epoch;
            f.messages = 0;
            f.bytes = 0;
        }
        f.messages += messages;
        f.bytes = f.bytes.saturating_add(bytes);
        if f.messages < f.window_messages.div_ceil(2) && f.bytes < f.window_bytes.div_ceil(2) {
            return;
        }
        let cmd = Command::Flow {
            local_id: self.shared.local_id,
            epoch,
            messages: f.messages,
            bytes: f.bytes,
        };
        f.messages = 0;
        f.bytes = 0;
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.cmd_tx.try_send(cmd) {
            // Never drop credit: without it the broker stops delivering.
            let tx = self.cmd_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }

    /// The next record of the current delivery that the app should see.
    fn next_from_current(&mut self) -> Option<Message> {
        loop {
            let cur = self.current.as_mut()?;
            let (epoch, first, last) = (cur.epoch, cur.first, cur.last);
            let rec = match cur.records.next() {
                Some(r) if r.offset > last => None,
                other => other,
            };
            let Some(rec) = rec else {
                let bytes = cur.batch_bytes;
                self.current = None;
                self.credit(epoch, 0, bytes);
                return None;
            };
            if rec.offset < first {
                continue;
            }
            let delivery_count = cur.delivery_count;
            self.credit(epoch, 1, 0);
            let seen = {
                let mut st = self.shared.lock();
                let seen = if self.shared.group {
                    st.is_done(rec.offset)
                } else {
                    st.last_delivered.is_some_and(|l| rec.offset <= l)
                };
                if !seen && st.last_delivered.is_none_or(|l| rec.offset > l) {
                    st.last_delivered = Some(rec.offset);
                }
                seen
            };
            if seen {
                continue;
            }
            return Some(Message {
                record: rec,
                delivery_count,
                sub: self.shared.clone(),
            });
        }
    }
}

impl Stream for Subscription {
    type Item = Result<Message>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if self.current.is_some() {
                if let Some(m) = self.next_from_current() {
                    return Poll::Ready(Some(Ok(m)));
                }
                continue;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(SubItem::Deliver { epoch, deliver })) => {
                    self.current = Some(Current {
                        epoch,
                        first: deliver.first_offset,
                        last: deliver.last_offset,
                        delivery_count: deliver.delivery_count,
                        batch_bytes: deliver.batch.len_bytes() as u32,
                        records: deliver.batch.records(),
                    });
                }
                Poll::Ready(Some(SubItem::AcksDurable(ranges))) => {
                    self.shared.lock().prune(&ranges)
                }
                Poll::Ready(Some(SubItem::Failed(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(SubItem::Skipped { first, last })) => {
                    return Poll::Ready(Some(Err(crate::Error::Skipped {
                        first,
                        last,
                        room: None,
                    })));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let cmd = Command::Unsubscribe {
            local_id: self.shared.local_id,
            reply: None,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.cmd_tx.try_send(cmd) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let tx = self.cmd_tx.clone();
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }
}
