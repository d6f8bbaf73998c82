//! A node that knows it is behind does not stand for election.
//!
//! openraft 0.9 has no pre-vote: a follower that hears nothing from its
//! leader for an election timeout raises the term, and the leader, told of
//! the higher term in the follower's next answer, steps down. A follower
//! catching up on a large backlog (a restarted node, calls of 1 MiB each,
//! answered after its fsync) misses timeouts that way, and each of its
//! elections deposed a healthy leader: the group re-elected over and over
//! and the follower never caught up (term 50 within minutes).
//!
//! Yet such a follower cannot win: it lacks entries the leader has already
//! committed, so no majority votes for it. Keeping it out of elections
//! while it is behind costs nothing, and is what [`Catchup`] does: each
//! AppendEntries says how far the leader has committed; a follower whose
//! log ends before that turns its elections off until its log reaches the
//! leader's commit, or until it has heard no such call for [`HOLD`] (then
//! it is on its own again and may stand). A restarted node that had a log
//! also waits [`HOLD`] before standing: its leader is likely alive and
//! about to call (it backs off from an unreachable peer for up to
//! [`super::network::BACKOFF`]), and a node that restarts is usually behind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesRequest;
use tokio::sync::Notify;

use super::types::{Raft, TypeConfig};

/// How long a follower keeps out of elections after its last sign of
/// being behind (or after its start).
pub const HOLD: Duration = Duration::from_secs(1);

/// One group's guard (see the module doc).
pub struct Catchup {
    raft: Raft,
    /// Elections are off until this instant (renewed while behind).
    off_until: Mutex<Option<Instant>>,
    /// Wakes the task that turns elections back on: a hold began, or the
    /// guard is gone. While nothing is held the task sleeps on it, so an
    /// idle group costs no wake-ups.
    held: Arc<Notify>,
}

impl Drop for Catchup {
    fn drop(&mut self) {
        self.held.notify_one();
    }
}

impl Catchup {
    /// Starts the guard of `raft`, holding elections off for [`HOLD`] if
    /// the group had a log (a restart, not a new group); a task turns them
    /// back on once the hold has passed.
    pub fn start(raft: Raft, restarted: bool) -> Arc<Catchup> {
        let held = Arc::new(Notify::new());
        let c = Arc::new(Catchup {
            raft,
            off_until: Mutex::new(None),
            held: held.clone(),
        });
        if restarted {
            c.hold();
        }
        let weak = Arc::downgrade(&c);
        tokio::spawn(async move {
            loop {
                let until = match weak.upgrade() {
                    Some(c) => c.off_until.lock().map(|u| *u).unwrap_or(None),
                    None => return,
                };
                match until {
                    // Renewed meanwhile? Then this sleeps again.
                    Some(t) => {
                        tokio::time::sleep_until(t.into()).await;
                        match weak.upgrade() {
                            Some(c) => c.release_if_due(),
                            None => return,
                        }
                    }
                    None => held.notified().await,
                }
            }
        });
        c
    }

    fn hold(&self) {
        let Ok(mut until) = self.off_until.lock() else {
            return;
        };
        if until.is_none() {
            self.raft.runtime_config().elect(false);
            self.held.notify_one();
        }
        *until = Some(Instant::now() + HOLD);
    }

    /// Whether this node keeps out of elections now.
    pub fn holding(&self) -> bool {
        self.off_until.lock().map(|u| u.is_some()).unwrap_or(false)
    }

    fn release(&self) {
        let Ok(mut until) = self.off_until.lock() else {
            return;
        };
        if until.take().is_some() {
            self.raft.runtime_config().elect(true);
        }
    }

    fn release_if_due(&self) {
        let due = self
            .off_until
            .lock()
            .map(|u| u.is_some_and(|t| Instant::now() >= t))
            .unwrap_or(false);
        if due {
            self.release();
        }
    }

    /// Looks at an AppendEntries call before Raft serves it.
    pub fn on_append(&self, req: &AppendEntriesRequest<TypeConfig>) {
        let Some(commit) = req.leader_commit.map(|c| c.index) else {
            return;
        };
        let mine = self.raft.metrics().borrow().last_log_index;
        let prev = req.prev_log_id.map(|p| p.index);
        let sent = req.entries.last().map(|e| e.log_id.index);
        if behind(mine, prev, sent, commit) {
            self.hold();
        } else {
            self.release();
        }
    }
}

/// Whether a node whose log ends at `mine` lacks committed entries once it
/// has served a call continuing from `prev` with entries up to `sent`,
/// the leader having committed up to `commit`. A call that does not
/// continue its log (a probe further on) is refused and adds nothing.
fn behind(mine: Option<u64>, prev: Option<u64>, sent: Option<u64>, commit: u64) -> bool {
    let has = if prev <= mine { sent.max(mine) } else { mine };
    has.is_none_or(|h| h < commit)
}

#[cfg(test)]
mod tests {
    use super::behind;

    #[test]
    fn a_node_is_behind_until_its_log_reaches_the_leaders_commit() {
        // Up to date, or brought up to date by the call itself.
        assert!(!behind(Some(10), Some(10), None, 10));
        assert!(!behind(Some(10), Some(10), Some(12), 12));
        // Restarted 800 entries back, sent the next one.
        assert!(behind(Some(100), Some(100), Some(101), 900));
        // A probe beyond its log adds nothing.
        assert!(behind(Some(100), Some(500), Some(900), 900));
        // An empty log lacks any commit.
        assert!(behind(None, None, Some(3), 5));
        assert!(!behind(None, None, Some(5), 5));
    }
}
