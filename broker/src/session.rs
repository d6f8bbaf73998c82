//! One client connection: the handshake, the read loop, dispatch of each
//! request, and cleanup. The transport's read half is owned here (through a
//! cancel-safe `FramedRead`); its write half belongs to the writer task
//! behind [`Outbox`]. The transport is a TCP socket ([`run`]) or a
//! WebSocket ([`crate::ws`]); both carry the same frames to the same code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use herald_protocol::codec::{CodecError, FrameCodec};
use herald_protocol::{
    ErrorCode, Frame, Hello, HelloOk, Message, Opcode, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::auth::{tokens, Access, Authenticator, Identity};
use crate::config::BrokerConfig;
use crate::group::GroupHandle;
use crate::memory::{Level, MemoryBudget};
use crate::metrics::{Metrics, Refusal, Transport};
use crate::outbox::{self, Outbox};
use crate::ready::Readiness;
use crate::rooms::{presence, Rooms};
use crate::subscription::Credit;
use crate::topic::Registry;
use crate::BrokerError;

/// Initial read buffer of a connection. Small, so idle connections cost
/// little; it grows to the largest frame the peer sends (bounded by
/// `max_frame_bytes`).
const READ_BUFFER_INITIAL: usize = 512;

/// Requests (or confirms) served in one turn of the session's loop when
/// more are ready; bounded so that one busy connection still lets the
/// loop see a shutdown or the heartbeat.
const DRAIN_TURN: usize = 64;

/// Requests of one connection answered later other than publishes and
/// emits (topic and group admin, Join, Leave, acks that ask for a reply)
/// that may wait for their answer at once. Past it the session stops
/// reading, as it does at `max_inflight_publishes`: a peer that sends such
/// requests and never reads the answers held one answer each, without
/// end, before (700 MB for one connection flooding ListTopics).
const MAX_PENDING_OTHERS: usize = 1024;

/// Bytes the kernel may hold unsent for one connection
/// (`TCP_NOTSENT_LOWAT`). Without it the send buffer grows to several MiB,
/// and a peer that reads nothing could leave a hundred thousand confirms
/// there while the broker went on reading its publishes. With it, a peer
/// that stops reading blocks the writer within this many bytes (plus what
/// its own receive window takes), the reply queue fills, and the session
/// stops reading that peer. 128 KiB keeps a fast reader's pipe full on a
/// LAN.
pub(crate) const UNSENT_LIMIT: usize = 128 * 1024;

/// Socket options of every accepted TCP connection, set before any TLS
/// wraps it: no Nagle delay, and at most [`UNSENT_LIMIT`] bytes unsent in
/// the kernel.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    limit_unsent(stream, UNSENT_LIMIT);
}

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
    /// This node's part in a cluster (`None`: running alone).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub registry: Arc<Registry>,
    /// Rooms, presence and inboxes.
    pub rooms: Arc<Rooms>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    pub next_member: AtomicU64,
    /// Checks the credentials of Hello and Refresh.
    pub auth: Arc<Authenticator>,
    /// The broker-wide counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` answers.
    pub ready: Arc<Readiness>,
}

/// One subscription of the connection.
pub(crate) enum Sub {
    Ephemeral {
        topic: String,
        credit: Arc<Credit>,
        window: (u32, u32),
        cancel: CancellationToken,
    },
    Group {
        topic: String,
        group: String,
        handle: GroupHandle,
        member: u64,
    },
    /// The client's own inbox, not created yet: the subscription joins its
    /// group when the inbox's first record creates it (`rooms::waiting`).
    Inbox {
        topic: String,
        waiting: Arc<crate::rooms::waiting::Waiting>,
    },
}

impl Sub {
    /// Stops it: the task ends, or the member leaves its group.
    pub(crate) async fn end(self) {
        match self {
            Sub::Ephemeral { cancel, .. } => cancel.cancel(),
            Sub::Group { handle, member, .. } => handle.leave(member).await,
            Sub::Inbox { waiting, .. } => waiting.end().await,
        }
    }
}

pub(crate) type Reply = (u64, Message);

