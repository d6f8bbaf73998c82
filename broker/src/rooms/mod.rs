//! Rooms, presence and inboxes: the Socket.IO model (emit to a client, a
//! room, several rooms, everyone) on top of topics, groups and acks.
//!
//! - Every room has a log, the topic `_room.<room>` ([`log`]). An emit to a
//!   room is **one** append to it, however many members the room has
//!   (fan-out on read); each member reads the log from its own position
//!   through a consumer group named after its client id, so its ack floor
//!   in each room is kept and persisted like any group's.
//! - Every client id has an inbox, the topic `_inbox.<client id>`, read by
//!   the group `inbox` ([`inbox`]): direct emits, requests, replies and
//!   emits to everyone, one append per recipient.
//! - [`Rooms`] (this file) owns room membership and who is online; every
//!   room's member set is on disk ([`store`]). A durable room keeps its
//!   members while they are offline; a non-durable one drops a member whose
//!   grace period ran out.
//! - [`presence`] turns membership and connection changes into `join`,
//!   `leave`, `connect` and `disconnect` records in the room's log: one
//!   append per change. A session's end starts a grace timer; a new session
//!   with the same client id before it fires cancels the disconnect.
//!
//! docs/rooms.md maps this to Socket.IO.

pub mod inbox;
pub mod log;
pub mod presence;
pub mod requests;
mod store;
pub mod waiting;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use herald_protocol::{EmitTarget, RoomMember};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::topic::{name, Registry};
use crate::BrokerError;
use presence::Notice;

/// In `<data-dir>/rooms`: the clients online at the last graceful
/// shutdown ([`Rooms::save_online`]), read and removed at start. Not a
/// room file (those end in `.room`).
const ONLINE_FILE: &str = "online-clients";

/// The clients [`Rooms::save_online`] recorded, removing the record (it
/// describes one shutdown only: after a later crash it would be stale).
/// `None` when there is none (the broker crashed, or ran for the first
/// time) or it cannot be read.
fn take_online(dir: &std::path::Path) -> Option<HashSet<String>> {
    let path = dir.join(ONLINE_FILE);
    let read = crate::fsutil::read_checked(&path).and_then(|body| {
        body.map(|b| postcard::from_bytes::<Vec<String>>(&b).map_err(std::io::Error::other))
            .transpose()
    });
    let online = match read {
        Ok(ids) => ids.map(|ids| ids.into_iter().collect()),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read who was online at the last shutdown; every room member gets a grace period");
            None
        }
    };
    if path.exists() {
        let removed = std::fs::remove_file(&path).and_then(|()| crate::fsutil::sync_dir(dir));
        if let Err(e) = removed {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the record of who was online");
        }
    }
    online
}

/// One room.
#[derive(Debug, Default)]
struct Room {
    /// Fixed by the join that created the room.
    durable: bool,
    members: BTreeSet<String>,
}

/// A client id with at least one session, or within its grace period.
#[derive(Debug)]
struct Online {
    /// Sessions open with this id (a reconnect may overlap the old session
    /// until the broker notices that one is dead).
    sessions: u32,
    /// Bumped by every session start: a grace timer only completes the
    /// disconnect it was started for.
    generation: u64,
}

/// What [`Rooms`] guards with its lock.
///
/// ### Invariants
/// - `memberships[c]` contains `r` exactly when `rooms[r].members`
///   contains `c`.
/// - A non-durable room's members are all in `online`.
/// - No room is empty (an empty room is removed, its file deleted).
/// - A room in `damaged` is not in `rooms`, and its file is never written.
#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Room>,
    memberships: HashMap<String, BTreeSet<String>>,
    online: HashMap<String, Online>,
    /// Durable rooms whose member file could not be read at start, with the
    /// reason: unavailable (error `RoomUnavailable`) until an operator
    /// repairs the file and restarts the broker (docs/operations.md).
    /// Serving them as empty would silently drop their members' events.
    damaged: HashMap<String, String>,
}

