//! The frame: the unit every byte on a Herald connection belongs to.
//!
//! # Layout (all integers little-endian)
//! ```text
//! offset size field
//! 0      4    length      bytes that follow this field: 12 + body length
//! 4      1    opcode      see [`Opcode`]
//! 5      1    flags       bit 0 = PUSH (broker-initiated, request id is 0); other bits 0
//! 6      2    reserved    0
//! 8      8    request_id  chosen by the requester, echoed in the reply
//! 16     n    body        opcode-specific
//! ```
//! Decoding is two-phase, as in mini-redis: [`peek_header`] says whether a
//! whole frame is buffered (and rejects an oversized length before anything
//! is allocated); only then is the frame split off the buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;

/// Bytes in the fixed frame header, the length prefix included.
pub const HEADER_LEN: usize = 16;
/// Bytes counted by the length prefix that belong to the header.
pub const LENGTH_COVERED_HEADER: usize = HEADER_LEN - 4;
/// Default upper bound on a whole frame (header plus body): 8 MiB. The
/// handshake tells the client the value a broker actually enforces.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// The PUSH flag: the frame was sent by the broker unprompted (a delivery, a
/// room event, going-away); its request id is 0.
pub const FLAG_PUSH: u8 = 0x01;

/// Every operation of protocol version 1. Replies use their own opcodes so a
/// reader can dispatch on the opcode alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Hello = 0x01,
    HelloOk = 0x02,
    Error = 0x03,
    Ping = 0x04,
    Pong = 0x05,
    GoingAway = 0x06,
    Ok = 0x07,
    Publish = 0x10,
    PublishOk = 0x11,
    Subscribe = 0x20,
    SubscribeOk = 0x21,
    Unsubscribe = 0x22,
    Deliver = 0x23,
    Ack = 0x24,
    Flow = 0x25,
    SubscriptionError = 0x26,
    CreateTopic = 0x30,
    DeleteTopic = 0x31,
    ListTopics = 0x32,
    DescribeTopic = 0x33,
    TopicInfo = 0x34,
    TopicList = 0x35,
    ListGroups = 0x36,
    GroupList = 0x37,
    ResetGroup = 0x38,
    RepairTopic = 0x39,
    RepairReport = 0x3A,
    Join = 0x40,
    Leave = 0x41,
    Emit = 0x42,
    EmitOk = 0x43,
    Members = 0x44,
    MemberList = 0x45,
    Reply = 0x46,
    Skipped = 0x47,
    MyRooms = 0x48,
    RoomList = 0x49,
    EmitBatch = 0x4A,
    EmitBatchOk = 0x4B,
    Refresh = 0x50,
    TokenExpiring = 0x51,
    /// Between the nodes of a cluster: one Raft call (raw body, see
    /// docs/cluster.md).
    Cluster = 0x60,
    /// The answer to a [`Opcode::Cluster`] call (raw body).
    ClusterReply = 0x61,
    /// Asks a cluster node how the cluster looks from there.
    ClusterStatus = 0x62,
    /// The answer to [`Opcode::ClusterStatus`].
    ClusterInfo = 0x63,
    /// Changes the cluster's membership or a topic's replicas (postcard
    /// [`crate::ClusterChange`]), answered by ClusterInfo once done.
    ClusterChange = 0x64,
}

impl Opcode {
    /// Maps a byte to an opcode; unknown bytes are an error, not a panic.
    pub fn from_u8(b: u8) -> Result<Self, WireError> {
        use Opcode::*;
        let op = match b {
            0x01 => Hello,
            0x02 => HelloOk,
            0x03 => Error,
            0x04 => Ping,
            0x05 => Pong,
            0x06 => GoingAway,
            0x07 => Ok,
            0x10 => Publish,
            0x11 => PublishOk,
            0x20 => Subscribe,
            0x21 => SubscribeOk,
            0x22 => Unsubscribe,
            0x23 => Deliver,
            0x24 => Ack,
            0x25 => Flow,
            0x26 => SubscriptionError,
            0x30 => CreateTopic,
            0x31 => DeleteTopic,
            0x32 => ListTopics,
            0x33 => DescribeTopic,
            0x34 => TopicInfo,
            0x35 => TopicList,
            0x36 => ListGroups,
            0x37 => GroupList,
            0x38 => ResetGroup,
            0x39 => RepairTopic,
            0x3A => RepairReport,
            0x40 => Join,
            0x41 => Leave,
            0x42 => Emit,
            0x43 => EmitOk,
            0x44 => Members,
            0x45 => MemberList,
            0x46 => Reply,
            0x47 => Skipped,
            0x48 => MyRooms,
            0x49 => RoomList,
            0x4A => EmitBatch,
            0x4B => EmitBatchOk,
            0x50 => Refresh,
            0x51 => TokenExpiring,
            0x60 => Cluster,
            0x61 => ClusterReply,
            0x62 => ClusterStatus,
            0x63 => ClusterInfo,
            0x64 => ClusterChange,
            other => return Err(WireError::UnknownOpcode(other)),
        };
        Result::Ok(op)
    }
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub opcode: Opcode,
    pub flags: u8,
    pub request_id: u64,
}