/// The state of one connection after its handshake; the request handlers
/// (`crate::handlers`) act on it.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) outbox: Outbox,
    pub(crate) client_id: String,
    /// What this connection may do, with its cache of decisions.
    pub(crate) access: Access,
    /// When the connection's credential expires (`None`: never). The
    /// broker warns the client before ([`TOKEN_EXPIRING`]) and closes the
    /// connection at this time unless a Refresh moved it.
    pub(crate) expires_at: Option<SystemTime>,
    /// The TokenExpiring push for the current `expires_at` went out.
    pub(crate) warned: bool,
    /// When the token timer fires next (see [`Session::schedule_token`]).
    token_deadline: Option<tokio::time::Instant>,
    pub(crate) subs: HashMap<u64, Sub>,
    pub(crate) next_sub: u64,
    /// Publishes waiting for durability, in arrival order: confirms leave in
    /// the order the publishes came.
    pub(crate) publishes: FuturesOrdered<BoxFuture<'static, Reply>>,
    /// Other replies that wait on something (persisted acks, describe).
    pub(crate) others: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// Set when a cluster peer leads Raft groups through this connection:
    /// its end tells the cluster (`cluster::failover`).
    pub(crate) cluster_peer: Option<crate::cluster::failover::PeerLink>,
}

/// Why a session must end after a request.
pub(crate) struct Close;

/// How long before its token expires a connection is told to refresh it,
/// at most; a token with less life left gets the notice at half of it.
pub const TOKEN_EXPIRING: Duration = Duration::from_secs(30);

/// Serves one connection until the peer leaves, misbehaves or the broker
/// shuts down. `read` and `write` are its two halves: of a TCP stream
/// (tune the TCP socket with [`tune`] first), of one wrapped in TLS, or of
/// a WebSocket ([`crate::ws`]); `transport` says which, for the metrics.
pub async fn run<R, W>(
    read: R,
    write: W,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
    transport: Transport,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: outbox::Sink,
{
    let mut gauge = shared.metrics.connection(transport);
    let cfg = shared.config.clone();
    let (outbox, writer) = outbox::spawn(
        write,
        peer,
        cfg.write_queue_frames,
        cfg.write_stall_timeout,
        shared.registry.memory().clone(),
        shared.metrics.clone(),
    );
    // Frames that arrive slowly are counted while they do.
    let read = crate::frame_budget::Budgeted::new(
        read,
        shared.registry.memory().clone(),
        cfg.max_frame_bytes,
    );
    let mut frames = FramedRead::with_capacity(
        read,
        FrameCodec::new(cfg.max_frame_bytes),
        READ_BUFFER_INITIAL,
    );

    // Boxed, like each request (see `Session::serve`): the task is sized
    // for its largest state, and this one is over once.
    let (client_id, identity) = match Box::pin(handshake(
        &mut frames,
        &outbox,
        &cfg,
        &shared.auth,
        peer,
        &shared.metrics,
    ))
    .await
    {
        Some(ok) => ok,
        None => {
            drop(outbox);
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            return;
        }
    };
    gauge.open();
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
        access: Access::new(client_id.clone(), identity.grants),
        expires_at: identity.expires_at,
        warned: false,
        token_deadline: None,
        client_id,
        subs: HashMap::new(),
        next_sub: 1,
        publishes: FuturesOrdered::new(),
        others: FuturesUnordered::new(),
        cluster_peer: None,
    };
    s.schedule_token();
    s.serve(&mut frames).await;
    s.cleanup().await;
    rooms.disconnect(&s.client_id);
    drop(s);
    let _ = tokio::time::timeout(cfg.write_stall_timeout, writer).await;
    tracing::debug!(?peer, "session ended");
}

/// The read side of a connection, framed (cancel-safe in `select!`).
type Frames<R> = FramedRead<R, FrameCodec>;

