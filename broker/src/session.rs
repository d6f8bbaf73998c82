//! One client connection: the handshake, the read loop, dispatch of each
//! request, and cleanup. The transport's read half is owned here (through a
//! cancel-safe `FramedRead`); its write half belongs to the writer task
//! behind [`Outbox`]. The transport is a TCP socket ([`run`]) or a
//! WebSocket ([`crate::ws`]); both carry the same frames to the same code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::StreamExt;
use herald_protocol::codec::{CodecError, FrameCodec};
use herald_protocol::{
    ErrorCode, Frame, GroupList, Hello, HelloOk, Message, Opcode, PublishOk, StartPosition,
    Subscribe, SubscribeOk, TopicList, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::group::{GroupHandle, Join};
use crate::memory::Level;
use crate::outbox::{self, Out, Outbox};
use crate::rooms::{inbox, presence, requests, Rooms};
use crate::subscription::{self, Credit};
use crate::topic::{position, Registry};
use crate::BrokerError;

/// Initial read buffer of a connection. Small, so idle connections cost
/// little; it grows to the largest frame the peer sends (bounded by
/// `max_frame_bytes`).
const READ_BUFFER_INITIAL: usize = 512;

/// Bytes the kernel may hold unsent for one connection
/// (`TCP_NOTSENT_LOWAT`). Without it the send buffer grows to several MiB,
/// and a peer that reads nothing could leave a hundred thousand confirms
/// there while the broker went on reading its publishes. With it, a peer
/// that stops reading blocks the writer within this many bytes (plus what
/// its own receive window takes), the reply queue fills, and the session
/// stops reading that peer. 128 KiB keeps a fast reader's pipe full on a
/// LAN.
pub(crate) const UNSENT_LIMIT: usize = 128 * 1024;

/// Caps the unsent bytes the kernel keeps for `stream` (Linux
/// `TCP_NOTSENT_LOWAT`); elsewhere, or if refused, the default stays.
pub(crate) fn limit_unsent(stream: &TcpStream, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: a valid socket descriptor and a c_int option value of the
        // size given.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_NOTSENT_LOWAT");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, bytes);
}

/// State shared by every session of a broker.
pub struct Shared {
    pub config: Arc<BrokerConfig>,
    pub registry: Arc<Registry>,
    /// Rooms, presence and inboxes.
    pub rooms: Arc<Rooms>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    pub next_member: AtomicU64,
}

enum Sub {
    Ephemeral {
        credit: Arc<Credit>,
        window: (u32, u32),
        cancel: CancellationToken,
    },
    Group {
        handle: GroupHandle,
        member: u64,
    },
}

type Reply = (u64, Message);

struct Session {
    shared: Arc<Shared>,
    outbox: Outbox,
    client_id: String,
    subs: HashMap<u64, Sub>,
    next_sub: u64,
    /// Publishes waiting for durability, in arrival order: confirms leave in
    /// the order the publishes came.
    publishes: FuturesOrdered<BoxFuture<'static, Reply>>,
    /// Other replies that wait on something (persisted acks, describe).
    others: FuturesUnordered<BoxFuture<'static, Reply>>,
}

/// Why a session must end after a request.
struct Close;

/// Serves one TCP connection until the peer leaves, misbehaves or the
/// broker shuts down.
pub async fn run(stream: TcpStream, shared: Arc<Shared>) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    limit_unsent(&stream, UNSENT_LIMIT);
    let (read, write) = stream.into_split();
    serve_transport(read, write, peer, shared).await;
}

/// Serves one connection over any byte transport: the TCP socket's halves,
/// or a WebSocket's (see [`crate::ws`]), which carries the same frames. One
/// implementation of every request, whatever the transport.
pub async fn serve_transport<R, W>(
    read: R,
    write: W,
    peer: Option<std::net::SocketAddr>,
    shared: Arc<Shared>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let cfg = shared.config.clone();
    let (outbox, writer) = outbox::spawn(
        write,
        cfg.write_queue_frames,
        cfg.write_stall_timeout,
        shared.registry.memory().clone(),
    );
    let mut frames = FramedRead::with_capacity(
        read,
        FrameCodec::new(cfg.max_frame_bytes),
        READ_BUFFER_INITIAL,
    );

    let client_id = match handshake(&mut frames, &outbox, &cfg).await {
        Some(id) => id,
        None => {
            drop(outbox);
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            return;
        }
    };
    tracing::debug!(?peer, %client_id, "session started");
    let notices = shared.rooms.connect(&client_id);
    if !notices.is_empty() {
        let rooms = shared.rooms.clone();
        tokio::spawn(async move { presence::deliver(&rooms, notices).await });
    }
    let rooms = shared.rooms.clone();
    let mut s = Session {
        shared,
        outbox,
        client_id,
        subs: HashMap::new(),
        next_sub: 1,
        publishes: FuturesOrdered::new(),
        others: FuturesUnordered::new(),
    };
    s.serve(&mut frames).await;
    s.cleanup().await;
    rooms.disconnect(&s.client_id);
    drop(s);
    let _ = tokio::time::timeout(cfg.write_stall_timeout, writer).await;
    tracing::debug!(?peer, "session ended");
}

