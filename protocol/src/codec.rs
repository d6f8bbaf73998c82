//! The tokio-util codec: a thin wrapper over [`crate::frame`] so the broker
//! and the client can read frames through `Framed`, which is cancel-safe in
//! `select!`.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{decode_frame, Frame, DEFAULT_MAX_FRAME};
use crate::{Message, WireError};

/// Splits a byte stream into [`Frame`]s and writes [`Message`]s.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

/// Errors of the codec: the socket's or the peer's bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(decode_frame(src, self.max_frame)?)
    }
}

/// Encodes a message with its request id.
impl Encoder<(u64, Message)> for FrameCodec {
    type Error = CodecError;
    fn encode(&mut self, (id, msg): (u64, Message), dst: &mut BytesMut) -> Result<(), CodecError> {
        msg.encode(id, dst);
        Ok(())
    }
}

/// Passes pre-encoded frames through (used for hot paths that assemble
/// frames themselves).
impl Encoder<bytes::Bytes> for FrameCodec {
    type Error = CodecError;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}
