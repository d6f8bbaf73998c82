//! Room requests (see [`crate::rooms::requests`]): Join, Leave, Members,
//! MyRooms, Emit, EmitBatch, Reply. Membership changes and appends are queued before the next
//! frame is read, so the session's requests take effect in the order they
//! came; replies wait in `others` (join, leave) or `publishes` (emit,
//! reply: confirms in order).

use herald_protocol::{
    Emit, EmitBatch, EmitBatchOk, EmitOutcome, ErrorBody, JoinRoom, Message, ReplyTo, RoomList,
    RoomName,
};

use super::{permitted, Handler};
use crate::auth::Need;
use crate::rooms::inbox::Fanout;
use crate::rooms::requests::{self, Pending};
use crate::session::{Close, Session};
use crate::BrokerError;

impl Handler for JoinRoom {
    fn needs(&self) -> Need<'_> {
        Need::Join(&self.room)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let rooms = s.shared.rooms.clone();
        let r = requests::join(&rooms, &s.client_id, self).await;
        answer_later(s, id, r).await
    }
}

pub(crate) struct Leave(pub(crate) RoomName);

impl Handler for Leave {
    fn needs(&self) -> Need<'_> {
        // Leaving only ever takes something away.
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let rooms = s.shared.rooms.clone();
        let r = requests::leave(&rooms, &s.client_id, self.0).await;
        answer_later(s, id, r).await
    }
}

/// The rooms this client belongs to (what a reconnecting client rejoins
/// and reads).
pub(crate) struct MyRooms;

impl Handler for MyRooms {
    fn needs(&self) -> Need<'_> {
        // Only ever about the connection's own client id.
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let rooms = s.shared.rooms.rooms_of(&s.client_id);
        s.reply(id, Message::RoomList(RoomList { rooms })).await
    }
}

pub(crate) struct Members(pub(crate) RoomName);

impl Handler for Members {
    fn needs(&self) -> Need<'_> {
        Need::Join(&self.0.room)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let r = requests::members(&s.shared.rooms, &s.client_id, self.0);
        s.reply(id, r.unwrap_or_else(|e| e.to_message())).await
    }
}

impl Handler for Emit {
    fn needs(&self) -> Need<'_> {
        Need::Emit {
            target: &self.target,
            request: self.correlation != 0,
        }
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let rooms = s.shared.rooms.clone();
        let r = requests::emit(&rooms, &s.client_id, self).await;
        confirm_fanout(s, id, r, true).await
    }
}

/// Several emits in one frame: each is checked and appended as a lone
/// Emit would be, in order, before the next frame is read; one answer
/// carries every outcome once all of them are durable (or refused).
pub(super) async fn emit_batch(s: &mut Session, id: u64, b: EmitBatch) -> Result<(), Close> {
    let rooms = s.shared.rooms.clone();
    let mut pending = Vec::with_capacity(b.emits.len());
    for e in b.emits {
        let fanout = match permitted(s, &e) {
            Ok(()) => requests::emit(&rooms, &s.client_id, e).await,
            Err(refused) => Err(refused),
        };
        pending.push(fanout);
    }
    s.publishes.push_back(Box::pin(async move {
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            let outcome = match p {
                Ok(f) => f.wait().await,
                Err(e) => Err(e),
            };
            results.push(match outcome {
                Ok(ok) => EmitOutcome::Ok(ok),
                Err(e) => EmitOutcome::Err(ErrorBody {
                    code: e.code().as_u16(),
                    message: e.to_string(),
                }),
            });
        }
        (id, Message::EmitBatchOk(EmitBatchOk { results }))
    }));
    Ok(())
}

impl Handler for ReplyTo {
    fn needs(&self) -> Need<'_> {
        Need::Reply(&self.to_client)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let rooms = s.shared.rooms.clone();
        let r = requests::reply(&rooms, &s.client_id, self).await;
        confirm_fanout(s, id, r, false).await
    }
}

async fn answer_later(
    s: &mut Session,
    id: u64,
    r: Result<Pending, BrokerError>,
) -> Result<(), Close> {
    match r {
        Ok(p) => {
            s.others.push(Box::pin(async move { (id, p.await) }));
            Ok(())
        }
        Err(e) => s.reply(id, e.to_message()).await,
    }
}

async fn confirm_fanout(
    s: &mut Session,
    id: u64,
    r: Result<Fanout, BrokerError>,
    emit_ok: bool,
) -> Result<(), Close> {
    match r {
        Ok(f) => {
            s.publishes.push_back(Box::pin(async move {
                let m = match f.wait().await {
                    Ok(ok) if emit_ok => Message::EmitOk(ok),
                    Ok(_) => Message::Ok,
                    Err(e) => e.to_message(),
                };
                (id, m)
            }));
            Ok(())
        }
        Err(e) => s.reply(id, e.to_message()).await,
    }
}
