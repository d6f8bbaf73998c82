//! A WebSocket as a byte stream (feature `ws`), so the connection task reads
//! and writes frames over `ws://` exactly as over TCP (docs/protocol.md,
//! section 3.1: concatenated, the binary messages in one direction are the
//! TCP byte stream; message boundaries carry no meaning).
//!
//! - Reading: binary messages are concatenated; pings are answered by
//!   tungstenite; a Close (or the end of the socket) is end of file; a text
//!   message is an error (the broker never sends one).
//! - Writing: bytes written are gathered and leave as one binary message at
//!   the next flush (the connection flushes once its buffer is written), or
//!   once they reach the broker's frame limit, which is also its message
//!   limit. Shutting down sends a Close.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::tls::{Io, Stream as Conn};

/// The largest message written before the handshake told the broker's
/// frame limit: the smallest limit a broker can be configured with
/// (`--max-frame-bytes` is at least 4 KiB). The Hello fits easily.
pub(crate) const MIN_MESSAGE_LIMIT: usize = 4096;

/// What tungstenite reads from the socket at once. It zero-fills that
/// much before every read (its default, 128 KiB, was 7.6% of a `herald
/// bench pubsub` client's CPU at 20,000 deliveries/s, each read bringing a
/// few hundred bytes); at 32 KiB a 1 MiB delivery takes 32 reads.
const READ_BUFFER: usize = 32 * 1024;

/// The largest message (and WebSocket frame) accepted from the broker: a
/// broker's frame limit can be set up to 256 MiB (`--max-frame-bytes`),
/// and one message of its holds at most a delivery plus 256 KiB of other
/// frames written together. The frame decoder then holds each Herald frame
/// to the limit the handshake announced, as over TCP.
const MAX_INCOMING_MESSAGE: usize = (256 << 20) + (1 << 20);

/// Upgrades `stream` (TCP, or TLS over it) to a WebSocket at `url` and
/// returns it as a byte stream, with the handle that sets its message size
/// limit once the broker's frame limit is known ([`MessageLimit::set`]).
///
/// # Errors
/// Why the upgrade failed, in words (an HTTP status such as 403 for a
/// refused origin or 503 past the connection limit, or a broken socket).
pub(crate) async fn connect(url: &str, stream: Conn) -> Result<(Conn, MessageLimit), String> {
    let request = url
        .into_client_request()
        .map_err(|e| format!("bad WebSocket URL {url:?}: {e}"))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_INCOMING_MESSAGE))
        .max_frame_size(Some(MAX_INCOMING_MESSAGE));
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| format!("WebSocket upgrade at {url} failed: {e}"))?;
    let limit = MessageLimit(Arc::new(AtomicUsize::new(MIN_MESSAGE_LIMIT)));
    let stream = WsByteStream {
        ws,
        chunk: Bytes::new(),
        out: BytesMut::new(),
        limit: limit.0.clone(),
    };
    Ok((Box::new(stream), limit))
}

/// The size limit of the binary messages a [`WsByteStream`] writes, shared
/// with the connection task, which learns the broker's limit from the
/// handshake (a larger message would be closed with 1009).
#[derive(Debug, Clone)]
pub(crate) struct MessageLimit(Arc<AtomicUsize>);

impl MessageLimit {
    /// Messages from now on may be up to `max_frame` bytes.
    pub(crate) fn set(&self, max_frame: usize) {
        self.0
            .store(max_frame.max(MIN_MESSAGE_LIMIT), Ordering::Relaxed);
    }
}

/// A WebSocket client connection read and written as bytes; see the module
/// docs.
struct WsByteStream {
    ws: WebSocketStream<Conn>,
    /// What is left of the last binary message read.
    chunk: Bytes,
    /// Bytes written since the last message left. Its allocation is reused:
    /// tungstenite copies a message into its own buffer and drops it before
    /// the next write, so `out` is the buffer's only owner again.
    out: BytesMut,
    /// Most bytes in one message.
    limit: Arc<AtomicUsize>,
}

/// The `Io` bound of the connection's stream holds for the adapter too.
const _: fn() = || {
    fn is_io<T: Io>() {}
    is_io::<WsByteStream>();
};

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl WsByteStream {
    /// Sends what `out` holds as one binary message (once the WebSocket
    /// can take one).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(to_io)?;
        let message = self.out.split().freeze();
        ws.start_send(Message::Binary(message)).map_err(to_io)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsByteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                buf.put_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                if self.chunk.is_empty() {
                    // An empty slice still holds the message's buffer:
                    // let it go, an idle connection should hold nothing.
                    self.chunk = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                // End of file: the connection sees the broker closed it.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.chunk = b,
                // Answered by tungstenite; not Herald traffic.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: Herald frames travel in binary messages",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsByteStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let limit = self.limit.load(Ordering::Relaxed);
        if self.out.len() >= limit {
            ready!(self.poll_send(cx))?;
        }
        let n = buf.len().min(limit.saturating_sub(self.out.len()));
        self.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.out.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    /// Sends what is left, then a Close.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.out.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}
