//! The sending half of a connection: one writer task owns the socket's write
//! side; everything else hands it frames through an [`Outbox`].
//!
//! Two queues feed it. Replies go through a bounded channel, so a peer that
//! stops reading eventually stops the session from reading its requests.
//! Pushed deliveries go through an unbounded queue ([`pushes`], allocated at
//! its first push) whose content is bounded by credit: a subscription never has more than its prefetch window
//! out, so the queue never holds more than the windows of the connection's
//! subscriptions. The bytes waiting in that queue are counted
//! ([`Outbox::queued_bytes`]) so that deliveries to a connection that falls
//! behind are the first to pause when the broker's memory budget is nearly
//! spent, and the bytes the writer has copied for the socket are counted
//! against that budget while they wait for it (see [`crate::memory`]).
//!
//! The writer prefers replies, so a reply may overtake pushes queued before
//! it. A reply that must not (an ack's `Ok`: the client then forgets the
//! acked offsets, so a redelivery of them queued before the ack took effect
//! must reach it first) waits for [`Outbox::pushes_taken`] before it is
//! queued.

mod pushes;
mod sink;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use herald_protocol::Message;
use tokio::sync::{mpsc, oneshot};

use pushes::{Pusher, Taker};
pub use sink::Sink;
use tokio_util::sync::CancellationToken;

use crate::memory::{Level, MemoryBudget};
use crate::metrics::Metrics;

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
    /// Not a frame: answered when the writer takes it from the push queue,
    /// that is once every push queued before it is in the write buffer.
    /// See [`Outbox::pushes_taken`].
    Mark(oneshot::Sender<()>),
}

/// Cheap handle to a connection's writer.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Encoded reply frames. Only frames, not [`Out`]: the channel's first
    /// block of slots is allocated with it, and holds half as many bytes
    /// this way (every connection has one, idle or not).
    replies: mpsc::Sender<Bytes>,
    pushes: Pusher,
    /// Cancelled when the writer is gone (peer closed, stalled, error).
    closed: CancellationToken,
    /// Set just before `closed` is cancelled: what [`Outbox::is_closed`]
    /// reads. A group asks before every delivery, and the token's
    /// `is_cancelled` takes a lock (1-2% of the broker's CPU in many small
    /// rooms).
    gone: Arc<AtomicBool>,
    /// Bytes pushed and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    /// The broker's budget, where the backlog of every connection adds up.
    memory: Arc<MemoryBudget>,
    /// Counts the error replies (every reply goes through
    /// [`Outbox::reply`]).
    metrics: Arc<Metrics>,
}

impl Out {
    /// Bytes this item puts on the wire (about: the Deliver prefix is not
    /// counted).
    fn len(&self) -> usize {
        match self {
            Out::Frame(f) => f.len(),
            Out::Deliver { batch, .. } => batch.len(),
            Out::Mark(_) => 0,
        }
    }
}

/// Flush the coalescing buffer once it holds this much.
const WRITE_CHUNK: usize = 256 * 1024;
/// Deliveries bigger than this are written from the stored batch instead
/// of being copied once memory is short (see `append`).
const COPY_MAX: usize = 16 * 1024;
/// The writer's buffer between bursts, at most, once memory is getting
/// short; and the least it coalesces into one write.
const IDLE_BUFFER: usize = 16 * 1024;
/// How long a write may wait for a peer that takes nothing while the memory
/// budget is past [`Level::Delivery`] (otherwise the stall timeout applies).
const PRESSURE_STALL: Duration = Duration::from_secs(2);
/// Most replies coalesced into one write. Replies are small (a confirm is
/// about 25 bytes), so a byte bound alone would let one blocked write hold
/// ten thousand confirms that a peer which never reads them has not taken;
/// with this, what such a peer can leave unread is the reply queue, this
/// many, and what the kernel holds (see `session::UNSENT_LIMIT`).
const MAX_REPLIES_PER_WRITE: usize = 256;

