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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_protocol::batch::HeaderSpan;
use herald_protocol::rooms::headers;
use tokio::sync::{mpsc, oneshot};

use crate::client::ClientInner;
use crate::handoff::Handoff;
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
    /// Set by the first [`Client::on`]: until then the reader looks up no
    /// handler per event.
    has_handlers: AtomicBool,
    /// Events for the [`Inbox`] stream.
    queue: Arc<Handoff<Result<Event>>>,
    /// Whether an [`Inbox`] stream is alive (there is one at a time).
    taken: AtomicBool,
    /// Random start: a reply left in the inbox by an earlier run of this
    /// client cannot match a new request.
    next_correlation: AtomicU64,
    /// To the reader: room logs to start and stop reading.
    rooms: mpsc::UnboundedSender<RoomCmd>,
    /// Rooms whose log is being read (so a second join reads it once).
    reading: Mutex<HashSet<String>>,
    /// Cleared by the first user of the hub, which reads the rooms this
    /// client id is already a member of (a restarted process).
    rooms_unknown: AtomicBool,
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
///
/// Its name, sender and room are read from the record in place (where
/// they lie in its headers), not copied: a busy room hands out hundreds
/// of thousands of events a second, and each copy was an allocation.
#[derive(Debug, Clone)]
pub struct Event(Box<EventData>);

/// What an [`Event`] holds, behind one box. Unboxed, an event was 208
/// bytes, and on its way from the inbox reader through the queue to the
/// app it is moved about five times: those `memcpy`s were a sixth of the
/// client's CPU in a room of 1,000. One small allocation per event costs
/// less (the rooms bench, one room of 1,000: 2.09-2.24 M deliveries/s
/// unboxed, 2.40-2.56 M boxed, client CPU -10%).
#[derive(Debug, Clone)]
struct EventData {
    msg: Message,
    kind: EventKind,
    sender: Option<HeaderSpan>,
    room: Option<HeaderSpan>,
    reply_to: Option<(HeaderSpan, u64)>,
    /// Only when a name, sender, room or reply address is not UTF-8 (a
    /// record written without this client): their lossy copies.
    lossy: Option<Box<Lossy>>,
    client: Weak<ClientInner>,
}

#[derive(Debug, Clone)]
struct Lossy {
    name: String,
    sender: String,
    room: Option<String>,
    reply_to: String,
}

/// The room headers of a record (the first of each name), read in one
/// pass over its headers: an event is looked at for half a dozen of them,
/// and a busy room delivers hundreds of thousands of events a second.
/// Values are kept as where they lie in the record, not copied.
#[derive(Default)]
struct Fields {
    presence: bool,
    reply: bool,
    sender: Option<HeaderSpan>,
    room: Option<HeaderSpan>,
    reply_to: Option<HeaderSpan>,
    correlation: Option<u64>,
    except_sender: bool,
    emit_id: Option<HeaderSpan>,
}

