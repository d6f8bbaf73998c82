//! Publish: append a batch to a topic; the confirm leaves once durable, in
//! the order the publishes came.

use herald_protocol::{Batch, ErrorCode, Message, PublishOk};

use super::Handler;
use crate::auth::Need;
use crate::session::{Close, Session};
use crate::storage::StorageError;
use crate::BrokerError;

pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) batch: Batch,
}

impl Handler for Publish {
    fn needs(&self) -> Need<'_> {
        Need::Publish(&self.topic)
    }

    async fn handle(self, s: &mut Session, id: u64) -> Result<(), Close> {
        let max_batch = s.shared.config.max_frame_bytes - 1024;
        if self.batch.len_bytes() > max_batch {
            let e = Message::error(
                ErrorCode::TooLarge,
                format!(
                    "batch of {} bytes exceeds {max_batch}",
                    self.batch.len_bytes()
                ),
            );
            return s.reply(id, e).await;
        }
        let t = match s.shared.registry.for_publish(&self.topic) {
            Ok(t) => t,
            Err(e) => return s.reply(id, e.to_message()).await,
        };
        // Queue now, in arrival order; await the confirm in `publishes` so
        // later frames keep flowing.
        let queued = t.log.enqueue(self.batch).await;
        let shutdown = s.shared.shutdown.clone();
        s.publishes.push_back(Box::pin(async move {
            let r = match queued {
                Ok(p) => p.wait().await,
                Err(e) => Err(e),
            };
            let m = match r {
                Ok(o) => {
                    if !o.duplicate {
                        t.record_appended(o.count);
                    }
                    Message::PublishOk(PublishOk {
                        base_offset: o.base_offset,
                        count: o.count,
                        duplicate: o.duplicate,
                    })
                }
                // The log closed under the publish and the broker is not
                // stopping: the topic was deleted.
                Err(StorageError::Closed) if !shutdown.is_cancelled() => {
                    BrokerError::UnknownTopic(t.name.clone()).to_message()
                }
                Err(e) => BrokerError::from(e).to_message(),
            };
            (id, m)
        }));
        Ok(())
    }
}
