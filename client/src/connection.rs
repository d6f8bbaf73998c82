//! The connection task: the one owner of the socket. It dials, handshakes,
//! moves frames between the socket and [`State`], and when the connection
//! drops it reconnects with backoff and replays what was in flight.
//!
//! Every user-facing handle talks to it through the bounded command channel;
//! nothing else touches the socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use herald_protocol::codec::{CodecError, FrameCodec};
use herald_protocol::frame::FLAG_PUSH;
use herald_protocol::{
    Frame, Hello, Message as Wire, Refresh, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;

use crate::acks::{AckSignal, ACK_LINGER};
use crate::command::Command;
use crate::config::ClientConfig;
use crate::endpoint::Endpoint;
use crate::state::State;
use crate::tls::{Stream, Tls, TlsOptions};
use crate::ConnectionEvent;

/// Frames handled in one turn of the connection's loop when more came in
/// the same read; bounded so that a busy connection still writes, sends
/// its acks and sees its heartbeat.
const READ_TURN: usize = 64;

/// How long `close` waits for in-flight publishes and acks to be confirmed.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a NotLeader that names no leader (an election is under way), the
/// next node is dialled after this.
const NO_LEADER_PAUSE: Duration = Duration::from_millis(100);
/// Most addresses the client keeps (given, and learnt from NotLeader).
const MAX_ADDRESSES: usize = 16;
/// How long a closing client waits for its last bytes (and the goodbye of
/// the transport) to be taken by the socket.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Heartbeat used when the broker announces 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// What the handles and the connection task share besides the channel.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Largest batch the broker accepts (from the handshake).
    pub(crate) max_batch: AtomicUsize,
    /// The client id the broker knows us by (assigned at the first
    /// handshake when not configured). A std mutex: read rarely, never held
    /// across an await.
    pub(crate) client_id: Mutex<Option<String>>,
    pub(crate) acks: Arc<AckSignal>,
}

/// The read half, framed: cancel-safe inside `select!`.
type Reader = FramedRead<ReadHalf<Stream>, FrameCodec>;
/// The write half.
type Writer = WriteHalf<Stream>;

/// How one connection ended.
enum Ended {
    /// It dropped; reconnect.
    Dropped(String),
    /// The client is done.
    Closed,
}

/// The connection task's state; see the module docs.
pub(crate) struct Connection {
    cfg: ClientConfig,
    cmd_rx: mpsc::Receiver<Command>,
    events: broadcast::Sender<ConnectionEvent>,
    shared: Arc<ConnShared>,
    state: State,
    /// Set by `Close`: answered once drained (or after the drain timeout).
    closing: Option<(oneshot::Sender<()>, Instant)>,
    /// Every command sender is gone; stop polling the channel.
    inputs_closed: bool,
    /// Where the broker is and over what (parsed once), or why the
    /// address is unusable: one address, or the nodes of a cluster, of
    /// which `current` is dialled.
    endpoints: Result<Vec<Endpoint>, String>,
    current: usize,
    /// The TLS setup (built once), or why it could not be built.
    tls: Option<Result<Tls, String>>,
    /// Tokens fetched by the provider for a Refresh come back here.
    refresh_tx: mpsc::Sender<Result<String, String>>,
    refresh_rx: mpsc::Receiver<Result<String, String>>,
    /// A token is being fetched for a Refresh: ask the provider once.
    refreshing: bool,
}

impl Connection {
    pub(crate) fn new(
        cfg: ClientConfig,
        cmd_rx: mpsc::Receiver<Command>,
        events: broadcast::Sender<ConnectionEvent>,
        shared: Arc<ConnShared>,
    ) -> Connection {
        let endpoints =
            Endpoint::parse_list(&cfg.addr, cfg.tls.is_some()).map_err(|e| e.to_string());
        // wss:// is TLS even without TLS settings: the system's CAs then.
        let tls = match (&cfg.tls, endpoints.as_ref().map(|l| &l[0])) {
            (Some(t), _) => Some(t.clone()),
            (None, Ok(Endpoint::WebSocket { secure: true, .. })) => Some(TlsOptions::system()),
            (None, _) => None,
        };
        let tls = tls.map(|t| crate::tls::setup(&t).map_err(|e| e.to_string()));
        let (refresh_tx, refresh_rx) = mpsc::channel(1);
        Connection {
            cfg,
            cmd_rx,
            events,
            shared,
            state: State::default(),
            closing: None,
            inputs_closed: false,
            endpoints,
            current: 0,
            tls,
            refresh_tx,
            refresh_rx,
            refreshing: false,
        }
    }

