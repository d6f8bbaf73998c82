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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use bytes::BytesMut;
    use herald_protocol::frame::decode_frame;
    use herald_protocol::{AckKind, StartPosition};
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::runtime::Runtime;

    use super::super::inbox::{self, Entry};
    use super::*;
    use crate::config::BrokerConfig;
    use crate::memory::MemoryBudget;

    const CLIENT: &str = "alice";
    const SUB: u64 = 7;
    const MEMBER: u64 = 1;
    /// Bounds every wait: nothing here takes more than a few writes.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    fn within<F: Future>(rt: &Runtime, what: &str, f: F) -> F::Output {
        rt.block_on(async { tokio::time::timeout(PATIENCE, f).await })
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    /// The next frame the client's connection receives.
    async fn next_frame(peer: &mut DuplexStream, buf: &mut BytesMut) -> Message {
        loop {
            if let Some(f) = decode_frame(buf, 1 << 20).expect("a well-formed frame") {
                return Message::decode(&f).expect("a well-formed message");
            }
            let n = peer.read_buf(buf).await.expect("reading the connection");
            assert!(n > 0, "the outbox closed");
        }
    }

    /// What the session does with an Ack of a subscription that waited for
    /// its inbox (`handlers::acks`): to the group once joined, dropped
    /// before (nothing can have been delivered then). Returns whether it
    /// reached the group, once the ack is on disk.
    async fn ack_as_the_session_does(w: &Waiting, offset: u64) -> bool {
        let Some((group, member)) = w.joined() else {
            return false;
        };
        let persisted = group
            .ack(member, AckKind::Ack, vec![(offset, offset)], true)
            .await
            .expect("the group takes the ack")
            .expect("asked to wait for the write");
        persisted
            .await
            .expect("the group answers")
            .expect("the ack is written");
        true
    }

    /// The group delivers as soon as it admits the member, before the task
    /// joining the waiting subscription hears that the join is done; the
    /// client may ack that delivery meanwhile, and the ack must reach the
    /// group rather than be dropped for want of a group to route it to.
    ///
    /// The window is made certain by running the joining task (spawned by
    /// `wake`) on a runtime of its own, driven only when the test says: the
    /// group (and the connection's writer) run on the broker's runtime, so
    /// the first delivery reaches the client while the joining task has not
    /// resumed from `group.join`.
    #[test]
    fn an_ack_between_the_first_delivery_and_the_end_of_the_join_takes_effect() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let broker = runtime();
        let joiner = runtime();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            direct_io: false,
            ..BrokerConfig::default()
        };
        let waiters = Arc::new(Waiters::default());
        let (registry, topic, group, w, mut peer) = broker.block_on(async {
            let registry = Registry::open(Arc::new(config), Default::default())
                .expect("a registry in the temp dir");
            let (sink, peer) = tokio::io::duplex(1 << 20);
            let (outbox, _writer) = crate::outbox::spawn(
                sink,
                None,
                8,
                Duration::from_secs(60),
                MemoryBudget::unlimited(),
                Arc::default(),
            );
            let join = Join {
                member: MEMBER,
                subscription_id: SUB,
                request_id: 3,
                subscribe_ok: true,
                client_id: CLIENT.to_owned(),
                outbox,
                start: StartPosition::Resume,
                prefetch_messages: 16,
                prefetch_bytes: 1 << 20,
                ack_timeout: None,
                max_deliveries: None,
            };
            let w = match waiters.open_or_wait(&registry, CLIENT, join) {
                Ok(Opened::Waiting(w)) => w,
                Ok(Opened::Topic(..)) => panic!("the inbox does not exist yet"),
                Err(e) => panic!("waiting for the inbox: {e}"),
            };
            // What the first record for the client does (`inbox::fan_out`),
            // but for the wake, which comes below.
            let topic = registry
                .create(&topic_name(CLIENT), &inbox::config(registry.config()), true)
                .expect("the inbox is created");
            let entry = Entry::plain("hello", "bob", b"hi");
            topic
                .log
                .append(entry.batch())
                .await
                .expect("the record is appended");
            // The group's actor runs here, on the broker's runtime.
            let group = topic.group(INBOX_GROUP).expect("the inbox's group");
            (registry, topic, group, w, peer)
        });

        {
            let _on = joiner.enter();
            waiters.wake(CLIENT, &topic);
        }
        // Run the joining task until its join reached the group, no further:
        // the group answers `info` after the join it queued before it.
        let mut member_seen = false;
        for _ in 0..100 {
            joiner.block_on(tokio::task::yield_now());
            let info = within(&broker, "the group's info", group.info()).expect("the group runs");
            if info.is_some_and(|i| i.members == [CLIENT]) {
                member_seen = true;
                break;
            }
        }
        assert!(member_seen, "the joining task never reached the group");

        let mut buf = BytesMut::new();
        match within(
            &broker,
            "the first delivery",
            next_frame(&mut peer, &mut buf),
        ) {
            Message::Deliver(d) => {
                assert_eq!((d.subscription_id, d.first_offset), (SUB, 0));
            }
            m => panic!("expected the first delivery, got {m:?}"),
        }
        assert_eq!(
            Arc::strong_count(&w),
            2,
            "the joining task (which holds the subscription) has not ended"
        );

        let routed = within(&broker, "the ack", ack_as_the_session_does(&w, 0));
        within(&joiner, "the end of the join", async {
            while Arc::strong_count(&w) > 1 {
                tokio::task::yield_now().await;
            }
        });
        let info = within(&broker, "the group's info", group.info())
            .expect("the group runs")
            .expect("the group exists");
        assert!(
            routed && info.ack_floor == 1 && info.in_flight == 0,
            "an ack of the first delivery, sent before the join was done, \
             did not take effect (routed to the group: {routed}; ack floor \
             {}, in flight {})",
            info.ack_floor,
            info.in_flight
        );
        drop(group);
        within(&broker, "closing the topics", registry.close_all());
    }
}
