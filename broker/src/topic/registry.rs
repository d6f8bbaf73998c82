//! Every topic of the broker: opened from the data folder at start, created
//! on demand, deleted, listed.
//!
//! Layout on disk: `<data-dir>/topics/<name>/topic.meta` (the settings),
//! `.../log/` (the segments, see [`crate::storage`]) and `.../groups/`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use dashmap::DashMap;
use herald_protocol::{DroppedRange, FsyncPolicy, RepairReport, TopicConfig};
use tokio_util::sync::CancellationToken;

use super::{name, Topic};
use crate::config::BrokerConfig;
use crate::fsutil;
use crate::group::GroupDefaults;
use crate::memory::MemoryBudget;
use crate::storage::{Log, LogConfig, MAX_SEGMENT_BYTES};
use crate::syncer::Syncer;
use crate::BrokerError;

/// The broker's topics. Lookups are lock-free (DashMap; guards are never
/// held across an await: the `Arc<Topic>` is cloned out first).
pub struct Registry {
    root: PathBuf,
    config: Arc<BrokerConfig>,
    topics: DashMap<String, Arc<Topic>>,
    /// Topics that failed to open, with the reason, so publishers get a
    /// clear error instead of a silently recreated empty topic.
    unavailable: DashMap<String, String>,
    /// Topics being deleted: their folder is still in use by the old
    /// topic's closing writers and groups, so the name cannot be created
    /// again until it is gone (a create meanwhile gets `Busy`).
    deleting: DashMap<String, ()>,
    /// Serialises creation and deletion (rare), not lookups; holds when a
    /// creation refused for the topic limit was last logged.
    admin: Mutex<Option<std::time::Instant>>,
    /// Topics at most ([`BrokerConfig::max_topics`], resolved).
    max_topics: usize,
    cancel: CancellationToken,
    me: Weak<Registry>,
    /// The broker's memory budget, shared by every log and session.
    memory: Arc<MemoryBudget>,
    /// Coalesced syncs of the data folder, for group state (see
    /// [`crate::syncer`]).
    syncer: Option<Arc<Syncer>>,
}

const META_FILE: &str = "topic.meta";
/// A deleted topic's folder is renamed to this prefix plus its name and a
/// time before it is removed, so that a crash mid-removal leaves nothing a
/// restart would open as a half-deleted topic (topic names cannot start
/// with a dot).
const TOMBSTONE_PREFIX: &str = ".deleted-";
/// A refusal for the topic limit is logged at most this often.
const LIMIT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Smallest segment size a topic may be created with.
const MIN_SEGMENT_BYTES: u64 = 4096;