/// Reads the first frame, which must be a Hello with a version we speak
/// and, when authentication is on, a valid token for the client id it
/// asks for.
async fn handshake<S: AsyncRead + Unpin>(
    frames: &mut Frames<S>,
    outbox: &Outbox,
    cfg: &BrokerConfig,
    auth: &Authenticator,
    peer: Option<SocketAddr>,
    metrics: &Metrics,
) -> Option<(String, Identity)> {
    let first = tokio::time::timeout(cfg.handshake_timeout, frames.next()).await;
    let frame = match first {
        Err(_) => {
            metrics.refused(Refusal::Timeout);
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
            metrics.refused(Refusal::Protocol);
            outbox.reply(0, &wire_error(&e)).await;
            return None;
        }
        Ok(Some(Ok(f))) => f,
    };
    let id = frame.header.request_id;
    metrics.frame(frame.header.opcode);
    if frame.header.opcode != Opcode::Hello {
        metrics.refused(Refusal::Protocol);
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
    if let Some(refused) = pushed_by_client(&frame) {
        metrics.refused(Refusal::Protocol);
        outbox.reply(id, &refused).await;
        return None;
    }
    let hello: Hello = match Message::decode(&frame) {
        Ok(Message::Hello(h)) => h,
        Ok(_) => return None,
        Err(e) => {
            metrics.refused(Refusal::Protocol);
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
        metrics.refused(Refusal::Version);
        outbox
            .reply(id, &Message::error(ErrorCode::UnsupportedVersion, msg))
            .await;
        return None;
    }
    if hello
        .client_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > 200)
    {
        metrics.refused(Refusal::Protocol);
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
    let authenticated = auth
        .authenticate(hello.token.as_deref())
        .and_then(|who| Ok((who.bind(hello.client_id.clone())?, who)));
    let (client_id, identity) = match authenticated {
        Ok(ok) => ok,
        Err(e) => {
            metrics.refused(Refusal::Auth);
            // Never the token itself: its fingerprint tells tokens apart.
            tracing::warn!(
                ?peer,
                client_name = %hello.client_name,
                client_id = ?hello.client_id,
                token = ?hello.token.as_deref().map(tokens::fingerprint),
                reason = %e,
                "authentication failed"
            );
            outbox.reply(id, &BrokerError::from(e).to_message()).await;
            return None;
        }
    };
    let ok = HelloOk {
        version: hi,
        client_id: client_id.clone(),
        max_frame: cfg.max_frame_bytes as u32,
        max_batch: (cfg.max_frame_bytes - 1024) as u32,
        heartbeat_ms: cfg.heartbeat.as_millis() as u32,
        // Version 2: clients that gather acks keep them within it.
        ack_timeout_ms: (hi >= 2).then(|| cfg.ack_timeout.as_millis().min(u32::MAX as u128) as u32),
    };
    if !outbox.reply(id, &Message::HelloOk(ok)).await {
        return None;
    }
    if auth.is_required() {
        tracing::info!(?peer, %client_id, credential = %identity.name, "authenticated");
    }
    Some((client_id, identity))
}

/// A client's frame with the PUSH flag: only the broker pushes, and every
/// frame a client sends has flags 0 (docs/protocol.md, section 3).
fn pushed_by_client(frame: &Frame) -> Option<Message> {
    (frame.header.flags & herald_protocol::frame::FLAG_PUSH != 0).then(|| {
        Message::error(
            ErrorCode::BadFrame,
            "a client's frame has the PUSH flag; only the broker pushes",
        )
    })
}

fn wire_error(e: &herald_protocol::WireError) -> Message {
    let code = match e {
        herald_protocol::WireError::FrameTooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::BadFrame,
    };
    Message::error(code, e.to_string())
}

impl Session {
    async fn serve<S: AsyncRead + Unpin>(&mut self, frames: &mut Frames<S>) {
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
        // The next moment the token needs attention (warn, then expire);
        // reset only when it changes, so the read loop pays nothing.
        let mut auth_at = self.token_deadline;
        let auth_timer = tokio::time::sleep_until(auth_at.unwrap_or_else(far_future));
        tokio::pin!(auth_timer);
        loop {
            let can_read = self.can_read(&cfg) && parked.is_none();
            let wake = self.token_deadline;
            if wake != auth_at {
                auth_at = wake;
                auth_timer.as_mut().reset(wake.unwrap_or_else(far_future));
            }
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
                    if self.on_read(f, &mut parked, &memory).await.is_break() {
                        return;
                    }
                    // Frames that came in the same read are served now,
                    // without another turn of this `select!`: a turn polls
                    // every branch (two cancellation tokens, the heartbeat),
                    // which cost more than a small request itself when an
                    // emitter keeps hundreds in flight.
                    for _ in 0..DRAIN_TURN {
                        if parked.is_some() || !self.can_read(&cfg) {
                            break;
                        }
                        let Some(f) = frames.next().now_or_never() else { break };
                        if self.on_read(f, &mut parked, &memory).await.is_break() {
                            return;
                        }
                    }
                }
                _ = memory.until_admitted(Level::Publish), if parked.is_some() => {
                    if let Some(frame) = parked.take() {
                        if Box::pin(self.handle(frame)).await.is_err() {
                            self.drain().await;
                            return;
                        }
                    }
                }
                Some((id, m)) = self.publishes.next(), if !self.publishes.is_empty() => {
                    if self.reply(id, m).await.is_err() { return }
                    // Confirms that are ready too (one sync confirms a whole
                    // group of publishes and emits) go in the same turn.
                    for _ in 0..DRAIN_TURN {
                        let Some(Some((id, m))) = self.publishes.next().now_or_never() else { break };
                        if self.reply(id, m).await.is_err() { return }
                    }
                }
                Some((id, m)) = self.others.next(), if !self.others.is_empty() => {
                    if self.reply(id, m).await.is_err() { return }
                }
                _ = &mut auth_timer, if auth_at.is_some() => {
                    if self.token_timer().await.is_err() {
                        return;
                    }
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

    /// Whether another request may be read: the answers waiting are within
    /// bounds (a peer that does not read its answers stops being read).
    fn can_read(&self, cfg: &BrokerConfig) -> bool {
        self.publishes.len() < cfg.max_inflight_publishes && self.others.len() < MAX_PENDING_OTHERS
    }

    /// Serves what one read of the connection gave: a request, or the end
    /// of the connection (`Break`). A publish that does not fit the memory
    /// budget is parked in `parked` until it does.
    async fn on_read(
        &mut self,
        f: Option<Result<Frame, CodecError>>,
        parked: &mut Option<Frame>,
        memory: &MemoryBudget,
    ) -> ControlFlow<()> {
        match f {
            None | Some(Err(CodecError::Io(_))) => {
                self.drain().await;
                ControlFlow::Break(())
            }
            Some(Err(CodecError::Wire(e))) => {
                tracing::debug!(client = %self.client_id, error = %e, "bad frame; closing");
                self.drain().await;
                self.outbox.reply(0, &wire_error(&e)).await;
                ControlFlow::Break(())
            }
            Some(Ok(frame)) => {
                if frame.header.opcode == Opcode::Publish && !memory.admits(Level::Publish) {
                    *parked = Some(frame);
                    return ControlFlow::Continue(());
                }
                // Each request is handled in its own allocation: the
                // session's task is sized for its largest state, and inline
                // the biggest handler's future was two thirds of an idle
                // connection's task (issue 12). One allocation per frame,
                // next to the frame's decoding.
                if Box::pin(self.handle(frame)).await.is_err() {
                    self.drain().await;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// Sets when the token next needs attention: the expiry notice
    /// ([`TOKEN_EXPIRING`] before, or half the time left when that is
    /// shorter), then the expiry itself. Called after the handshake, a
    /// refresh and the notice.
    pub(crate) fn schedule_token(&mut self) {
        self.token_deadline = self.expires_at.map(|exp| {
            let left = exp
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let now = tokio::time::Instant::now();
            if self.warned {
                now + left
            } else {
                now + left.saturating_sub(TOKEN_EXPIRING.min(left / 2))
            }
        });
    }

    /// The token timer fired: tell the client its token is expiring, or,
    /// once it has expired, close the connection (`Err`) after the replies
    /// it was promised.
    fn token_timer(&mut self) -> BoxFuture<'_, Result<(), Close>> {
        Box::pin(self.token_timer_inline())
    }

    async fn token_timer_inline(&mut self) -> Result<(), Close> {
        let Some(exp) = self.expires_at else {
            return Ok(());
        };
        match exp.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                let first = !self.warned;
                self.warned = true;
                self.schedule_token();
                if !first {
                    return Ok(());
                }
                let m = Message::TokenExpiring(herald_protocol::TokenExpiring {
                    expires_in_ms: left.as_millis().min(u64::MAX as u128) as u64,
                });
                self.reply(0, m).await
            }
            _ => {
                tracing::info!(client = %self.client_id, "token expired; closing the connection");
                self.drain().await;
                let e = Message::error(
                    ErrorCode::TokenExpired,
                    "the connection's token expired; send Refresh before it does, or reconnect with a new token",
                );
                self.outbox.reply(0, &e).await;
                Err(Close)
            }
        }
    }

    /// Waits for pending publishes and replies so nothing the peer was
    /// promised is dropped. Boxed, like [`Session::cleanup`] and
    /// [`Session::token_timer`]: they run once or rarely, and inline they
    /// would size every session's task for their futures (issue 12).
    fn drain(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let Some((id, m)) = self.publishes.next().await else {
                    break;
                };
                let _ = self.reply(id, m).await;
            }
            loop {
                let Some((id, m)) = self.others.next().await else {
                    break;
                };
                let _ = self.reply(id, m).await;
            }
        })
    }

    /// Ends the connection's subscriptions (boxed: see [`Session::drain`]).
    fn cleanup(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for (_, sub) in self.subs.drain() {
                sub.end().await;
            }
        })
    }

    /// Sends a reply; `Err` once the connection is gone. Encoded before
    /// the future first waits (see [`Outbox::reply`]), so awaiting it costs
    /// a handler's future the frame's bytes, not a whole [`Message`].
    pub(crate) fn reply(
        &mut self,
        id: u64,
        m: Message,
    ) -> impl std::future::Future<Output = Result<(), Close>> + Send + '_ {
        let frame = self.outbox.encode(id, &m);
        drop(m);
        async move {
            if self.outbox.send_frame(frame).await {
                Ok(())
            } else {
                Err(Close)
            }
        }
    }

    /// Answers request `id` once `work` is done, without holding up the
    /// read loop (admin requests wait on group actors and the disk).
    pub(crate) fn later<F>(&mut self, id: u64, work: F) -> Result<(), Close>
    where
        F: std::future::Future<Output = Result<Message, BrokerError>> + Send + 'static,
    {
        self.others.push(Box::pin(async move {
            (id, work.await.unwrap_or_else(|e| e.to_message()))
        }));
        Ok(())
    }

    /// Decodes one request and hands it to its handler
    /// ([`crate::handlers::dispatch`], where permissions are checked).
    async fn handle(&mut self, mut frame: Frame) -> Result<(), Close> {
        let id = frame.header.request_id;
        self.shared.metrics.frame(frame.header.opcode);
        if let Some(refused) = pushed_by_client(&frame) {
            self.reply(id, refused).await?;
            return Err(Close);
        }
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
        crate::handlers::dispatch(self, id, msg).await
    }
}

