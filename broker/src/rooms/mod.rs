//! Rooms, presence and inboxes: the Socket.IO model (emit to a client, a
//! room, several rooms, everyone) on top of topics, groups and acks.
//!
//! - Every client id has an inbox, the topic `_inbox.<client id>`, read by
//!   the group `inbox` ([`inbox`]). An emit fans out *on write*: the target
//!   is resolved to a set of client ids and the event is appended once to
//!   each one's inbox; the emit is confirmed when every append is durable.
//! - [`Rooms`] (this file) owns room membership and who is online. A
//!   non-durable room is an in-memory set of online clients; a durable one
//!   keeps its member set on disk ([`store`]), so offline members keep
//!   collecting its events in their inboxes.
//! - [`presence`] turns membership and connection changes into `join`,
//!   `leave`, `connect` and `disconnect` events in the other members'
//!   inboxes. A session's end starts a grace timer; a new session with the
//!   same client id before it fires cancels the disconnect.
//!
//! docs/rooms.md maps this to Socket.IO.

pub mod inbox;
pub mod presence;
pub mod requests;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use herald_protocol::{EmitTarget, RoomMember};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::topic::{name, Registry};
use crate::BrokerError;
use presence::Notice;

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

    /// Members of `room` other than `except`.
    fn others(&self, room: &str, except: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.members.iter().filter(|m| *m != except).cloned().collect())
            .unwrap_or_default()
    }

    fn is_durable(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.durable)
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

/// Where an emit goes: each recipient once, with the room it gets the
/// event through (for the `herald-room` header).
pub type Recipients = BTreeMap<String, Option<String>>;

/// The broker's rooms and online clients. One per broker, shared by every
/// session.
pub struct Rooms {
    config: Arc<BrokerConfig>,
    registry: Arc<Registry>,
    /// `<data-dir>/rooms`: one `<room>.members` file per durable room.
    dir: PathBuf,
    /// A std Mutex: held only to read or change the maps, never across an
    /// await; presence appends and file writes happen after it is released.
    state: Mutex<State>,
    /// Serialises durable member-file writes, so that the snapshot written
    /// last is also the newest.
    persist: tokio::sync::Mutex<()>,
    /// Stops grace timers when the broker shuts down (a shutdown is not a
    /// disconnect: clients come back when the broker does).
    shutdown: CancellationToken,
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
        for (room, members) in loaded.rooms {
            for m in members {
                state.add(&room, &m, true);
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
            persist: tokio::sync::Mutex::new(()),
            shutdown,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock keeps the invariants before any
        // operation that could panic, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
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
        rooms
            .into_iter()
            .map(|r| Notice::new("connect", &r, client, st.others(&r, client)))
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
        let me = self.clone();
        let client = client.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.shutdown.cancelled() => {}
                _ = tokio::time::sleep(me.config.presence_grace) => {
                    let notices = me.expire(&client, generation);
                    presence::deliver(&me, notices).await;
                }
            }
        });
    }

    /// The grace period of `client` ran out: it is offline. Non-durable
    /// rooms lose it; every room it was in is told.
    fn expire(&self, client: &str, generation: u64) -> Vec<Notice> {
        let mut st = self.lock();
        match st.online.get(client) {
            Some(o) if o.sessions == 0 && o.generation == generation => {}
            _ => return Vec::new(),
        }
        st.online.remove(client);
        let rooms: Vec<String> = st
            .memberships
            .get(client)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        let mut notices = Vec::new();
        for r in rooms {
            notices.push(Notice::new("disconnect", &r, client, st.others(&r, client)));
            if !st.is_durable(&r) {
                st.remove(&r, client);
                notices.push(Notice::new("leave", &r, client, st.others(&r, client)));
            }
        }
        notices
    }

    /// Adds `client` to `room`. Joining a room one is already in is a
    /// no-op. Durable membership is on disk when this returns.
    ///
    /// # Errors
    /// A bad room name or client id, a durability mismatch with the
    /// existing room, or a limit.
    pub async fn join(
        &self,
        client: &str,
        room: &str,
        durable: bool,
    ) -> Result<Vec<Notice>, BrokerError> {
        name::validate("room", room)?;
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
                    return Ok(Vec::new());
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
            vec![Notice::new("join", room, client, st.others(room, client))]
        };
        if durable {
            if let Err(e) = self.persist(room).await {
                self.lock().remove(room, client);
                return Err(e);
            }
        }
        Ok(notices)
    }

    /// Removes `client` from `room` (a no-op if it is not a member).
    ///
    /// # Errors
    /// The room is unavailable, or its durable member file cannot be
    /// written.
    pub async fn leave(&self, client: &str, room: &str) -> Result<Vec<Notice>, BrokerError> {
        let (notices, durable) = {
            let mut st = self.lock();
            st.check_available(room)?;
            let durable = st.is_durable(room);
            if !st.remove(room, client) {
                return Ok(Vec::new());
            }
            (
                vec![Notice::new("leave", room, client, st.others(room, client))],
                durable,
            )
        };
        if durable {
            self.persist(room).await?;
        }
        Ok(notices)
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

    /// The client ids an emit from `sender` to `target` reaches.
    ///
    /// # Errors
    /// A bad room name or client id, or a room that is unavailable (the
    /// whole emit is refused rather than delivered to some of its
    /// recipients).
    pub fn resolve(&self, sender: &str, target: &EmitTarget) -> Result<Recipients, BrokerError> {
        let st = self.lock();
        let mut out = Recipients::new();
        let mut add_room = |room: &str, except_sender: bool| -> Result<(), BrokerError> {
            name::validate("room", room)?;
            st.check_available(room)?;
            let members = st.rooms.get(room).map(|r| r.members.iter());
            // The room named after a client id holds that client.
            let own = st.online.contains_key(room).then_some(room);
            for m in members.into_iter().flatten().map(String::as_str).chain(own) {
                if !(except_sender && m == sender) {
                    out.entry(m.to_owned())
                        .or_insert_with(|| Some(room.to_owned()));
                }
            }
            Ok(())
        };
        match target {
            EmitTarget::Room(r) => add_room(r, false)?,
            EmitTarget::RoomExceptSender(r) => add_room(r, true)?,
            EmitTarget::Rooms {
                rooms,
                except_sender,
            } => {
                for r in rooms {
                    add_room(r, *except_sender)?;
                }
            }
            EmitTarget::Client(c) => {
                inbox::validate_client_id(c)?;
                out.insert(c.clone(), None);
            }
            EmitTarget::All => {
                for c in st.online.keys() {
                    if inbox::validate_client_id(c).is_ok() {
                        out.insert(c.clone(), None);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes the member set of a durable room (or deletes its file once
    /// the room is empty).
    async fn persist(&self, room: &str) -> Result<(), BrokerError> {
        let _one_at_a_time = self.persist.lock().await;
        let members: Vec<String> = {
            let st = self.lock();
            st.rooms
                .get(room)
                .map(|r| r.members.iter().cloned().collect())
                .unwrap_or_default()
        };
        let dir = self.dir.clone();
        let room = room.to_owned();
        tokio::task::spawn_blocking(move || store::save(&dir, &room, &members))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))?
    }
}
