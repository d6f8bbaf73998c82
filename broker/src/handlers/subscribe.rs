//! Subscribe and Unsubscribe, and ending subscriptions a refreshed token
//! no longer covers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::{
    ErrorCode, Message, StartPosition, Subscribe, SubscribeOk, SubscriptionError, Unsubscribe,
};

use super::Handler;
use crate::auth::Need;
use crate::group::Join;
use crate::outbox::Out;
use crate::rooms::waiting::Opened;
use crate::rooms::{inbox, log as room_log};
use crate::session::{Close, Session, Sub};
use crate::subscription;
use crate::topic::{position, Topic};
use crate::BrokerError;

impl Handler for Subscribe {
    fn needs(&self) -> Need<'_> {
        Need::Subscribe {
            topic: &self.topic,
            group: self.group.as_deref(),
        }
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        match subscribe(s, id, self).await {
            Ok(()) => Ok(()),
            Err(e) => s.reply(id, e.to_message()).await,
        }
    }
}

async fn subscribe(s: &mut Session, id: u64, r: Subscribe) -> Result<(), BrokerError> {
    let cfg = &s.shared.config;
    if s.subs.len() >= cfg.max_subscriptions_per_connection {
        return Err(BrokerError::Busy(format!(
            "at most {} subscriptions per connection",
            cfg.max_subscriptions_per_connection
        )));
    }
    let window = (
        r.prefetch_messages.clamp(1, cfg.max_prefetch_messages),
        r.prefetch_bytes.clamp(1, cfg.max_prefetch_bytes),
    );
    let sub_id = s.next_sub;
    s.next_sub += 1;
    let (start, ack_timeout, max_deliveries) = (
        r.start,
        (r.ack_timeout_ms > 0).then(|| Duration::from_millis(r.ack_timeout_ms as u64)),
        (r.max_deliveries > 0).then_some(r.max_deliveries),
    );
    let join = move |s: &Session| Join {
        member: s.shared.next_member.fetch_add(1, Ordering::Relaxed),
        subscription_id: sub_id,
        request_id: id,
        subscribe_ok: true,
        client_id: s.client_id.clone(),
        outbox: s.outbox.clone(),
        start,
        prefetch_messages: window.0,
        prefetch_bytes: window.1,
        ack_timeout,
        max_deliveries,
    };
    let inbox_owner = r.topic.strip_prefix(inbox::INBOX_PREFIX);
    // A client's own inbox is created at its first event (`rooms::waiting`):
    // until then the subscription waits, answered now.
    if let (Some(owner), Some(inbox::INBOX_GROUP)) = (inbox_owner, r.group.as_deref()) {
        let waiting = match s.shared.rooms.open_inbox_or_wait(owner, join(s))? {
            Opened::Topic(topic, j) => {
                return join_group(s, r.topic, topic, inbox::INBOX_GROUP.to_owned(), j).await;
            }
            Opened::Waiting(w) => w,
        };
        s.subs.insert(
            sub_id,
            Sub::Inbox {
                topic: r.topic,
                waiting,
            },
        );
        let ok = Message::SubscribeOk(SubscribeOk {
            subscription_id: sub_id,
            start_offset: 0,
        });
        let mut b = bytes::BytesMut::new();
        ok.encode(id, &mut b);
        s.outbox.push(Out::Frame(b.freeze()));
        return Ok(());
    }
    // Inboxes are created with their own retention (only the owner gets
    // here: see `auth::grants`).
    let topic = match (inbox_owner, r.topic.strip_prefix(room_log::ROOM_PREFIX)) {
        (Some(owner), _) => inbox::topic(&s.shared.rooms, owner)?,
        // A room's log is read by its members, each with its own group.
        (None, Some(room)) => {
            room_log::topic_for_member(&s.shared.rooms, room, &s.client_id, r.group.as_deref())
                .await?
        }
        (None, None) => s.shared.registry.for_subscribe(&r.topic)?,
    };
    match r.group {
        Some(group) => {
            let j = join(s);
            return join_group(s, r.topic, topic, group, j).await;
        }
        None => {
            let log = &topic.log;
            let start = match r.start {
                StartPosition::Resume => log.next_offset(),
                p => position::resolve(log, p)?,
            };
            // SubscribeOk goes through the push queue so that it reaches
            // the client before the first delivery.
            let ok = Message::SubscribeOk(SubscribeOk {
                subscription_id: sub_id,
                start_offset: start,
            });
            let mut b = bytes::BytesMut::new();
            ok.encode(id, &mut b);
            s.outbox.push(Out::Frame(b.freeze()));
            let cancel = s.shared.shutdown.child_token();
            let credit = subscription::spawn(
                topic,
                sub_id,
                start,
                s.outbox.clone(),
                window,
                cancel.clone(),
            );
            s.subs.insert(
                sub_id,
                Sub::Ephemeral {
                    topic: r.topic,
                    credit,
                    window,
                    cancel,
                },
            );
        }
    }
    Ok(())
}

/// Joins `j` to `group` of `topic` and keeps the subscription.
async fn join_group(
    s: &mut Session,
    name: String,
    topic: Arc<Topic>,
    group: String,
    j: Join,
) -> Result<(), BrokerError> {
    let handle = topic.group(&group)?;
    let (sub_id, member) = (j.subscription_id, j.member);
    handle.join(j).await?;
    s.subs.insert(
        sub_id,
        Sub::Group {
            topic: name,
            group,
            handle,
            member,
        },
    );
    Ok(())
}

impl Handler for Unsubscribe {
    fn needs(&self) -> Need<'_> {
        // Only the connection's own subscriptions can be named.
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        match s.subs.remove(&self.subscription_id) {
            Some(sub) => {
                sub.end().await;
                s.reply(id, Message::Ok).await
            }
            None => {
                let e = BrokerError::UnknownSubscription(self.subscription_id);
                s.reply(id, e.to_message()).await
            }
        }
    }
}

/// Ends, with a pushed SubscriptionError (`Unauthorized`), every
/// subscription the connection's current permissions do not cover (after
/// a refresh with narrower permissions).
pub(crate) async fn end_unauthorized(s: &mut Session) -> Result<(), Close> {
    let mut refused = Vec::new();
    for (id, sub) in &s.subs {
        let (topic, group) = match sub {
            Sub::Ephemeral { topic, .. } => (topic.as_str(), None),
            Sub::Group { topic, group, .. } => (topic.as_str(), Some(group.as_str())),
            Sub::Inbox { topic, .. } => (topic.as_str(), Some(inbox::INBOX_GROUP)),
        };
        if let Err(e) = s.access.check(Need::Subscribe { topic, group }) {
            refused.push((*id, e));
        }
    }
    for (id, e) in refused {
        if let Some(sub) = s.subs.remove(&id) {
            sub.end().await;
        }
        let m = Message::SubscriptionError(SubscriptionError {
            subscription_id: id,
            code: ErrorCode::Unauthorized.as_u16(),
            message: e.to_string(),
        });
        s.reply(0, m).await?;
    }
    Ok(())
}