    fn emit(&self, ev: ConnectionEvent) {
        let _ = self.events.send(ev);
    }

    /// Runs until the client closes or reconnecting gives up. `ready` (for
    /// an eager connect) is answered after the first attempt.
    pub(crate) async fn run(mut self, mut ready: Option<oneshot::Sender<crate::Result<()>>>) {
        let mut ever_connected = false;
        loop {
            let mut attempt: u32 = 0;
            // Addresses tried in a row without success: each node of a
            // cluster is tried once before the backoff starts.
            let mut failed_in_row = 0;
            let (reader, writer, heartbeat) = loop {
                if ever_connected || attempt > 0 {
                    self.emit(ConnectionEvent::Reconnecting {
                        attempt: attempt + 1,
                    });
                }
                attempt += 1;
                match self.dial().await {
                    Ok(conn) => break conn,
                    Err(reason) => {
                        tracing::debug!(attempt, %reason, "connect failed");
                        failed_in_row += 1;
                        let nodes = self.endpoints.as_ref().map_or(1, Vec::len);
                        self.current = (self.current + 1) % nodes;
                        if failed_in_row < nodes {
                            continue;
                        }
                        failed_in_row = 0;
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(crate::Error::Connect {
                                addr: self.cfg.addr.clone(),
                                reason: reason.clone(),
                            }));
                            return self.finish("initial connect failed", false);
                        }
                        if self.cfg.backoff.max_attempts.is_some_and(|m| attempt >= m) {
                            let plural = if attempt == 1 { "" } else { "s" };
                            let why = format!("gave up after {attempt} attempt{plural}: {reason}");
                            return self.finish(&why, true);
                        }
                        if !self.wait_offline(self.cfg.backoff.delay(attempt)).await {
                            return self.finish("client closed", false);
                        }
                    }
                }
            };
            self.emit(if ever_connected {
                ConnectionEvent::Reconnected
            } else {
                ConnectionEvent::Connected
            });
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            ever_connected = true;
            self.state.restore();
            match self.serve(reader, writer, heartbeat).await {
                Ended::Closed => return self.finish("client closed", false),
                Ended::Dropped(reason) => {
                    tracing::info!(%reason, "connection dropped");
                    self.state.on_disconnect();
                    self.emit(ConnectionEvent::Disconnected { reason });
                    if self.closing.is_some() {
                        return self.finish("connection dropped while closing", false);
                    }
                    if let Some(leader) = self.state.redirect.take() {
                        // No leader yet (an election), or one this client
                        // cannot dial (named by its TCP address, over
                        // WebSocket): the next address, after a moment, so
                        // that a single address does not loop at once.
                        if !self.point_at(leader) && !self.wait_offline(NO_LEADER_PAUSE).await {
                            return self.finish("client closed", false);
                        }
                    }
                }
            }
        }
    }

    /// Dials `leader` next (a cluster node's NotLeader named it; added to
    /// the addresses if it was not given), or the next address when no
    /// leader is known or the transport is WebSocket (the leader is named
    /// by its TCP address). Whether it is the leader that is dialled next.
    fn point_at(&mut self, leader: Option<String>) -> bool {
        let Ok(list) = &mut self.endpoints else {
            return false;
        };
        let tcp = matches!(list[0], Endpoint::Tcp { .. });
        let at = leader.filter(|_| tcp).and_then(|a| {
            list.iter().position(|e| e.addr() == a).or_else(|| {
                (list.len() < MAX_ADDRESSES).then(|| {
                    list.push(Endpoint::Tcp { addr: a });
                    list.len() - 1
                })
            })
        });
        self.current = at.unwrap_or((self.current + 1) % list.len());
        at.is_some()
    }

    fn finish(mut self, reason: &str, fail_subs: bool) {
        self.state.shutdown(reason, fail_subs);
        self.cmd_rx.close();
        // Commands already queued are answered as lost (their senders see
        // dropped oneshots) when the receiver drops.
        if let Some((reply, _)) = self.closing.take() {
            let _ = reply.send(());
        }
        self.emit(ConnectionEvent::Closed);
    }

    /// Connects and handshakes, within the connect timeout.
    async fn dial(&mut self) -> Result<(Reader, Writer, Duration), String> {
        let d = self.cfg.connect_timeout;
        match timeout(d, self.dial_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no handshake within {d:?}")),
        }
    }

    /// The token for a handshake: a fresh one from the provider, or the
    /// configured one.
    async fn token(&self) -> Result<Option<String>, String> {
        match &self.cfg.token_provider {
            Some(p) => (p.0)()
                .await
                .map(Some)
                .map_err(|e| format!("the token provider failed: {e}")),
            None => Ok(self.cfg.token.clone()),
        }
    }

    async fn dial_inner(&mut self) -> Result<(Reader, Writer, Duration), String> {
        let endpoint = match &self.endpoints {
            Ok(l) => l[self.current % l.len()].clone(),
            Err(e) => return Err(e.clone()),
        };
        let tcp = TcpStream::connect(endpoint.addr())
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream: Stream = match &self.tls {
            None => Box::new(tcp),
            Some(Ok(tls)) => tls.connect(endpoint.addr(), tcp).await?,
            Some(Err(e)) => return Err(e.clone()),
        };
        #[cfg(feature = "ws")]
        let (stream, message_limit) = match &endpoint {
            Endpoint::WebSocket { url, .. } => {
                let (s, limit) = crate::ws_stream::connect(url, stream).await?;
                (s, Some(limit))
            }
            Endpoint::Tcp { .. } => (stream, None),
        };
        let token = self.token().await?;
        let (rd, mut wr) = tokio::io::split(stream);
        let mut reader = FramedRead::new(rd, FrameCodec::default());
        let client_id = self
            .shared
            .client_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hello = Wire::Hello(Hello {
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION_MAX,
            client_name: self.cfg.client_name.clone(),
            client_id,
            token,
        });
        let mut buf = bytes::BytesMut::new();
        hello.encode(1, &mut buf);
        wr.write_all(&buf).await.map_err(|e| e.to_string())?;
        wr.flush().await.map_err(|e| e.to_string())?;
        let frame = match reader.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed during handshake".into()),
        };
        match Wire::decode(&frame).map_err(|e| e.to_string())? {
            Wire::HelloOk(ok) => {
                *self
                    .shared
                    .client_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(ok.client_id);
                reader.decoder_mut().set_max_frame(ok.max_frame as usize);
                #[cfg(feature = "ws")]
                if let Some(limit) = &message_limit {
                    limit.set(ok.max_frame as usize);
                }
                self.shared
                    .max_batch
                    .store(ok.max_batch as usize, Ordering::Relaxed);
                self.shared.acks.set_broker_ack_timeout(ok.ack_timeout_ms);
                self.state.version = ok.version;
                self.state.max_frame = ok.max_frame as usize;
                let hb = match ok.heartbeat_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(u64::from(ms)),
                };
                Ok((reader, wr, hb))
            }
            Wire::Error(e) => Err(format!("handshake refused ({}): {}", e.code, e.message)),
            m => Err(format!("unexpected {:?} in handshake", m.opcode())),
        }
    }

    /// Waits out a backoff delay while still taking commands (publishes are
    /// buffered, subscriptions registered). Returns false once closed.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return true,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Close { reply }) => {
                        self.closing = Some((reply, Instant::now()));
                        return false;
                    }
                    Some(c) => self.state.on_command(c),
                    None => return false,
                },
            }
        }
    }

    /// Moves frames until the connection drops or the client closes.
    async fn serve(&mut self, mut reader: Reader, mut writer: Writer, hb: Duration) -> Ended {
        let mut last_rx = Instant::now();
        let mut tick = tokio::time::interval((hb / 2).max(Duration::from_millis(10)));
        let mut ack_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let signal = self.shared.acks.clone();
        // Bytes written since the last flush. Over TLS the TLS layer may
        // hold encrypted records the socket did not take; a flush once the
        // buffer is empty pushes them out (a no-op for plain TCP).
        let mut unflushed = false;
        loop {
            if let Some((_, since)) = &self.closing {
                if self.state.is_drained() || since.elapsed() > CLOSE_DRAIN_TIMEOUT {
                    // Flushes, then says goodbye: a FIN on TCP,
                    // close_notify on TLS, a Close on a WebSocket.
                    let _ = timeout(CLOSE_WRITE_TIMEOUT, writer.shutdown()).await;
                    return Ended::Closed;
                }
            }
            let room = self.state.out.len() < self.cfg.max_write_buffer;
            tokio::select! {
                frame = reader.next() => {
                    last_rx = Instant::now();
                    if let Err(reason) = self.on_read(frame) {
                        return Ended::Dropped(reason);
                    }
                    // Frames that came in the same read are handled in this
                    // turn: a turn of this `select!` polls every branch
                    // (the ack signal's `Notified` takes a lock to register
                    // and another to drop), more than a small frame costs.
                    for _ in 0..READ_TURN {
                        let Some(frame) = reader.next().now_or_never() else { break };
                        if let Err(reason) = self.on_read(frame) {
                            return Ended::Dropped(reason);
                        }
                    }
                }
                res = pump(&mut writer, &mut self.state.out), if unflushed || !self.state.out.is_empty() => {
                    match res {
                        Ok(Some(0)) => return Ended::Dropped("socket closed for writing".into()),
                        Ok(Some(_)) => unflushed = true,
                        Ok(None) => unflushed = false,
                        Err(e) => return Ended::Dropped(e.to_string()),
                    }
                }
                cmd = self.cmd_rx.recv(), if room && !self.inputs_closed => match cmd {
                    Some(Command::Close { reply }) => {
                        self.closing = Some((reply, Instant::now()));
                        self.state.flush_acks_to_close();
                    }
                    Some(c) => {
                        self.state.on_command(c);
                        // Take whatever else is queued before writing, so
                        // frames leave in as few writes as possible.
                        while self.state.out.len() < self.cfg.max_write_buffer {
                            match self.cmd_rx.try_recv() {
                                Ok(Command::Close { reply }) => {
                                    self.closing = Some((reply, Instant::now()));
                                    self.state.flush_acks_to_close();
                                    break;
                                }
                                Ok(c) => self.state.on_command(c),
                                Err(_) => break,
                            }
                        }
                        // The emits taken go as one frame.
                        self.state.flush_emits();
                    }
                    None => {
                        // Every handle is gone: nobody can observe anything
                        // further, but acks still deserve to be sent.
                        self.inputs_closed = true;
                        self.state.flush_acks_to_close();
                        let (tx, _rx) = oneshot::channel();
                        self.closing = Some((tx, Instant::now()));
                    }
                },
                _ = signal.notify.notified() => {
                    if signal.urgent.swap(false, Ordering::AcqRel) {
                        self.state.flush_acks();
                        ack_timer = None;
                    } else {
                        // A first ack, or the eighth of a subscription
                        // whose few acks wait longer: within the linger.
                        let soon = Instant::now() + ACK_LINGER;
                        match ack_timer.as_mut() {
                            Some(t) if t.deadline() > soon => t.as_mut().reset(soon),
                            Some(_) => {}
                            None => ack_timer = Some(Box::pin(sleep(ACK_LINGER))),
                        }
                    }
                }
                _ = async { if let Some(t) = ack_timer.as_mut() { t.await } }, if ack_timer.is_some() => {
                    ack_timer = None;
                    if let Some(due) = self.state.flush_lingering_acks(std::time::Instant::now()) {
                        ack_timer = Some(Box::pin(sleep_until(Instant::from_std(due))));
                    }
                }
                // Polled only while a token is being fetched: an idle
                // channel polled every turn is a cache miss per frame on
                // each of thousands of connections.
                Some(token) = self.refresh_rx.recv(), if self.refreshing => self.send_refresh(token),
                _ = tick.tick() => {
                    let idle = last_rx.elapsed();
                    if idle > hb * 3 {
                        return Ended::Dropped(format!("no frame from the broker for {idle:?}"));
                    }
                    if idle >= hb {
                        self.state.send_ping();
                    }
                }
            }
        }
    }

    /// Handles what one read gave: a frame, or why the connection ended.
    fn on_read(&mut self, frame: Option<Result<Frame, CodecError>>) -> Result<(), String> {
        match frame {
            Some(Ok(f)) => self.on_frame(f),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("connection closed by the broker".into()),
        }
    }

    fn on_frame(&mut self, f: Frame) -> Result<(), String> {
        let id = f.header.request_id;
        let push = f.header.flags & FLAG_PUSH != 0;
        let msg = Wire::decode(&f).map_err(|e| format!("bad frame from broker: {e}"))?;
        match msg {
            Wire::Deliver(d) => self.state.on_deliver(d),
            Wire::SubscriptionError(e) => self.state.on_subscription_error(e),
            Wire::Skipped(s) => self.state.on_skipped(s),
            Wire::Ping => self.state.send_pong(id),
            Wire::Pong => {}
            Wire::GoingAway(g) => return Err(format!("broker going away: {}", g.reason)),
            Wire::TokenExpiring(t) => self.on_token_expiring(t.expires_in_ms),
            Wire::Error(e) if id == 0 => {
                return Err(format!("broker error {}: {}", e.code, e.message))
            }
            m if !push => self.state.on_reply(id, m)?,
            m => tracing::debug!(opcode = ?m.opcode(), "ignoring unexpected push"),
        }
        Ok(())
    }
}

