//! The client's events: the group subscription of its inbox
//! `_inbox.<client id>` (group `inbox`: direct events, requests, replies,
//! emits to everyone) and one of each joined room's log `_room.<room>`
//! (group: the client id), read by one background task per client that
//!
//! - drops what is not for the application: its own presence, its own
//!   broadcasts (the room's log holds them for everyone else), and the
//!   second copy of an event emitted to several of its rooms,
//! - resolves [`crate::Client::request`] futures with the replies,
//! - runs the handlers registered with [`crate::Client::on`] (and acks),
//! - and queues every other event for the [`Inbox`] stream.
//!
//! Every one is a group subscription, so it resumes after a reconnect where
//! it left off: nothing acked is seen again, nothing unacked is lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_protocol::rooms::headers;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamMap;

use crate::client::ClientInner;
use crate::{Client, Error, Message, Result, Start, Subscription};

/// Events read from the inbox and not yet taken by the [`Inbox`] stream.
/// When full the reader waits, its deliveries stay unacked, and the
/// broker's prefetch window stops the flow: nothing is dropped.
pub const INBOX_BUFFER: usize = 256;

/// The group that reads an inbox.
const INBOX_GROUP: &str = "inbox";

/// Ids of recent events emitted to several rooms, remembered so that a
/// client in several of them hands each to the application once. Their
/// copies are appended together, so they arrive close together; a client
/// restarted between two copies may see such an event twice.
const SEEN_EMITS: usize = 4096;

/// Tells the reader which room logs to read.
enum RoomCmd {
    Read(String, Subscription),
    Stop(String),
}

type Handler = Arc<dyn Fn(Event) + Send + Sync>;

/// What the client's inbox reader shares with the client.
pub(crate) struct InboxHub {
    /// Requests waiting for their reply, by correlation id.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    handlers: Mutex<HashMap<String, Handler>>,
    /// The stream's end, while no [`Inbox`] holds it.
    rx: Mutex<Option<mpsc::Receiver<Result<Event>>>>,
    /// Random start: a reply left in the inbox by an earlier run of this
    /// client cannot match a new request.
    next_correlation: AtomicU64,
    /// To the reader: room logs to start and stop reading.
    rooms: mpsc::UnboundedSender<RoomCmd>,
    /// Rooms whose log is being read (so a second join reads it once).
    reading: Mutex<HashSet<String>>,
    /// Cleared by the first user of the hub, which reads the rooms this
    /// client id is already a member of (a restarted process).
    rooms_unknown: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for InboxHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboxHub")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InboxHub {
    /// Whether the room's log is already read.
    pub(crate) fn reads(&self, room: &str) -> bool {
        lock(&self.reading).contains(room)
    }

    /// Starts reading a joined room's log.
    pub(crate) fn read_room(&self, room: &str, sub: Subscription) {
        lock(&self.reading).insert(room.to_owned());
        let _ = self.rooms.send(RoomCmd::Read(room.to_owned(), sub));
    }

    /// Stops reading a room's log (after leaving it).
    pub(crate) fn stop_room(&self, room: &str) {
        lock(&self.reading).remove(room);
        let _ = self.rooms.send(RoomCmd::Stop(room.to_owned()));
    }

    /// A fresh correlation id and the receiver of its reply.
    pub(crate) fn expect_reply(&self) -> (u64, oneshot::Receiver<Bytes>) {
        let c = loop {
            let c = self.next_correlation.fetch_add(1, Ordering::Relaxed);
            if c != 0 {
                break c;
            }
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(c, tx);
        (c, rx)
    }

    /// Forgets the waiter of `correlation` when the guard drops (timeout,
    /// cancelled request); a late reply is then acked and dropped.
    pub(crate) fn forget_on_drop(self: &Arc<Self>, correlation: u64) -> impl Drop {
        struct Forget(Arc<InboxHub>, u64);
        impl Drop for Forget {
            fn drop(&mut self) {
                lock(&self.0.waiters).remove(&self.1);
            }
        }
        Forget(self.clone(), correlation)
    }
}

/// Whether an inbox record is an application event or presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Emitted by a client.
    Event,
    /// `join`, `leave`, `connect` or `disconnect`, published by the broker;
    /// [`Event::sender`] is the client whose presence changed.
    Presence,
}

