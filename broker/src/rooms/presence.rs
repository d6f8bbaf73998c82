//! Presence: `join`, `leave`, `connect` and `disconnect` events, delivered
//! to the *other* members of the room concerned, in their inboxes, as
//! records of kind `presence` whose `herald-sender` is the client whose
//! presence changed and whose `herald-room` is the room.
//!
//! Inboxes rather than a separate presence topic: a member sees presence
//! and events interleaved in the order they happened, offline durable
//! members learn who came and went, and a client reads one stream.

use super::inbox::{self, Entry};
use super::{Recipients, Rooms};
use herald_protocol::rooms::headers;

/// One presence change and who must hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: &'static str,
    pub room: String,
    /// The client whose presence changed.
    pub subject: String,
    pub recipients: Vec<String>,
}

impl Notice {
    pub fn new(event: &'static str, room: &str, subject: &str, recipients: Vec<String>) -> Notice {
        Notice {
            event,
            room: room.to_owned(),
            subject: subject.to_owned(),
            recipients,
        }
    }
}

/// Appends every notice to its recipients' inboxes and waits until they
/// are durable. Failures are logged: presence is information, and the
/// change it reports has happened either way.
pub async fn deliver(rooms: &Rooms, notices: Vec<Notice>) {
    for n in notices {
        if n.recipients.is_empty() {
            continue;
        }
        let to: Recipients = n
            .recipients
            .iter()
            .map(|c| (c.clone(), Some(n.room.clone())))
            .collect();
        let entry = |room: Option<&str>| {
            Entry {
                kind: headers::KIND_PRESENCE,
                event: n.event,
                sender: &n.subject,
                room,
                correlation: 0,
                reply_to: None,
                payload: &[],
            }
            .batch()
        };
        let r = match inbox::fan_out(rooms, &to, false, entry).await {
            Ok(f) => f.wait().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::debug!(event = n.event, room = %n.room, error = %e, "presence not delivered");
        }
    }
}
