//! [`Client`], its builder, and the plumbing the other handles share.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_protocol::Message as Wire;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::acks::AckSignal;
use crate::command::{Command, COMMAND_QUEUE};
use crate::config::{Backoff, ClientConfig, OverflowPolicy};
use crate::connection::{ConnShared, Connection};
use crate::events::{Events, EVENT_BUFFER};
use crate::producer::{Budget, Producer};
use crate::subscription::SubscribeBuilder;
use crate::tls::{TlsOptions, TlsRoots};
use crate::{ConnectionEvent, Error, Receipt, Record, Result};

/// A connection to a Herald broker, shared by every producer and
/// subscription made from it. Cheap to clone.
///
/// The connection is owned by one background task that reconnects by
/// itself; see the crate docs.
///
/// ```no_run
/// # async fn demo() -> herald_client::Result<()> {
/// use herald_client::Client;
/// let client = Client::connect("127.0.0.1:7400").await?;
/// let receipt = client.publish("orders", "hello").await?;
/// println!("stored at offset {}", receipt.offset);
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

#[derive(Debug)]
pub(crate) struct ClientInner {
    pub(crate) cfg: ClientConfig,
    pub(crate) cmd_tx: mpsc::Sender<Command>,
    events: broadcast::Sender<ConnectionEvent>,
    pub(crate) conn: Arc<ConnShared>,
    budget: Arc<Budget>,
    /// Producers behind [`Client::publish`], one per topic. A std mutex:
    /// held only to look up or insert.
    producers: Mutex<HashMap<String, Producer>>,
    next_id: AtomicU64,
    /// The inbox reader, started by the first inbox, `on` or request call.
    pub(crate) inbox: tokio::sync::OnceCell<Arc<crate::inbox::InboxHub>>,
}

impl ClientInner {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) async fn command(&self, cmd: Command) -> Result<()> {
        let closed = || Error::ConnectionLost("client closed".into());
        // Queued at once when there is room: `send().await` spends the
        // task's cooperative budget and, when it runs out, yields even
        // with room, so of many requests polled together (a `buffered`
        // stream of emits) a later one could be queued before an earlier
        // one. With the queue full, senders wait in turn (the channel is
        // fair, and `try_send` does not pass those waiting).
        match self.cmd_tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                self.cmd_tx.send(cmd).await.map_err(|_| closed())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
        }
    }

    /// Waits for a reply within the request timeout.
    pub(crate) async fn await_reply<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::ConnectionLost("client closed".into())),
            Err(_) => Err(Error::Timeout),
        }
    }

    pub(crate) async fn request(&self, msg: Wire) -> Result<Wire> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Request { msg, reply }).await?;
        self.await_reply(rx).await
    }
}