/// One event from the inbox. Ack it once handled ([`Event::ack`]);
/// unacked events are delivered again (after the ack timeout, or after a
/// reconnect).
#[derive(Debug, Clone)]
pub struct Event {
    msg: Message,
    name: String,
    kind: EventKind,
    sender: String,
    room: Option<String>,
    reply_to: Option<(String, u64)>,
    client: Weak<ClientInner>,
}

/// The room headers of a record (the first of each name), read in one
/// pass over its headers: an event is looked at for half a dozen of them,
/// and a busy room delivers hundreds of thousands of events a second.
#[derive(Default)]
struct Fields<'a> {
    kind: &'a [u8],
    sender: Option<&'a [u8]>,
    room: Option<&'a [u8]>,
    reply_to: Option<&'a [u8]>,
    correlation: Option<&'a [u8]>,
    except_sender: bool,
    emit_id: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn of(msg: &'a Message) -> Fields<'a> {
        let mut f = Fields::default();
        let mut kind = None;
        for (name, value) in msg.headers() {
            let slot = match name {
                headers::KIND => &mut kind,
                headers::SENDER => &mut f.sender,
                headers::ROOM => &mut f.room,
                headers::REPLY_TO => &mut f.reply_to,
                headers::CORRELATION => &mut f.correlation,
                headers::EMIT_ID => &mut f.emit_id,
                headers::EXCEPT_SENDER => {
                    f.except_sender = true;
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        f.kind = kind.unwrap_or_default();
        f
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl Event {
    fn parse(msg: Message, client: Weak<ClientInner>) -> (Event, Option<u64>) {
        let name = msg.key().map(|k| text(k)).unwrap_or_default();
        let f = Fields::of(&msg);
        let correlation = f
            .correlation
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u64>().ok());
        let reply = (f.kind == headers::KIND_REPLY.as_bytes())
            .then_some(correlation)
            .flatten();
        let reply_to = f.reply_to.map(text).zip(correlation);
        let kind = if f.kind == headers::KIND_PRESENCE.as_bytes() {
            EventKind::Presence
        } else {
            EventKind::Event
        };
        let sender = f.sender.map(text).unwrap_or_default();
        let room = f.room.map(text);
        let ev = Event {
            name,
            kind,
            sender,
            room,
            reply_to,
            msg,
            client,
        };
        (ev, reply)
    }

    /// The event name (for presence: `join`, `leave`, `connect`,
    /// `disconnect`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        self.msg.payload()
    }
    /// Application event or presence.
    pub fn kind(&self) -> EventKind {
        self.kind
    }
    /// Whether this is a presence event.
    pub fn is_presence(&self) -> bool {
        self.kind == EventKind::Presence
    }
    /// The client id that emitted it (for presence: whose presence changed).
    pub fn sender(&self) -> &str {
        &self.sender
    }
    /// The room it came through; `None` for direct and emit-all events.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }
    /// Whether the sender waits for a reply ([`crate::Client::request`]).
    pub fn expects_reply(&self) -> bool {
        self.reply_to.is_some()
    }
    /// The underlying inbox message (offset, timestamp, delivery count).
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// Done with this event: it is not delivered again.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] once the client is closed.
    pub async fn ack(&self) -> Result<()> {
        self.msg.ack().await
    }

    /// Answers a request; resolves once the reply is durable in the
    /// requester's inbox. The first reply wins; later ones are dropped by
    /// the requester.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the event expects no reply;
    /// [`Error::ConnectionLost`] if the client is gone; broker errors.
    pub async fn reply(&self, payload: impl Into<Bytes>) -> Result<()> {
        let Some((to, correlation)) = &self.reply_to else {
            return Err(Error::InvalidArgument("this event expects no reply".into()));
        };
        let inner = self
            .client
            .upgrade()
            .ok_or_else(|| Error::ConnectionLost("client dropped".into()))?;
        Client { inner }
            .send_reply(to, *correlation, payload.into())
            .await
    }
}

/// The stream of this client's events, from [`Client::inbox`]. Dropping it
/// keeps the events not yet read for the next [`Client::inbox`] call.
pub struct Inbox {
    rx: Option<mpsc::Receiver<Result<Event>>>,
    hub: Arc<InboxHub>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbox")
    }
}

impl Inbox {
    /// The next event; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Result<Event>> {
        self.next().await
    }
}

impl Stream for Inbox {
    type Item = Result<Event>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *lock(&self.hub.rx) = Some(rx);
        }
    }
}