impl Fields {
    fn of(msg: &Message) -> Fields {
        let mut f = Fields::default();
        let mut kind = None;
        let mut correlation = None;
        for h in msg.record.raw_headers() {
            // Header names compared as bytes: no UTF-8 check per header.
            let slot = match h.name {
                n if n == headers::KIND.as_bytes() => &mut kind,
                n if n == headers::SENDER.as_bytes() => &mut f.sender,
                n if n == headers::ROOM.as_bytes() => &mut f.room,
                n if n == headers::REPLY_TO.as_bytes() => &mut f.reply_to,
                n if n == headers::CORRELATION.as_bytes() => &mut correlation,
                n if n == headers::EMIT_ID.as_bytes() => &mut f.emit_id,
                n if n == headers::EXCEPT_SENDER.as_bytes() => {
                    f.except_sender = true;
                    continue;
                }
                _ => continue,
            };
            slot.get_or_insert(h.span);
        }
        let rec = &msg.record;
        let kind = kind.map(|k| rec.header_value(k)).unwrap_or_default();
        f.presence = kind == headers::KIND_PRESENCE.as_bytes();
        f.reply = kind == headers::KIND_REPLY.as_bytes();
        f.correlation = correlation
            .and_then(|c| std::str::from_utf8(rec.header_value(c)).ok())
            .and_then(|c| c.parse::<u64>().ok());
        f
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// A header value as text; "" if not UTF-8 (then the event keeps a lossy
/// copy, see [`Event::lossy`]).
fn as_str(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap_or("")
}

impl Event {
    fn parse(msg: Message, f: &Fields, client: Weak<ClientInner>) -> (Event, Option<u64>) {
        let reply = f.correlation.filter(|_| f.reply);
        let kind = if f.presence {
            EventKind::Presence
        } else {
            EventKind::Event
        };
        let rec = &msg.record;
        let value = |s: Option<HeaderSpan>| s.map(|s| rec.header_value(s));
        let name = msg.key().map(|k| &k[..]).unwrap_or_default();
        let sender = value(f.sender).unwrap_or_default();
        let room = value(f.room);
        let reply_to = value(f.reply_to).unwrap_or_default();
        let valid = |v: &[u8]| v.is_ascii() || std::str::from_utf8(v).is_ok();
        let all_valid = valid(name) && valid(sender) && room.is_none_or(valid) && valid(reply_to);
        let lossy = (!all_valid).then(|| {
            Box::new(Lossy {
                name: text(name),
                sender: text(sender),
                room: room.map(text),
                reply_to: text(reply_to),
            })
        });
        let ev = Event(Box::new(EventData {
            kind,
            sender: f.sender,
            room: f.room,
            reply_to: f.reply_to.zip(f.correlation),
            lossy,
            msg,
            client,
        }));
        (ev, reply)
    }

    /// The event name (for presence: `join`, `leave`, `connect`,
    /// `disconnect`).
    pub fn name(&self) -> &str {
        match &self.0.lossy {
            Some(l) => &l.name,
            None => self.0.msg.key().map(|k| as_str(k)).unwrap_or_default(),
        }
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        self.0.msg.payload()
    }
    /// Application event or presence.
    pub fn kind(&self) -> EventKind {
        self.0.kind
    }
    /// Whether this is a presence event.
    pub fn is_presence(&self) -> bool {
        self.0.kind == EventKind::Presence
    }
    /// The client id that emitted it (for presence: whose presence changed).
    pub fn sender(&self) -> &str {
        match (&self.0.lossy, self.0.sender) {
            (Some(l), _) => &l.sender,
            (None, Some(s)) => as_str(self.0.msg.record.header_value(s)),
            (None, None) => "",
        }
    }
    /// The room it came through; `None` for direct and emit-all events.
    pub fn room(&self) -> Option<&str> {
        match &self.0.lossy {
            Some(l) => l.room.as_deref(),
            None => self
                .0
                .room
                .map(|s| as_str(self.0.msg.record.header_value(s))),
        }
    }
    /// Whether the sender waits for a reply ([`crate::Client::request`]).
    pub fn expects_reply(&self) -> bool {
        self.0.reply_to.is_some()
    }
    /// The underlying inbox message (offset, timestamp, delivery count).
    pub fn message(&self) -> &Message {
        &self.0.msg
    }

    /// Done with this event: it is not delivered again.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] once the client is closed.
    pub async fn ack(&self) -> Result<()> {
        self.0.msg.ack().await
    }

    /// Answers a request; resolves once the reply is durable in the
    /// requester's inbox. The first reply wins; later ones are dropped by
    /// the requester.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the event expects no reply;
    /// [`Error::ConnectionLost`] if the client is gone; broker errors.
    pub async fn reply(&self, payload: impl Into<Bytes>) -> Result<()> {
        let Some((to, correlation)) = self.0.reply_to else {
            return Err(Error::InvalidArgument("this event expects no reply".into()));
        };
        let to = match &self.0.lossy {
            Some(l) => l.reply_to.as_str(),
            None => as_str(self.0.msg.record.header_value(to)),
        };
        let inner = self
            .0
            .client
            .upgrade()
            .ok_or_else(|| Error::ConnectionLost("client dropped".into()))?;
        Client { inner }
            .send_reply(to, correlation, payload.into())
            .await
    }
}

/// The stream of this client's events, from [`Client::inbox`]. Dropping it
/// keeps the events not yet read for the next [`Client::inbox`] call.
pub struct Inbox {
    /// Events taken from the queue, not yet yielded.
    buffer: VecDeque<Result<Event>>,
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
        let this = &mut *self;
        if let Some(ev) = this.buffer.pop_front() {
            return Poll::Ready(Some(ev));
        }
        match this.hub.queue.poll_take(&mut this.buffer, cx) {
            Poll::Ready(true) => Poll::Ready(this.buffer.pop_front()),
            Poll::Ready(false) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.hub.queue.put_back(std::mem::take(&mut self.buffer));
        self.hub.taken.store(false, Ordering::Release);
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
        let queue = Arc::new(Handoff::new(INBOX_BUFFER));
        let (rooms_tx, rooms_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(InboxHub {
            waiters: Mutex::new(HashMap::new()),
            handlers: Mutex::new(HashMap::new()),
            has_handlers: AtomicBool::new(false),
            queue: queue.clone(),
            taken: AtomicBool::new(false),
            next_correlation: AtomicU64::new(rand::random()),
            rooms: rooms_tx,
            reading: Mutex::new(HashSet::new()),
            rooms_unknown: AtomicBool::new(true),
        });
        let reader = Reader {
            me: id,
            queue,
            hub: hub.clone(),
            client: Arc::downgrade(&self.inner),
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
            rooms: Vec::new(),
            next_room: 0,
            out: Vec::new(),
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
        if hub.taken.swap(true, Ordering::AcqRel) {
            return Err(Error::InvalidArgument("the inbox is already taken".into()));
        }
        Ok(Inbox {
            buffer: VecDeque::new(),
            hub,
        })
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
        hub.has_handlers.store(true, Ordering::Release);
        Ok(())
    }
}

/// The task that reads the inbox and the rooms' logs.
struct Reader {
    /// This client's id: its own presence and broadcasts are dropped.
    me: String,
    queue: Arc<Handoff<Result<Event>>>,
    hub: Arc<InboxHub>,
    client: Weak<ClientInner>,
    /// Emit ids seen lately (see [`SEEN_EMITS`]), oldest first.
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
    /// The joined rooms' logs, polled in turn from `next_room`.
    rooms: Vec<(Arc<str>, Subscription)>,
    next_room: usize,
    /// Events of this wake, handed to the queue together.
    out: Vec<Result<Event>>,
}

/// What the reader does after one item.
enum Next {
    Go,
    Stop,
}

/// Items taken from one subscription before the others get a turn.
const TURN: usize = 64;

impl Reader {
    async fn run(mut self, mut inbox: Subscription, mut cmds: mpsc::UnboundedReceiver<RoomCmd>) {
        std::future::poll_fn(|cx| self.poll(cx, &mut inbox, &mut cmds)).await;
        self.queue.give(&mut self.out);
        self.queue.close();
    }

    /// Reads what is ready, a turn per subscription, and hands it to the
    /// [`Inbox`] queue at once. Everything in here is synchronous: an
    /// event goes from the subscription's buffer to the queue without
    /// another task hop or a copy per `.await`. Ready when the reader ends
    /// (the inbox's subscription ended: the client is closed).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        inbox: &mut Subscription,
        cmds: &mut mpsc::UnboundedReceiver<RoomCmd>,
    ) -> Poll<()> {
        loop {
            while let Poll::Ready(cmd) = cmds.poll_recv(cx) {
                match cmd {
                    Some(RoomCmd::Read(room, sub)) => {
                        let room: Arc<str> = room.into();
                        self.rooms.retain(|(r, _)| *r != room);
                        self.rooms.push((room, sub));
                    }
                    Some(RoomCmd::Stop(room)) => self.rooms.retain(|(r, _)| **r != *room),
                    None => return Poll::Ready(()),
                }
            }
            if self.queue.poll_room(cx).is_pending() {
                return Poll::Pending;
            }
            let mut progress = false;
            for _ in 0..TURN {
                match inbox.poll_next_unpin(cx) {
                    Poll::Ready(Some(item)) => {
                        progress = true;
                        if let Next::Stop = self.on_item(item, None) {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            // Taken out while read, so that `on_item` may borrow the
            // reader and an item its room's name.
            let mut rooms = std::mem::take(&mut self.rooms);
            let n = rooms.len();
            let mut done = Vec::new();
            for i in 0..n {
                let at = (self.next_room + i) % n;
                let (room, sub) = &mut rooms[at];
                for _ in 0..TURN {
                    let item = match sub.poll_next_unpin(cx) {
                        Poll::Ready(Some(item)) => item,
                        Poll::Ready(None) => {
                            done.push(at);
                            break;
                        }
                        Poll::Pending => break,
                    };
                    progress = true;
                    if matches!(&item, Err(e) if !matches!(e, Error::Skipped { .. })) {
                        // The room's subscription is over (refused, ended):
                        // the app is told; joining again reads it anew.
                        lock(&self.hub.reading).remove(&**room);
                    }
                    // A room ending does not end the reader.
                    let _ = self.on_item(item, Some(room));
                }
            }
            done.sort_unstable();
            for at in done.into_iter().rev() {
                rooms.remove(at);
            }
            self.rooms = rooms;
            self.next_room = self.next_room.wrapping_add(1);
            self.queue.give(&mut self.out);
            if !progress {
                return Poll::Pending;
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

    fn on_item(&mut self, item: Result<Message>, room: Option<&str>) -> Next {
        let msg = match item {
            Ok(m) => m,
            Err(Error::Skipped { first, last, .. }) => {
                let room = room.map(str::to_owned);
                self.out.push(Err(Error::Skipped { first, last, room }));
                return Next::Go;
            }
            Err(e) => {
                self.out.push(Err(e));
                // The inbox ending ends the reader; a room ending does not.
                return if room.is_none() { Next::Stop } else { Next::Go };
            }
        };
        let f = Fields::of(&msg);
        let rec = &msg.record;
        let own = f.sender.map(|s| rec.header_value(s)) == Some(self.me.as_bytes());
        let not_for_me = own && (f.presence || f.except_sender);
        let duplicate = match f.emit_id {
            Some(id) => self.seen_before(&String::from_utf8_lossy(rec.header_value(id))),
            None => false,
        };
        if not_for_me || duplicate {
            let _ = msg.ack_now();
            return Next::Go;
        }
        let (ev, reply) = Event::parse(msg, &f, self.client.clone());
        if let Some(correlation) = reply {
            if let Some(w) = lock(&self.hub.waiters).remove(&correlation) {
                let _ = w.send(ev.payload().clone());
            }
            let _ = ev.0.msg.ack_now();
            return Next::Go;
        }
        if self.hub.has_handlers.load(Ordering::Acquire) {
            let handler = lock(&self.hub.handlers).get(ev.name()).cloned();
            if let Some(h) = handler {
                h(ev.clone());
                let _ = ev.0.msg.ack_now();
                return Next::Go;
            }
        }
        self.out.push(Ok(ev));
        Next::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acks::{AckSignal, SubShared};
    use herald_protocol::batch::{Batch, BatchBuilder, RecordRef};

    fn message(key: &[u8], hs: &[(&str, &[u8])]) -> Message {
        let mut b = BatchBuilder::new();
        b.push(&RecordRef {
            key,
            headers: hs,
            payload: b"p",
            timestamp: 1,
        });
        let batch = Batch::validate(b.finish(1, 0)).expect("a valid batch");
        let record = batch.records().next().expect("one record");
        Message {
            record,
            delivery_count: 1,
            sub: Arc::new(SubShared::new(
                1,
                true,
                Arc::new(AckSignal::default()),
                "_inbox.bob".into(),
                (10, 1 << 20),
                None,
            )),
        }
    }

    fn event(key: &[u8], hs: &[(&str, &[u8])]) -> (Event, Option<u64>) {
        let msg = message(key, hs);
        let f = Fields::of(&msg);
        Event::parse(msg, &f, Weak::new())
    }

    #[test]
    fn fields_are_read_in_place_first_header_of_each_name_wins() {
        let (ev, reply) = event(
            b"chat",
            &[
                (headers::KIND, b"event"),
                (headers::SENDER, b"alice"),
                (headers::SENDER, b"mallory"),
                (headers::ROOM, b"lobby"),
                (headers::REPLY_TO, b"alice"),
                (headers::CORRELATION, b"42"),
            ],
        );
        assert_eq!(reply, None, "an event, not a reply");
        assert_eq!(ev.name(), "chat");
        assert_eq!(ev.sender(), "alice");
        assert_eq!(ev.room(), Some("lobby"));
        assert!(ev.expects_reply());
        assert!(!ev.is_presence());
        assert!(ev.0.lossy.is_none());

        let (ev, reply) = event(
            b"",
            &[(headers::KIND, b"reply"), (headers::CORRELATION, b"7")],
        );
        assert_eq!(reply, Some(7));
        assert_eq!((ev.name(), ev.sender(), ev.room()), ("", "", None));
        let (ev, _) = event(b"join", &[(headers::KIND, b"presence")]);
        assert!(ev.is_presence());
    }

    /// The client API writes only text, but a record is bytes: one that is
    /// not UTF-8 reads as lossy text, as before events were read in place.
    #[test]
    fn names_that_are_not_utf8_read_as_lossy_text() {
        let (ev, _) = event(
            b"n\xffme",
            &[
                (headers::SENDER, b"s\xfe"),
                (headers::ROOM, b"hall"),
                (headers::REPLY_TO, b"r\xff"),
                (headers::CORRELATION, b"1"),
            ],
        );
        assert_eq!(ev.name(), "n\u{fffd}me");
        assert_eq!(ev.sender(), "s\u{fffd}");
        assert_eq!(ev.room(), Some("hall"));
        assert!(ev
            .0
            .lossy
            .as_ref()
            .is_some_and(|l| l.reply_to == "r\u{fffd}"));
    }
}
