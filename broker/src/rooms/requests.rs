//! The effect of each room request, called from the session's dispatch:
//! Join, Leave, Emit, Members, Reply. Each returns what the session sends
//! back, or a future of it when it waits for appends to be durable.

use futures::future::BoxFuture;
use herald_protocol::rooms::headers;
use herald_protocol::{
    Emit, EmitTarget, JoinRoom, MemberList, Message, ReplyTo, RoomName, RESERVED_EVENTS,
};
use std::sync::Arc;

use super::inbox::{self, Entry, Fanout};
use super::{presence, Recipients, Rooms};
use crate::BrokerError;

/// Longest event name.
pub const MAX_EVENT_NAME: usize = 200;

/// A reply, possibly still waiting on appends.
pub type Pending = BoxFuture<'static, Message>;

fn ok_after(rooms: Arc<Rooms>, notices: Vec<presence::Notice>) -> Pending {
    Box::pin(async move {
        presence::deliver(&rooms, notices).await;
        Message::Ok
    })
}

/// Join: the membership changes now (so a later request of the same
/// session sees it); the reply waits for the presence events.
pub async fn join(rooms: &Arc<Rooms>, client: &str, j: JoinRoom) -> Result<Pending, BrokerError> {
    let notices = rooms.join(client, &j.room, j.durable).await?;
    Ok(ok_after(rooms.clone(), notices))
}

/// Leave, like [`join`].
pub async fn leave(rooms: &Arc<Rooms>, client: &str, l: RoomName) -> Result<Pending, BrokerError> {
    let notices = rooms.leave(client, &l.room).await?;
    Ok(ok_after(rooms.clone(), notices))
}

/// Members.
pub fn members(rooms: &Rooms, client: &str, m: RoomName) -> Result<Message, BrokerError> {
    let members = rooms.members(client, &m.room)?;
    Ok(Message::MemberList(MemberList { members }))
}

fn validate_event(event: &str) -> Result<(), BrokerError> {
    if event.is_empty() || event.len() > MAX_EVENT_NAME {
        return Err(BrokerError::InvalidArgument(format!(
            "event name must be 1 to {MAX_EVENT_NAME} bytes, got {}",
            event.len()
        )));
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(BrokerError::InvalidArgument(format!(
            "event name {event:?} is reserved for presence ({})",
            RESERVED_EVENTS.join(", ")
        )));
    }
    Ok(())
}

/// Emit: queues one append per recipient now, in order; the returned
/// future resolves to EmitOk once all are durable.
pub async fn emit(rooms: &Rooms, sender: &str, e: Emit) -> Result<Fanout, BrokerError> {
    validate_event(&e.event)?;
    if e.correlation != 0 {
        // The reply comes back to the sender's inbox.
        inbox::validate_client_id(sender)?;
    }
    let to = rooms.resolve(sender, &e.target)?;
    let strict = matches!(e.target, EmitTarget::Client(_));
    let reply_to = (e.correlation != 0).then_some(sender);
    inbox::fan_out(rooms, &to, strict, |room| {
        Entry {
            kind: headers::KIND_EVENT,
            event: &e.event,
            sender,
            room,
            correlation: e.correlation,
            reply_to,
            payload: &e.payload,
        }
        .batch()
    })
    .await
}

/// Reply: one append to the requester's inbox.
pub async fn reply(rooms: &Rooms, sender: &str, r: ReplyTo) -> Result<Fanout, BrokerError> {
    inbox::validate_client_id(&r.to_client)?;
    if r.correlation == 0 {
        return Err(BrokerError::InvalidArgument(
            "a reply needs the request's nonzero correlation id".into(),
        ));
    }
    let to: Recipients = [(r.to_client.clone(), None)].into_iter().collect();
    inbox::fan_out(rooms, &to, true, |_| {
        Entry {
            kind: headers::KIND_REPLY,
            event: "reply",
            sender,
            room: None,
            correlation: r.correlation,
            reply_to: None,
            payload: &r.payload,
        }
        .batch()
    })
    .await
}
