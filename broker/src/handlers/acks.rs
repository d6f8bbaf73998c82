//! Ack and Flow: what a subscriber sends back about its deliveries. Both
//! name only the connection's own subscriptions, so they need no
//! permission beyond the one that created the subscription.

use herald_protocol::{Ack, Flow, Message};

use super::Handler;
use crate::auth::Need;
use crate::session::{Close, Session, Sub};
use crate::BrokerError;

impl Handler for Ack {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let (h, m) = match s.subs.get(&self.subscription_id) {
            Some(Sub::Group { handle, member, .. }) => (handle.clone(), *member),
            Some(Sub::Inbox { waiting, .. }) => match waiting.joined() {
                Some(g) => g,
                // Its inbox does not exist yet: nothing was delivered.
                None if id != 0 => return s.reply(id, Message::Ok).await,
                None => return Ok(()),
            },
            Some(Sub::Ephemeral { .. }) if id != 0 => {
                let e = BrokerError::InvalidArgument(
                    "an ephemeral subscription takes no acks; use Flow".into(),
                );
                return s.reply(id, e.to_message()).await;
            }
            None if id != 0 => {
                let e = BrokerError::UnknownSubscription(self.subscription_id);
                return s.reply(id, e.to_message()).await;
            }
            _ => return Ok(()),
        };
        match h.ack(m, self.kind, self.ranges, id != 0).await {
            // The group is gone (topic deleted, shutting down): say so if
            // asked; the connection itself is fine.
            Err(e) if id != 0 => s.reply(id, e.to_message()).await,
            Err(_) | Ok(None) => Ok(()),
            Ok(Some(persisted)) => {
                let outbox = s.outbox.clone();
                s.later(id, async move {
                    let r = persisted.await.unwrap_or(Err(BrokerError::ShuttingDown));
                    // The Ok lets the client forget these offsets: a
                    // delivery of them queued before the ack took effect
                    // must reach it first.
                    outbox.pushes_taken().await;
                    r.map(|_| Message::Ok)
                })
            }
        }
    }
}

impl Handler for Flow {
    fn needs(&self) -> Need<'_> {
        Need::Nothing
    }

    async fn handle(self, s: &mut Session, _id: u64) -> Result<(), Close> {
        if let Some(Sub::Ephemeral { credit, window, .. }) = s.subs.get(&self.subscription_id) {
            credit.grant(self.messages, self.bytes, *window);
        }
        Ok(())
    }
}
