//! Topics: a log on disk plus the consumer groups reading it.
//!
//! [`registry::Registry`] owns every topic of the broker (create, open,
//! delete, list). A [`Topic`] owns its [`Log`] and its groups' actors.

pub mod name;
pub mod position;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use herald_protocol::{GroupInfo, StartPosition, TopicConfig, TopicInfo};
use tokio_util::sync::CancellationToken;

use crate::cluster::positions::Floors;
use crate::group::{self, store, GroupDefaults, GroupHandle, GroupSet, Origin, Positions, Target};
use crate::storage::Log;
use crate::BrokerError;
pub use registry::Registry;

/// One topic.
pub struct Topic {
    pub name: String,
    /// The settings as the creator gave them (`None` = broker default).
    pub config: TopicConfig,
    pub log: Arc<Log>,
    dir: PathBuf,
    /// Group actors by name. A std Mutex: nothing awaits while it is held.
    groups: Mutex<HashMap<String, GroupHandle>>,
    /// The one actor hosting every group of a room's log (one per member,
    /// see [`group::GroupSet`]), started on first use; `None` for other
    /// topics, whose groups have an actor each. Locked inside `groups`.
    shared_groups: Mutex<Option<GroupSet>>,
    /// Where a room log's groups (its members) keep their state, all in
    /// one file (see [`group::positions`]); opened on first use, `None`
    /// until then and for other topics, whose groups have a file each.
    positions: Mutex<Option<Arc<Positions>>>,
    /// Groups whose state file is damaged or unreadable, with the reason.
    /// They are listed as damaged, refuse members, and are replaced by a
    /// reset. Found at open and whenever a state file fails to load.
    damaged: Mutex<HashMap<String, String>>,
    /// Stops this topic's group actors (child of the broker's token).
    pub cancel: CancellationToken,
    registry: Weak<Registry>,
    started: Instant,
    appended: AtomicU64,
    /// Records handed to subscribers, group members (redeliveries
    /// included) and ephemeral ones, for the metrics: one addition per
    /// delivered chunk.
    delivered: AtomicU64,
    /// Where its groups tell their floors, when the topic is replicated
    /// (set once by the cluster, see `cluster::positions`).
    floors: OnceLock<Arc<Floors>>,
}

impl Topic {
    pub(crate) fn new(
        name: String,
        config: TopicConfig,
        log: Arc<Log>,
        dir: PathBuf,
        cancel: CancellationToken,
        registry: Weak<Registry>,
    ) -> Topic {
        Topic {
            name,
            config,
            log,
            dir,
            groups: Mutex::new(HashMap::new()),
            shared_groups: Mutex::new(None),
            positions: Mutex::new(None),
            damaged: Mutex::new(HashMap::new()),
            cancel,
            registry,
            started: Instant::now(),
            appended: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            floors: OnceLock::new(),
        }
    }

