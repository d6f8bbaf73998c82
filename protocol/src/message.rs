//! Frames parsed into one enum, and encoded back.
//!
//! Two bodies are raw binary rather than postcard, because they carry record
//! batches that must pass through without re-encoding:
//!
//! ```text
//! Publish: 2 topic_len | topic (UTF-8) | record batch (rest of the body)
//! Deliver: 8 subscription_id | 8 first_offset | 8 last_offset |
//!          4 delivery_count | record batch (rest of the body)
//! ```
//! A Deliver hands the consumer the records of the batch whose offsets lie in
//! `first_offset..=last_offset`; the others are not meant for it (already
//! done, or given to another member of its group).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::batch::Batch;
use crate::control::*;
use crate::frame::{put_frame, put_header, Frame, Opcode, FLAG_PUSH};
use crate::rooms::*;
use crate::WireError;

/// Every message of protocol version 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    HelloOk(HelloOk),
    Error(ErrorBody),
    Ping,
    Pong,
    GoingAway(GoingAway),
    Ok,
    Publish {
        topic: String,
        batch: Batch,
    },
    PublishOk(PublishOk),
    Subscribe(Subscribe),
    SubscribeOk(SubscribeOk),
    Unsubscribe(Unsubscribe),
    Deliver(Deliver),
    Ack(Ack),
    Flow(Flow),
    SubscriptionError(SubscriptionError),
    CreateTopic(CreateTopic),
    DeleteTopic(TopicName),
    ListTopics,
    DescribeTopic(TopicName),
    TopicInfo(TopicInfo),
    TopicList(TopicList),
    ListGroups(TopicName),
    GroupList(GroupList),
    ResetGroup(ResetGroup),
    RepairTopic(RepairTopic),
    RepairReport(RepairReport),
    Join(JoinRoom),
    Leave(RoomName),
    Emit(Emit),
    EmitOk(EmitOk),
    Members(RoomName),
    MemberList(MemberList),
    Reply(ReplyTo),
    Skipped(Skipped),
    MyRooms,
    RoomList(RoomList),
    EmitBatch(EmitBatch),
    EmitBatchOk(EmitBatchOk),
    Refresh(Refresh),
    TokenExpiring(TokenExpiring),
    /// A Raft call between cluster nodes: an opaque body the broker
    /// encodes and decodes (the protocol crate only carries it).
    Cluster(Bytes),
    /// The answer to a [`Message::Cluster`] call.
    ClusterReply(Bytes),
    ClusterStatus,
    ClusterInfo(ClusterInfo),
    ClusterChange(ClusterChange),
}

/// A pushed delivery: a stored batch and the part of it meant for this
/// subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub subscription_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    /// 1 on first delivery; higher on redeliveries.
    pub delivery_count: u32,
    pub batch: Batch,
}

/// Fixed bytes of a Deliver body before its batch.
pub const DELIVER_PREFIX_LEN: usize = 28;

