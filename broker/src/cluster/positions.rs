//! Consumer groups' positions on replicated topics.
//!
//! A group of a replicated topic is read on whichever node its members
//! reach, and each replica keeps its own copy of the group (its state
//! file, its acks). So that a group resumes where its acks got to after
//! the node serving it dies, the groups of every replica tell their floors
//! to [`Floors`] as they move, and one task per replica ([`run`]) proposes
//! what changed to the topic's Raft group at most every [`INTERVAL`], as one
//! `Positions` entry for all its groups. Each replica applies the entry by
//! moving its copy of each group forward
//! ([`crate::group::GroupHandle::follow`]): a failover redelivers what was
//! acked in the last interval and a Raft round trip, no more (at least
//! once, as a broker restart does).
//!
//! A `herald groups reset` of a replicated topic's group is an entry too
//! ([`Floors::reset`]), in the same order as the floors around it, so a
//! floor told before the reset cannot undo it on the other replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::network::Network;
use super::peers::Peers;
use super::propose::{self, Write};
use super::types::{Command, GroupPosition, Raft};

/// How often at most a replica proposes its groups' floors: what a
/// failover may redeliver is what was acked in about this long.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// How long one proposal of floors is retried while no leader answers
/// before it is put back for the next round.
const PATIENCE: Duration = Duration::from_secs(2);

/// The floors a replica's groups told since the last proposal, and how to
/// propose them.
pub struct Floors {
    changed: Mutex<HashMap<String, u64>>,
    notify: Notify,
    /// Held while floors are proposed, and by a reset: a reset's entry
    /// comes after every floor taken before it.
    proposing: tokio::sync::Mutex<()>,
    writer: Writer,
}

/// What proposing to a replica's group takes.
struct Writer {
    raft: Raft,
    net: Network,
    peers: Arc<Peers>,
}

impl Writer {
    async fn write(&self, positions: Vec<GroupPosition>, patience: Duration) -> Result<(), String> {
        let write = Write::Entry(Command::Positions(positions));
        propose::anywhere(&self.raft, &self.net, &self.peers, write, patience)
            .await
            .map(|_| ())
    }
}

impl Floors {
    pub fn new(raft: Raft, net: Network, peers: Arc<Peers>) -> Floors {
        Floors {
            changed: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            proposing: tokio::sync::Mutex::new(()),
            writer: Writer { raft, net, peers },
        }
    }

    /// Group `group`'s floor moved to `floor` on this replica.
    pub fn note(&self, group: &str, floor: u64) {
        if let Ok(mut c) = self.changed.lock() {
            match c.get_mut(group) {
                Some(f) => *f = floor,
                None => {
                    c.insert(group.to_owned(), floor);
                }
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<GroupPosition> {
        let Ok(mut c) = self.changed.lock() else {
            return Vec::new();
        };
        c.drain()
            .map(|(group, floor)| GroupPosition {
                group,
                floor,
                reset: false,
            })
            .collect()
    }

    /// Puts back floors that could not be proposed, unless newer ones came.
    fn put_back(&self, positions: Vec<GroupPosition>) {
        if let Ok(mut c) = self.changed.lock() {
            for p in positions {
                c.entry(p.group).or_insert(p.floor);
            }
        }
        self.notify.notify_one();
    }

    /// Tells every replica that group `group` was reset to `floor` here,
    /// and returns once that is committed.
    ///
    /// # Errors
    /// No leader could be reached within `patience`.
    pub async fn reset(&self, group: &str, floor: u64, patience: Duration) -> Result<(), String> {
        let _turn = self.proposing.lock().await;
        if let Ok(mut c) = self.changed.lock() {
            c.remove(group);
        }
        let p = GroupPosition {
            group: group.to_owned(),
            floor,
            reset: true,
        };
        self.writer.write(vec![p], patience).await
    }
}

/// Proposes what `floors` gathers, every [`INTERVAL`] at most, until
/// `stop`.
pub async fn run(floors: Arc<Floors>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = floors.notify.notified() => {}
            _ = stop.cancelled() => return,
        }
        // Gather what the next floors add for a while: one entry for all.
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        let turn = floors.proposing.lock().await;
        let positions = floors.take();
        if positions.is_empty() {
            continue;
        }
        let r = tokio::select! {
            r = floors.writer.write(positions.clone(), PATIENCE) => r,
            _ = stop.cancelled() => return,
        };
        drop(turn);
        if let Err(e) = r {
            tracing::debug!(error = %e, "groups' positions not proposed yet");
            floors.put_back(positions);
        }
    }
}