    /// Counts appended records for the rate shown by describe.
    pub fn record_appended(&self, n: u32) {
        self.appended.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts records delivered to a subscriber.
    pub fn record_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Records delivered to subscribers so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Makes its groups tell their floors to `floors` (a replicated
    /// topic; the first call wins).
    pub fn report_floors_to(&self, floors: Arc<Floors>) {
        let _ = self.floors.set(floors);
    }

    /// Where its groups tell their floors, if the topic is replicated.
    pub fn floors(&self) -> Option<&Arc<Floors>> {
        self.floors.get()
    }

    /// Moves group `name` to where its copy on another node stands (see
    /// [`GroupHandle::follow`]), creating it if new here. A group whose
    /// state file is damaged is left alone (it is reset by hand).
    ///
    /// # Errors
    /// The group's set has stopped (the topic is closing).
    pub async fn follow_group(
        self: &Arc<Self>,
        name: &str,
        floor: u64,
        reset: bool,
    ) -> Result<(), BrokerError> {
        match self.group(name) {
            Ok(g) => g.follow(floor, reset).await,
            Err(BrokerError::GroupUnavailable { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.upgrade()
    }

    fn groups_dir(&self) -> PathBuf {
        self.dir.join("groups")
    }

    fn state_path(&self, group: &str) -> PathBuf {
        self.groups_dir().join(format!("{group}.state"))
    }

    /// A room's log: its groups are the room's members, whose states are
    /// kept in one positions file.
    fn is_room_log(&self) -> bool {
        self.name.starts_with(crate::rooms::log::ROOM_PREFIX)
    }

    fn durable(&self) -> bool {
        matches!(
            self.log.config().fsync,
            herald_protocol::FsyncPolicy::Always
        )
    }

    /// A room log's positions file, opened on first use (per-member files
    /// of an older version are moved into it then, see
    /// [`group::positions`]). A damaged file is opened too, and says so.
    ///
    /// # Errors
    /// The file cannot be read (the next use tries again), or the move of
    /// older files failed.
    fn positions(&self) -> Result<Arc<Positions>, BrokerError> {
        let mut slot = self.positions.lock().map_err(|_| poisoned())?;
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let syncer = self.registry().and_then(|r| r.syncer().cloned());
        let p = Arc::new(Positions::open(
            &self.groups_dir(),
            self.durable(),
            syncer,
            &self.name,
        )?);
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Whether this is a room's log whose positions file is damaged.
    pub fn positions_damaged(&self) -> bool {
        self.positions
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.damage().is_some()))
            .unwrap_or(false)
    }

    /// For a room's log whose positions file is damaged: why.
    fn positions_damage(&self) -> Result<Option<String>, BrokerError> {
        if !self.is_room_log() {
            return Ok(None);
        }
        Ok(self.positions()?.damage().map(str::to_owned))
    }

    /// The actor of group `name`, started (and its state loaded) on first
    /// use; a group without state is created by its first member.
    ///
    /// # Errors
    /// `GroupUnavailable` when its state file is damaged or unreadable.
    pub fn group(self: &Arc<Self>, name: &str) -> Result<GroupHandle, BrokerError> {
        name::validate("group", name)?;
        self.group_actor(name, true)?
            .ok_or_else(|| BrokerError::Internal("group actor not started".into()))
    }

    /// The actor of an existing group (one with a state file or a running
    /// actor); `None` if there is no such group. Never creates anything.
    fn existing_group(self: &Arc<Self>, name: &str) -> Result<Option<GroupHandle>, BrokerError> {
        self.group_actor(name, false)
    }

    fn group_actor(
        self: &Arc<Self>,
        name: &str,
        create: bool,
    ) -> Result<Option<GroupHandle>, BrokerError> {
        if let Some(reason) = self.damage_of(name) {
            return Err(unavailable(name, reason));
        }
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        if let Some(g) = groups.get(name) {
            if !g.is_stopped() {
                return Ok(Some(g.clone()));
            }
        }
        if self.is_room_log() {
            let positions = self.positions()?;
            if let Some(reason) = positions.damage() {
                return Err(unavailable(name, reason.to_owned()));
            }
            let origin = match positions.get(name) {
                Some(s) => Origin::Loaded(s),
                None if !create => return Ok(None),
                None => {
                    std::fs::create_dir_all(self.groups_dir())?;
                    Origin::New
                }
            };
            let h = self.spawn_group(name, Target::Room(positions), origin)?;
            groups.insert(name.to_owned(), h.clone());
            return Ok(Some(h));
        }
        let path = self.state_path(name);
        let origin = match store::load(&path) {
            Ok(Some(s)) => Origin::Loaded(s),
            Ok(None) if !create => return Ok(None),
            Ok(None) => {
                std::fs::create_dir_all(self.groups_dir())?;
                Origin::New
            }
            Err(e @ store::StoreError::Corrupt { .. }) => {
                let reason = e.to_string();
                tracing::error!(topic = %self.name, group = %name, file = %path.display(), error = %reason, "group state cannot be loaded; the group is unavailable until it is reset");
                self.remember_damage(name, &e);
                return Err(unavailable(name, reason));
            }
            // Not damage: the file could not be read now (out of file
            // descriptors, an I/O error). The request fails (`Busy` when
            // out of files: retry) and the next one reads the file again;
            // a reset, which the damage message advises, would throw the
            // group's position away for nothing.
            Err(e) => {
                tracing::warn!(topic = %self.name, group = %name, file = %path.display(), error = %e, "group state could not be read; the next request tries again");
                return Err(BrokerError::GroupStore(e));
            }
        };
        let h = self.spawn_group(name, Target::File(path), origin)?;
        groups.insert(name.to_owned(), h.clone());
        Ok(Some(h))
    }

    /// Starts group `name`: in the room log's shared actor for a room's
    /// log, in an actor of its own otherwise.
    fn spawn_group(
        self: &Arc<Self>,
        name: &str,
        target: Target,
        origin: Origin,
    ) -> Result<GroupHandle, BrokerError> {
        let reg = self.registry();
        let defaults = reg.as_ref().map(|r| r.group_defaults()).unwrap_or_default();
        let target = match target {
            Target::File(path) if !self.is_room_log() => {
                return Ok(group::spawn(
                    self.clone(),
                    name.to_owned(),
                    path,
                    defaults,
                    origin,
                ));
            }
            t => t,
        };
        // A room's members ack the same events at once: their saves are
        // spaced further apart (see `ROOM_PERSIST_INTERVAL`).
        let defaults = GroupDefaults {
            persist_interval: group::ROOM_PERSIST_INTERVAL,
            ..defaults
        };
        let mut set = self.shared_groups.lock().map_err(|_| poisoned())?;
        let set = match &mut *set {
            Some(s) if !s.is_ended() => s,
            stale => stale.insert(GroupSet::spawn(self.clone(), defaults.clone())),
        };
        Ok(set.add(self, name.to_owned(), target, &defaults, origin))
    }

    fn damage_of(&self, name: &str) -> Option<String> {
        self.damaged.lock().ok()?.get(name).cloned()
    }

    /// Remembers a damaged file. A read error (EIO, too many open files)
    /// is not remembered: the next use tries again.
    fn remember_damage(&self, name: &str, e: &store::StoreError) {
        if let store::StoreError::Corrupt { .. } = e {
            if let Ok(mut d) = self.damaged.lock() {
                d.insert(name.to_owned(), e.to_string());
            }
        }
    }

    /// Checks every group state file at open: each damaged or unreadable
    /// one is logged at ERROR with its file and reason, and its group is
    /// marked unavailable. The others load when first used.
    pub(crate) fn check_groups(&self) {
        if self.is_room_log() {
            // Opening it moves older per-member files in, and logs damage;
            // what is left of those files below is damaged.
            if let Err(e) = self.positions() {
                tracing::error!(topic = %self.name, error = %e, "the positions file of this room cannot be read; its members' positions are unavailable until it can");
            }
        }
        for name in self.stored_group_names() {
            if !self.state_path(&name).exists() {
                // A member in the room's positions file, checked above.
                continue;
            }
            let path = self.state_path(&name);
            match store::load(&path) {
                Ok(_) => {}
                Err(e @ store::StoreError::Corrupt { .. }) => {
                    tracing::error!(topic = %self.name, group = %name, file = %path.display(), error = %e, "group state is damaged; the group is unavailable until it is reset (`herald groups TOPIC GROUP --reset-to POSITION`)");
                    self.remember_damage(&name, &e);
                }
                Err(e) => {
                    tracing::warn!(topic = %self.name, group = %name, file = %path.display(), error = %e, "group state cannot be read now; it is read again when the group is used");
                }
            }
        }
    }

    /// Names of groups with a state file (damaged ones included), or an
    /// entry in a room log's positions file.
    fn stored_group_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.is_room_log() {
            if let Ok(p) = self.positions() {
                names.extend(p.names());
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.groups_dir()) {
            for e in rd.flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                if let Some(n) = f.strip_suffix(".state") {
                    names.push(n.to_owned());
                }
            }
        }
        names
    }

    /// Names of groups with stored state or a running actor, sorted.
    pub fn group_names(&self) -> Vec<String> {
        // A set: a room's log has a group per member, and a list's
        // `contains` made this quadratic in them.
        let mut names: std::collections::BTreeSet<String> = self
            .groups
            .lock()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default();
        names.extend(self.stored_group_names());
        names.into_iter().collect()
    }

    /// Whether group `name` has stored state or a running actor (damaged
    /// included), without listing the others: a room member's subscribe
    /// asks it of a log with a group per member.
    pub fn has_group(&self, name: &str) -> bool {
        let running = self
            .groups
            .lock()
            .map(|g| g.contains_key(name))
            .unwrap_or(false);
        if running || self.state_path(name).exists() {
            return true;
        }
        // A member of a room whose positions file is damaged has a
        // position, only not a readable one: it is not placed afresh.
        self.is_room_log()
            && self
                .positions()
                .map(|p| p.damage().is_some() || p.contains(name))
                .unwrap_or(true)
    }

    /// Lag, in-flight and member figures of every group; a damaged group
    /// is listed with the reason instead.
    ///
    /// Every group is asked at once: a room's groups share one set, which
    /// then answers them all in one turn instead of one turn (and one
    /// round trip of the scrape) per member.
    pub async fn group_infos(self: &Arc<Self>) -> Result<Vec<GroupInfo>, BrokerError> {
        /// A group to list, in the order of the names.
        enum Listed {
            Running(GroupHandle),
            Damaged(GroupInfo),
        }
        let mut listed = Vec::new();
        for n in self.group_names() {
            match self.existing_group(&n) {
                Ok(Some(g)) => listed.push(Listed::Running(g)),
                Ok(None) => {}
                Err(BrokerError::GroupUnavailable { reason, .. }) => {
                    listed.push(Listed::Damaged(damaged_info(&n, reason)))
                }
                Err(e) => return Err(e),
            }
        }
        let asked = listed.into_iter().map(|l| async move {
            match l {
                Listed::Running(g) => g.info().await,
                Listed::Damaged(info) => Ok(Some(info)),
            }
        });
        let answers = futures::future::join_all(asked).await;
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.extend(a?);
        }
        Ok(out)
    }

    /// Moves group `name` to `to` (see [`GroupHandle::reset`]). A group
    /// whose state file is damaged gets a fresh state at `to`; the damaged
    /// file is kept aside as `<name>.state.damaged-<unix ms>`.
    ///
    /// Returns the group's new floor.
    ///
    /// # Errors
    /// `UnknownGroup` if the topic has no such group (nothing is created),
    /// and those of [`GroupHandle::reset`].
    pub async fn reset_group(
        self: &Arc<Self>,
        name: &str,
        to: StartPosition,
    ) -> Result<u64, BrokerError> {
        name::validate("group", name)?;
        let handle = match self.existing_group(name) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return Err(BrokerError::UnknownGroup {
                    topic: self.name.clone(),
                    group: name.to_owned(),
                })
            }
            Err(BrokerError::GroupUnavailable { .. }) => {
                // Refuse a bad position before touching the damaged file.
                position::resolve(&self.log, to)?;
                self.replace_damaged(name)?
            }
            Err(e) => return Err(e),
        };
        handle.reset(to).await?;
        Ok(handle.info().await?.map_or(0, |i| i.ack_floor))
    }

