//! Dead letters: a message delivered `max_deliveries` times without an ack
//! is copied to the topic's dead-letter topic (`<topic>.dlq`), with headers
//! that say where it came from and why, and the group moves on.

use std::sync::Arc;

use herald_protocol::{BatchBuilder, RecordRef};

use crate::topic::Topic;
use crate::BrokerError;

/// Header names put on dead letters.
pub const H_TOPIC: &str = "herald-dlq-topic";
pub const H_GROUP: &str = "herald-dlq-group";
pub const H_OFFSET: &str = "herald-dlq-original-offset";
pub const H_DELIVERIES: &str = "herald-dlq-deliveries";
pub const H_REASON: &str = "herald-dlq-reason";

/// Copies offsets `first..=last` of `topic` to its dead-letter topic and
/// waits until the copy is durable.
pub async fn forward(
    topic: &Arc<Topic>,
    suffix: &str,
    group: &str,
    first: u64,
    last: u64,
    deliveries: u32,
) -> Result<(), BrokerError> {
    let reg = topic.registry().ok_or(BrokerError::ShuttingDown)?;
    let dlq_name = format!("{}{}", topic.name, suffix);
    let dlq = reg.for_publish_internal(&dlq_name)?;
    let mut next = first;
    while next <= last {
        let batches = topic.log.read(next, 1 << 20, (last - next + 1) as u32)?;
        if batches.is_empty() {
            break;
        }
        let mut builder = BatchBuilder::new();
        let deliveries_s = deliveries.to_string();
        for b in &batches {
            for r in b.records() {
                if r.offset < next || r.offset > last {
                    continue;
                }
                let off = r.offset.to_string();
                let mut headers: Vec<(&str, &[u8])> = r.headers().collect();
                headers.push((H_TOPIC, topic.name.as_bytes()));
                headers.push((H_GROUP, group.as_bytes()));
                headers.push((H_OFFSET, off.as_bytes()));
                headers.push((H_DELIVERIES, deliveries_s.as_bytes()));
                headers.push((H_REASON, b"max deliveries exceeded"));
                builder.push(&RecordRef {
                    key: &r.key,
                    headers: &headers,
                    payload: &r.payload,
                    timestamp: r.timestamp,
                });
            }
            next = b.last_offset() + 1;
        }
        if !builder.is_empty() {
            let bytes = builder.finish(0, 0);
            let batch = herald_protocol::Batch::validate(bytes)
                .map_err(|e| BrokerError::Internal(e.to_string()))?;
            dlq.log.append(batch).await?;
        }
    }
    Ok(())
}