impl Connection {
    /// The broker says the token expires soon: ask the provider for a new
    /// one (in the background: it may call a web backend), unless a
    /// request for one is already out. Without a provider there is
    /// nothing to do; the broker closes the connection at expiry.
    fn on_token_expiring(&mut self, in_ms: u64) {
        let Some(p) = self.cfg.token_provider.clone() else {
            tracing::warn!(
                in_ms,
                "the token expires soon and there is no token provider to refresh it"
            );
            return;
        };
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let tx = self.refresh_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send((p.0)().await).await;
        });
    }

    /// Sends a fetched token as a Refresh; its outcome becomes an event.
    fn send_refresh(&mut self, token: Result<String, String>) {
        self.refreshing = false;
        let token = match token {
            Ok(t) => t,
            Err(reason) => {
                self.emit(ConnectionEvent::TokenRefreshFailed {
                    reason: format!("the token provider failed: {reason}"),
                });
                return;
            }
        };
        let (reply, rx) = oneshot::channel();
        let msg = Wire::Refresh(Refresh { token });
        self.state.on_command(Command::Request { msg, reply });
        let events = self.events.clone();
        tokio::spawn(async move {
            let ev = match rx.await {
                Ok(Ok(_)) => ConnectionEvent::TokenRefreshed,
                Ok(Err(e)) => ConnectionEvent::TokenRefreshFailed {
                    reason: e.to_string(),
                },
                Err(_) => return,
            };
            let _ = events.send(ev);
        });
    }
}

/// Writes some of `out`, or, once it is empty, flushes (see `unflushed`
/// in `serve`): `Some(bytes written)` or `None` for a flush. Cancel-safe.
async fn pump(w: &mut Writer, out: &mut bytes::BytesMut) -> std::io::Result<Option<usize>> {
    if out.is_empty() {
        w.flush().await.map(|()| None)
    } else {
        w.write_buf(out).await.map(Some)
    }
}
