//! One handler per request. Each declares what the connection must be
//! allowed to do ([`Handler::needs`]); [`dispatch`] checks that, in this
//! one place, before the handler runs, so no request can skip the check
//! and no handler repeats it. A refused request is answered
//! `Unauthorized` (naming the action and the resource) and the connection
//! goes on.

mod acks;
mod cluster;
mod control;
mod groups;
mod publish;
mod rooms;
mod subscribe;
mod topics;

use herald_protocol::{ErrorCode, Message};

use crate::auth::Need;
use crate::session::{Close, Session};
use crate::BrokerError;

/// A request the session can serve.
pub(crate) trait Handler: Sized {
    /// What the connection must be allowed to do for this request.
    fn needs(&self) -> Need<'_>;

    /// Does it; replies go to request `id` (none when `id` is 0 and the
    /// request's rules say so). `Err` ends the connection.
    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close>;
}

/// Whether the connection may make request `h`: the one place a request
/// is authorized (also for each emit of an `EmitBatch`).
fn permitted<H: Handler>(s: &mut Session, h: &H) -> Result<(), BrokerError> {
    s.access.check(h.needs()).inspect_err(|e| {
        tracing::debug!(client = %s.client_id, reason = %e, "request refused");
    })
}

/// Checks `h`'s permission, then runs it.
async fn run<H: Handler>(s: &mut Session, id: u64, h: H) -> Result<(), Close> {
    if let Err(e) = permitted(s, &h) {
        return s.reply(id, e.to_message()).await;
    }
    h.handle(s, id).await
}

/// Routes a decoded request to its handler.
pub(crate) async fn dispatch(s: &mut Session, id: u64, msg: Message) -> Result<(), Close> {
    match msg {
        Message::Ping => run(s, id, control::Ping).await,
        Message::Pong => Ok(()),
        Message::Refresh(r) => run(s, id, r).await,
        Message::Publish { topic, batch } => run(s, id, publish::Publish { topic, batch }).await,
        Message::Subscribe(r) => run(s, id, r).await,
        Message::Unsubscribe(r) => run(s, id, r).await,
        Message::Ack(r) => run(s, id, r).await,
        Message::Flow(r) => run(s, id, r).await,
        Message::CreateTopic(r) => run(s, id, r).await,
        Message::DeleteTopic(r) => run(s, id, topics::DeleteTopic(r)).await,
        Message::ListTopics => run(s, id, topics::ListTopics).await,
        Message::DescribeTopic(r) => run(s, id, topics::DescribeTopic(r)).await,
        Message::RepairTopic(r) => run(s, id, r).await,
        Message::ListGroups(r) => run(s, id, groups::ListGroups(r)).await,
        Message::ResetGroup(r) => run(s, id, r).await,
        Message::Join(r) => run(s, id, r).await,
        Message::Leave(r) => run(s, id, rooms::Leave(r)).await,
        Message::Members(r) => run(s, id, rooms::Members(r)).await,
        Message::MyRooms => run(s, id, rooms::MyRooms).await,
        Message::Emit(r) => run(s, id, r).await,
        // Each emit is checked on its own (`permitted`), as if it came alone.
        Message::EmitBatch(b) => rooms::emit_batch(s, id, b).await,
        Message::Reply(r) => run(s, id, r).await,
        Message::Cluster(body) => run(s, id, cluster::ClusterCall(body)).await,
        Message::ClusterStatus => run(s, id, cluster::Status).await,
        Message::ClusterChange(c) => run(s, id, cluster::Change(c)).await,
        Message::Hello(_) => {
            let e = Message::error(ErrorCode::InvalidArgument, "already handshaken");
            s.reply(id, e).await
        }
        other => {
            let e = Message::error(
                ErrorCode::BadFrame,
                format!("{:?} is not a request", other.opcode()),
            );
            s.reply(id, e).await?;
            Err(Close)
        }
    }
}
