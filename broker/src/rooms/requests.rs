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
use super::{log, presence, Recipients, Rooms};
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

/// Join: the membership changes and a new member's position in the
/// room's log (its end, or `history` records before) is written now, so a
/// later Subscribe of the same session reads from there; the reply waits
/// for the presence record.
pub async fn join(rooms: &Arc<Rooms>, client: &str, j: JoinRoom) -> Result<Pending, BrokerError> {
    let joined = rooms.join(client, &j.room, j.durable).await?;
    if joined.new_member {
        // Without a log (past the topic limit) or a position in it (the
        // member would read from the start) the join is undone.
        let placed = match log::topic(rooms, &j.room) {
            Ok(topic) => log::place_member(&topic, client, j.history).await,
            Err(e) => Err(e),
        };
        if let Err(e) = placed {
            let _ = rooms.leave(client, &j.room).await;
            return Err(e);
        }
    }
    Ok(ok_after(rooms.clone(), joined.notices))
}

/// Leave: the membership and the member's position go; the reply waits
/// for the presence record.
pub async fn leave(rooms: &Arc<Rooms>, client: &str, l: RoomName) -> Result<Pending, BrokerError> {
    let notices = rooms.leave(client, &l.room).await?;
    if !notices.is_empty() {
        log::remove_member(rooms, &l.room, client).await?;
    }
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

/// Emit: queues one append to each target room's log and one to each
/// direct recipient's inbox now, in order; the returned future resolves
/// to EmitOk once all are durable.
pub async fn emit(rooms: &Rooms, sender: &str, e: Emit) -> Result<Fanout, BrokerError> {
    validate_event(&e.event)?;
    if e.correlation != 0 {
        // The reply comes back to the sender's inbox.
        inbox::validate_client_id(sender)?;
    }
    let to = rooms.resolve(sender, &e.target)?;
    let strict = matches!(e.target, EmitTarget::Client(_));
    let reply_to = (e.correlation != 0).then_some(sender);
    // A client in several of the target rooms reads each copy; the id lets
    // its library hand the event over once.
    let emit_id = (to.rooms.len() > 1).then(|| format!("{:032x}", rand::random::<u128>()));
    let entry = |room: Option<&str>, except_sender: bool| {
        Entry {
            kind: headers::KIND_EVENT,
            event: &e.event,
            sender,
            room,
            correlation: e.correlation,
            reply_to,
            except_sender,
            emit_id: emit_id.as_deref(),
            payload: &e.payload,
        }
        .batch()
    };
    let longest = to.rooms.iter().max_by_key(|r| r.len()).map(String::as_str);
    check_deliverable(rooms, e.payload.len(), || entry(longest.or(Some("")), true))?;
    let mut out = inbox::fan_out(rooms, &to.clients, strict, |room| entry(room, false)).await?;
    for room in &to.rooms {
        let q = log::append(rooms, room, entry(Some(room), to.except_sender)).await?;
        out.appends.push((q.topic, q.append));
    }
    out.reached = to.reached;
    rooms
        .counters
        .emits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(out)
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
    let record = || {
        Entry {
            kind: headers::KIND_REPLY,
            event: "reply",
            sender,
            room: None,
            correlation: r.correlation,
            reply_to: None,
            except_sender: false,
            emit_id: None,
            payload: &r.payload,
        }
        .batch()
    };
    check_deliverable(rooms, r.payload.len(), record)?;
    inbox::fan_out(rooms, &to, true, |_| record()).await
}

/// Refuses a record that, with the headers the broker adds, would not fit
/// a Deliver frame (what clients are told is the frame limit): it could
/// never be delivered. Measured (`record` built) only for a payload near
/// the limit.
fn check_deliverable(
    rooms: &Rooms,
    payload: usize,
    record: impl FnOnce() -> herald_protocol::Batch,
) -> Result<(), BrokerError> {
    let deliverable = rooms.config().max_deliverable_batch();
    if payload + 1024 <= deliverable {
        return Ok(());
    }
    let size = record().len_bytes();
    if size > deliverable {
        return Err(BrokerError::InvalidArgument(format!(
            "the record would be {size} bytes with its headers, over the {deliverable} a \
             delivery may carry (the frame limit less the Deliver prefix): send a smaller payload"
        )));
    }
    Ok(())
}