impl Registry {
    /// Opens every topic under `<data-dir>/topics`. A topic that fails to
    /// open (corrupt log) is logged and marked unavailable; the others serve.
    ///
    /// # Errors
    /// The data folder cannot be created or read.
    pub fn open(
        config: Arc<BrokerConfig>,
        cancel: CancellationToken,
    ) -> Result<Arc<Registry>, BrokerError> {
        let root = config.data_dir.join("topics");
        std::fs::create_dir_all(&root).map_err(|e| {
            BrokerError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create data folder {}: {e}", root.display()),
            ))
        })?;
        let memory = MemoryBudget::new(config.max_memory);
        let max_topics = config.max_topics.unwrap_or_else(|| {
            crate::config::default_max_topics(crate::metrics::system::max_open_files())
        });
        let reg = Arc::new_cyclic(|me| Registry {
            max_topics,
            syncer: Syncer::new(root.clone()),
            root: root.clone(),
            config,
            memory,
            topics: DashMap::new(),
            unavailable: DashMap::new(),
            deleting: DashMap::new(),
            admin: Mutex::new(None),
            cancel,
            me: me.clone(),
        });
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(TOMBSTONE_PREFIX) {
                // A delete interrupted by a crash: finish it.
                tracing::info!(folder = %entry.path().display(), "removing a deleted topic's folder");
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(folder = %entry.path().display(), error = %e, "could not remove");
                }
                continue;
            }
            if !entry.path().join(META_FILE).exists() {
                continue;
            }
            match reg.open_topic(&name, None) {
                Ok(t) => {
                    report_damage(&t);
                    reg.topics.insert(name, t);
                }
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "topic cannot be opened; serving the others");
                    reg.unavailable.insert(name, e.to_string());
                }
            }
        }
        Ok(reg)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The broker's memory budget.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// The data folder's coalesced syncer, where the platform has one.
    pub fn syncer(&self) -> Option<&Arc<Syncer>> {
        self.syncer.as_ref()
    }

    pub fn group_defaults(&self) -> GroupDefaults {
        GroupDefaults {
            ack_timeout: self.config.ack_timeout,
            max_deliveries: self.config.max_deliveries,
            backoff: self.config.redelivery_backoff.clone(),
            dlq_suffix: self.config.dlq_suffix.clone(),
            persist_interval: crate::group::PERSIST_MIN_INTERVAL,
        }
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `name`'s log settings: `cfg`, the broker's defaults, and for the
    /// logs only the broker writes (room logs, inboxes: one record per
    /// emit) merged batches and a sync shared with every other such log.
    fn log_config(&self, name: &str, cfg: &TopicConfig) -> LogConfig {
        let broker_written = name.starts_with(crate::rooms::log::ROOM_PREFIX)
            || name.starts_with(crate::rooms::inbox::INBOX_PREFIX);
        LogConfig {
            coalesce: broker_written,
            coalesce_max_bytes: self.config.max_deliverable_batch(),
            shared_sync: self.syncer.clone().filter(|_| broker_written),
            segment_bytes: cfg.segment_bytes.unwrap_or(self.config.segment_bytes),
            fsync: cfg.fsync.unwrap_or(self.config.fsync),
            retention_bytes: cfg.retention_bytes,
            retention_ms: cfg.retention_ms,
            tail_cache_bytes: self.config.tail_cache_bytes,
            direct_io: self.config.direct_io,
            memory: Some(self.memory.clone()),
            ..LogConfig::default()
        }
    }

    /// Opens (or, with `create`, first writes the settings of) one topic.
    fn open_topic(
        &self,
        name: &str,
        create: Option<&TopicConfig>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let dir = self.topic_dir(name);
        let meta = dir.join(META_FILE);
        let (cfg, log_config) = match create {
            Some(cfg) => {
                let mut log_config = self.log_config(name, cfg);
                // An inbox or a room's log, created by a join: no fsyncs
                // here; its first commit syncs the file system instead
                // (`LogConfig::create_unsynced`). Until then it holds
                // nothing confirmed, and a crash leaves at worst an empty
                // settings file, which `open_meta` recognises.
                let unsynced =
                    log_config.shared_sync.is_some() && log_config.fsync == FsyncPolicy::Always;
                log_config.create_unsynced = unsynced;
                std::fs::create_dir_all(&dir)?;
                write_meta(&meta, cfg, !unsynced)?;
                if !unsynced {
                    fsutil::sync_dir(&self.root)?;
                }
                (cfg.clone(), log_config)
            }
            None => {
                let cfg = self.open_meta(name, &meta)?;
                (cfg.clone(), self.log_config(name, &cfg))
            }
        };
        let log = Log::open(dir.join("log"), log_config)?;
        let topic = Arc::new(Topic::new(
            name.to_owned(),
            cfg,
            log,
            dir,
            self.cancel.child_token(),
            self.me.clone(),
        ));
        if create.is_none() {
            topic.check_groups();
        }
        Ok(topic)
    }

    /// The settings of an existing topic. An inbox's or a room log's
    /// settings file that is empty (or zeros) is what a crash leaves of
    /// one created unsynced, before its first commit (so with nothing
    /// confirmed in it): it is written again with the settings such a
    /// topic is created with. Any other unreadable settings file makes the
    /// topic unavailable.
    fn open_meta(&self, name: &str, path: &Path) -> Result<TopicConfig, BrokerError> {
        let error = match read_meta(path) {
            Ok(cfg) => return Ok(cfg),
            Err(e) => e,
        };
        let blank = std::fs::read(path).is_ok_and(|b| b.iter().all(|&x| x == 0));
        let cfg = if name.starts_with(crate::rooms::inbox::INBOX_PREFIX) {
            crate::rooms::inbox::config(&self.config)
        } else if name.starts_with(crate::rooms::log::ROOM_PREFIX) {
            crate::rooms::log::config(&self.config)
        } else {
            return Err(error);
        };
        if !blank {
            return Err(error);
        }
        tracing::warn!(topic = %name, file = %path.display(), "settings file empty (the broker stopped while creating the topic); written again with the defaults");
        write_meta(path, &cfg, true)?;
        Ok(cfg)
    }

    /// The topic, if it exists and is usable.
    pub fn get(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t.value().clone());
        }
        if let Some(r) = self.unavailable.get(name) {
            return Err(BrokerError::TopicUnavailable {
                name: name.to_owned(),
                reason: r.value().clone(),
            });
        }
        Err(BrokerError::UnknownTopic(name.to_owned()))
    }

    /// The topic to publish to: created with defaults if missing and the
    /// broker auto-creates.
    pub fn for_publish(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match self.get(name) {
            Err(BrokerError::UnknownTopic(_)) if self.config.auto_create_topics => {
                self.create(name, &TopicConfig::default(), true)
            }
            r => r,
        }
    }

    /// The topic to subscribe to: created with defaults if missing only
    /// when the broker auto-creates topics *and* auto-creates on subscribe
    /// (off by default: a misspelled topic would otherwise be created and
    /// waited on forever).
    pub fn for_subscribe(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match self.get(name) {
            Err(BrokerError::UnknownTopic(_))
                if self.config.auto_create_topics && self.config.auto_create_on_subscribe =>
            {
                self.create(name, &TopicConfig::default(), true)
            }
            r => r,
        }
    }

    /// Like [`Self::for_publish`] but creates even without auto-creation:
    /// the broker's own topics (dead letters) always exist when needed.
    /// Its name may be longer than a client's may be
    /// ([`name::MAX_INTERNAL_NAME_LEN`]: a topic's name and a suffix).
    pub fn for_publish_internal(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match self.get(name) {
            // Not under the topic limit: a topic's dead letters must have
            // somewhere to go, and there is at most one such topic per topic.
            Err(BrokerError::UnknownTopic(_)) => self.create_up_to(
                name,
                &TopicConfig::default(),
                true,
                name::MAX_INTERNAL_NAME_LEN,
                false,
            ),
            r => r,
        }
    }

    /// Creates a topic. Creating one that exists with the same settings
    /// succeeds (idempotent); with other settings it is `TopicExists`, unless
    /// `existing_ok` (auto-creation races). One whose files failed to open
    /// is `TopicUnavailable`, with the reason, and its files stay as they are.
    ///
    /// A new topic past the topic limit ([`BrokerConfig::max_topics`]) is
    /// `Busy`: whatever asked for it (a publish, a direct emit to a new
    /// client id, a join of a new room) fails, and every topic there is
    /// goes on serving.
    pub fn create(
        &self,
        name: &str,
        cfg: &TopicConfig,
        existing_ok: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        self.create_up_to(name, cfg, existing_ok, name::MAX_NAME_LEN, true)
    }

    /// [`Self::create`] without the topic limit, for a replica the
    /// cluster's metadata already placed on this node: refusing it here
    /// would leave the node out of a replica set the others count it in.
    pub fn create_placed(&self, name: &str, cfg: &TopicConfig) -> Result<Arc<Topic>, BrokerError> {
        self.create_up_to(name, cfg, true, name::MAX_NAME_LEN, false)
    }

    /// Refuses, as [`Self::create`] would, a new topic `name` past the
    /// topic limit. A replicated topic is checked here on the node a
    /// client asks, before the cluster's metadata places it: its creation
    /// on each node ([`Self::create_placed`]) cannot be refused, but
    /// without this check a client could have every node open topics
    /// without end. A topic that exists passes (creating it is idempotent).
    pub fn check_limit(&self, name: &str) -> Result<(), BrokerError> {
        let mut admin = self
            .admin
            .lock()
            .map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        if self.get(name).is_ok() {
            return Ok(());
        }
        self.within_limit(name, &mut admin)
    }

    /// `Busy` if the broker holds its limit of topics; `last_warned`
    /// (under the admin lock) spaces the WARN lines.
    fn within_limit(
        &self,
        name: &str,
        last_warned: &mut Option<std::time::Instant>,
    ) -> Result<(), BrokerError> {
        let held = self.topics.len();
        if held < self.max_topics {
            return Ok(());
        }
        // Once a minute at most: a client asking for new topics in a loop
        // must not flood the log as well.
        let now = std::time::Instant::now();
        if last_warned.is_none_or(|at| now.duration_since(at) >= LIMIT_LOG_EVERY) {
            *last_warned = Some(now);
            tracing::warn!(topic = %name, topics = held, max_topics = self.max_topics, "a new topic was refused: the broker holds its limit of topics (--max-topics); further refusals in the next minute are not logged");
        }
        Err(BrokerError::Busy(format!(
            "topic {name:?} was not created: the broker holds {held} topics, its limit \
             (--max-topics {}); delete topics or raise the limit (each topic keeps a file open)",
            self.max_topics
        )))
    }

    /// [`Self::create`], for a name of at most `max_name` characters, under
    /// the topic limit if `capped`.
    fn create_up_to(
        &self,
        name: &str,
        cfg: &TopicConfig,
        existing_ok: bool,
        max_name: usize,
        capped: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        name::validate_up_to("topic", name, max_name)?;
        validate_config(cfg)?;
        if self.cancel.is_cancelled() {
            return Err(BrokerError::ShuttingDown);
        }
        let mut admin = self
            .admin
            .lock()
            .map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        match self.get(name) {
            Ok(t) if existing_ok || &t.config == cfg => return Ok(t),
            Ok(_) => return Err(BrokerError::TopicExists(name.to_owned())),
            // Its files are there but did not open: creating it again would
            // write new settings over them and quietly serve what is left.
            // The reason goes back instead; deleting the topic, or fixing
            // its files, is the operator's call (docs/operations.md).
            Err(e @ BrokerError::TopicUnavailable { .. }) => return Err(e),
            Err(_) => {}
        }
        if self.deleting.contains_key(name) {
            return Err(BrokerError::Busy(format!(
                "topic {name:?} is being deleted; try again"
            )));
        }
        if capped {
            self.within_limit(name, &mut admin)?;
        }
        let t = self.open_topic(name, Some(cfg))?;
        self.topics.insert(name.to_owned(), t.clone());
        self.unavailable.remove(name);
        tracing::info!(topic = %name, "topic created");
        Ok(t)
    }

    /// Deletes a topic: its groups stop, its files go.
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let t = {
            let _g = self
                .admin
                .lock()
                .map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
            let t = match self.topics.remove(name) {
                Some((_, t)) => Some(t),
                None => {
                    if self.unavailable.remove(name).is_none() {
                        return Err(BrokerError::UnknownTopic(name.to_owned()));
                    }
                    None
                }
            };
            self.deleting.insert(name.to_owned(), ());
            t
        };
        let result = self.remove_files(name, t).await;
        self.deleting.remove(name);
        result?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// The second half of a delete, while the name is reserved: stops the
    /// topic (its groups write their last state into the old folder), then
    /// renames the folder aside and removes it.
    async fn remove_files(&self, name: &str, t: Option<Arc<Topic>>) -> Result<(), BrokerError> {
        if let Some(t) = &t {
            t.close().await;
        }
        let dir = self.topic_dir(name);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tomb = self.root.join(format!("{TOMBSTONE_PREFIX}{name}-{nanos}"));
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::rename(&dir, &tomb) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            fsutil::sync_dir(&root)?;
            std::fs::remove_dir_all(&tomb)
        })
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Finds every damaged range of a topic's log and, unless `dry_run`,
    /// skips them for good (see `Log::repair`), logging each. A topic that
    /// could not be opened at start is opened first.
    ///
    /// # Errors
    /// `UnknownTopic`; `TopicUnavailable` if it still cannot be opened; I/O
    /// errors of the repair.
    pub async fn repair(&self, name: &str, dry_run: bool) -> Result<RepairReport, BrokerError> {
        let t = match self.get(name) {
            Err(BrokerError::TopicUnavailable { .. }) => self.reopen(name)?,
            r => r?,
        };
        tracing::warn!(topic = %name, dry_run, "repair: checking every batch of the topic's log");
        let ranges = t.log.repair(dry_run).await?;
        let report = RepairReport {
            topic: name.to_owned(),
            dry_run,
            records: ranges.iter().map(|r| r.records()).sum(),
            bytes: ranges.iter().map(|r| r.bytes).sum(),
            ranges: ranges
                .into_iter()
                .map(|r| DroppedRange {
                    segment: r
                        .segment
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    position: r.position,
                    bytes: r.bytes,
                    first_offset: r.first_offset,
                    end_offset: r.end_offset,
                    reason: r.reason,
                })
                .collect(),
        };
        let verb = if dry_run { "would drop" } else { "dropped" };
        tracing::warn!(
            topic = %name,
            dry_run,
            ranges = report.ranges.len(),
            records = report.records,
            bytes = report.bytes,
            "repair of {name} {verb} {} records in {} damaged ranges ({} bytes)",
            report.records,
            report.ranges.len(),
            report.bytes,
        );
        Ok(report)
    }

    /// Opens a topic that failed to open before (its files may have been
    /// fixed since), making it available.
    fn reopen(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        let _g = self
            .admin
            .lock()
            .map_err(|_| BrokerError::Internal("admin lock poisoned".into()))?;
        if let Some(t) = self.topics.get(name) {
            return Ok(t.value().clone());
        }
        match self.open_topic(name, None) {
            Ok(t) => {
                report_damage(&t);
                self.topics.insert(name.to_owned(), t.clone());
                self.unavailable.remove(name);
                tracing::info!(topic = %name, "topic opened");
                Ok(t)
            }
            Err(e) => {
                let reason = e.to_string();
                self.unavailable.insert(name.to_owned(), reason.clone());
                Err(BrokerError::TopicUnavailable {
                    name: name.to_owned(),
                    reason,
                })
            }
        }
    }

    /// Every usable topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<Arc<Topic>> = self.topics.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Applies retention to every topic; called by a background task.
    pub fn apply_retention(&self) {
        for t in self.list() {
            if let Err(e) = t.log.apply_retention() {
                tracing::warn!(topic = %t.name, error = %e, "retention");
            }
        }
    }

    /// Stops every group (persisting its state) and closes every log.
    pub async fn close_all(&self) {
        for t in self.list() {
            t.close().await;
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// One ERROR line per topic that opened with damage readers will trip on
/// (recovery has logged each range with its file and position).
fn report_damage(t: &Topic) {
    let ranges: Vec<_> = t
        .log
        .damaged_ranges()
        .into_iter()
        .filter(|r| !r.accepted)
        .collect();
    if ranges.is_empty() {
        return;
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                "{} at byte {} of {}",
                r.offsets_text(),
                r.position,
                r.segment.display()
            )
        })
        .collect();
    tracing::error!(
        topic = %t.name,
        ranges = ranges.len(),
        "topic {} has damaged data: {}; readers of them are stopped with Corrupt until `herald topics repair {}`",
        t.name,
        list.join(", "),
        t.name,
    );
}

