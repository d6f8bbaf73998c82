//! Topics: a log on disk plus the consumer groups reading it.
//!
//! [`registry::Registry`] owns every topic of the broker (create, open,
//! delete, list). A [`Topic`] owns its [`Log`] and its groups' actors.

pub mod name;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use herald_protocol::{GroupInfo, TopicConfig, TopicInfo};
use tokio_util::sync::CancellationToken;

use crate::group::{self, GroupHandle};
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
    /// Stops this topic's group actors (child of the broker's token).
    pub cancel: CancellationToken,
    registry: Weak<Registry>,
    started: Instant,
    appended: AtomicU64,
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
            cancel,
            registry,
            started: Instant::now(),
            appended: AtomicU64::new(0),
        }
    }

    /// Counts appended records for the rate shown by describe.
    pub fn record_appended(&self, n: u32) {
        self.appended.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.upgrade()
    }

    fn groups_dir(&self) -> PathBuf {
        self.dir.join("groups")
    }

    /// The actor of group `name`, started (and its state loaded) on first use.
    pub fn group(self: &Arc<Self>, name: &str) -> Result<GroupHandle, BrokerError> {
        name::validate("group", name)?;
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        if let Some(g) = groups.get(name) {
            if !g.is_stopped() {
                return Ok(g.clone());
            }
        }
        let dir = self.groups_dir();
        std::fs::create_dir_all(&dir)?;
        let reg = self.registry();
        let defaults = reg.as_ref().map(|r| r.group_defaults()).unwrap_or_default();
        let h = group::spawn(
            self.clone(),
            name.to_owned(),
            dir.join(format!("{name}.state")),
            defaults,
        )?;
        groups.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// Names of groups with stored state or a running actor.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .groups
            .lock()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default();
        if let Ok(rd) = std::fs::read_dir(self.groups_dir()) {
            for e in rd.flatten() {
                let f = e.file_name().to_string_lossy().to_string();
                if let Some(n) = f.strip_suffix(".state") {
                    if !names.iter().any(|x| x == n) {
                        names.push(n.to_owned());
                    }
                }
            }
        }
        names.sort();
        names
    }

    /// Lag, in-flight and member figures of every group.
    pub async fn group_infos(self: &Arc<Self>) -> Result<Vec<GroupInfo>, BrokerError> {
        let mut out = Vec::new();
        for n in self.group_names() {
            out.push(self.group(&n)?.info().await?);
        }
        Ok(out)
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

fn poisoned() -> BrokerError {
    BrokerError::Internal("group table lock poisoned".into())
}
