//! The sending half of a connection: one writer task owns the socket's write
//! side; everything else hands it frames through an [`Outbox`].
//!
//! Two queues feed it. Replies go through a bounded channel, so a peer that
//! stops reading eventually stops the session from reading its requests.
//! Pushed deliveries go through an unbounded channel whose content is
//! bounded by credit: a subscription never has more than its prefetch window
//! out, so the queue never holds more than the windows of the connection's
//! subscriptions.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_protocol::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A frame queued for the writer.
#[derive(Debug)]
pub enum Out {
    /// A whole encoded frame.
    Frame(Bytes),
    /// A delivery: the Deliver fields and the stored batch. The frame is
    /// written straight into the socket buffer, so the batch is copied once
    /// and nothing is allocated per delivery.
    Deliver {
        subscription_id: u64,
        first: u64,
        last: u64,
        delivery: u32,
        batch: Bytes,
    },
}

/// Cheap handle to a connection's writer.
#[derive(Debug, Clone)]
pub struct Outbox {
    replies: mpsc::Sender<Out>,
    pushes: mpsc::UnboundedSender<Out>,
    /// Cancelled when the writer is gone (peer closed, stalled, error).
    closed: CancellationToken,
}

/// Flush the coalescing buffer once it holds this much.
const WRITE_CHUNK: usize = 256 * 1024;

impl Outbox {
    /// Sends a reply, waiting while the bounded queue is full.
    /// Returns false once the connection is gone.
    pub async fn reply(&self, request_id: u64, msg: &Message) -> bool {
        let mut b = BytesMut::new();
        msg.encode(request_id, &mut b);
        self.replies.send(Out::Frame(b.freeze())).await.is_ok()
    }

    /// Queues a pushed frame (bounded by the caller's credit).
    pub fn push(&self, out: Out) -> bool {
        self.pushes.send(out).is_ok()
    }

    /// Queues a Deliver frame for `batch`, restricted to `first..=last`.
    pub fn deliver(&self, sub: u64, first: u64, last: u64, delivery: u32, batch: Bytes) -> bool {
        self.push(Out::Deliver {
            subscription_id: sub,
            first,
            last,
            delivery,
            batch,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the writer has gone away.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }
}

/// Starts the writer task for `sink`; it ends when every [`Outbox`] clone is
/// dropped (after flushing), on a write error, or when the peer has not
/// accepted bytes for `stall`.
pub fn spawn<W>(sink: W, queue: usize, stall: Duration) -> (Outbox, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rtx, rrx) = mpsc::channel(queue.max(1));
    let (ptx, prx) = mpsc::unbounded_channel();
    let closed = CancellationToken::new();
    let outbox = Outbox {
        replies: rtx,
        pushes: ptx,
        closed: closed.clone(),
    };
    let task = tokio::spawn(async move {
        let guard = closed.drop_guard();
        if let Err(e) = run(sink, rrx, prx, stall).await {
            tracing::debug!(error = %e, "connection writer stopped");
        }
        drop(guard);
    });
    (outbox, task)
}

fn append(buf: &mut BytesMut, out: Out) {
    match out {
        Out::Frame(f) => buf.extend_from_slice(&f),
        Out::Deliver {
            subscription_id,
            first,
            last,
            delivery,
            batch,
        } => {
            herald_protocol::message::put_deliver_prefix(
                buf,
                subscription_id,
                first,
                last,
                delivery,
                batch.len(),
            );
            buf.extend_from_slice(&batch);
        }
    }
}

async fn run<W: AsyncWrite + Unpin>(
    mut sink: W,
    mut replies: mpsc::Receiver<Out>,
    mut pushes: mpsc::UnboundedReceiver<Out>,
    stall: Duration,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut replies_open, mut pushes_open) = (true, true);
    while replies_open || pushes_open {
        let first = tokio::select! {
            biased;
            r = replies.recv(), if replies_open => match r { Some(o) => o, None => { replies_open = false; continue } },
            p = pushes.recv(), if pushes_open => match p { Some(o) => o, None => { pushes_open = false; continue } },
        };
        append(&mut buf, first);
        // Coalesce whatever else is ready into one write.
        while buf.len() < WRITE_CHUNK {
            if let Ok(o) = replies.try_recv() {
                append(&mut buf, o);
            } else if let Ok(o) = pushes.try_recv() {
                append(&mut buf, o);
            } else {
                break;
            }
        }
        match tokio::time::timeout(stall, sink.write_all(&buf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "peer stopped reading",
                ))
            }
        }
        buf.clear();
        if buf.capacity() > 4 * WRITE_CHUNK {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    let _ = tokio::time::timeout(stall, sink.shutdown()).await;
    Ok(())
}
