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

/// Most emits in one EmitBatch (the Rust client sends at most this many):
/// one frame's emits hold the session's loop for a bounded time, and their
/// answer stays small. Without a bound, one 8 MB frame of 2,000,000 empty
/// emits took a worker thread for over a second and got a 122 MB answer.
pub(crate) const MAX_BATCH_EMITS: usize = 1024;

/// The most one outcome takes in an EmitBatchOk besides its error text: the
/// enum tag, two u32 varints (or a code and the text's length).
const OUTCOME_BYTES: usize = 11;

/// What a frame takes besides its body's outcomes: the header, and the
/// outcome count's varint.
const ANSWER_OVERHEAD: usize = 32;

/// Several emits in one frame: each is checked and appended as a lone
/// Emit would be, in order, before the next frame is read; one answer
/// carries every outcome once all of them are durable (or refused).
pub(super) async fn emit_batch(s: &mut Session, id: u64, b: EmitBatch) -> Result<(), Close> {
    let max_frame = s.shared.config.max_frame_bytes;
    // The answer must fit a frame even with every error text cut away.
    let most = MAX_BATCH_EMITS.min(max_frame.saturating_sub(ANSWER_OVERHEAD) / OUTCOME_BYTES);
    if b.emits.len() > most {
        let e = BrokerError::InvalidArgument(format!(
            "an EmitBatch holds at most {most} emits, got {}",
            b.emits.len()
        ));
        return s.reply(id, e.to_message()).await;
    }
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
        fit_texts(&mut results, max_frame);
        (id, Message::EmitBatchOk(EmitBatchOk { results }))
    }));
    Ok(())
}

/// Cuts the error texts of `results` so that their answer fits a frame of
/// `max_frame` bytes: each keeps an equal share of the room left (at a
/// character boundary). The codes say what happened; the texts only explain.
fn fit_texts(results: &mut [EmitOutcome], max_frame: usize) {
    let texts: usize = results
        .iter()
        .map(|r| match r {
            EmitOutcome::Err(e) => e.message.len(),
            EmitOutcome::Ok(_) => 0,
        })
        .sum();
    let room = max_frame.saturating_sub(ANSWER_OVERHEAD + results.len() * OUTCOME_BYTES);
    if texts <= room {
        return;
    }
    let errors = results
        .iter()
        .filter(|r| matches!(r, EmitOutcome::Err(_)))
        .count();
    let share = room / errors.max(1);
    for r in results.iter_mut() {
        if let EmitOutcome::Err(e) = r {
            if e.message.len() > share {
                let mut cut = share;
                while !e.message.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.message.truncate(cut);
            }
        }
    }
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