/// Reads the first frame, which must be a Hello with a version we speak.
async fn handshake<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    outbox: &Outbox,
    cfg: &BrokerConfig,
) -> Option<String> {
    let first = tokio::time::timeout(cfg.handshake_timeout, frames.next()).await;
    let frame = match first {
        Err(_) => {
            outbox
                .reply(
                    0,
                    &Message::error(
                        ErrorCode::HandshakeRequired,
                        "no Hello within the handshake timeout",
                    ),
                )
                .await;
            return None;
        }
        Ok(None) | Ok(Some(Err(CodecError::Io(_)))) => return None,
        Ok(Some(Err(CodecError::Wire(e)))) => {
            outbox.reply(0, &wire_error(&e)).await;
            return None;
        }
        Ok(Some(Ok(f))) => f,
    };
    let id = frame.header.request_id;
    if frame.header.opcode != Opcode::Hello {
        outbox
            .reply(
                id,
                &Message::error(
                    ErrorCode::HandshakeRequired,
                    "the first frame must be Hello",
                ),
            )
            .await;
        return None;
    }
    let hello: Hello = match Message::decode(&frame) {
        Ok(Message::Hello(h)) => h,
        Ok(_) => return None,
        Err(e) => {
            outbox.reply(id, &wire_error(&e)).await;
            return None;
        }
    };
    let lo = hello.min_version.max(PROTOCOL_VERSION_MIN);
    let hi = hello.max_version.min(PROTOCOL_VERSION_MAX);
    if lo > hi {
        let msg = format!(
            "client speaks versions {}..={}, broker speaks {}..={}",
            hello.min_version, hello.max_version, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX
        );
        outbox
            .reply(id, &Message::error(ErrorCode::UnsupportedVersion, msg))
            .await;
        return None;
    }
    let client_id = match hello.client_id {
        Some(c) if !c.is_empty() && c.len() <= 200 => c,
        Some(_) => {
            outbox
                .reply(
                    id,
                    &Message::error(
                        ErrorCode::InvalidArgument,
                        "client id must be 1 to 200 bytes",
                    ),
                )
                .await;
            return None;
        }
        None => format!("c-{:016x}", rand::random::<u64>()),
    };
    let ok = HelloOk {
        version: hi,
        client_id: client_id.clone(),
        max_frame: cfg.max_frame_bytes as u32,
        max_batch: (cfg.max_frame_bytes - 1024) as u32,
        heartbeat_ms: cfg.heartbeat.as_millis() as u32,
    };
    if !outbox.reply(id, &Message::HelloOk(ok)).await {
        return None;
    }
    Some(client_id)
}

fn wire_error(e: &herald_protocol::WireError) -> Message {
    let code = match e {
        herald_protocol::WireError::FrameTooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::BadFrame,
    };
    Message::error(code, e.to_string())
}