impl State {
    fn add(&mut self, room: &str, client: &str, durable: bool) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if r.members.is_empty() {
            r.durable = durable;
        }
        r.members.insert(client.to_owned());
        self.memberships
            .entry(client.to_owned())
            .or_default()
            .insert(room.to_owned());
    }

    /// Removes a member; returns whether it was one.
    fn remove(&mut self, room: &str, client: &str) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let was = r.members.remove(client);
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        if let Some(m) = self.memberships.get_mut(client) {
            m.remove(room);
            if m.is_empty() {
                self.memberships.remove(client);
            }
        }
        was
    }

    fn is_durable(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.durable)
    }

    /// Presence `event` about `client` in `room`, unless the room has more
    /// than `limit` members (counted with `client`: call it while `client`
    /// is a member). Each notice is delivered to every member, so presence
    /// in a room of N members costs N deliveries per change, and a room
    /// filling up costs N²/2 in all: 50 million for 10,000 members, which
    /// kept a broker busy for minutes. Past the limit a room is announced
    /// nothing (as Centrifugo leaves join/leave off and Ably caps presence
    /// per channel); `members` still lists who is in it.
    fn notice(
        &self,
        limit: usize,
        event: &'static str,
        room: &str,
        client: &str,
    ) -> Option<Notice> {
        let members = self.rooms.get(room).map_or(0, |r| r.members.len());
        (members <= limit).then(|| Notice::new(event, room, client))
    }

    /// Refuses any request naming a room whose member file is damaged.
    fn check_available(&self, room: &str) -> Result<(), BrokerError> {
        match self.damaged.get(room) {
            None => Ok(()),
            Some(reason) => Err(BrokerError::RoomUnavailable {
                name: room.to_owned(),
                reason: format!(
                    "its member file is damaged ({reason}); an operator must repair it \
                     (see docs/operations.md)"
                ),
            }),
        }
    }
}

/// Inbox recipients of an emit: each client once, with the room it gets
/// the event through (for the `herald-room` header).
pub type Recipients = BTreeMap<String, Option<String>>;

/// Where an emit goes (see [`Rooms::resolve`]).
#[derive(Debug, Default)]
pub struct Resolution {
    /// Rooms whose log gets the event, each once, in the order named.
    pub rooms: Vec<String>,
    /// The event is not for its sender (it reads it and drops it).
    pub except_sender: bool,
    /// Clients whose inbox gets it (direct emits, everyone, the room named
    /// after a client id).
    pub clients: Recipients,
    /// Clients reached, each counted once whatever the number of rooms.
    pub reached: u32,
}

/// What a join changed.
#[derive(Debug)]
pub struct Joined {
    pub notices: Vec<Notice>,
    /// The client was not a member before: it needs its position in the
    /// room's log.
    pub new_member: bool,
}

/// The broker's rooms and online clients. One per broker, shared by every
/// session.
pub struct Rooms {
    config: Arc<BrokerConfig>,
    registry: Arc<Registry>,
    /// `<data-dir>/rooms`: one `<room>.room` file per room.
    dir: PathBuf,
    /// A std Mutex: held only to read or change the maps, never across an
    /// await; presence appends and file writes happen after it is released.
    state: Mutex<State>,
    /// Member-file writes: one at a time per room, shared by the changes
    /// made meanwhile.
    writes: store::Writes,
    /// Stops grace timers when the broker shuts down (a shutdown is not a
    /// disconnect: clients come back when the broker does).
    shutdown: CancellationToken,
    /// Rooms read from an older Herald's member files, whose members get a
    /// position in the room's log at [`Rooms::start`].
    legacy: Mutex<Vec<(String, Vec<String>)>>,
    /// Emits and presence events, for the metrics.
    pub(crate) counters: RoomCounters,
    /// Subscriptions to inboxes not created yet.
    inbox_waiters: Arc<waiting::Waiters>,
}

/// What rooms count for the metrics (relaxed atomics, one addition per
/// emit or presence event).
#[derive(Debug, Default)]
pub(crate) struct RoomCounters {
    /// Emit requests whose appends were queued (any target).
    pub(crate) emits: AtomicU64,
    /// Presence records (join, leave, connect, disconnect) appended.
    pub(crate) presence_events: AtomicU64,
}

/// How many rooms there are, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoomGauges {
    pub rooms: u64,
    /// Memberships over all rooms.
    pub members: u64,
    /// Client ids with at least one session.
    pub online_clients: u64,
    /// Durable rooms unavailable because their member file is damaged.
    pub damaged: u64,
}

