//! The WebSocket transport: a WebSocket carries the same frames as a TCP
//! connection (docs/protocol.md, "WebSocket"), in binary messages, and is
//! served by the same session code ([`crate::session::run`]).
//!
//! This module only adapts the socket: [`WsReader`] turns the incoming
//! binary messages into one byte stream (`AsyncRead`) for the session's
//! frame decoder, and [`WsWriter`] turns each write of the connection's
//! outbox into one binary message ([`crate::outbox::Sink`]). Message boundaries carry
//! no meaning, exactly as TCP segment boundaries do not; in practice every
//! message the broker sends holds whole frames.
//!
//! Close codes: 1000 when the session ends normally (the peer left, or sent
//! a frame the broker refused, which the Error frame before the close
//! explains), 1001 when the broker shuts down (after GoingAway), 1002 for
//! a broken WebSocket protocol, 1003 for a text message, 1007 for a close
//! reason that is not UTF-8, 1009 for a message over the frame limit.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};

use crate::outbox::Sink;
use crate::session::{self, Shared};

/// WebSocket close codes (RFC 6455, section 7.4.1).
pub mod close {
    /// The session ended normally.
    pub const NORMAL: u16 = 1000;
    /// The broker is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message: the protocol is binary frames only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Text that is not UTF-8 where the WebSocket protocol wants UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A message above the frame limit.
    pub const TOO_BIG: u16 = 1009;
}

/// The session of one upgraded WebSocket: it runs until the session ends,
/// then closes the socket with the code that says why.
///
/// Not an `async fn`: one would keep the unsplit socket (368 bytes) in its
/// state beside the session that owns its halves, and every idle
/// connection's task would carry it. Splitting here, before the future
/// exists, keeps the task of an idle WebSocket session in jemalloc's
/// 3 KiB class rather than its 4 KiB one (see docs/performance.md, "Idle
/// sessions: where the bytes are").
pub fn serve(
    socket: WebSocket,
    peer: Option<std::net::SocketAddr>,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    let code = Arc::new(AtomicU16::new(0));
    let reader = WsReader {
        stream,
        chunk: Bytes::new(),
        code: code.clone(),
    };
    let writer = WsWriter {
        sink,
        code,
        shutdown: shared.shutdown.clone(),
    };
    session::run(
        reader,
        writer,
        peer,
        shared,
        crate::metrics::Transport::WebSocket,
    )
}

/// The read half: binary messages, concatenated.
pub struct WsReader {
    stream: SplitStream<WebSocket>,
    /// What is left of the last message.
    chunk: Bytes,
    /// The close code the writer sends, when reading found the reason.
    code: Arc<AtomicU16>,
}

impl WsReader {
    fn fail(&self, code: u16, e: io::Error) -> Poll<io::Result<()>> {
        self.code.store(code, Ordering::Relaxed);
        Poll::Ready(Err(e))
    }
}

/// The close code a WebSocket read error calls for: 1009 for a message or
/// frame over the size limit, 1002 for a broken WebSocket protocol (an
/// unmasked frame, reserved bits or opcodes, a bad control frame), 1007
/// for a close reason that is not UTF-8; 0 (1000 then) when the socket
/// itself failed.
fn close_code_for(e: axum::Error) -> (u16, io::Error) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = e.into_inner();
    let code = match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => close::TOO_BIG,
        Some(WsError::Protocol(_)) => close::PROTOCOL_ERROR,
        Some(WsError::Utf8(_)) => close::INVALID_DATA,
        _ => 0,
    };
    (code, io::Error::other(inner))
}

impl AsyncRead for WsReader {
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
                    // An empty slice still holds the message's buffer (it
                    // may be tungstenite's whole read buffer): let it go,
                    // an idle connection should hold nothing.
                    self.chunk = Bytes::new();
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(self.stream.poll_next_unpin(cx)) {
                // End of stream: the session sees EOF.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.chunk = b,
                // Answered by tungstenite itself; not protocol traffic.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message: Herald frames travel in binary messages",
                    );
                    return self.fail(close::UNSUPPORTED_DATA, e);
                }
                Some(Err(e)) => {
                    let (code, e) = close_code_for(e);
                    return self.fail(code, e);
                }
            }
        }
    }
}

/// The write half: each write of the outbox is one binary message, made of
/// the outbox's buffer without a copy (see [`crate::outbox::Sink`]).
pub struct WsWriter {
    sink: SplitSink<WebSocket, Message>,
    /// Set by the reader when it found why the connection must close.
    code: Arc<AtomicU16>,
    /// Cancelled when the broker shuts down (close code 1001).
    shutdown: tokio_util::sync::CancellationToken,
}

fn to_io(e: axum::Error) -> io::Error {
    io::Error::other(e.into_inner())
}

impl WsWriter {
    fn close_code(&self) -> u16 {
        match self.code.load(Ordering::Relaxed) {
            0 if self.shutdown.is_cancelled() => close::GOING_AWAY,
            0 => close::NORMAL,
            c => c,
        }
    }
}

impl Sink for WsWriter {
    async fn send(&mut self, buf: &mut BytesMut, direct: Option<Bytes>) -> io::Result<()> {
        // A stored batch the outbox kept out of its buffer (memory is
        // short) joins the frames before it: every message holds whole
        // frames.
        if let Some(batch) = direct {
            buf.extend_from_slice(&batch);
        }
        let message = buf.split().freeze();
        // `send` is ready, then start_send (tungstenite copies the message
        // into its frame buffer and drops it), then flush.
        self.sink
            .send(Message::Binary(message))
            .await
            .map_err(to_io)
    }

    async fn close(&mut self) -> io::Result<()> {
        let frame = CloseFrame {
            code: self.close_code(),
            reason: "".into(),
        };
        // After the peer's own Close, tungstenite has queued the answer
        // itself and refuses this one: the close below still sends it.
        let sent = self.sink.send(Message::Close(Some(frame))).await;
        let closed = self.sink.close().await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "no Close of ours: the peer closed first");
        }
        closed.map_err(to_io)
    }
}