impl Outbox {
    /// Sends a reply, waiting while the bounded queue is full.
    /// Returns false once the connection is gone.
    ///
    /// The message is encoded before the returned future first waits, so
    /// that future holds the frame's bytes, not the message: every
    /// session's task is sized for its largest state, and a reply is
    /// awaited in most of them.
    pub fn reply(&self, request_id: u64, msg: &Message) -> impl Future<Output = bool> + Send + '_ {
        self.send_frame(self.encode(request_id, msg))
    }

    /// Encodes a reply (and counts it if it is an error, or the refused
    /// emits of an `EmitBatchOk`: each as an error reply to it alone
    /// would be).
    pub fn encode(&self, request_id: u64, msg: &Message) -> Bytes {
        let count = |e: &herald_protocol::ErrorBody| {
            self.metrics
                .error(herald_protocol::ErrorCode::from_u16(e.code))
        };
        match msg {
            Message::Error(e) => count(e),
            Message::EmitBatchOk(ok) => ok.results.iter().for_each(|r| {
                if let herald_protocol::EmitOutcome::Err(e) = r {
                    count(e);
                }
            }),
            _ => {}
        }
        let mut b = BytesMut::new();
        msg.encode(request_id, &mut b);
        b.freeze()
    }

    /// Sends an encoded reply frame (see [`Outbox::reply`]).
    pub async fn send_frame(&self, frame: Bytes) -> bool {
        self.replies.send(frame).await.is_ok()
    }

    /// Queues a pushed frame (bounded by the caller's credit).
    pub fn push(&self, out: Out) -> bool {
        let n = out.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.memory.queue(n);
        if self.pushes.push(out).is_ok() {
            true
        } else {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.memory.dequeue(n);
            false
        }
    }

    /// Queues every item of `items` (emptied) at once: the writer is woken
    /// once and finds them together, so a member's deliveries of one
    /// dispatch leave in one write rather than one write each (bounded,
    /// like [`Outbox::push`], by the caller's credit).
    pub fn push_all(&self, items: &mut Vec<Out>) -> bool {
        let n: usize = items.iter().map(Out::len).sum();
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.memory.queue(n);
        if self.pushes.push_all(items) {
            true
        } else {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.memory.dequeue(n);
            false
        }
    }

    /// Resolves once the writer has taken every push queued before this
    /// call (or is gone), so that a reply queued afterwards reaches the peer
    /// after them: replies otherwise go first.
    pub async fn pushes_taken(&self) {
        let (tx, rx) = oneshot::channel();
        if self.pushes.push(Out::Mark(tx)).is_ok() {
            // An error means the writer dropped the mark: it is gone.
            let _ = rx.await;
        }
    }

    /// Bytes of pushed frames waiting for the writer: how far behind this
    /// connection's reader is.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
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
        self.gone.load(Ordering::Acquire)
    }

    /// Resolves when the writer has gone away.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }
}

/// Marks an [`Outbox`] closed when dropped.
struct Gone {
    flag: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Drop for Gone {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }
}

/// Starts the writer task for `sink`; it ends when every [`Outbox`] clone is
/// dropped (after flushing), on a write error, or when the peer has not
/// accepted bytes for `stall`.
pub fn spawn<W: Sink>(
    sink: W,
    peer: Option<std::net::SocketAddr>,
    queue: usize,
    stall: Duration,
    memory: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (rtx, rrx) = mpsc::channel(queue.max(1));
    let (ptx, prx) = pushes::queue();
    let closed = CancellationToken::new();
    let gone = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        replies: rtx,
        pushes: ptx,
        closed: closed.clone(),
        gone: gone.clone(),
        queued: queued.clone(),
        memory: memory.clone(),
        metrics,
    };
    let counted = memory.connection();
    let writer = Writer {
        replies: rrx,
        pushes: prx,
        taken: VecDeque::new(),
        queued,
        memory,
        stall,
    };
    let task = tokio::spawn(async move {
        // Dropped when the task ends, however it ends (also if it is
        // aborted or panics): the flag first, then the token's waiters.
        let guard = Gone {
            flag: gone,
            token: closed,
        };
        let _counted = counted;
        match writer.run(sink).await {
            // A slow consumer cut off: the operator should see who.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::warn!(?peer, reason = %e, "connection cut off: the peer stopped reading");
            }
            Err(e) => tracing::debug!(?peer, error = %e, "connection writer stopped"),
            Ok(()) => {}
        }
        drop(guard);
    });
    (outbox, task)
}