fn from_postcard<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, WireError> {
    let (v, rest) = postcard::take_from_bytes::<T>(body).map_err(|e| WireError::BadBody {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(v)
}

/// [`HelloOk`]'s body: version 1's fields, then, in version 2, the ack
/// timeout (a varint). Decoded whichever is there, so a client reads the
/// answer of a version-1 broker and of a version-2 one alike.
mod hello_ok {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct V1 {
        version: u16,
        client_id: String,
        max_frame: u32,
        max_batch: u32,
        heartbeat_ms: u32,
    }

    pub(super) fn decode(b: &[u8]) -> Result<HelloOk, WireError> {
        let bad = |e: postcard::Error| WireError::BadBody {
            what: "hello_ok",
            reason: e.to_string(),
        };
        let (v1, rest) = postcard::take_from_bytes::<V1>(b).map_err(bad)?;
        let ack_timeout_ms = match rest {
            [] => None,
            rest => Some(from_postcard::<u32>("hello_ok", rest)?),
        };
        Ok(HelloOk {
            version: v1.version,
            client_id: v1.client_id,
            max_frame: v1.max_frame,
            max_batch: v1.max_batch,
            heartbeat_ms: v1.heartbeat_ms,
            ack_timeout_ms,
        })
    }

    pub(super) fn encode(buf: &mut BytesMut, op: Opcode, flags: u8, id: u64, v: &HelloOk) {
        let v1 = (
            v.version,
            &v.client_id,
            v.max_frame,
            v.max_batch,
            v.heartbeat_ms,
        );
        match v.ack_timeout_ms {
            None => put_postcard(buf, op, flags, id, &v1),
            // A tuple is its fields one after the other: version 1's, then the varint.
            Some(t) => put_postcard(buf, op, flags, id, &(v1, t)),
        }
    }
}

fn put_postcard<T: Serialize>(buf: &mut BytesMut, op: Opcode, flags: u8, id: u64, v: &T) {
    // Control bodies are small; serialising to a Vec first keeps the length
    // prefix exact. Errors are impossible for these types (no maps, no
    // unsized sequences), so a failure would be a bug in this crate.
    let body = postcard::to_allocvec(v).unwrap_or_default();
    put_frame(buf, op, flags, id, &body);
}

fn eof(what: &'static str, offset: usize, need: usize, have: usize) -> WireError {
    WireError::UnexpectedEof {
        what,
        offset,
        need,
        have,
    }
}

/// Parses the raw Publish body.
pub fn decode_publish(body: &Bytes) -> Result<(String, Batch), WireError> {
    if body.len() < 2 {
        return Err(eof("publish", 0, 2, body.len()));
    }
    let tl = u16::from_le_bytes([body[0], body[1]]) as usize;
    if body.len() < 2 + tl {
        return Err(eof("publish", 2, tl, body.len() - 2));
    }
    let topic = std::str::from_utf8(&body[2..2 + tl])
        .map_err(|_| WireError::BadUtf8("topic"))?
        .to_owned();
    let batch = Batch::validate(body.slice(2 + tl..))?;
    Ok((topic, batch))
}

/// Parses the raw Deliver body.
pub fn decode_deliver(body: &Bytes) -> Result<Deliver, WireError> {
    if body.len() < DELIVER_PREFIX_LEN {
        return Err(eof("deliver", 0, DELIVER_PREFIX_LEN, body.len()));
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let delivery_count = u32::from_le_bytes([body[24], body[25], body[26], body[27]]);
    let batch = Batch::validate(body.slice(DELIVER_PREFIX_LEN..))?;
    let d = Deliver {
        subscription_id: u64_at(0),
        first_offset: u64_at(8),
        last_offset: u64_at(16),
        delivery_count,
        batch,
    };
    if d.first_offset > d.last_offset
        || d.first_offset < d.batch.base_offset()
        || d.last_offset > d.batch.last_offset()
    {
        return Err(WireError::BadBody {
            what: "deliver",
            reason: "offset range outside the batch".into(),
        });
    }
    Ok(d)
}

/// Writes a Publish frame: header, topic, then the batch bytes.
///
/// # Panics
/// If `topic` is longer than 65535 bytes (its length field is a u16); the
/// broker accepts names of at most 200, and clients check before sending.
pub fn put_publish(buf: &mut BytesMut, request_id: u64, topic: &str, batch: &[u8]) {
    put_header(
        buf,
        Opcode::Publish,
        0,
        request_id,
        2 + topic.len() + batch.len(),
    );
    buf.put_u16_le(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    buf.put_slice(batch);
}

/// Writes the fixed part of a Deliver frame; the caller then sends the
/// batch bytes themselves (possibly as a separate buffer, to avoid a copy).
pub fn put_deliver_prefix(
    buf: &mut BytesMut,
    subscription_id: u64,
    first_offset: u64,
    last_offset: u64,
    delivery_count: u32,
    batch_len: usize,
) {
    put_header(
        buf,
        Opcode::Deliver,
        FLAG_PUSH,
        0,
        DELIVER_PREFIX_LEN + batch_len,
    );
    buf.put_u64_le(subscription_id);
    buf.put_u64_le(first_offset);
    buf.put_u64_le(last_offset);
    buf.put_u32_le(delivery_count);
}

impl Message {
    /// Parses a whole frame into a message.
    ///
    /// # Errors
    /// A body that does not match its opcode's layout.
    pub fn decode(frame: &Frame) -> Result<Message, WireError> {
        let b = &frame.body;
        let empty = |what: &'static str, m: Message| {
            if b.is_empty() {
                Ok(m)
            } else {
                Err(WireError::TrailingBytes {
                    what,
                    extra: b.len(),
                })
            }
        };
        Ok(match frame.header.opcode {
            Opcode::Hello => Message::Hello(from_postcard("hello", b)?),
            Opcode::HelloOk => Message::HelloOk(hello_ok::decode(b)?),
            Opcode::Error => Message::Error(from_postcard("error", b)?),
            Opcode::Ping => empty("ping", Message::Ping)?,
            Opcode::Pong => empty("pong", Message::Pong)?,
            Opcode::GoingAway => Message::GoingAway(from_postcard("going_away", b)?),
            Opcode::Ok => empty("ok", Message::Ok)?,
            Opcode::Publish => {
                let (topic, batch) = decode_publish(b)?;
                Message::Publish { topic, batch }
            }
            Opcode::PublishOk => Message::PublishOk(from_postcard("publish_ok", b)?),
            Opcode::Subscribe => Message::Subscribe(from_postcard("subscribe", b)?),
            Opcode::SubscribeOk => Message::SubscribeOk(from_postcard("subscribe_ok", b)?),
            Opcode::Unsubscribe => Message::Unsubscribe(from_postcard("unsubscribe", b)?),
            Opcode::Deliver => Message::Deliver(decode_deliver(b)?),
            Opcode::Ack => Message::Ack(from_postcard("ack", b)?),
            Opcode::Flow => Message::Flow(from_postcard("flow", b)?),
            Opcode::SubscriptionError => {
                Message::SubscriptionError(from_postcard("subscription_error", b)?)
            }
            Opcode::CreateTopic => Message::CreateTopic(from_postcard("create_topic", b)?),
            Opcode::DeleteTopic => Message::DeleteTopic(from_postcard("delete_topic", b)?),
            Opcode::ListTopics => empty("list_topics", Message::ListTopics)?,
            Opcode::DescribeTopic => Message::DescribeTopic(from_postcard("describe_topic", b)?),
            Opcode::TopicInfo => Message::TopicInfo(from_postcard("topic_info", b)?),
            Opcode::TopicList => Message::TopicList(from_postcard("topic_list", b)?),
            Opcode::ListGroups => Message::ListGroups(from_postcard("list_groups", b)?),
            Opcode::GroupList => Message::GroupList(from_postcard("group_list", b)?),
            Opcode::ResetGroup => Message::ResetGroup(from_postcard("reset_group", b)?),
            Opcode::RepairTopic => Message::RepairTopic(from_postcard("repair_topic", b)?),
            Opcode::RepairReport => Message::RepairReport(from_postcard("repair_report", b)?),
            Opcode::Join => Message::Join(from_postcard("join", b)?),
            Opcode::Leave => Message::Leave(from_postcard("leave", b)?),
            Opcode::Emit => Message::Emit(from_postcard("emit", b)?),
            Opcode::EmitOk => Message::EmitOk(from_postcard("emit_ok", b)?),
            Opcode::Members => Message::Members(from_postcard("members", b)?),
            Opcode::MemberList => Message::MemberList(from_postcard("member_list", b)?),
            Opcode::Reply => Message::Reply(from_postcard("reply", b)?),
            Opcode::Skipped => Message::Skipped(from_postcard("skipped", b)?),
            Opcode::MyRooms => empty("my_rooms", Message::MyRooms)?,
            Opcode::RoomList => Message::RoomList(from_postcard("room_list", b)?),
            Opcode::EmitBatch => Message::EmitBatch(from_postcard("emit_batch", b)?),
            Opcode::EmitBatchOk => Message::EmitBatchOk(from_postcard("emit_batch_ok", b)?),
            Opcode::Refresh => Message::Refresh(from_postcard("refresh", b)?),
            Opcode::TokenExpiring => Message::TokenExpiring(from_postcard("token_expiring", b)?),
            Opcode::Cluster => Message::Cluster(b.clone()),
            Opcode::ClusterReply => Message::ClusterReply(b.clone()),
            Opcode::ClusterStatus => empty("cluster_status", Message::ClusterStatus)?,
            Opcode::ClusterInfo => Message::ClusterInfo(from_postcard("cluster_info", b)?),
            Opcode::ClusterChange => Message::ClusterChange(from_postcard("cluster_change", b)?),
        })
    }

    /// The opcode this message is sent with.
    pub fn opcode(&self) -> Opcode {
        match self {
            Message::Hello(_) => Opcode::Hello,
            Message::HelloOk(_) => Opcode::HelloOk,
            Message::Error(_) => Opcode::Error,
            Message::Ping => Opcode::Ping,
            Message::Pong => Opcode::Pong,
            Message::GoingAway(_) => Opcode::GoingAway,
            Message::Ok => Opcode::Ok,
            Message::Publish { .. } => Opcode::Publish,
            Message::PublishOk(_) => Opcode::PublishOk,
            Message::Subscribe(_) => Opcode::Subscribe,
            Message::SubscribeOk(_) => Opcode::SubscribeOk,
            Message::Unsubscribe(_) => Opcode::Unsubscribe,
            Message::Deliver(_) => Opcode::Deliver,
            Message::Ack(_) => Opcode::Ack,
            Message::Flow(_) => Opcode::Flow,
            Message::SubscriptionError(_) => Opcode::SubscriptionError,
            Message::CreateTopic(_) => Opcode::CreateTopic,
            Message::DeleteTopic(_) => Opcode::DeleteTopic,
            Message::ListTopics => Opcode::ListTopics,
            Message::DescribeTopic(_) => Opcode::DescribeTopic,
            Message::TopicInfo(_) => Opcode::TopicInfo,
            Message::TopicList(_) => Opcode::TopicList,
            Message::ListGroups(_) => Opcode::ListGroups,
            Message::GroupList(_) => Opcode::GroupList,
            Message::ResetGroup(_) => Opcode::ResetGroup,
            Message::RepairTopic(_) => Opcode::RepairTopic,
            Message::RepairReport(_) => Opcode::RepairReport,
            Message::Join(_) => Opcode::Join,
            Message::Leave(_) => Opcode::Leave,
            Message::Emit(_) => Opcode::Emit,
            Message::EmitOk(_) => Opcode::EmitOk,
            Message::Members(_) => Opcode::Members,
            Message::MemberList(_) => Opcode::MemberList,
            Message::Reply(_) => Opcode::Reply,
            Message::Skipped(_) => Opcode::Skipped,
            Message::MyRooms => Opcode::MyRooms,
            Message::RoomList(_) => Opcode::RoomList,
            Message::EmitBatch(_) => Opcode::EmitBatch,
            Message::EmitBatchOk(_) => Opcode::EmitBatchOk,
            Message::Refresh(_) => Opcode::Refresh,
            Message::TokenExpiring(_) => Opcode::TokenExpiring,
            Message::Cluster(_) => Opcode::Cluster,
            Message::ClusterReply(_) => Opcode::ClusterReply,
            Message::ClusterStatus => Opcode::ClusterStatus,
            Message::ClusterInfo(_) => Opcode::ClusterInfo,
            Message::ClusterChange(_) => Opcode::ClusterChange,
        }
    }

    /// Whether the broker sends this message unprompted (PUSH flag set).
    pub fn is_push(&self) -> bool {
        matches!(
            self,
            Message::Deliver(_)
                | Message::GoingAway(_)
                | Message::SubscriptionError(_)
                | Message::Skipped(_)
                | Message::TokenExpiring(_)
        )
    }

    /// Appends this message as one frame to `buf`.
    pub fn encode(&self, request_id: u64, buf: &mut BytesMut) {
        let op = self.opcode();
        let flags = if self.is_push() { FLAG_PUSH } else { 0 };
        let id = if self.is_push() { 0 } else { request_id };
        match self {
            Message::Ping
            | Message::Pong
            | Message::Ok
            | Message::ListTopics
            | Message::MyRooms
            | Message::ClusterStatus => put_frame(buf, op, flags, id, &[]),
            Message::Publish { topic, batch } => put_publish(buf, id, topic, batch.bytes()),
            Message::Deliver(d) => {
                put_deliver_prefix(
                    buf,
                    d.subscription_id,
                    d.first_offset,
                    d.last_offset,
                    d.delivery_count,
                    d.batch.len_bytes(),
                );
                buf.put_slice(d.batch.bytes());
            }
            Message::Hello(v) => put_postcard(buf, op, flags, id, v),
            Message::HelloOk(v) => hello_ok::encode(buf, op, flags, id, v),
            Message::Error(v) => put_postcard(buf, op, flags, id, v),
            Message::GoingAway(v) => put_postcard(buf, op, flags, id, v),
            Message::PublishOk(v) => put_postcard(buf, op, flags, id, v),
            Message::Subscribe(v) => put_postcard(buf, op, flags, id, v),
            Message::SubscribeOk(v) => put_postcard(buf, op, flags, id, v),
            Message::Unsubscribe(v) => put_postcard(buf, op, flags, id, v),
            Message::Ack(v) => put_postcard(buf, op, flags, id, v),
            Message::Flow(v) => put_postcard(buf, op, flags, id, v),
            Message::SubscriptionError(v) => put_postcard(buf, op, flags, id, v),
            Message::CreateTopic(v) => put_postcard(buf, op, flags, id, v),
            Message::DeleteTopic(v) => put_postcard(buf, op, flags, id, v),
            Message::DescribeTopic(v) => put_postcard(buf, op, flags, id, v),
            Message::TopicInfo(v) => put_postcard(buf, op, flags, id, v),
            Message::TopicList(v) => put_postcard(buf, op, flags, id, v),
            Message::ListGroups(v) => put_postcard(buf, op, flags, id, v),
            Message::GroupList(v) => put_postcard(buf, op, flags, id, v),
            Message::ResetGroup(v) => put_postcard(buf, op, flags, id, v),
            Message::RepairTopic(v) => put_postcard(buf, op, flags, id, v),
            Message::RepairReport(v) => put_postcard(buf, op, flags, id, v),
            Message::Join(v) => put_postcard(buf, op, flags, id, v),
            Message::Leave(v) => put_postcard(buf, op, flags, id, v),
            Message::Emit(v) => put_postcard(buf, op, flags, id, v),
            Message::EmitOk(v) => put_postcard(buf, op, flags, id, v),
            Message::Members(v) => put_postcard(buf, op, flags, id, v),
            Message::MemberList(v) => put_postcard(buf, op, flags, id, v),
            Message::Reply(v) => put_postcard(buf, op, flags, id, v),
            Message::Skipped(v) => put_postcard(buf, op, flags, id, v),
            Message::RoomList(v) => put_postcard(buf, op, flags, id, v),
            Message::EmitBatch(v) => put_postcard(buf, op, flags, id, v),
            Message::EmitBatchOk(v) => put_postcard(buf, op, flags, id, v),
            Message::Refresh(v) => put_postcard(buf, op, flags, id, v),
            Message::TokenExpiring(v) => put_postcard(buf, op, flags, id, v),
            Message::Cluster(b) | Message::ClusterReply(b) => put_frame(buf, op, flags, id, b),
            Message::ClusterInfo(v) => put_postcard(buf, op, flags, id, v),
            Message::ClusterChange(v) => put_postcard(buf, op, flags, id, v),
        }
    }

    /// Builds an error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error(ErrorBody {
            code: code.as_u16(),
            message: message.into(),
        })
    }
}
