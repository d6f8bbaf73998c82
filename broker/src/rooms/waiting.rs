//! Inboxes created at their first event, not when their reader subscribes.
//!
//! Why: every client that reads events subscribes to its inbox, and an
//! inbox is a topic: six new files and folders, a log and a group. While
//! thousands of members joined one room, creating inboxes was half of the
//! broker's CPU (mostly ext4 searching for free inodes), though most members
//! of a room never get a direct event. So a client's subscription to its
//! own inbox, when the inbox does not exist yet, is answered at once
//! (`SubscribeOk`, start offset 0) and waits here. The first record for that
//! client ([`super::inbox::fan_out`]) creates the inbox and joins every
//! subscription waiting for it to its group; a new group starts at the
//! inbox's first record, so nothing appended meanwhile is missed.
//!
//! A subscription looks for the inbox and registers under the lock that
//! the creator takes after creating it: either the subscription finds the
//! inbox, or the creator finds the subscription. A subscription that ends
//! (unsubscribe, session end) while its join is under way leaves the group
//! as soon as the join is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use herald_protocol::{Message, SubscriptionError};

use super::inbox::{topic_name, INBOX_GROUP};
use crate::group::{GroupHandle, Join};
use crate::outbox::Out;
use crate::topic::{Registry, Topic};
use crate::BrokerError;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single map or field update.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The subscriptions waiting for their inbox, by client id.
#[derive(Default)]
pub struct Waiters {
    by_client: Mutex<HashMap<String, Vec<Arc<Waiting>>>>,
}

/// One subscription waiting for its inbox.
pub struct Waiting {
    client: String,
    waiters: Arc<Waiters>,
    state: Mutex<State>,
}

struct State {
    /// Taken by the creator of the inbox to join.
    join: Option<Join>,
    /// The group and member once joined.
    joined: Option<(GroupHandle, u64)>,
    /// The subscription ended.
    ended: bool,
}

/// What [`Waiters::open_or_wait`] found.
pub enum Opened {
    /// The inbox exists: join its group now.
    Topic(Arc<Topic>, Join),
    /// It does not: the subscription waits for it.
    Waiting(Arc<Waiting>),
}

impl Waiters {
    /// The inbox of `client` with `join` for its group, or, if there is no
    /// such topic yet, `join` made to wait for it. The caller answers the
    /// subscription itself when it waits: the group will not.
    ///
    /// # Errors
    /// The inbox exists but is unavailable (its files failed to open).
    pub fn open_or_wait(
        self: &Arc<Self>,
        registry: &Registry,
        client: &str,
        mut join: Join,
    ) -> Result<Opened, BrokerError> {
        let mut map = lock(&self.by_client);
        match registry.get(&topic_name(client)) {
            Ok(t) => Ok(Opened::Topic(t, join)),
            Err(BrokerError::UnknownTopic(_)) => {
                join.subscribe_ok = false;
                let w = Arc::new(Waiting {
                    client: client.to_owned(),
                    waiters: self.clone(),
                    state: Mutex::new(State {
                        join: Some(join),
                        joined: None,
                        ended: false,
                    }),
                });
                map.entry(client.to_owned()).or_default().push(w.clone());
                Ok(Opened::Waiting(w))
            }
            Err(e) => Err(e),
        }
    }

    /// Joins the subscriptions waiting for the inbox of `client`, which
    /// `topic` now is, each in a task of its own: the emit that created the
    /// inbox does not wait for the group's first write (an emit to everyone
    /// may create thousands of inboxes), and a new group starts at the
    /// inbox's first record whenever it joins. Called for every record
    /// addressed to a client, so it costs one lock and one lookup when
    /// nobody waits.
    pub fn wake(&self, client: &str, topic: &Arc<Topic>) {
        let waiting = {
            let mut map = lock(&self.by_client);
            if map.is_empty() {
                return;
            }
            map.remove(client)
        };
        for w in waiting.into_iter().flatten() {
            let topic = topic.clone();
            tokio::spawn(async move { w.join(&topic).await });
        }
    }

    fn forget(&self, w: &Arc<Waiting>) {
        let mut map = lock(&self.by_client);
        if let Some(v) = map.get_mut(&w.client) {
            v.retain(|x| !Arc::ptr_eq(x, w));
            if v.is_empty() {
                map.remove(&w.client);
            }
        }
    }
}

impl Waiting {
    /// The group and member, once the inbox exists and the subscription
    /// joined it (acks go there).
    pub fn joined(&self) -> Option<(GroupHandle, u64)> {
        lock(&self.state).joined.clone()
    }

    /// Ends the subscription: it stops waiting, or leaves the group.
    pub async fn end(self: &Arc<Self>) {
        let joined = {
            let mut st = lock(&self.state);
            st.ended = true;
            st.join = None;
            st.joined.take()
        };
        self.waiters.forget(self);
        if let Some((group, member)) = joined {
            group.leave(member).await;
        }
    }

    async fn join(self: &Arc<Self>, topic: &Arc<Topic>) {
        let Some(j) = lock(&self.state).join.take() else {
            return;
        };
        let (outbox, sub, member) = (j.outbox.clone(), j.subscription_id, j.member);
        let group = match topic.group(INBOX_GROUP) {
            Ok(group) => group,
            Err(e) => return self.failed(&outbox, sub, e),
        };
        // Acks go to the group from now on, before the join is done: the
        // group takes its commands in order, so an ack of a delivery (which
        // only the join makes possible) comes after the join, never dropped
        // or answered before it took effect.
        {
            let mut st = lock(&self.state);
            if st.ended {
                return;
            }
            st.joined = Some((group.clone(), member));
        }
        match group.join(j).await {
            Ok(_) => {
                if lock(&self.state).ended {
                    // Ended while joining: leave (again, if `end` did).
                    group.leave(member).await;
                }
            }
            Err(e) => {
                lock(&self.state).joined = None;
                self.failed(&outbox, sub, e);
            }
        }
    }

    /// The client hears that its subscription ended, as when a group is
    /// deleted under it.
    fn failed(&self, outbox: &crate::outbox::Outbox, sub: u64, e: BrokerError) {
        tracing::warn!(client = %self.client, error = %e, "joining a subscription to its new inbox");
        let m = Message::SubscriptionError(SubscriptionError {
            subscription_id: sub,
            code: e.code().as_u16(),
            message: e.to_string(),
        });
        let mut b = bytes::BytesMut::new();
        m.encode(0, &mut b);
        outbox.push(Out::Frame(b.freeze()));
    }
}