impl Rooms {
    /// Loads the durable rooms from `<data-dir>/rooms`. A room whose member
    /// file is damaged is logged and unavailable; the others are served.
    ///
    /// # Errors
    /// The folder cannot be created or listed.
    pub fn open(
        config: Arc<BrokerConfig>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Rooms>, BrokerError> {
        let dir = config.data_dir.join("rooms");
        let mut state = State::default();
        let loaded = store::load_all(&dir)?;
        let mut legacy = Vec::new();
        for r in loaded.rooms {
            for m in &r.stored.members {
                state.add(&r.room, m, r.stored.durable);
            }
            if r.legacy {
                legacy.push((r.room, r.stored.members));
            }
        }
        for d in loaded.damaged {
            tracing::error!(
                room = %d.room,
                file = %d.path.display(),
                error = %d.reason,
                "room member file is damaged; the room is unavailable until it is repaired \
                 (docs/operations.md), the other rooms are served"
            );
            state.damaged.insert(d.room, d.reason);
        }
        Ok(Arc::new(Rooms {
            config,
            registry,
            dir,
            state: Mutex::new(state),
            writes: store::Writes::default(),
            shutdown,
            legacy: Mutex::new(legacy),
            counters: RoomCounters::default(),
            inbox_waiters: Arc::default(),
        }))
    }

    /// Work that needs the runtime, once after [`Rooms::open`]: members of
    /// rooms written by an older Herald get a position at the end of their
    /// room's log (they had none: their past events are in their inboxes),
    /// and the members that were online when the broker stopped, offline
    /// now that it started, get their grace period to come back (a
    /// shutdown is not a disconnect): back in time, nobody hears of it;
    /// late, their rooms get `disconnect` (and non-durable ones drop them).
    /// Who was online comes from [`Rooms::save_online`]; after a crash
    /// nobody knows, and every member gets the grace period (one already
    /// disconnected before the crash gets a second `disconnect` if it is
    /// not back in time). Members of non-durable rooms always get it: a
    /// late one must be dropped.
    ///
    /// # Errors
    /// A member's position cannot be written.
    pub async fn start(self: &Arc<Self>) -> Result<(), BrokerError> {
        let legacy = std::mem::take(&mut *self.legacy.lock().unwrap_or_else(|p| p.into_inner()));
        for (room, members) in legacy {
            let topic = log::topic(self, &room)?;
            for m in members {
                if topic.has_group(&m) {
                    continue;
                }
                log::place_member(&topic, &m, 0).await?;
            }
            tracing::info!(room = %room, "room from an older Herald: its members read its log from now on");
        }
        let online_before = {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || take_online(&dir))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))?
        };
        let offline: Vec<String> = {
            let mut st = self.lock();
            let clients: Vec<String> = st
                .memberships
                .iter()
                .filter(|(c, rooms)| {
                    online_before.as_ref().is_none_or(|o| o.contains(*c))
                        || rooms.iter().any(|r| !st.is_durable(r))
                })
                .map(|(c, _)| c.clone())
                .collect();
            for c in &clients {
                st.online.insert(
                    c.clone(),
                    Online {
                        sessions: 0,
                        generation: 0,
                    },
                );
            }
            clients
        };
        for c in offline {
            self.start_grace(c, 0);
        }
        Ok(())
    }

    /// At a graceful shutdown, once every session has ended: writes the
    /// client ids that were online (or within their grace period) to
    /// `rooms/online-clients`, for [`Rooms::start`] to give them, and only
    /// them, a grace period. Without it a member online at the shutdown
    /// and back at once was announced `connect` without ever having been
    /// announced `disconnect`, and one that never came back was never
    /// announced at all. A failure is logged: the next start then treats
    /// the shutdown as a crash.
    pub fn save_online(&self) {
        let online: Vec<String> = {
            let st = self.lock();
            let mut ids: Vec<String> = st.online.keys().cloned().collect();
            ids.sort_unstable();
            ids
        };
        let path = self.dir.join(ONLINE_FILE);
        let written = postcard::to_allocvec(&online)
            .map_err(std::io::Error::other)
            .and_then(|body| crate::fsutil::write_atomic(&path, &body, true));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "could not record who was online; after the restart every room member gets a grace period");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock keeps the invariants before any
        // operation that could panic, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rooms, members and online clients now (one lock, no allocation).
    pub fn gauges(&self) -> RoomGauges {
        let st = self.lock();
        RoomGauges {
            rooms: st.rooms.len() as u64,
            members: st.rooms.values().map(|r| r.members.len() as u64).sum(),
            online_clients: st.online.len() as u64,
            damaged: st.damaged.len() as u64,
        }
    }

    /// Emits made so far.
    pub fn emits(&self) -> u64 {
        self.counters.emits.load(Ordering::Relaxed)
    }

    /// Presence events recorded so far.
    pub fn presence_events(&self) -> u64 {
        self.counters.presence_events.load(Ordering::Relaxed)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// `client`'s inbox to join with `join`, or `join` waiting until the
    /// inbox's first record creates it (see [`waiting`]).
    ///
    /// # Errors
    /// The inbox exists but is unavailable.
    pub fn open_inbox_or_wait(
        &self,
        client: &str,
        join: crate::group::Join,
    ) -> Result<waiting::Opened, BrokerError> {
        self.inbox_waiters
            .open_or_wait(&self.registry, client, join)
    }

    /// A session with `client` started. Returns the `connect` notices to
    /// deliver (none when it comes back within its grace period).
    pub fn connect(&self, client: &str) -> Vec<Notice> {
        let mut st = self.lock();
        if let Some(o) = st.online.get_mut(client) {
            o.sessions += 1;
            o.generation += 1;
            return Vec::new();
        }
        st.online.insert(
            client.to_owned(),
            Online {
                sessions: 1,
                generation: 0,
            },
        );
        let rooms: Vec<String> = st
            .memberships
            .get(client)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        let limit = self.config.presence_max_members;
        rooms
            .into_iter()
            .filter_map(|r| st.notice(limit, "connect", &r, client))
            .collect()
    }

    /// A session with `client` ended. When it was the last one, the client
    /// is disconnected for good unless a session with the same id starts
    /// within the grace period.
    pub fn disconnect(self: &Arc<Self>, client: &str) {
        let generation = {
            let mut st = self.lock();
            let Some(o) = st.online.get_mut(client) else {
                return;
            };
            o.sessions = o.sessions.saturating_sub(1);
            if o.sessions > 0 {
                return;
            }
            o.generation
        };
        self.start_grace(client.to_owned(), generation);
    }

    /// After the grace period, `client` is offline unless it came back.
    fn start_grace(self: &Arc<Self>, client: String, generation: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shutdown.cancelled() => {}
                _ = tokio::time::sleep(me.config.presence_grace) => {
                    let (notices, dropped) = me.expire(&client, generation);
                    for room in dropped {
                        // The membership is gone; so is its position.
                        if let Err(e) = me.persist(&room).await {
                            tracing::warn!(room = %room, error = %e, "writing a room's members");
                        }
                        if let Err(e) = log::remove_member(&me, &room, &client).await {
                            tracing::warn!(room = %room, client = %client, error = %e, "removing a member's position");
                        }
                    }
                    presence::deliver(&me, notices).await;
                }
            }
        });
    }

    /// The grace period of `client` ran out: it is offline. Non-durable
    /// rooms lose it; every room it was in is told. Returns the notices and
    /// the non-durable rooms it left.
    fn expire(&self, client: &str, generation: u64) -> (Vec<Notice>, Vec<String>) {
        let mut st = self.lock();
        match st.online.get(client) {
            Some(o) if o.sessions == 0 && o.generation == generation => {}
            _ => return (Vec::new(), Vec::new()),
        }
        st.online.remove(client);
        let rooms: Vec<String> = st
            .memberships
            .get(client)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        let mut notices = Vec::new();
        let mut dropped = Vec::new();
        let limit = self.config.presence_max_members;
        for r in rooms {
            notices.extend(st.notice(limit, "disconnect", &r, client));
            if !st.is_durable(&r) {
                notices.extend(st.notice(limit, "leave", &r, client));
                st.remove(&r, client);
                dropped.push(r);
            }
        }
        (notices, dropped)
    }

    /// Adds `client` to `room`. Joining a room one is already in is a
    /// no-op. The membership is on disk when this returns (for a durable
    /// room, fsynced). The caller gives a new member its position in the
    /// room's log ([`log::place_member`]).
    ///
    /// # Errors
    /// A bad room name or client id, a durability mismatch with the
    /// existing room, or a limit.
    pub async fn join(
        &self,
        client: &str,
        room: &str,
        durable: bool,
    ) -> Result<Joined, BrokerError> {
        validate_room(room)?;
        inbox::validate_client_id(client)?;
        let notices = {
            let mut st = self.lock();
            st.check_available(room)?;
            if let Some(r) = st.rooms.get(room) {
                if r.durable != durable {
                    let (is, asked) = if r.durable {
                        ("durable", "non-durable")
                    } else {
                        ("non-durable", "durable")
                    };
                    return Err(BrokerError::InvalidArgument(format!(
                        "room {room:?} is {is}; it cannot be joined as {asked}"
                    )));
                }
                if r.members.contains(client) {
                    return Ok(Joined {
                        notices: Vec::new(),
                        new_member: false,
                    });
                }
                if r.members.len() >= self.config.max_members_per_room {
                    return Err(BrokerError::Busy(format!(
                        "room {room:?} has {} members; the limit max_members_per_room is {}",
                        r.members.len(),
                        self.config.max_members_per_room
                    )));
                }
            }
            let n = st.memberships.get(client).map_or(0, |m| m.len());
            if n >= self.config.max_rooms_per_connection {
                return Err(BrokerError::Busy(format!(
                    "client {client:?} is in {n} rooms; the limit max_rooms_per_connection is {}",
                    self.config.max_rooms_per_connection
                )));
            }
            st.add(room, client, durable);
            let limit = self.config.presence_max_members;
            st.notice(limit, "join", room, client).into_iter().collect()
        };
        if let Err(e) = self.persist(room).await {
            self.lock().remove(room, client);
            return Err(e);
        }
        Ok(Joined {
            notices,
            new_member: true,
        })
    }

    /// Removes `client` from `room` (a no-op if it is not a member);
    /// returns the `leave` notice, if it was one. The caller removes its
    /// position in the room's log.
    ///
    /// # Errors
    /// The room is unavailable, or its member file cannot be written.
    pub async fn leave(&self, client: &str, room: &str) -> Result<Vec<Notice>, BrokerError> {
        let notices = {
            let mut st = self.lock();
            st.check_available(room)?;
            let limit = self.config.presence_max_members;
            let notice = st.notice(limit, "leave", room, client);
            if !st.remove(room, client) {
                return Ok(Vec::new());
            }
            notice.into_iter().collect()
        };
        self.persist(room).await?;
        Ok(notices)
    }

    /// The rooms `client` is a member of, sorted by name.
    pub fn rooms_of(&self, client: &str) -> Vec<herald_protocol::JoinedRoom> {
        let st = self.lock();
        st.memberships
            .get(client)
            .map(|rooms| {
                rooms
                    .iter()
                    .map(|r| herald_protocol::JoinedRoom {
                        room: r.clone(),
                        durable: st.is_durable(r),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `client` is a member of `room` (reads of a room's log are
    /// for its members).
    pub fn is_member(&self, room: &str, client: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .is_some_and(|r| r.members.contains(client))
    }

    /// The members of `room`, for a client that is one of them.
    ///
    /// # Errors
    /// `RoomUnavailable` if its file is damaged, `InvalidArgument` if
    /// `client` is not a member.
    pub fn members(&self, client: &str, room: &str) -> Result<Vec<RoomMember>, BrokerError> {
        let st = self.lock();
        st.check_available(room)?;
        let mut ids: BTreeSet<String> = st
            .rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        if st.online.contains_key(room) {
            ids.insert(room.to_owned());
        }
        if !ids.contains(client) {
            return Err(BrokerError::InvalidArgument(format!(
                "client {client:?} is not a member of room {room:?}"
            )));
        }
        Ok(ids
            .into_iter()
            .map(|c| RoomMember {
                online: st.online.contains_key(&c),
                client_id: c,
            })
            .collect())
    }

    /// Where an emit from `sender` to `target` goes: the rooms whose log
    /// gets the event (once each), the clients whose inbox gets it, and how
    /// many clients that reaches, each counted once.
    ///
    /// # Errors
    /// A bad room name or client id, or a room that is unavailable (the
    /// whole emit is refused rather than delivered to some of its
    /// recipients).
    pub fn resolve(&self, sender: &str, target: &EmitTarget) -> Result<Resolution, BrokerError> {
        let st = self.lock();
        let mut out = Resolution::default();
        // The rooms named, each once in the order named, and whether the
        // sender is left out.
        let (named, except): (Vec<&str>, bool) = match target {
            EmitTarget::Room(r) => (vec![r.as_str()], false),
            EmitTarget::RoomExceptSender(r) => (vec![r.as_str()], true),
            EmitTarget::Rooms {
                rooms,
                except_sender,
            } => {
                let mut seen = BTreeSet::new();
                let named = rooms
                    .iter()
                    .map(String::as_str)
                    .filter(|r| seen.insert(*r))
                    .collect();
                (named, *except_sender)
            }
            EmitTarget::Client(c) => {
                inbox::validate_client_id(c)?;
                out.clients.insert(c.clone(), None);
                out.reached = 1;
                return Ok(out);
            }
            EmitTarget::All => {
                for c in st.online.keys() {
                    if inbox::validate_client_id(c).is_ok() {
                        out.clients.insert(c.clone(), None);
                    }
                }
                out.reached = out.clients.len() as u32;
                return Ok(out);
            }
        };
        out.except_sender = except;
        // One room (the common case) is counted, not collected: this runs
        // under the rooms lock for every emit, and copying a 1,000-member
        // room's ids into a set per emit was a tenth of the broker's CPU
        // (issue 11). Several rooms are collected, borrowed, to count
        // each client once.
        let single = named.len() == 1;
        let mut counted = 0usize;
        let mut reached: HashSet<&str> = HashSet::new();
        for room in named {
            validate_room(room)?;
            st.check_available(room)?;
            let r = st.rooms.get(room);
            if let Some(r) = r {
                out.rooms.push(room.to_owned());
                if single {
                    counted += r.members.len() - usize::from(except && r.members.contains(sender));
                } else {
                    reached.extend(
                        r.members
                            .iter()
                            .map(String::as_str)
                            .filter(|m| !(except && *m == sender)),
                    );
                }
            }
            // The room named after a client id holds that client: its
            // inbox, unless it reads the room's log anyway.
            let own = st.online.contains_key(room)
                && !(except && room == sender)
                && !r.is_some_and(|r| r.members.contains(room));
            if own && (single || reached.insert(room)) {
                out.clients.insert(room.to_owned(), Some(room.to_owned()));
                counted += usize::from(single);
            }
        }
        out.reached = (counted + reached.len()) as u32;
        Ok(out)
    }

    /// Writes the member set of a room (or deletes its file once the room
    /// is empty): fsynced for a durable room.
    async fn persist(&self, room: &str) -> Result<(), BrokerError> {
        self.writes
            .write(&self.dir, room, || {
                let st = self.lock();
                st.rooms
                    .get(room)
                    .map(|r| store::StoredRoom {
                        durable: r.durable,
                        members: r.members.iter().cloned().collect(),
                    })
                    .unwrap_or_default()
            })
            .await
    }
}

/// Checks a room name: a topic name's characters, short enough for its
/// log's topic name.
///
/// # Errors
/// [`BrokerError::InvalidArgument`] naming the problem.
pub fn validate_room(room: &str) -> Result<(), BrokerError> {
    name::validate("room", room)?;
    if room.len() > log::MAX_ROOM_NAME {
        return Err(BrokerError::InvalidArgument(format!(
            "room name {room:?} is {} bytes; at most {} are allowed",
            room.len(),
            log::MAX_ROOM_NAME
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of who was online is read once: a good one gives its
    /// ids, a damaged one is treated as a crash (`None`, every member gets
    /// the grace period, never a start refused), and either is removed so
    /// that a later crash cannot read it stale.
    #[test]
    fn the_online_record_is_read_once_and_a_damaged_one_counts_as_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ONLINE_FILE);
        assert_eq!(take_online(dir.path()), None, "no record: a crash");

        let ids = vec!["alice".to_owned(), "bob".to_owned()];
        let body = postcard::to_allocvec(&ids).unwrap();
        crate::fsutil::write_atomic(&path, &body, false).unwrap();
        let got = take_online(dir.path()).expect("the record");
        assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
        assert!(!path.exists(), "removed once read");
        assert_eq!(take_online(dir.path()), None);

        crate::fsutil::write_atomic(&path, &body, false).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(take_online(dir.path()), None, "damaged: as after a crash");
        assert!(!path.exists(), "a damaged record is removed too");
    }
}