/// Adds `out` to the write buffer. A delivery bigger than [`COPY_MAX`] is
/// copied only while the memory
/// budget is below [`Level::Copy`]: past it, its prefix goes in the buffer
/// and its batch is returned, to be written straight from the stored bytes
/// together with the buffer (one vectored write). A thousand stalled peers then hold
/// references to shared batches, not a copy each.
fn append(buf: &mut BytesMut, out: Out, memory: &MemoryBudget) -> Option<Bytes> {
    match out {
        Out::Frame(f) => {
            buf.extend_from_slice(&f);
            None
        }
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
            if batch.len() > COPY_MAX && !memory.admits(Level::Copy) {
                Some(batch)
            } else {
                buf.extend_from_slice(&batch);
                None
            }
        }
        Out::Mark(taken) => {
            // Everything pushed before it is in `buf`, ahead of any reply
            // queued once this is answered.
            let _ = taken.send(());
            None
        }
    }
}

/// The writer task's state.
struct Writer {
    replies: mpsc::Receiver<Bytes>,
    pushes: Taker,
    /// Pushes taken from the queue and not yet in the write buffer.
    taken: VecDeque<Out>,
    queued: Arc<AtomicUsize>,
    memory: Arc<MemoryBudget>,
    stall: Duration,
}

impl Drop for Writer {
    /// Whatever is still queued or was being written leaves the broker's
    /// backlog with the connection.
    fn drop(&mut self) {
        self.taken.clear();
        drop(self.pushes.close());
        let n = self.queued.swap(0, Ordering::Relaxed);
        self.memory.dequeue(n);
    }
}

impl Writer {
    /// The next pushed item, taking everything queued when the last take
    /// is used up.
    fn next_push(&mut self) -> Option<Out> {
        if self.taken.is_empty() {
            self.pushes.take_all(&mut self.taken);
        }
        self.taken.pop_front()
    }

    /// Pushed items of `bytes` are on the wire: they leave the backlog.
    /// (They count until written, not until taken from the queue: a
    /// writer blocked on a stalled peer still holds what it took.)
    fn written(&self, bytes: usize) {
        if bytes > 0 {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.memory.dequeue(bytes);
        }
    }