impl Client {
    /// Connects with default settings; see [`Client::builder`].
    ///
    /// # Errors
    /// [`Error::Connect`] if the first connection attempt fails.
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        Client::builder(addr).connect().await
    }

    /// A builder for a client of the broker at `addr`: `host:port` for
    /// TCP, or `ws://host:port/ws` (`wss://` with TLS) for its WebSocket
    /// listener, which carries the same protocol.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            cfg: ClientConfig::new(addr),
        }
    }

    fn start(cfg: ClientConfig) -> (Client, Connection) {
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let conn = Arc::new(ConnShared {
            max_batch: AtomicUsize::new(0),
            client_id: Mutex::new(cfg.client_id.clone()),
            acks: Arc::new(AckSignal::default()),
        });
        let connection = Connection::new(cfg.clone(), cmd_rx, events.clone(), conn.clone());
        let inner = ClientInner {
            budget: Arc::new(Budget::new(&cfg)),
            cfg,
            cmd_tx,
            events,
            conn,
            producers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            inbox: tokio::sync::OnceCell::new(),
        };
        (
            Client {
                inner: Arc::new(inner),
            },
            connection,
        )
    }

    /// Publishes one payload and waits until the broker confirmed it
    /// durable. Uses a shared internal producer per topic, so concurrent
    /// calls are batched together.
    ///
    /// # Errors
    /// See [`Producer::send_record`]; also [`Error::Broker`] if the broker
    /// rejected the batch.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<Receipt> {
        self.publish_record(topic, Record::new(payload)).await
    }

    /// Publishes a [`Record`] (payload, key, headers) and waits for its
    /// confirm.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn publish_record(&self, topic: &str, record: impl Into<Record>) -> Result<Receipt> {
        let producer = {
            let mut map = self
                .inner
                .producers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match map.get(topic) {
                Some(p) => p.clone(),
                None => {
                    let p = self.producer(topic);
                    map.insert(topic.to_string(), p.clone());
                    p
                }
            }
        };
        producer.send_record(record).await?.await
    }

    /// A pipelined, idempotent producer for `topic`: many sends in flight,
    /// each re-sent after a reconnect and stored exactly once.
    pub fn producer(&self, topic: &str) -> Producer {
        self.producer_with_id(topic, crate::state::fresh_producer_id())
    }

    /// A producer with a chosen producer id. Its sequence numbers start at
    /// 0, so running the same input again with the same id stores nothing
    /// twice: the broker answers the repeats as duplicates with their
    /// original offsets. An id of 0 means a fresh random id.
    pub fn producer_with_id(&self, topic: &str, producer_id: u64) -> Producer {
        let i = &self.inner;
        let producer_id = if producer_id == 0 {
            crate::state::fresh_producer_id()
        } else {
            producer_id
        };
        Producer::spawn(
            i.next_id(),
            producer_id,
            topic,
            &i.cfg,
            i.budget.clone(),
            i.conn.clone(),
            i.cmd_tx.clone(),
        )
    }

    /// Starts configuring a subscription to `topic`; `.await` the builder.
    pub fn subscribe(&self, topic: &str) -> SubscribeBuilder {
        SubscribeBuilder::new(self.clone(), topic.to_string())
    }

    /// Connection events from now on.
    pub fn events(&self) -> Events {
        Events::new(self.inner.events.subscribe())
    }

    /// The id the broker knows this client by (configured, or assigned at
    /// the first handshake).
    pub fn client_id(&self) -> Option<String> {
        self.inner
            .conn
            .client_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Flushes pending acks, waits (up to 10 s) for in-flight publishes to
    /// be confirmed, then closes. Publishes still unconfirmed fail with
    /// [`Error::ConnectionLost`]; subscriptions end.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .cmd_tx
            .send(Command::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }
}

/// Configures and connects a [`Client`]; from [`Client::builder`].
///
/// ```no_run
/// # async fn demo() -> herald_client::Result<()> {
/// use std::time::Duration;
/// use herald_client::{Client, OverflowPolicy};
/// let client = Client::builder("127.0.0.1:7400")
///     .client_id("svc-a")
///     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .max_reconnect_attempts(Some(20))
///     .buffer_limits(10_000, 8 << 20)
///     .overflow(OverflowPolicy::Fail)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "the builder does nothing until connect is called"]
pub struct ClientBuilder {
    cfg: ClientConfig,
}

