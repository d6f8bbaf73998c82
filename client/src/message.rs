//! Messages: [`Record`] going out, [`Message`] coming in, [`Receipt`] of a
//! confirmed publish.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_protocol::AckKind;

use crate::acks::SubShared;
use crate::{Error, Result};

/// A record to publish: a payload plus an optional key and headers.
///
/// ```
/// use herald_client::Record;
/// let r = Record::new("total=42").key("order-7").header("content-type", "text/plain");
/// assert_eq!(r.payload(), "total=42");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub(crate) payload: Bytes,
    pub(crate) key: Bytes,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) timestamp: Option<i64>,
}

impl Record {
    /// A record with this payload, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record {
            payload: payload.into(),
            ..Record::default()
        }
    }

    /// Sets the key (empty means no key).
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = key.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the producer timestamp (ms since the Unix epoch); defaults to
    /// the time the record is queued.
    pub fn timestamp(mut self, ms: i64) -> Record {
        self.timestamp = Some(ms);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Bytes this record occupies in a batch.
    pub(crate) fn encoded_len(&self) -> usize {
        4 + herald_protocol::batch::RECORD_FIXED_LEN
            + self.key.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>()
            + self.payload.len()
    }

    /// Checks the limits the batch layout imposes.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.headers.len() > u16::MAX as usize {
            return Err(Error::InvalidArgument("more than 65535 headers".into()));
        }
        if self
            .headers
            .iter()
            .any(|(n, _)| n.len() > u16::MAX as usize)
        {
            return Err(Error::InvalidArgument(
                "header name over 65535 bytes".into(),
            ));
        }
        Ok(())
    }
}

impl<T: Into<Bytes>> From<T> for Record {
    fn from(payload: T) -> Record {
        Record::new(payload)
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Proof that the broker stored a publish durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The offset the record was stored at; `u64::MAX` for a duplicate
    /// whose original offsets the broker no longer knows (older than its
    /// window of recent batches, or re-sent with other batch boundaries).
    pub offset: u64,
    /// The broker recognised a re-sent batch (after a reconnect) and
    /// answered with the offsets it stored the first time.
    pub duplicate: bool,
}

/// A message received from a subscription.
///
/// Its payload, key and headers are slices of the received batch (no copy).
/// For group subscriptions, finish it with [`Message::ack`] (or nack,
/// extend, terminate); acks are batched and sent in the background.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) record: herald_protocol::Record,
    pub(crate) delivery_count: u32,
    pub(crate) sub: Arc<SubShared>,
}

impl Message {
    /// The offset of the message in its topic.
    pub fn offset(&self) -> u64 {
        self.record.offset
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.record.payload
    }
    /// The key, if the record has one.
    pub fn key(&self) -> Option<&Bytes> {
        (!self.record.key.is_empty()).then_some(&self.record.key)
    }
    /// The headers, in the order they were added.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.record.headers()
    }
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.record
            .headers()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
    /// The producer's timestamp, ms since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.record.timestamp
    }
    /// 1 on first delivery, more when the broker redelivers it (ack
    /// timeout, nack, another member's crash).
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.sub.topic
    }

    fn record(&self, kind: AckKind) -> Result<()> {
        if self.sub.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::ConnectionLost("subscription closed".into()));
        }
        self.sub.record(kind, self.record.offset, self.weight());
        Ok(())
    }

    /// What this message counts for in the prefetch window's bytes, as far
    /// as the ack flush rule cares ([`crate::acks::SubShared::new`]).
    fn weight(&self) -> usize {
        self.record.payload.len() + self.record.key.len()
    }

    /// [`Message::ack`] without the future, for the client's own tasks.
    pub(crate) fn ack_now(&self) -> Result<()> {
        self.record(AckKind::Ack)
    }

    /// Done with this message: the group will not deliver it again.
    ///
    /// Returns once the ack is queued; it is sent within 20 ms (within
    /// 2 s while its subscription has fewer than 8 pending) together
    /// with other acks (at once when half the prefetch window is acked),
    /// and re-sent after a reconnect if needed. From now on this client
    /// never yields the message again.
    /// A no-op on ephemeral subscriptions, which need no acks.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] once the subscription is closed.
    pub async fn ack(&self) -> Result<()> {
        self.record(AckKind::Ack)
    }

    /// Done with this message, and wait until the broker has recorded the
    /// ack durably (the group will not deliver the message again, even
    /// after a broker restart).
    ///
    /// The ack is sent at once, with every other ack pending on the
    /// connection (acks awaited concurrently share frames), and waits for
    /// the broker's next state write (a few milliseconds). Returns at once
    /// on ephemeral subscriptions.
    ///
    /// # Errors
    /// [`Error::Broker`] when the broker could not write the ack:
    /// `StorageFull` (its disk is full) or `Internal` (another I/O failure).
    /// The ack is not lost: the broker keeps it in memory and keeps trying
    /// to write it, this client re-sends it after a reconnect, and the
    /// subscription never yields the message again; but until it is
    /// written a broker crash would deliver it again.
    /// [`Error::ConnectionLost`] when the subscription or the client closed
    /// before the broker answered.
    pub async fn ack_confirmed(&self) -> Result<()> {
        if self.sub.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::ConnectionLost("subscription closed".into()));
        }
        if !self.sub.group {
            return Ok(());
        }
        let Some(answer) = self.sub.record_awaited(self.record.offset, self.weight()) else {
            return Err(Error::ConnectionLost("subscription closed".into()));
        };
        answer.await.map_err(|_| {
            Error::ConnectionLost(
                "the subscription closed before the broker confirmed the ack".into(),
            )
        })?
    }

    /// Not done: redeliver after `delay` (to this or another member).
    ///
    /// # Errors
    /// As [`Message::ack`].
    pub async fn nack(&self, delay: Duration) -> Result<()> {
        let delay_ms = delay.as_millis().min(u32::MAX as u128) as u32;
        self.record(AckKind::Nack { delay_ms })
    }

    /// Still working on it: push the ack deadline out by one ack timeout.
    ///
    /// # Errors
    /// As [`Message::ack`].
    pub async fn extend(&self) -> Result<()> {
        self.record(AckKind::Extend)
    }

    /// Never deliver it again (it counts as done, without being processed).
    ///
    /// # Errors
    /// As [`Message::ack`].
    pub async fn terminate(&self) -> Result<()> {
        self.record(AckKind::Terminate)
    }
}