    /// Removes group `name` (its state file included) if it exists; a no-op
    /// otherwise. Its members get nothing more.
    ///
    /// # Errors
    /// The state file cannot be removed.
    pub async fn delete_group(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        if let Some(reason) = self.positions_damage()? {
            // The file holds every member's position: nothing is removed
            // from it, or written to it, until it is repaired.
            return Err(unavailable(name, reason));
        }
        let handle = match self.existing_group(name) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(BrokerError::GroupUnavailable { .. }) => {
                if let Ok(mut d) = self.damaged.lock() {
                    d.remove(name);
                }
                return match std::fs::remove_file(self.state_path(name)) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                };
            }
            Err(e) => return Err(e),
        };
        let r = handle.delete().await;
        if let Ok(mut groups) = self.groups.lock() {
            groups.remove(name);
        }
        r
    }

    /// Sets a damaged state file aside and starts the group afresh.
    fn replace_damaged(self: &Arc<Self>, name: &str) -> Result<GroupHandle, BrokerError> {
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        if self.positions_damage()?.is_some() {
            // A room's damaged positions file: set aside, replaced by an
            // empty one; the other members, without a position now, start
            // at the room's end when they next read it.
            let syncer = self.registry().and_then(|r| r.syncer().cloned());
            let fresh = Arc::new(Positions::replace_damaged(
                &self.groups_dir(),
                self.durable(),
                syncer,
                &self.name,
            )?);
            *self.positions.lock().map_err(|_| poisoned())? = Some(fresh.clone());
            let h = self.spawn_group(name, Target::Room(fresh), Origin::Replacing)?;
            groups.insert(name.to_owned(), h.clone());
            return Ok(h);
        }
        let path = self.state_path(name);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let aside = self
            .groups_dir()
            .join(format!("{name}.state.damaged-{stamp}"));
        match std::fs::rename(&path, &aside) {
            Ok(()) => {
                crate::fsutil::sync_dir(&self.groups_dir())?;
                tracing::warn!(topic = %self.name, group = %name, kept = %aside.display(), "replacing damaged group state by a reset; the damaged file is kept aside");
            }
            // Already gone (removed by hand): nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(topic = %self.name, group = %name, "replacing damaged group state by a reset");
            }
            Err(e) => return Err(e.into()),
        }
        if let Ok(mut d) = self.damaged.lock() {
            d.remove(name);
        }
        let target = if self.is_room_log() {
            Target::Room(self.positions()?)
        } else {
            Target::File(path)
        };
        let h = self.spawn_group(name, target, Origin::Replacing)?;
        groups.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// What describe shows.
    pub async fn info(self: &Arc<Self>) -> Result<TopicInfo, BrokerError> {
        let stats = self.log.stats();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        Ok(TopicInfo {
            name: self.name.clone(),
            config: self.config.clone(),
            first_offset: stats.first_offset,
            next_offset: stats.next_offset,
            bytes_on_disk: stats.bytes_on_disk,
            segments: stats.segments,
            messages_per_sec: self.appended.load(Ordering::Relaxed) as f64 / secs,
            groups: self.group_infos().await?,
        })
    }

    /// Stops the group actors (they persist their state first) and closes
    /// the log.
    pub async fn close(&self) {
        self.cancel.cancel();
        let handles: Vec<GroupHandle> = self
            .groups
            .lock()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        for h in handles {
            h.stopped().await;
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!(topic = %self.name, error = %e, "closing log");
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

fn unavailable(group: &str, reason: String) -> BrokerError {
    BrokerError::GroupUnavailable {
        group: group.to_owned(),
        reason,
    }
}

/// How a damaged group is listed: its name and why, no figures.
fn damaged_info(name: &str, reason: String) -> GroupInfo {
    GroupInfo {
        name: name.to_owned(),
        ack_floor: 0,
        lag: 0,
        in_flight: 0,
        redelivered: 0,
        dead_lettered: 0,
        members: Vec::new(),
        damaged: Some(reason),
    }
}

fn poisoned() -> BrokerError {
    BrokerError::Internal("group table lock poisoned".into())
}