/// One whole frame: its header and its body, which shares the receive buffer
/// (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Bytes,
}

/// Looks at the front of `src` and returns the total length of the first frame
/// (prefix included) once all of it is present, `Ok(None)` while it is not.
///
/// # Errors
/// A length above `max_frame` or below the header size, an unknown opcode or
/// reserved bits set. The length check happens on the first four bytes, so a
/// hostile peer cannot make the caller allocate.
pub fn peek_header(
    src: &[u8],
    max_frame: usize,
) -> Result<Option<(FrameHeader, usize)>, WireError> {
    if src.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
    // Saturating: on a 32-bit target `u32::MAX + 4` would overflow usize.
    let total = len.saturating_add(4);
    if total > max_frame {
        return Err(WireError::FrameTooLarge {
            size: total,
            max: max_frame,
        });
    }
    if len < LENGTH_COVERED_HEADER {
        return Err(WireError::FrameTooShort {
            len,
            min: LENGTH_COVERED_HEADER,
        });
    }
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let opcode = Opcode::from_u8(src[4])?;
    let flags = src[5];
    let reserved = u16::from_le_bytes([src[6], src[7]]);
    if flags & !FLAG_PUSH != 0 || reserved != 0 {
        return Err(WireError::ReservedBits { flags, reserved });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&src[8..16]);
    let header = FrameHeader {
        opcode,
        flags,
        request_id: u64::from_le_bytes(id),
    };
    if src.len() < total {
        return Ok(None);
    }
    Ok(Some((header, total)))
}

/// Splits the first whole frame off `buf`, or returns `Ok(None)` (after
/// reserving room for the rest of it, bounded by `max_frame`).
pub fn decode_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, WireError> {
    match peek_header(buf, max_frame)? {
        Some((header, total)) => {
            let mut whole = buf.split_to(total);
            whole.advance(HEADER_LEN);
            Ok(Some(Frame {
                header,
                body: whole.freeze(),
            }))
        }
        None => {
            if buf.len() >= 4 {
                let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                let len = len.saturating_add(4);
                // Bounded: peek_header already rejected len > max_frame.
                buf.reserve(len.saturating_sub(buf.len()));
            }
            Ok(None)
        }
    }
}

/// Writes a frame header for a body of `body_len` bytes that the caller
/// appends next. Used where the body is assembled in place (publish,
/// deliver) so that a batch is never copied into a temporary first.
pub fn put_header(buf: &mut BytesMut, opcode: Opcode, flags: u8, request_id: u64, body_len: usize) {
    buf.reserve(HEADER_LEN + body_len);
    buf.put_u32_le((LENGTH_COVERED_HEADER + body_len) as u32);
    buf.put_u8(opcode as u8);
    buf.put_u8(flags);
    buf.put_u16_le(0);
    buf.put_u64_le(request_id);
}

/// Writes a whole frame with the given body.
pub fn put_frame(buf: &mut BytesMut, opcode: Opcode, flags: u8, request_id: u64, body: &[u8]) {
    put_header(buf, opcode, flags, request_id, body.len());
    buf.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_header_bytes() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, Opcode::Ping, 0, 0x0102030405060708, &[]);
        assert_eq!(
            &buf[..],
            &[12, 0, 0, 0, 0x04, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn oversized_length_rejected_before_body_arrives() {
        let src = [0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            peek_header(&src, DEFAULT_MAX_FRAME),
            Err(WireError::FrameTooLarge { .. })
        ));
        let mut buf = BytesMut::from(&src[..]);
        assert!(decode_frame(&mut buf, DEFAULT_MAX_FRAME).is_err());
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, Opcode::Ok, 0, 9, b"abc");
        for cut in 0..buf.len() {
            assert_eq!(
                peek_header(&buf[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut {cut}"
            );
        }
        let (h, total) = peek_header(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(total, buf.len());
        assert_eq!(h.request_id, 9);
    }

    #[test]
    fn short_length_and_reserved_bits_are_errors() {
        assert!(matches!(
            peek_header(&[3, 0, 0, 0], DEFAULT_MAX_FRAME),
            Err(WireError::FrameTooShort { .. })
        ));
        let mut buf = BytesMut::new();
        put_frame(&mut buf, Opcode::Ok, 0x80, 1, b"");
        assert!(matches!(
            peek_header(&buf, DEFAULT_MAX_FRAME),
            Err(WireError::ReservedBits { .. })
        ));
        let mut buf = BytesMut::new();
        put_frame(&mut buf, Opcode::Ok, 0, 1, b"");
        buf[4] = 0xEE;
        assert_eq!(
            peek_header(&buf, DEFAULT_MAX_FRAME),
            Err(WireError::UnknownOpcode(0xEE))
        );
    }
}
