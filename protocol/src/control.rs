//! Control bodies: the serde types carried by every frame that is not a
//! record batch, encoded with postcard (see docs/protocol.md for the bytes).
//!
//! Field order is part of the wire format: postcard encodes structs as their
//! fields in declaration order, with no names. Append new fields only in a
//! new protocol version.

use serde::{Deserialize, Serialize};

/// Protocol versions this crate speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
pub const PROTOCOL_VERSION_MAX: u16 = 3;

/// First frame of every connection, client to broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// Free text for logs ("billing-worker/1.2").
    pub client_name: String,
    /// A stable identity across reconnects; the broker assigns one if absent.
    pub client_id: Option<String>,
    pub token: Option<String>,
}

/// The broker's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    pub version: u16,
    pub client_id: String,
    /// Largest frame the broker accepts, header included.
    pub max_frame: u32,
    /// Largest record batch the broker accepts.
    pub max_batch: u32,
    /// The broker pings an idle connection after this long and closes it
    /// after three intervals of silence.
    pub heartbeat_ms: u32,
    /// Version 2 on: the ack timeout, in ms, of the group members that set
    /// none of their own (the broker's default). A client that holds acks
    /// back to gather them keeps them well within it. Not on the wire in
    /// version 1 (`None`); in version 2 a varint after `heartbeat_ms`
    /// (docs/protocol.md, section 5).
    #[serde(default)]
    pub ack_timeout_ms: Option<u32>,
}

/// Stable error codes. Their numbers never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadFrame,
    UnsupportedVersion,
    HandshakeRequired,
    UnknownTopic,
    Unauthorized,
    TooLarge,
    Busy,
    Internal,
    InvalidArgument,
    TopicExists,
    UnknownSubscription,
    SequenceGap,
    StorageFull,
    TopicUnavailable,
    GroupActive,
    ShuttingDown,
    /// Data the request needs is damaged on disk (a record batch that fails
    /// its checks); the message names the topic, the offsets and the file.
    Corrupt,
    /// No group of that name on the topic (reset, or anything that names
    /// an existing group).
    UnknownGroup,
    /// The group exists but cannot serve: its state file is damaged or
    /// unreadable. Resetting the group replaces that state.
    GroupUnavailable,
    /// A durable room whose member file is damaged: the room serves no
    /// request until an operator repairs it; other rooms are unaffected.
    RoomUnavailable,
    /// The connection's token expired and was not refreshed: sent with
    /// request id 0 just before the broker closes the connection, or in
    /// answer to a Hello or Refresh carrying an expired token.
    TokenExpired,
    /// A cluster node that does not lead the topic's replicas was asked to
    /// write to it; the message names the leader's address when one is
    /// known (`leader: HOST:PORT`).
    NotLeader,
    Unknown(u16),
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadFrame => 1,
            UnsupportedVersion => 2,
            HandshakeRequired => 3,
            UnknownTopic => 4,
            Unauthorized => 5,
            TooLarge => 6,
            Busy => 7,
            Internal => 8,
            InvalidArgument => 9,
            TopicExists => 10,
            UnknownSubscription => 11,
            SequenceGap => 12,
            StorageFull => 13,
            TopicUnavailable => 14,
            GroupActive => 15,
            ShuttingDown => 16,
            Corrupt => 17,
            UnknownGroup => 18,
            GroupUnavailable => 19,
            RoomUnavailable => 20,
            TokenExpired => 21,
            NotLeader => 22,
            Unknown(n) => n,
        }
    }
    pub fn from_u16(n: u16) -> Self {
        use ErrorCode::*;
        match n {
            1 => BadFrame,
            2 => UnsupportedVersion,
            3 => HandshakeRequired,
            4 => UnknownTopic,
            5 => Unauthorized,
            6 => TooLarge,
            7 => Busy,
            8 => Internal,
            9 => InvalidArgument,
            10 => TopicExists,
            11 => UnknownSubscription,
            12 => SequenceGap,
            13 => StorageFull,
            14 => TopicUnavailable,
            15 => GroupActive,
            16 => ShuttingDown,
            17 => Corrupt,
            18 => UnknownGroup,
            19 => GroupUnavailable,
            20 => RoomUnavailable,
            21 => TokenExpired,
            22 => NotLeader,
            n => Unknown(n),
        }
    }
    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::StorageFull
                | ErrorCode::ShuttingDown
                | ErrorCode::NotLeader
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({})", self, self.as_u16())
    }
}

