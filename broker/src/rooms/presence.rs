//! Presence: `join`, `leave`, `connect` and `disconnect` records in the log
//! of the room concerned, of kind `presence`, whose `herald-sender` is the
//! client whose presence changed and whose `herald-room` is the room: one
//! append per change, whatever the number of members.
//!
//! In the room's log rather than a separate presence topic: a member sees
//! presence and events interleaved in the order they happened, and offline
//! durable members learn who came and went. The client the change is about
//! reads its own record too, and its client library drops it.

use super::inbox::Entry;
use super::{log, Rooms};
use herald_protocol::rooms::headers;

/// One presence change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: &'static str,
    pub room: String,
    /// The client whose presence changed.
    pub subject: String,
}

impl Notice {
    pub fn new(event: &'static str, room: &str, subject: &str) -> Notice {
        Notice {
            event,
            room: room.to_owned(),
            subject: subject.to_owned(),
        }
    }

    fn record(&self) -> herald_protocol::Batch {
        Entry {
            kind: headers::KIND_PRESENCE,
            event: self.event,
            sender: &self.subject,
            room: Some(&self.room),
            correlation: 0,
            reply_to: None,
            except_sender: false,
            emit_id: None,
            payload: &[],
        }
        .batch()
    }
}

/// Appends every notice to its room's log and waits until they are
/// durable. Failures are logged: presence is information, and the change
/// it reports has happened either way.
pub async fn deliver(rooms: &Rooms, notices: Vec<Notice>) {
    let mut queued = Vec::with_capacity(notices.len());
    for n in &notices {
        match log::append(rooms, &n.room, n.record()).await {
            Ok(q) => queued.push(q),
            Err(e) => {
                tracing::debug!(event = n.event, room = %n.room, error = %e, "presence not recorded")
            }
        }
    }
    for q in queued {
        match q.append.wait().await {
            Ok(o) => {
                q.topic.record_appended(o.count);
                rooms
                    .counters
                    .presence_events
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "presence not recorded"),
        }
    }
}