impl Client {
    /// The inbox reader, started on first use. Its first user also reads
    /// the logs of the rooms this client id already belongs to (durable
    /// rooms, and others within the grace period): a process that starts
    /// again with the same id gets what its rooms were sent meanwhile.
    pub(crate) async fn hub(&self) -> Result<Arc<InboxHub>> {
        let hub = self
            .inner
            .inbox
            .get_or_try_init(|| self.start_inbox())
            .await?
            .clone();
        if hub.rooms_unknown.swap(false, Ordering::AcqRel) {
            for r in self.my_rooms().await? {
                // Joined again so that it is rejoined after a reconnect.
                self.join_again(&r.room, r.durable).await?;
                self.read_room_log(&hub, &r.room).await?;
            }
        }
        Ok(hub)
    }

    async fn start_inbox(&self) -> Result<Arc<InboxHub>> {
        let id = self.client_id().ok_or_else(|| {
            Error::InvalidArgument("the client id is not known yet (not connected)".into())
        })?;
        let sub = self
            .subscribe(&format!("_inbox.{id}"))
            .group(INBOX_GROUP)
            // Resume: a new inbox group starts at the earliest record, an
            // existing one where its acks left it (an explicit start would
            // reposition it).
            .start(Start::Resume)
            .await?;
        let (tx, rx) = mpsc::channel(INBOX_BUFFER);
        let (rooms_tx, rooms_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(InboxHub {
            waiters: Mutex::new(HashMap::new()),
            handlers: Mutex::new(HashMap::new()),
            rx: Mutex::new(Some(rx)),
            next_correlation: AtomicU64::new(rand::random()),
            rooms: rooms_tx,
            reading: Mutex::new(HashSet::new()),
            rooms_unknown: std::sync::atomic::AtomicBool::new(true),
        });
        let reader = Reader {
            me: id,
            tx,
            hub: hub.clone(),
            client: Arc::downgrade(&self.inner),
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
        };
        tokio::spawn(reader.run(sub, rooms_rx));
        Ok(hub)
    }

    /// The stream of events sent to this client: room events, direct
    /// events, presence. Starts the inbox reader on first use; only one
    /// [`Inbox`] exists at a time.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if another [`Inbox`] is alive or the
    /// client id is not known yet; subscribe errors.
    pub async fn inbox(&self) -> Result<Inbox> {
        let hub = self.hub().await?;
        let rx = lock(&hub.rx)
            .take()
            .ok_or_else(|| Error::InvalidArgument("the inbox is already taken".into()))?;
        Ok(Inbox { rx: Some(rx), hub })
    }

    /// Runs `handler` for every event named `event` (presence names
    /// included), instead of yielding it from [`Inbox`]; the event is acked
    /// once the handler returns. A second handler for the same name
    /// replaces the first. Keep handlers short (spawn for long work): the
    /// inbox reader waits for them.
    ///
    /// # Errors
    /// As [`Client::inbox`] when the reader is started.
    pub async fn on<F>(&self, event: &str, handler: F) -> Result<()>
    where
        F: Fn(Event) + Send + Sync + 'static,
    {
        let hub = self.hub().await?;
        lock(&hub.handlers).insert(event.to_owned(), Arc::new(handler));
        Ok(())
    }
}

/// The task that reads the inbox and the rooms' logs.
struct Reader {
    /// This client's id: its own presence and broadcasts are dropped.
    me: String,
    tx: mpsc::Sender<Result<Event>>,
    hub: Arc<InboxHub>,
    client: Weak<ClientInner>,
    /// Emit ids seen lately (see [`SEEN_EMITS`]), oldest first.
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
}

/// What the reader does with one item.
enum Next {
    Go,
    Stop,
}

impl Reader {
    async fn run(mut self, mut inbox: Subscription, mut cmds: mpsc::UnboundedReceiver<RoomCmd>) {
        let mut rooms: StreamMap<String, Subscription> = StreamMap::new();
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(RoomCmd::Read(room, sub)) => { rooms.insert(room, sub); }
                    Some(RoomCmd::Stop(room)) => { rooms.remove(&room); }
                    None => return,
                },
                item = inbox.next() => match item {
                    Some(item) => if let Next::Stop = self.on_item(item, None).await { return },
                    None => return,
                },
                Some((room, item)) = futures::StreamExt::next(&mut rooms), if !rooms.is_empty() => {
                    let ended = matches!(&item, Err(e) if !matches!(e, Error::Skipped { .. }));
                    if ended {
                        // The room's subscription is over (refused, ended):
                        // the app is told; joining again reads it anew.
                        lock(&self.hub.reading).remove(&room);
                    }
                    if let Next::Stop = self.on_item(item, Some(room)).await { return }
                }
            }
        }
    }

    /// Whether `id` was seen before (and remembers it).
    fn seen_before(&mut self, id: &str) -> bool {
        if self.seen_set.contains(id) {
            return true;
        }
        if self.seen.len() >= SEEN_EMITS {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&old);
            }
        }
        self.seen.push_back(id.to_owned());
        self.seen_set.insert(id.to_owned());
        false
    }

    async fn on_item(&mut self, item: Result<Message>, room: Option<String>) -> Next {
        let msg = match item {
            Ok(m) => m,
            Err(Error::Skipped { first, last, .. }) => {
                let e = Error::Skipped { first, last, room };
                return self.give(Err(e)).await;
            }
            Err(e) => {
                let next = self.give(Err(e)).await;
                // The inbox ending ends the reader; a room ending does not.
                return if room.is_none() { Next::Stop } else { next };
            }
        };
        let f = Fields::of(&msg);
        let own = f.sender == Some(self.me.as_bytes());
        let not_for_me = own && (f.kind == headers::KIND_PRESENCE.as_bytes() || f.except_sender);
        let duplicate = match f.emit_id {
            Some(id) => self.seen_before(&String::from_utf8_lossy(id)),
            None => false,
        };
        if not_for_me || duplicate {
            let _ = msg.ack().await;
            return Next::Go;
        }
        let (ev, reply) = Event::parse(msg, self.client.clone());
        if let Some(correlation) = reply {
            if let Some(w) = lock(&self.hub.waiters).remove(&correlation) {
                let _ = w.send(ev.payload().clone());
            }
            let _ = ev.ack().await;
            return Next::Go;
        }
        let handler = lock(&self.hub.handlers).get(ev.name()).cloned();
        if let Some(h) = handler {
            h(ev.clone());
            let _ = ev.ack().await;
            return Next::Go;
        }
        self.give(Ok(ev)).await
    }

    /// Hands an item to the [`Inbox`] stream (waiting while it is full).
    async fn give(&self, item: Result<Event>) -> Next {
        if self.tx.send(item).await.is_err() {
            Next::Stop
        } else {
            Next::Go
        }
    }
}