/// An error reply, or (with request id 0) a connection-level error sent just
/// before the broker closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

/// Pushed by the broker when it ends a subscription on its own: the
/// subscription delivers nothing more, and the client should not subscribe
/// again blindly (the cause, say damaged data, stays until an operator acts).
/// Deliveries pushed before it are valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionError {
    pub subscription_id: u64,
    /// An [`ErrorCode`] number (`Corrupt` for damaged data).
    pub code: u16,
    pub message: String,
}

/// Pushed by the broker to a group subscription (`0x47`) when offsets its
/// group had not finished were deleted by retention before they could be
/// delivered: the group moves past them, and the member is told instead of
/// the records going missing in silence (a durable room member that was
/// away longer than the room's retention learns how much it missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub subscription_id: u64,
    /// The first and last offset (inclusive) that will never be delivered.
    pub first: u64,
    pub last: u64,
}

/// A new token for the connection (`0x50`, client to broker), sent before
/// the current one expires (see [`TokenExpiring`]). Reply: `Ok` once the
/// broker checked it; the connection's permissions and expiry are then the
/// new token's. A token for another client id is refused (`Unauthorized`)
/// and the connection keeps the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    pub token: String,
}

/// Pushed by the broker (`0x51`) when the connection's token is about to
/// expire: the client should send [`Refresh`] within `expires_in_ms`, or
/// the broker closes the connection with `TokenExpired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExpiring {
    /// Milliseconds from the moment the broker sent this until the token
    /// expires (relative, so the two clocks need not agree).
    pub expires_in_ms: u64,
}

/// Sent by the broker before it closes connections on shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoingAway {
    pub reason: String,
}

/// The confirm of a publish: the batch is durable under the topic's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOk {
    pub base_offset: u64,
    pub count: u32,
    /// The batch was a retry of one already stored; the offsets are the
    /// original ones.
    pub duplicate: bool,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StartPosition {
    /// The group's committed position (earliest for a new group; latest for
    /// an ephemeral subscription).
    #[default]
    Resume,
    Earliest,
    Latest,
    Offset(u64),
    /// Milliseconds since the Unix epoch: the first record appended at or
    /// after that time.
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub topic: String,
    /// Durable group name; `None` is an ephemeral subscription.
    pub group: Option<String>,
    pub start: StartPosition,
    /// Most messages unacknowledged (group) or unconsumed (ephemeral) at once.
    pub prefetch_messages: u32,
    /// Most bytes of batches delivered and not yet released.
    pub prefetch_bytes: u32,
    /// How long a delivery may stay unacknowledged before it is redelivered;
    /// 0 = the broker's default.
    pub ack_timeout_ms: u32,
    /// Deliveries before a message goes to the dead-letter topic; 0 = default.
    pub max_deliveries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOk {
    pub subscription_id: u64,
    /// The first offset this subscription will be offered.
    pub start_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    pub subscription_id: u64,
}

/// What an [`Ack`] does to the offsets it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckKind {
    /// Done with these offsets.
    Ack,
    /// Done with every offset up to and including the end of the one range.
    AckUpTo,
    /// Not done: redeliver after `delay_ms` (0 = now).
    Nack { delay_ms: u32 },
    /// Still working: push the deadline out by a full ack timeout.
    Extend,
    /// Never redeliver; counts as done.
    Terminate,
}

/// Acknowledgement of deliveries, as inclusive offset ranges. With a request
/// id other than 0 the broker replies `Ok` once the ack is recorded durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub subscription_id: u64,
    pub kind: AckKind,
    pub ranges: Vec<(u64, u64)>,
}

/// Gives an ephemeral subscription credit back as its messages are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub subscription_id: u64,
    pub messages: u32,
    pub bytes: u32,
}