fn write_meta(path: &Path, cfg: &TopicConfig, durable: bool) -> Result<(), BrokerError> {
    let body = postcard::to_allocvec(cfg).map_err(|e| BrokerError::Internal(e.to_string()))?;
    Ok(fsutil::write_atomic(path, &body, durable)?)
}

fn read_meta(path: &Path) -> Result<TopicConfig, BrokerError> {
    let body = fsutil::read_checked(path)?
        .ok_or_else(|| BrokerError::Internal(format!("{} is missing", path.display())))?;
    postcard::from_bytes(&body)
        .map_err(|e| BrokerError::Internal(format!("{}: {e}", path.display())))
}

pub(crate) fn validate_config(cfg: &TopicConfig) -> Result<(), BrokerError> {
    // The log clamps larger sizes to MAX_SEGMENT_BYTES; accepting them
    // would store a setting that is silently not the one used.
    if let Some(s) = cfg.segment_bytes {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&s) {
            return Err(BrokerError::InvalidArgument(format!(
                "segment size {s} must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES} bytes \
                 (4 KiB to {} MiB)",
                MAX_SEGMENT_BYTES >> 20
            )));
        }
    }
    if let Some(FsyncPolicy::Interval { ms: 0 }) = cfg.fsync {
        return Err(BrokerError::InvalidArgument(
            "fsync interval must be at least 1 ms".into(),
        ));
    }
    Ok(())
}
