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

impl Entry<'_> {
    /// The record as a one-record batch (producer id 0: not idempotent; an
    /// emit re-sent after a reconnect is delivered again).
    pub fn batch(&self) -> Batch {
        let correlation = self.correlation.to_string();
        let mut h: Vec<(&str, &[u8])> = vec![
            (headers::KIND, self.kind.as_bytes()),
            (headers::SENDER, self.sender.as_bytes()),
        ];
        if let Some(r) = self.room {
            h.push((headers::ROOM, r.as_bytes()));
        }
        if let Some(to) = self.reply_to {
            h.push((headers::REPLY_TO, to.as_bytes()));
        }
        if self.correlation != 0 {
            h.push((headers::CORRELATION, correlation.as_bytes()));
        }
        if self.except_sender {
            h.push((headers::EXCEPT_SENDER, b"1"));
        }
        if let Some(id) = self.emit_id {
            h.push((headers::EMIT_ID, id.as_bytes()));
        }
        let mut b = BatchBuilder::new();
        b.push(&RecordRef {
            key: self.event.as_bytes(),
            headers: &h,
            payload: self.payload,
            timestamp: now_ms(),
        });
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
        let t = topic(rooms, client)?;
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