/// A deadline that never comes, for a timer with nothing to wait for.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use tokio::io::{ReadHalf, WriteHalf};

    use super::*;
    use crate::ws::{self, WsReader, WsWriter};

    /// The size of the future `f` returns, without calling it.
    fn future_size5<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size3<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection is one task holding its session's future, and
    /// each task is one allocation that jemalloc rounds up to a size
    /// class. With the WebSocket upgrade's own state around it, a session
    /// future of up to this many bytes keeps the task in the 3 KiB class;
    /// a few hundred bytes more (the unsplit socket kept beside the
    /// session, as an `async fn ws::serve` did) put it in the 4 KiB one:
    /// 1 KiB more per idle connection (docs/performance.md, "Idle
    /// sessions: where the bytes are").
    const SESSION_FUTURE_MAX: usize = 2_700;

    #[test]
    fn a_session_future_stays_in_its_size_class() {
        let tcp = future_size5(
            run::<ReadHalf<TcpStream>, WriteHalf<TcpStream>> as fn(_, _, _, _, _) -> _,
        );
        let web = future_size5(run::<WsReader, WsWriter> as fn(_, _, _, _, _) -> _);
        let upgraded = future_size3(ws::serve as fn(_, _, _) -> _);
        eprintln!("session future: TCP {tcp} B, WebSocket {web} B, ws::serve {upgraded} B");
        for (what, size) in [("TCP", tcp), ("WebSocket", web), ("ws::serve", upgraded)] {
            assert!(
                size <= SESSION_FUTURE_MAX,
                "the {what} session's future is {size} bytes, over {SESSION_FUTURE_MAX}: \
                 every idle connection's task moves to a bigger size class"
            );
        }
    }
}
