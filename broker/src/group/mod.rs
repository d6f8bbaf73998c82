//! Consumer groups: durable, named cursors over a topic, whose members share
//! the messages (competing consumers) and acknowledge them.
//!
//! A group's state ([`state::Group`]: its [`acks::AckTracker`], its
//! members, its persisted state) is owned by one actor task, a group set
//! ([`set`]), and by nothing else: no lock is shared with anyone. A set
//! hosts either one group (each group of an ordinary topic has its own
//! task) or every group of a topic (a room's log, read by one group per
//! member, see [`crate::rooms::log`]): then one task, one command channel
//! and one wake per group commit serve all the members of a room, instead
//! of one of each per member. Sessions talk to a group through its
//! [`GroupHandle`]: the set's bounded channel and the group's key in it.

pub mod acks;
mod dispatch;
mod dlq;
mod persist;
pub use persist::{Target, PERSIST_MIN_INTERVAL, ROOM_PERSIST_INTERVAL};
pub mod positions;
pub use positions::Positions;
mod set;
mod state;
pub mod store;

use std::time::Duration;

use herald_protocol::{AckKind, GroupInfo, StartPosition};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;
use crate::BrokerError;
use acks::MemberId;
pub use set::{spawn, GroupSet};
use store::StoredGroup;

/// Commands queued for a group set before senders wait: per group for an
/// ordinary topic's group, per room for a room log's set.
const GROUP_QUEUE: usize = 4096;

/// Group settings the broker applies unless a subscription says otherwise.
#[derive(Debug, Clone)]
pub struct GroupDefaults {
    pub ack_timeout: Duration,
    pub max_deliveries: u32,
    pub backoff: Vec<Duration>,
    pub dlq_suffix: String,
    /// A group's state is written at most this often
    /// ([`PERSIST_MIN_INTERVAL`], or
    /// [`ROOM_PERSIST_INTERVAL`] for a room's members).
    pub persist_interval: Duration,
}

impl Default for GroupDefaults {
    fn default() -> Self {
        GroupDefaults {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 10,
            backoff: vec![Duration::ZERO],
            dlq_suffix: ".dlq".into(),
            persist_interval: persist::PERSIST_MIN_INTERVAL,
        }
    }
}

/// A subscription joining a group.
pub struct Join {
    pub member: MemberId,
    pub subscription_id: u64,
    /// The Subscribe's request id: the actor sends SubscribeOk itself,
    /// through the push queue, so it precedes the first delivery.
    pub request_id: u64,
    /// False when the subscription was answered already (one that waited
    /// for its inbox, `rooms::waiting`).
    pub subscribe_ok: bool,
    pub client_id: String,
    pub outbox: Outbox,
    pub start: StartPosition,
    pub prefetch_messages: u32,
    pub prefetch_bytes: u32,
    pub ack_timeout: Option<Duration>,
    pub max_deliveries: Option<u32>,
}

/// A command for one group of a set.
struct Envelope {
    /// The group's key in its set (never reused within a set, so a handle
    /// of a deleted group cannot reach a later one).
    group: u64,
    cmd: Cmd,
}

enum Cmd {
    Join(Box<Join>, JoinReply),
    Leave(MemberId),
    Ack {
        member: MemberId,
        kind: AckKind,
        ranges: Vec<(u64, u64)>,
        done: Option<DoneReply>,
    },
    Info(oneshot::Sender<Option<GroupInfo>>),
    Reset(StartPosition, DoneReply),
    /// Create or move the group to an offset (clamped to the log); see
    /// [`GroupHandle::place`].
    Place(u64, JoinReply),
    /// Remove the group: see [`GroupHandle::delete`].
    Delete(DoneReply),
    /// Where another node's copy of the group stands: see
    /// [`GroupHandle::follow`].
    Follow {
        floor: u64,
        reset: bool,
    },
}

/// Replies to the commands that create a group (its first write).
type JoinReply = oneshot::Sender<Result<u64, BrokerError>>;
/// Reply to a command answered once the group's state is on disk.
type DoneReply = oneshot::Sender<Result<(), BrokerError>>;

/// Where a group's state comes from.
pub enum Origin {
    /// Its state file, loaded.
    Loaded(StoredGroup),
    /// No state file: the group exists once its first member joined and
    /// that state was written.
    New,
    /// Replacing a damaged state file that was set aside: the group exists
    /// and is about to be reset.
    Replacing,
}