    async fn run<W: Sink>(mut self, mut sink: W) -> std::io::Result<()> {
        // No buffer until there is something to write: it grows to what the
        // connection's writes need (a few hundred bytes for one that only
        // answers its handshake and pings), so an idle connection holds
        // almost nothing. With a 16 KiB buffer up front, ten thousand idle
        // connections held 5 to 12 KiB of it resident each (issue 12).
        let mut buf = BytesMut::new();
        // The buffer's memory is counted at its capacity, the most it has
        // held since it was allocated: a cleared buffer keeps its pages, and
        // a thousand writers that each once coalesced a burst would
        // otherwise hold hundreds of MiB the budget does not see.
        let mut held = self.memory.charge(0);
        let mut replies_open = true;
        loop {
            // `taken`: bytes of pushed items in this write (replies are
            // not counted in the backlog). Replies go first.
            let next = match self.replies.try_recv() {
                Ok(f) => Some((Out::Frame(f), 0)),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    // Every Outbox is gone: write what was pushed, then end.
                    replies_open = false;
                    None
                }
            };
            let (first, mut taken) = match next.or_else(|| {
                self.next_push().map(|o| {
                    let n = o.len();
                    (o, n)
                })
            }) {
                Some(item) => item,
                None if !replies_open => break,
                None => {
                    // Idle: keep no slots a burst needed.
                    if self.taken.capacity() > 64 {
                        self.taken = VecDeque::new();
                    }
                    tokio::select! {
                        biased;
                        r = self.replies.recv() => match r {
                            Some(f) => (Out::Frame(f), 0),
                            None => { replies_open = false; continue }
                        },
                        _ = self.pushes.pushed() => continue,
                    }
                }
            };
            let mut direct = append(&mut buf, first, &self.memory);
            // Coalesce whatever else is ready into one write, up to this
            // connection's share of the budget (a thousand writers blocked
            // on stalled peers each hold what they coalesced); once memory
            // is short, no more deliveries are copied than the first.
            let chunk = self.memory.allowance().clamp(IDLE_BUFFER, WRITE_CHUNK);
            let mut replies = 1;
            while direct.is_none() && buf.len() < chunk && replies < MAX_REPLIES_PER_WRITE {
                if let Ok(f) = self.replies.try_recv() {
                    replies += 1;
                    direct = append(&mut buf, Out::Frame(f), &self.memory);
                } else if !self.memory.admits(Level::SlowDelivery) {
                    break;
                } else if let Some(o) = self.next_push() {
                    taken += o.len();
                    direct = append(&mut buf, o, &self.memory);
                } else {
                    break;
                }
            }
            held.raise_to(buf.capacity());
            self.write(&mut sink, &mut buf, direct).await?;
            self.written(taken);
            // Give a big buffer back, and any buffer past the idle size
            // once memory is getting short: a connection between bursts
            // should not keep what a burst needed.
            if buf.capacity() > 4 * WRITE_CHUNK
                || (buf.capacity() > IDLE_BUFFER && !self.memory.admits(Level::Copy))
            {
                buf = BytesMut::new();
                held = self.memory.charge(0);
            }
        }
        let _ = tokio::time::timeout(self.stall, sink.close()).await;
        Ok(())
    }

    /// Writes `buf` (emptying it), then `direct`, and flushes, or fails
    /// once the peer has not taken it all within the stall timeout.
    async fn write<W: Sink>(
        &self,
        sink: &mut W,
        buf: &mut BytesMut,
        direct: Option<Bytes>,
    ) -> std::io::Result<()> {
        let all = sink.send(buf, direct);
        tokio::pin!(all);
        // A peer that stops reading is cut off after the stall timeout, or
        // after PRESSURE_STALL while the memory budget is past its delivery
        // level: a stalled reader pins what it was sent (at least a whole
        // batch each, before it can be told from a fast one), and a
        // thousand of them must not hold up the readers that keep up for
        // the whole stall timeout (NATS cuts such "slow consumers" too).
        let step = PRESSURE_STALL.min(self.stall);
        let mut waited = Duration::ZERO;
        loop {
            if let Ok(r) = tokio::time::timeout(step, &mut all).await {
                return r;
            }
            waited += step;
            let short = !self.memory.admits(Level::Delivery);
            if waited >= self.stall || short {
                let why = if short {
                    "peer stopped reading while the memory budget is short"
                } else {
                    "peer stopped reading"
                };
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::frame::decode_frame;
    use herald_protocol::Opcode;
    use tokio::io::{AsyncReadExt, AsyncWrite};

    /// The writer prefers replies, but a reply queued once
    /// [`Outbox::pushes_taken`] resolved comes after the pushes before it.
    #[tokio::test]
    async fn a_reply_after_pushes_taken_follows_those_pushes() {
        let (sink, mut peer) = tokio::io::duplex(1 << 20);
        let (outbox, writer) = spawn(
            sink,
            None,
            8,
            Duration::from_secs(5),
            MemoryBudget::unlimited(),
            Arc::default(),
        );
        let batch = Bytes::from_static(&[0u8; 64]);
        assert!(outbox.deliver(1, 0, 0, 2, batch));
        outbox.pushes_taken().await;
        assert!(outbox.reply(7, &Message::Ok).await);
        drop(outbox);
        writer.await.unwrap();
        let mut bytes = Vec::new();
        peer.read_to_end(&mut bytes).await.unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut ops = Vec::new();
        while let Some(f) = decode_frame(&mut buf, 1 << 20).unwrap() {
            ops.push(f.header.opcode);
        }
        assert_eq!(ops, vec![Opcode::Deliver, Opcode::Ok]);
    }

    /// Deliveries handed over together (a member's share of one dispatch
    /// round) leave in one write, in the order given.
    #[tokio::test]
    async fn deliveries_handed_over_together_leave_in_one_write() {
        let (sink, writes) = CountingSink::new();
        let (outbox, writer) = spawn(
            sink,
            None,
            8,
            Duration::from_secs(5),
            MemoryBudget::unlimited(),
            Arc::default(),
        );
        let mut items: Vec<Out> = (0..5u64)
            .map(|i| Out::Deliver {
                subscription_id: 1,
                first: i,
                last: i,
                delivery: 1,
                batch: {
                    let mut b = herald_protocol::BatchBuilder::new();
                    b.push(&herald_protocol::RecordRef {
                        payload: &[i as u8; 100],
                        timestamp: 1,
                        ..Default::default()
                    });
                    let mut bytes = BytesMut::from(&b.finish(0, 0)[..]);
                    herald_protocol::batch::stamp(&mut bytes, i, 1);
                    bytes.freeze()
                },
            })
            .collect();
        assert!(outbox.push_all(&mut items));
        assert!(items.is_empty());
        drop(outbox);
        writer.await.unwrap();
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 1, "one write for the lot");
        let mut buf = BytesMut::from(&writes[0][..]);
        let mut firsts = Vec::new();
        while let Some(f) = decode_frame(&mut buf, 1 << 20).unwrap() {
            let Message::Deliver(d) = Message::decode(&f).unwrap() else {
                panic!("a delivery");
            };
            firsts.push(d.first_offset);
        }
        assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
    }

    /// A sink that keeps each write apart.
    struct CountingSink(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl CountingSink {
        fn new() -> (CountingSink, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
            let w = Arc::new(std::sync::Mutex::new(Vec::new()));
            (CountingSink(w.clone()), w)
        }
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.0.lock().unwrap().push(all);
            std::task::Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A connection that only exchanged a few small frames holds no write
    /// buffer worth counting: ten thousand idle connections must not hold
    /// ten thousand burst-sized buffers (issue 12).
    #[tokio::test]
    async fn an_idle_writer_holds_only_what_it_wrote() {
        let memory = MemoryBudget::new(100 << 20);
        let (sink, mut peer) = tokio::io::duplex(1 << 20);
        let (outbox, _writer) = spawn(
            sink,
            None,
            8,
            Duration::from_secs(5),
            memory.clone(),
            Arc::default(),
        );
        assert!(outbox.reply(1, &Message::Ok).await);
        assert!(outbox.reply(2, &Message::Ping).await);
        let mut got = [0u8; 2 * herald_protocol::frame::HEADER_LEN];
        peer.read_exact(&mut got).await.unwrap();
        // Both frames were written, so the writer has sized (and counted)
        // its buffer for them by now.
        let held = memory.used();
        assert!(held > 0, "the buffer is counted");
        assert!(held <= 256, "an idle writer holds {held} bytes");
    }

    /// A writer's buffer keeps the pages of its biggest write: counted
    /// against the budget while kept, and given back once memory is short.
    #[tokio::test]
    async fn the_write_buffer_counts_what_it_keeps() {
        let memory = MemoryBudget::new(100 << 20);
        let (sink, mut peer) = tokio::io::duplex(4 << 20);
        let (outbox, _writer) = spawn(
            sink,
            None,
            8,
            Duration::from_secs(5),
            memory.clone(),
            Arc::default(),
        );
        let batch = Bytes::from(vec![7u8; 10 << 10]);
        for i in 0..20 {
            assert!(outbox.deliver(1, i, i, 1, batch.clone()));
        }
        drop(batch);
        let mut got = vec![0u8; 20 * ((10 << 10) + 10)];
        peer.read_exact(&mut got[..64]).await.unwrap();
        outbox.pushes_taken().await;
        assert!(outbox.reply(1, &Message::Ok).await);
        // The burst was coalesced into one buffer (the duplex takes it all):
        // its pages stay with the writer, counted.
        let kept = memory.used();
        assert!(kept >= 100 << 10, "the coalesced burst is counted: {kept}");
        // Memory short: the next write gives the big buffer back.
        let pressure = memory.charge(30 << 20);
        assert!(outbox.reply(2, &Message::Ok).await);
        assert!(outbox.reply(3, &Message::Ok).await);
        outbox.pushes_taken().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while memory.used() - (30 << 20) > 1 << 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "buffer not given back: {}",
                memory.used()
            );
            // Keep the writer going until it has handled the replies.
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(10), peer.read(&mut sink)).await;
        }
        drop(pressure);
    }
}
