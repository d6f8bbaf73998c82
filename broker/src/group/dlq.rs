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
    // Each dead-letter batch must be deliverable: its copies carry five
    // more headers than the originals, so a full source batch made one
    // bigger than a frame (a 1.8 MB publish of 100,000 records became a
    // 56 MB batch no client could read).
    let max_bytes = reg.config().max_deliverable_batch();
    let deliveries_s = deliveries.to_string();
    let mut next = first;
    while next <= last {
        let batches = topic.log.read(next, 1 << 20, (last - next + 1) as u32)?;
        if batches.is_empty() {
            break;
        }
        let mut builder = BatchBuilder::new();
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
                let record = RecordRef {
                    key: &r.key,
                    headers: &headers,
                    payload: &r.payload,
                    timestamp: r.timestamp,
                };
                let size = BatchBuilder::record_size(&record);
                let full = builder.encoded_len() + size > max_bytes
                    || builder.len() == herald_protocol::batch::MAX_RECORDS_PER_BATCH;
                if !builder.is_empty() && full {
                    append(&dlq, std::mem::take(&mut builder)).await?;
                }
                builder.push(&record);
            }
            next = b.last_offset() + 1;
        }
        if !builder.is_empty() {
            append(&dlq, builder).await?;
        }
    }
    Ok(())
}

/// Appends the dead letters in `builder` to the dead-letter topic.
async fn append(dlq: &Topic, mut builder: BatchBuilder) -> Result<(), BrokerError> {
    let batch = herald_protocol::Batch::validate(builder.finish(0, 0))
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    dlq.log.append(batch).await?;
    Ok(())
}