/// Durability of appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsyncPolicy {
    /// Confirm after fdatasync (group-committed).
    Always,
    /// Confirm after write(2); fdatasync every `ms`.
    Interval { ms: u32 },
    /// Confirm after write(2); never fsync.
    Never,
}

/// Settings of a topic; `None` means the broker's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TopicConfig {
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub segment_bytes: Option<u64>,
    pub fsync: Option<FsyncPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    pub config: TopicConfig,
    /// In a cluster, on how many nodes the topic is replicated; 0 for the
    /// broker's default (3, or every node of a smaller cluster). A broker
    /// that runs alone takes 0 or 1 only.
    pub replicas: u32,
}

/// Names one topic (delete, describe, list groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicName {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// Every offset below this is done.
    pub ack_floor: u64,
    /// Messages not yet done: end offset minus ack floor, less the offsets
    /// above the floor that are already done (acked out of order).
    pub lag: u64,
    pub in_flight: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub members: Vec<String>,
    /// Why the group cannot serve (its state file is damaged or
    /// unreadable); the counters above are then zero. `None` for a healthy
    /// group.
    pub damaged: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub first_offset: u64,
    /// The offset the next record will get.
    pub next_offset: u64,
    pub bytes_on_disk: u64,
    pub segments: u32,
    /// Records appended per second since the broker started.
    pub messages_per_sec: f64,
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetGroup {
    pub topic: String,
    pub group: String,
    pub to: StartPosition,
}

/// Asks the broker to find every damaged range of a topic's log and, unless
/// `dry_run`, to skip them for good so readers can go past them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTopic {
    pub name: String,
    /// Only report what would be dropped.
    pub dry_run: bool,
}

/// One damaged range of a log: bytes of one segment file and the offsets
/// they held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRange {
    /// The segment file's name (`00000000000000012345.log`).
    pub segment: String,
    /// Byte position of the damage in that file.
    pub position: u64,
    /// Damaged bytes.
    pub bytes: u64,
    /// First offset lost.
    pub first_offset: u64,
    /// One past the last offset lost; equal to `first_offset` when the
    /// damaged bytes held no records.
    pub end_offset: u64,
    /// What was wrong, for humans.
    pub reason: String,
}

/// The answer to [`RepairTopic`]: the ranges newly skipped (or, for a dry
/// run, that would be), with totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    pub topic: String,
    pub dry_run: bool,
    pub ranges: Vec<DroppedRange>,
    /// Records in `ranges`.
    pub records: u64,
    /// Bytes in `ranges`.
    pub bytes: u64,
}

/// How a cluster looks from one of its nodes (`ClusterStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The node that answered.
    pub node_id: u64,
    /// Every node of the cluster and its address.
    pub nodes: Vec<ClusterNode>,
    /// The metadata group, then each replicated topic's group this node
    /// holds a replica of (and the connection may see).
    pub groups: Vec<RaftGroupInfo>,
}

/// A change to a cluster (`herald cluster add|remove|move`), asked of any
/// node; it needs the `cluster` permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterChange {
    /// Makes node `id`, reachable at `addr` (started with `--join`), a
    /// member: it takes part in the metadata group and can hold replicas.
    AddNode { id: u64, addr: String },
    /// Takes node `id` out of the cluster; it must hold no replica.
    RemoveNode { id: u64 },
    /// Moves a replicated topic's replicas onto `replicas`: new ones copy
    /// the topic while the old ones serve, then the old ones let it go.
    MoveTopic { topic: String, replicas: Vec<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: u64,
    pub addr: String,
}

/// One Raft group as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftGroupInfo {
    /// `meta`, or `topic/<name>`.
    pub name: String,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last entry in this node's Raft log.
    pub last_index: Option<u64>,
    /// Index of the last entry this node applied.
    pub applied: Option<u64>,
    /// The group's voters; their progress is known on the leader only.
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub node: u64,
    /// Index of the last entry the leader knows this replica holds
    /// (`None` when the answering node is not the leader, or it knows of
    /// none yet).
    pub matched: Option<u64>,
}
