//! Inboxes: the topic `_inbox.<client id>` of every client id, read by the
//! group [`INBOX_GROUP`]. Everything addressed to one client (direct events,
//! requests, replies, emits to everyone) is one record in its inbox; room
//! events are in the room's log ([`super::log`]), in the same form:
//!
//! ```text
//! key      the event name
//! headers  herald-kind (event | presence | reply), herald-sender,
//!          herald-room (room events and presence),
//!          herald-reply-to + herald-correlation (requests),
//!          herald-correlation (replies)
//! payload  the event's payload
//! ```
//! Per-inbox order is the order appends were queued, so each member sees a
//! sender's events in the order they were emitted.

use std::sync::Arc;

use herald_protocol::batch::BATCH_HEADER_LEN;
use herald_protocol::rooms::headers;
use herald_protocol::{Batch, BatchBuilder, EmitOk, RecordRef, TopicConfig};

use super::{Recipients, Rooms};
use crate::config::BrokerConfig;
use crate::storage::PendingAppend;
use crate::topic::name::{self, MAX_NAME_LEN};
use crate::topic::Topic;
use crate::BrokerError;

/// Prefix of inbox topic names.
pub const INBOX_PREFIX: &str = "_inbox.";
/// The group that reads an inbox.
pub const INBOX_GROUP: &str = "inbox";

/// The inbox topic of `client`.
pub fn topic_name(client: &str) -> String {
    format!("{INBOX_PREFIX}{client}")
}

/// Checks that `client` can have an inbox: a topic name's characters
/// (`A-Z a-z 0-9 . _ -`, not starting with a dot), short enough for the
/// prefix.
///
/// # Errors
/// [`BrokerError::InvalidArgument`] naming the problem.
pub fn validate_client_id(client: &str) -> Result<(), BrokerError> {
    name::validate("client id", client)?;
    let max = MAX_NAME_LEN - INBOX_PREFIX.len();
    if client.len() > max {
        return Err(BrokerError::InvalidArgument(format!(
            "client id {client:?} is {} bytes; rooms and inboxes allow at most {max}",
            client.len()
        )));
    }
    Ok(())
}

/// One inbox record, before it is built.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub kind: &'a str,
    pub event: &'a str,
    pub sender: &'a str,
    pub room: Option<&'a str>,
    /// Nonzero on requests (with `reply_to`) and replies.
    pub correlation: u64,
    pub reply_to: Option<&'a str>,
    /// A room event not for its sender (a broadcast).
    pub except_sender: bool,
    /// Set on each room's copy of an event emitted to several rooms.
    pub emit_id: Option<&'a str>,
    pub payload: &'a [u8],
}

