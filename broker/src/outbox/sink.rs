//! Where a connection's writer puts its bytes.
//!
//! A byte stream (TCP, TLS) is written from the writer's buffer, which is
//! then cleared and used again. A WebSocket (`crate::ws`) takes each write
//! as a binary message that it owns: the buffer's bytes are handed over as
//! the message, not copied into one. tungstenite copies the message into
//! its own frame buffer anyway; a copy before that as well was about 7% of
//! the broker's CPU when it delivers a room's events to WebSocket members.

use std::future::Future;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The write side of a connection, as the outbox's writer uses it.
pub trait Sink: Unpin + Send + 'static {
    /// Writes `buf`, then `direct` after it, and flushes. `buf` is empty
    /// afterwards. Its allocation is used again for the next write: at
    /// once by a byte stream; by a message sink once the message it took
    /// is sent and dropped (`BytesMut::reserve` takes the allocation back
    /// when nothing else holds it).
    fn send(
        &mut self,
        buf: &mut BytesMut,
        direct: Option<Bytes>,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Ends the write side: a TCP FIN, a WebSocket Close.
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl<W: AsyncWrite + Unpin + Send + 'static> Sink for W {
    async fn send(&mut self, buf: &mut BytesMut, direct: Option<Bytes>) -> io::Result<()> {
        // One vectored write where the stream supports it: a big stored
        // batch goes out from where it is stored, after the frames before it.
        match direct {
            None => self.write_all_buf(&mut &buf[..]).await?,
            Some(batch) => self.write_all_buf(&mut (&buf[..]).chain(batch)).await?,
        }
        buf.clear();
        // The flush matters for TLS: the TLS layer may keep encrypted
        // records that the socket did not take yet, and nothing else would
        // push them out if no further write came (a no-op for TCP).
        self.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    /// What the WebSocket sink relies on not to allocate a buffer per
    /// message: the bytes handed over are the buffer's own (no copy), and
    /// once the message is dropped the buffer's next write reuses its
    /// allocation.
    #[test]
    fn a_buffer_handed_over_as_a_message_is_used_again_once_it_is_dropped() {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.extend_from_slice(&[1u8; 40_000]);
        let at = buf.as_ptr();
        let message = buf.split().freeze();
        assert_eq!(message.as_ptr(), at, "the message is the buffer's bytes");
        assert!(buf.is_empty());
        drop(message);
        buf.extend_from_slice(&[2u8; 40_000]);
        assert_eq!(buf.as_ptr(), at, "the same allocation, taken back");
        assert_eq!(buf.capacity(), 64 * 1024);
    }
}