/// Handle to a group: its set's channel and its key there.
#[derive(Clone)]
pub struct GroupHandle {
    tx: mpsc::Sender<Envelope>,
    key: u64,
    /// Cancelled once the group's state is dropped by its set: after its
    /// final save (shutdown), its removal (delete), or with the set's task.
    stopped: CancellationToken,
}

fn gone() -> BrokerError {
    BrokerError::ShuttingDown
}

impl GroupHandle {
    async fn send(&self, cmd: Cmd) -> Result<(), BrokerError> {
        let env = Envelope {
            group: self.key,
            cmd,
        };
        self.tx.send(env).await.map_err(|_| gone())
    }

    /// Adds a member; returns the offset its deliveries start from.
    pub async fn join(&self, j: Join) -> Result<u64, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Join(Box::new(j), tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Removes a member; what it held is redelivered to the others.
    pub async fn leave(&self, member: MemberId) {
        let _ = self.send(Cmd::Leave(member)).await;
    }

    /// Queues an ack-like operation. The returned receiver (with `wait`)
    /// resolves once the new state is persisted under the topic's
    /// durability policy. Queuing happens before this returns, so a later
    /// command from the same session (an Unsubscribe) cannot overtake it.
    pub async fn ack(
        &self,
        member: MemberId,
        kind: AckKind,
        ranges: Vec<(u64, u64)>,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<Result<(), BrokerError>>>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        let done = if wait { Some(tx) } else { None };
        self.send(Cmd::Ack {
            member,
            kind,
            ranges,
            done,
        })
        .await?;
        Ok(wait.then_some(rx))
    }

    /// The group's figures; `None` for a group that does not exist (an
    /// actor whose first member's join failed).
    pub async fn info(&self) -> Result<Option<GroupInfo>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Info(tx)).await?;
        rx.await.map_err(|_| gone())
    }

    /// Moves the group's position; refused while it has members. Returns
    /// once the new position is on disk.
    ///
    /// # Errors
    /// `UnknownGroup` for a group that does not exist, `GroupActive`,
    /// `InvalidArgument` for a position out of range (or `Resume`), and the
    /// write's error.
    pub async fn reset(&self, to: StartPosition) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Reset(to, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Puts the group at `offset` (clamped to the log's first and next
    /// offsets), creating it if it has no state yet, and resolves with the
    /// offset once that is on disk. Rooms use it to start a new member at
    /// the room's end (or a little before, for history).
    ///
    /// # Errors
    /// `GroupActive` while it has members; a failed write.
    pub async fn place(&self, offset: u64) -> Result<u64, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Place(offset, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Removes the group: it leaves its set without saving, its state file
    /// is deleted, its members get nothing more; the set's other groups go
    /// on. Rooms use it when a member
    /// leaves, so that joining again starts afresh.
    ///
    /// # Errors
    /// Removing the file failed.
    pub async fn delete(&self) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Delete(tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Moves the group to where its copy on another node of a replicated
    /// topic stands (`cluster::positions`): forward to `floor` only,
    /// unless `reset`; not while members read it here, whose own acks
    /// decide. A group new here is created at `floor`. Not answered.
    pub async fn follow(&self, floor: u64, reset: bool) -> Result<(), BrokerError> {
        self.send(Cmd::Follow { floor, reset }).await
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }

    /// Resolves once the group has persisted its state (or was removed)
    /// and left its set.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }
}

/// The delay before redelivering after delivery number `delivery` timed
/// out; the list's last entry repeats.
fn backoff_for(list: &[Duration], delivery: u32) -> Duration {
    match list.len() {
        0 => Duration::ZERO,
        n => list[(delivery.saturating_sub(1) as usize).min(n - 1)],
    }
}

fn stored(tracker: &acks::AckTracker, max_deliveries: u32) -> StoredGroup {
    StoredGroup {
        snapshot: tracker.snapshot(),
        max_deliveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel slot per queued command: the hot one (Ack) must not
    /// grow it; rare big commands are boxed.
    #[test]
    fn a_queued_command_stays_small() {
        assert!(std::mem::size_of::<Envelope>() <= 64);
    }
}