#[cfg(test)]
impl<'a> Entry<'a> {
    /// A plain event from `sender`: no room, no request, no flags (tests
    /// set what they need on top).
    pub(crate) fn plain(event: &'a str, sender: &'a str, payload: &'a [u8]) -> Entry<'a> {
        Entry {
            kind: "event",
            event,
            sender,
            room: None,
            correlation: 0,
            reply_to: None,
            except_sender: false,
            emit_id: None,
            payload,
        }
    }
}

impl Entry<'_> {
    /// The record as a one-record batch (producer id 0: not idempotent; an
    /// emit re-sent after a reconnect is delivered again).
    ///
    /// Built in one allocation of the record's size: this runs once per
    /// emit, and a builder's default capacity (16 KiB) is a large allocation
    /// for the allocator, most of the emit path's cost in a profile.
    pub fn batch(&self) -> Batch {
        let correlation = (self.correlation != 0).then(|| self.correlation.to_string());
        let correlation = correlation.as_deref().map(str::as_bytes);
        let optional = [
            self.room.map(|r| (headers::ROOM, r.as_bytes())),
            self.reply_to.map(|to| (headers::REPLY_TO, to.as_bytes())),
            correlation.map(|c| (headers::CORRELATION, c)),
            self.except_sender
                .then_some((headers::EXCEPT_SENDER, &b"1"[..])),
            self.emit_id.map(|id| (headers::EMIT_ID, id.as_bytes())),
        ];
        let mut h: [(&str, &[u8]); 7] = [
            (headers::KIND, self.kind.as_bytes()),
            (headers::SENDER, self.sender.as_bytes()),
            ("", b""),
            ("", b""),
            ("", b""),
            ("", b""),
            ("", b""),
        ];
        let mut n = 2;
        for header in optional.into_iter().flatten() {
            h[n] = header;
            n += 1;
        }
        let record = RecordRef {
            key: self.event.as_bytes(),
            headers: &h[..n],
            payload: self.payload,
            timestamp: now_ms(),
        };
        let mut b =
            BatchBuilder::with_capacity(BATCH_HEADER_LEN + BatchBuilder::record_size(&record));
        b.push(&record);
        Batch::from_trusted(b.finish(0, 0))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The inbox topic of `client`, created with the inbox retention.
///
/// # Errors
/// As [`crate::topic::Registry::create`].
pub fn topic(rooms: &Rooms, client: &str) -> Result<Arc<Topic>, BrokerError> {
    rooms
        .registry()
        .create(&topic_name(client), &config(rooms.config()), true)
}

/// The inbox of `client`, created if needed, to append to: a subscription
/// of its reader that waits for it to exist joins it now
/// ([`super::waiting`]).
///
/// # Errors
/// As [`topic`].
pub fn for_append(rooms: &Rooms, client: &str) -> Result<Arc<Topic>, BrokerError> {
    let t = topic(rooms, client)?;
    rooms.inbox_waiters.wake(client, &t);
    Ok(t)
}

/// The settings every inbox is created with.
pub fn config(c: &BrokerConfig) -> TopicConfig {
    TopicConfig {
        retention_ms: Some(c.inbox_retention.as_millis() as u64),
        retention_bytes: Some(c.inbox_retention_bytes),
        ..TopicConfig::default()
    }
}

/// Records in `topic` its reader has not acknowledged yet.
///
/// # Errors
/// The group cannot be started or has stopped.
pub async fn pending(topic: &Arc<Topic>) -> Result<u64, BrokerError> {
    let info = topic.group(INBOX_GROUP)?.info().await?;
    // No group yet: its reader never subscribed, everything is pending.
    let floor = info.map_or(0, |i| i.ack_floor);
    let from = floor.max(topic.log.first_offset());
    Ok(topic.log.next_offset().saturating_sub(from))
}

/// Appends queued for several logs (room logs, inboxes); [`Fanout::wait`]
/// resolves once every one is durable.
#[derive(Default)]
pub struct Fanout {
    pub(super) appends: Vec<(Arc<Topic>, PendingAppend)>,
    pub(super) skipped: u32,
    /// Clients reached, reported in `EmitOk.recipients`.
    pub(super) reached: u32,
}

/// Queues one record per recipient, in recipient order. A recipient whose
/// inbox is at `max_inbox_pending` is an error when `strict` (a direct
/// emit or reply: the caller must know), and is skipped otherwise (one
/// absent member must not block a room).
///
/// # Errors
/// A full inbox when `strict`; storage errors queuing an append.
pub async fn fan_out(
    rooms: &Rooms,
    recipients: &Recipients,
    strict: bool,
    entry: impl Fn(Option<&str>) -> Batch,
) -> Result<Fanout, BrokerError> {
    let max = rooms.config().max_inbox_pending;
    let mut out = Fanout {
        appends: Vec::with_capacity(recipients.len()),
        ..Fanout::default()
    };
    for (client, room) in recipients {
        let t = for_append(rooms, client)?;
        let n = pending(&t).await?;
        if n >= max {
            if strict {
                return Err(BrokerError::Busy(format!(
                    "inbox of {client:?} holds {n} pending events; the limit max_inbox_pending is {max}"
                )));
            }
            tracing::debug!(%client, pending = n, "inbox full; event skipped");
            out.skipped += 1;
            continue;
        }
        let p = t.log.enqueue(entry(room.as_deref())).await?;
        out.appends.push((t, p));
        out.reached += 1;
    }
    Ok(out)
}

impl Fanout {
    /// Waits until every append is durable.
    ///
    /// # Errors
    /// The first failed append (the others may have been stored: an emit
    /// is at least once to each recipient, not atomic across them).
    pub async fn wait(self) -> Result<EmitOk, BrokerError> {
        for (t, p) in self.appends {
            let o = p.wait().await?;
            t.record_appended(o.count);
        }
        Ok(EmitOk {
            recipients: self.reached,
            skipped: self.skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(String, Vec<u8>)>;

    /// The one record of `e`'s batch: its headers, key and payload.
    fn headers_of(e: &Entry<'_>) -> (Headers, Vec<u8>, Vec<u8>) {
        let batch = e.batch();
        herald_protocol::batch::check(batch.bytes()).unwrap();
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        let h = r
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect();
        (h, r.key.to_vec(), r.payload.to_vec())
    }

    fn owned(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn an_entry_is_one_record_with_the_headers_it_has_in_order() {
        let plain = Entry::plain("chat", "alice", b"hi");
        let (h, key, payload) = headers_of(&plain);
        assert_eq!(
            h,
            owned(&[(headers::KIND, b"event"), (headers::SENDER, b"alice")])
        );
        assert_eq!(
            (key.as_slice(), payload.as_slice()),
            (&b"chat"[..], &b"hi"[..])
        );

        let full = Entry {
            room: Some("lobby"),
            correlation: 42,
            reply_to: Some("_inbox.alice"),
            except_sender: true,
            emit_id: Some("e-7"),
            ..plain
        };
        let (h, _, _) = headers_of(&full);
        assert_eq!(
            h,
            owned(&[
                (headers::KIND, b"event"),
                (headers::SENDER, b"alice"),
                (headers::ROOM, b"lobby"),
                (headers::REPLY_TO, b"_inbox.alice"),
                (headers::CORRELATION, b"42"),
                (headers::EXCEPT_SENDER, b"1"),
                (headers::EMIT_ID, b"e-7"),
            ])
        );
    }
}