impl Session {
    async fn serve<R: AsyncRead + Unpin>(&mut self, frames: &mut FramedRead<R, FrameCodec>) {
        let cfg = self.shared.config.clone();
        let shutdown = self.shared.shutdown.clone();
        let mut tick = tokio::time::interval(cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        let memory = self.shared.registry.memory().clone();
        // A publish read while the memory budget is spent waits here, and
        // nothing more is read from this connection until it fits: the
        // producer is slowed by TCP instead of the broker growing.
        let mut parked: Option<Frame> = None;
        loop {
            let can_read = self.publishes.len() < cfg.max_inflight_publishes && parked.is_none();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.drain().await;
                    let bye = Message::GoingAway(herald_protocol::GoingAway { reason: "broker shutting down".into() });
                    self.outbox.reply(0, &bye).await;
                    return;
                }
                _ = self.outbox.closed() => return,
                f = frames.next(), if can_read => {
                    last_read = Instant::now();
                    match f {
                        None | Some(Err(CodecError::Io(_))) => { self.drain().await; return }
                        Some(Err(CodecError::Wire(e))) => {
                            tracing::debug!(client = %self.client_id, error = %e, "bad frame; closing");
                            self.drain().await;
                            self.outbox.reply(0, &wire_error(&e)).await;
                            return;
                        }
                        Some(Ok(frame)) => {
                            if frame.header.opcode == Opcode::Publish && !memory.admits(Level::Publish) {
                                parked = Some(frame);
                                continue;
                            }
                            if self.handle(frame).await.is_err() {
                                self.drain().await;
                                return;
                            }
                        }
                    }
                }
                _ = memory.until_admitted(Level::Publish), if parked.is_some() => {
                    if let Some(frame) = parked.take() {
                        if self.handle(frame).await.is_err() {
                            self.drain().await;
                            return;
                        }
                    }
                }
                Some((id, m)) = self.publishes.next(), if !self.publishes.is_empty() => {
                    if !self.outbox.reply(id, &m).await { return }
                }
                Some((id, m)) = self.others.next(), if !self.others.is_empty() => {
                    if !self.outbox.reply(id, &m).await { return }
                }
                _ = tick.tick() => {
                    let idle = last_read.elapsed();
                    if idle >= cfg.heartbeat * 3 {
                        tracing::debug!(client = %self.client_id, "peer silent for three heartbeats; closing");
                        return;
                    }
                    if idle >= cfg.heartbeat {
                        self.outbox.reply(0, &Message::Ping).await;
                    }
                }
            }
        }
    }

    /// Waits for pending publishes and replies so nothing the peer was
    /// promised is dropped.
    async fn drain(&mut self) {
        while let Some((id, m)) = self.publishes.next().await {
            self.outbox.reply(id, &m).await;
        }
        while let Some((id, m)) = self.others.next().await {
            self.outbox.reply(id, &m).await;
        }
    }

    async fn cleanup(&mut self) {
        for (_, sub) in self.subs.drain() {
            match sub {
                Sub::Ephemeral { cancel, .. } => cancel.cancel(),
                Sub::Group { handle, member } => handle.leave(member).await,
            }
        }
    }

    async fn reply(&mut self, id: u64, m: Message) -> Result<(), Close> {
        if self.outbox.reply(id, &m).await {
            Ok(())
        } else {
            Err(Close)
        }
    }

    /// Answers request `id` once `work` is done, without holding up the
    /// read loop (admin requests wait on group actors and the disk).
    fn later<F>(&mut self, id: u64, work: F) -> Result<(), Close>
    where
        F: std::future::Future<Output = Result<Message, BrokerError>> + Send + 'static,
    {
        self.others.push(Box::pin(async move {
            (id, work.await.unwrap_or_else(|e| e.to_message()))
        }));
        Ok(())
    }

    async fn handle(&mut self, mut frame: Frame) -> Result<(), Close> {
        let id = frame.header.request_id;
        if frame.header.opcode == Opcode::Publish {
            // The batch is a slice of this body: counted until the last
            // reference (pending append, tail cache, delivery) is gone.
            frame.body = self.shared.registry.memory().charged(frame.body);
        }
        let msg = match Message::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                self.reply(id, wire_error(&e)).await?;
                return Err(Close);
            }
        };
        let reg = self.shared.registry.clone();
        match msg {
            Message::Ping => self.reply(id, Message::Pong).await,
            Message::Pong => Ok(()),
            Message::Publish { topic, batch } => {
                let max_batch = self.shared.config.max_frame_bytes - 1024;
                if batch.len_bytes() > max_batch {
                    let e = Message::error(
                        ErrorCode::TooLarge,
                        format!("batch of {} bytes exceeds {max_batch}", batch.len_bytes()),
                    );
                    return self.reply(id, e).await;
                }
                match reg.for_publish(&topic) {
                    Err(e) => self.reply(id, e.to_message()).await,
                    Ok(t) => {
                        // Queue now, in arrival order; await the confirm
                        // in `publishes` so later frames keep flowing.
                        let queued = t.log.enqueue(batch).await;
                        self.publishes.push_back(Box::pin(async move {
                            let r = match queued {
                                Ok(p) => p.wait().await,
                                Err(e) => Err(e),
                            };
                            let m = match r {
                                Ok(o) => {
                                    if !o.duplicate {
                                        t.record_appended(o.count);
                                    }
                                    Message::PublishOk(PublishOk {
                                        base_offset: o.base_offset,
                                        count: o.count,
                                        duplicate: o.duplicate,
                                    })
                                }
                                Err(e) => BrokerError::from(e).to_message(),
                            };
                            (id, m)
                        }));
                        Ok(())
                    }
                }
            }
            Message::Subscribe(s) => {
                let r = self.subscribe(id, s).await;
                match r {
                    Ok(()) => Ok(()),
                    Err(e) => self.reply(id, e.to_message()).await,
                }
            }
            Message::Unsubscribe(u) => {
                match self.subs.remove(&u.subscription_id) {
                    Some(Sub::Ephemeral { cancel, .. }) => cancel.cancel(),
                    Some(Sub::Group { handle, member }) => handle.leave(member).await,
                    None => {
                        return self
                            .reply(
                                id,
                                BrokerError::UnknownSubscription(u.subscription_id).to_message(),
                            )
                            .await
                    }
                }
                self.reply(id, Message::Ok).await
            }
            Message::Ack(a) => match self.subs.get(&a.subscription_id) {
                Some(Sub::Group { handle, member }) => {
                    let (h, m) = (handle.clone(), *member);
                    match h.ack(m, a.kind, a.ranges, id != 0).await {
                        // The group is gone (topic deleted, shutting down):
                        // say so if asked; the connection itself is fine.
                        Err(e) if id != 0 => self.reply(id, e.to_message()).await,
                        Err(_) | Ok(None) => Ok(()),
                        Ok(Some(persisted)) => self.later(id, async move {
                            let r = persisted.await.unwrap_or(Err(BrokerError::ShuttingDown));
                            r.map(|_| Message::Ok)
                        }),
                    }
                }
                Some(Sub::Ephemeral { .. }) => {
                    if id != 0 {
                        let e = BrokerError::InvalidArgument(
                            "an ephemeral subscription takes no acks; use Flow".into(),
                        );
                        self.reply(id, e.to_message()).await
                    } else {
                        Ok(())
                    }
                }
                None if id != 0 => {
                    self.reply(
                        id,
                        BrokerError::UnknownSubscription(a.subscription_id).to_message(),
                    )
                    .await
                }
                None => Ok(()),
            },
            Message::Flow(f) => {
                if let Some(Sub::Ephemeral { credit, window, .. }) =
                    self.subs.get(&f.subscription_id)
                {
                    credit.grant(f.messages, f.bytes, *window);
                }
                Ok(())
            }
            Message::CreateTopic(c) => match reg.create(&c.name, &c.config, false) {
                Ok(t) => self.later(id, async move { t.info().await.map(Message::TopicInfo) }),
                Err(e) => self.reply(id, e.to_message()).await,
            },
            Message::DeleteTopic(t) => {
                self.later(
                    id,
                    async move { reg.delete(&t.name).await.map(|_| Message::Ok) },
                )
            }
            Message::ListTopics => self.later(id, async move {
                let mut topics = Vec::new();
                for t in reg.list() {
                    topics.push(t.info().await?);
                }
                Ok(Message::TopicList(TopicList { topics }))
            }),
            Message::DescribeTopic(t) => match reg.get(&t.name) {
                Ok(t) => self.later(id, async move { t.info().await.map(Message::TopicInfo) }),
                Err(e) => self.reply(id, e.to_message()).await,
            },
            Message::ListGroups(t) => match reg.get(&t.name) {
                Ok(t) => self.later(id, async move {
                    let groups = t.group_infos().await?;
                    Ok(Message::GroupList(GroupList { groups }))
                }),
                Err(e) => self.reply(id, e.to_message()).await,
            },
            Message::ResetGroup(r) => match reg.get(&r.topic) {
                Ok(t) => self.later(id, async move {
                    t.reset_group(&r.group, r.to).await.map(|_| Message::Ok)
                }),
                Err(e) => self.reply(id, e.to_message()).await,
            },
            Message::RepairTopic(r) => self.later(id, async move {
                reg.repair(&r.name, r.dry_run)
                    .await
                    .map(Message::RepairReport)
            }),
            Message::Join(_)
            | Message::Leave(_)
            | Message::Emit(_)
            | Message::Members(_)
            | Message::Reply(_) => self.handle_room(id, msg).await,
            Message::Hello(_) => {
                self.reply(
                    id,
                    Message::error(ErrorCode::InvalidArgument, "already handshaken"),
                )
                .await
            }
            other => {
                let e = Message::error(
                    ErrorCode::BadFrame,
                    format!("{:?} is not a request", other.opcode()),
                );
                self.reply(id, e).await?;
                Err(Close)
            }
        }
    }

    /// Room requests (see [`crate::rooms::requests`]). Membership changes
    /// and appends are queued before the next frame is read, so the
    /// session's requests take effect in the order they came; replies wait
    /// in `others` (join, leave) or `publishes` (emit, reply: confirms in
    /// order).
    async fn handle_room(&mut self, id: u64, msg: Message) -> Result<(), Close> {
        let rooms = self.shared.rooms.clone();
        let client = self.client_id.clone();
        let pending = match msg {
            Message::Join(j) => requests::join(&rooms, &client, j).await,
            Message::Leave(l) => requests::leave(&rooms, &client, l).await,
            Message::Members(m) => {
                let r = requests::members(&rooms, &client, m);
                return self.reply(id, r.unwrap_or_else(|e| e.to_message())).await;
            }
            Message::Emit(e) => {
                let r = requests::emit(&rooms, &client, e).await;
                return self.confirm_fanout(id, r, true).await;
            }
            Message::Reply(r) => {
                let r = requests::reply(&rooms, &client, r).await;
                return self.confirm_fanout(id, r, false).await;
            }
            _ => return Ok(()),
        };
        match pending {
            Ok(p) => {
                self.others.push(Box::pin(async move { (id, p.await) }));
                Ok(())
            }
            Err(e) => self.reply(id, e.to_message()).await,
        }
    }

    async fn confirm_fanout(
        &mut self,
        id: u64,
        r: Result<crate::rooms::inbox::Fanout, BrokerError>,
        emit_ok: bool,
    ) -> Result<(), Close> {
        match r {
            Ok(f) => {
                self.publishes.push_back(Box::pin(async move {
                    let m = match f.wait().await {
                        Ok(ok) if emit_ok => Message::EmitOk(ok),
                        Ok(_) => Message::Ok,
                        Err(e) => e.to_message(),
                    };
                    (id, m)
                }));
                Ok(())
            }
            Err(e) => self.reply(id, e.to_message()).await,
        }
    }

    async fn subscribe(&mut self, id: u64, s: Subscribe) -> Result<(), BrokerError> {
        let cfg = &self.shared.config;
        if self.subs.len() >= cfg.max_subscriptions_per_connection {
            return Err(BrokerError::Busy(format!(
                "at most {} subscriptions per connection",
                cfg.max_subscriptions_per_connection
            )));
        }
        let topic = match s.topic.strip_prefix(inbox::INBOX_PREFIX) {
            // Inboxes are created with their own retention, and each is
            // read only by its owner.
            Some(owner) if owner == self.client_id => inbox::topic(&self.shared.rooms, owner)?,
            Some(_) => {
                return Err(BrokerError::Unauthorized(format!(
                    "{:?} is another client's inbox",
                    s.topic
                )))
            }
            None => self.shared.registry.for_subscribe(&s.topic)?,
        };
        let window = (
            s.prefetch_messages.clamp(1, cfg.max_prefetch_messages),
            s.prefetch_bytes.clamp(1, cfg.max_prefetch_bytes),
        );
        let sub_id = self.next_sub;
        self.next_sub += 1;
        match s.group {
            Some(g) => {
                let handle = topic.group(&g)?;
                let member = self.shared.next_member.fetch_add(1, Ordering::Relaxed);
                let join = Join {
                    member,
                    subscription_id: sub_id,
                    request_id: id,
                    client_id: self.client_id.clone(),
                    outbox: self.outbox.clone(),
                    start: s.start,
                    prefetch_messages: window.0,
                    prefetch_bytes: window.1,
                    ack_timeout: (s.ack_timeout_ms > 0)
                        .then(|| Duration::from_millis(s.ack_timeout_ms as u64)),
                    max_deliveries: (s.max_deliveries > 0).then_some(s.max_deliveries),
                };
                handle.join(join).await?;
                self.subs.insert(sub_id, Sub::Group { handle, member });
            }
            None => {
                let log = &topic.log;
                let start = match s.start {
                    StartPosition::Resume => log.next_offset(),
                    p => position::resolve(log, p)?,
                };
                // SubscribeOk goes through the push queue so that it reaches
                // the client before the first delivery.
                let ok = Message::SubscribeOk(SubscribeOk {
                    subscription_id: sub_id,
                    start_offset: start,
                });
                let mut b = bytes::BytesMut::new();
                ok.encode(id, &mut b);
                self.outbox.push(Out::Frame(b.freeze()));
                let cancel = self.shared.shutdown.child_token();
                let credit = subscription::spawn(
                    topic,
                    sub_id,
                    start,
                    self.outbox.clone(),
                    window,
                    cancel.clone(),
                );
                self.subs.insert(
                    sub_id,
                    Sub::Ephemeral {
                        credit,
                        window,
                        cancel,
                    },
                );
            }
        }
        Ok(())
    }
}