impl ClientBuilder {
    /// A builder from a complete configuration.
    pub fn from_config(cfg: ClientConfig) -> ClientBuilder {
        ClientBuilder { cfg }
    }
    /// A stable client id, sent in every handshake.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.client_id = Some(id.into());
        self
    }
    /// The name the broker logs for this client.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.client_name = name.into();
        self
    }
    /// An authentication token, sent in every handshake. A token that
    /// expires is better given by [`ClientBuilder::token_provider`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }

    /// Where tokens come from: `get` is called for every handshake and
    /// whenever the broker says the connection's token is about to expire;
    /// the new token is then sent on the open connection (Refresh), so
    /// subscriptions keep flowing. Typically `get` asks the application's
    /// backend for a new JWT. Errors are reported as
    /// [`crate::ConnectionEvent::TokenRefreshFailed`] (or fail the
    /// handshake) and retried at the next occasion.
    pub fn token_provider<F, Fut, E>(mut self, get: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let f =
            move || -> futures::future::BoxFuture<'static, std::result::Result<String, String>> {
                let fut = get();
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            };
        self.cfg.token_provider = Some(crate::config::TokenProvider(Arc::new(f)));
        self
    }

    fn tls_options(&mut self) -> &mut TlsOptions {
        self.cfg.tls.get_or_insert_with(TlsOptions::system)
    }

    /// Connects with TLS, trusting the system's CA certificates.
    pub fn tls(mut self) -> Self {
        self.tls_options();
        self
    }

    /// Connects with TLS, trusting only the CA certificates in `pem`.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_options().roots = TlsRoots::Pem(pem.into());
        self
    }

    /// The name the broker's certificate must carry (default: the host
    /// of the address). Turns TLS on.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_options().server_name = Some(name.into());
        self
    }

    /// A client certificate chain and key (PEM), for a broker that
    /// requires client certificates. Turns TLS on.
    pub fn tls_client_cert_pem(
        mut self,
        chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_options().client_cert = Some((chain.into(), key.into()));
        self
    }
    /// Reconnect backoff: first delay and cap.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.cfg.backoff.initial = initial;
        self.cfg.backoff.max = max.max(initial);
        self
    }
    /// Reconnect attempts after a drop before giving up (`None`: forever,
    /// the default).
    pub fn max_reconnect_attempts(mut self, n: Option<u32>) -> Self {
        self.cfg.backoff.max_attempts = n;
        self
    }
    /// The whole backoff policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.backoff = backoff;
        self
    }
    /// Bounds of the publish buffer (messages and bytes accepted but not
    /// yet confirmed).
    pub fn buffer_limits(mut self, messages: usize, bytes: usize) -> Self {
        self.cfg.max_buffered_messages = messages;
        self.cfg.max_buffered_bytes = bytes;
        self
    }
    /// What a publish does when the buffer is full.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.cfg.overflow = policy;
        self
    }
    /// Deadline of subscribe and admin requests.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.cfg.request_timeout = d;
        self
    }
    /// Deadline of one connect plus handshake.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }
    /// Batch limits of producers (records and bytes per batch) and batches
    /// in flight per producer.
    pub fn batching(mut self, records: usize, bytes: usize, inflight: usize) -> Self {
        self.cfg.max_batch_records = records;
        self.cfg.max_batch_bytes = bytes;
        self.cfg.max_inflight_batches = inflight;
        self
    }

    /// Connects, waiting for the first handshake.
    ///
    /// # Errors
    /// [`Error::Connect`] if the first attempt fails (later drops are
    /// retried; see [`ClientBuilder::connect_lazy`] to retry the first one
    /// too).
    pub async fn connect(self) -> Result<Client> {
        crate::endpoint::Endpoint::parse_list(&self.cfg.addr, self.cfg.tls.is_some())?;
        if let Some(t) = &self.cfg.tls {
            crate::tls::setup(t)?;
        }
        let (client, connection) = Client::start(self.cfg);
        let (ready, is_ready) = oneshot::channel();
        tokio::spawn(connection.run(Some(ready)));
        match is_ready.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ConnectionLost("connection task ended".into())),
        }
    }

    /// Returns at once and connects in the background, retrying the first
    /// connection like a reconnect. Publishes are buffered meanwhile.
    pub fn connect_lazy(self) -> Client {
        let (client, connection) = Client::start(self.cfg);
        tokio::spawn(connection.run(None));
        client
    }
}

impl IntoFuture for ClientBuilder {
    type Output = Result<Client>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Client>> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.connect())
    }
}
