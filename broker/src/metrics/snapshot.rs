//! What one scrape reads: every number `/metrics` shows, gathered from the
//! state's owners at scrape time. Nothing here runs on a publish or a
//! delivery; its cost is paid by the scraper (one message to each group
//! actor, one lock of each log's segment list and of the rooms).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::histogram::HistogramSnapshot;
use super::system;
use super::{ConnState, Metrics, Refusal, Transport, ERROR_SLOTS};
use crate::rooms::RoomGauges;
use crate::session::Shared;
use crate::topic::Topic;

/// How long a scrape waits for one topic's group actors to answer; a busy
/// actor's numbers are left out of that scrape rather than holding it up.
const GROUP_INFO_TIMEOUT: Duration = Duration::from_secs(2);

/// The label value standing for every inbox topic (one per client: never
/// labelled one by one).
pub(super) const INBOX_TOPICS: &str = "_inbox.*";
/// The label value standing for every member group of a room log or an
/// inbox (one per client).
pub(super) const MEMBER_GROUPS: &str = "_members";

/// One topic's numbers (or the sum over several, when labels are off).
#[derive(Debug, Default, Clone)]
pub struct TopicRow {
    pub appends: u64,
    pub records: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub bytes_on_disk: u64,
    pub segments: u64,
    pub torn_tails: u64,
    pub damaged_ranges: u64,
    pub fsync: HistogramSnapshot,
    pub group_batches: HistogramSnapshot,
}

/// One group's numbers (or a sum).
#[derive(Debug, Default, Clone)]
pub struct GroupRow {
    pub lag: u64,
    pub in_flight: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub members: u64,
    /// Only for a single group: a sum of floors means nothing.
    pub ack_floor: Option<u64>,
}

/// The whole broker at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Whether `topic`/`group` labels are on (see
    /// `BrokerConfig::metrics_topic_labels`).
    pub labelled: bool,
    /// By topic label ("" when unlabelled).
    pub topics: BTreeMap<String, TopicRow>,
    /// By (topic label, group label).
    pub groups: BTreeMap<(String, String), GroupRow>,
    pub topic_count: u64,
    /// `(transport, state, count)`.
    pub connections: Vec<(&'static str, &'static str, i64)>,
    pub accepted: Vec<(&'static str, u64)>,
    pub refused: Vec<(&'static str, u64)>,
    pub over_address_cap: u64,
    /// `(frame type, count)`, types seen only.
    pub frames: Vec<(String, u64)>,
    /// `(error code, count)`, codes seen only.
    pub errors: Vec<(String, u64)>,
    pub rooms: RoomGauges,
    pub emits: u64,
    pub presence_events: u64,
    /// Room logs whose positions file (every member's position) is
    /// damaged.
    pub room_positions_damaged: u64,
    /// Records delivered from room logs and inboxes.
    pub room_deliveries: u64,
    pub memory_limit: u64,
    pub memory_used: u64,
    pub memory_queued: u64,
    pub open_files: Option<u64>,
    pub max_open_files: Option<u64>,
    pub disk_free: Option<u64>,
    pub disk_total: Option<u64>,
    pub ready: bool,
}

/// The topic label for `name`: itself, [`INBOX_TOPICS`] for an inbox, ""
/// when labels are off.
fn topic_label(name: &str, labelled: bool) -> String {
    if !labelled {
        String::new()
    } else if name.starts_with(crate::rooms::inbox::INBOX_PREFIX) {
        INBOX_TOPICS.to_owned()
    } else {
        name.to_owned()
    }
}

/// Whether `topic`'s groups are one per client (room logs and inboxes).
fn member_groups(topic: &str) -> bool {
    topic.starts_with(crate::rooms::inbox::INBOX_PREFIX)
        || topic.starts_with(crate::rooms::log::ROOM_PREFIX)
}

impl Snapshot {
    /// Reads everything now.
    pub async fn gather(shared: &Arc<Shared>) -> Snapshot {
        let labelled = shared.config.metrics_topic_labels;
        let mut s = Snapshot {
            labelled,
            ready: shared.ready.is_recovered(),
            ..Snapshot::default()
        };
        let topics = shared.registry.list();
        s.topic_count = topics.len() as u64;
        for t in &topics {
            s.add_topic(t, labelled);
            if member_groups(&t.name) {
                s.room_deliveries += t.delivered();
            }
            if t.positions_damaged() {
                s.room_positions_damaged += 1;
            }
        }
        for t in &topics {
            s.add_groups(t, labelled).await;
        }
        s.add_events(&shared.metrics);
        s.rooms = shared.rooms.gauges();
        s.emits = shared.rooms.emits();
        s.presence_events = shared.rooms.presence_events();
        let memory = shared.registry.memory();
        s.memory_limit = memory.limit() as u64;
        s.memory_used = memory.used() as u64;
        s.memory_queued = memory.queued() as u64;
        s.open_files = system::open_files();
        s.max_open_files = system::max_open_files();
        if let Some((free, total)) = system::disk_space(&shared.config.data_dir) {
            s.disk_free = Some(free);
            s.disk_total = Some(total);
        }
        s
    }

    fn add_topic(&mut self, t: &Topic, labelled: bool) {
        let c = t.log.counters();
        let stats = t.log.stats();
        let row = self
            .topics
            .entry(topic_label(&t.name, labelled))
            .or_default();
        row.appends += c.appends.load(Ordering::Relaxed);
        row.records += c.records.load(Ordering::Relaxed);
        row.bytes += c.bytes.load(Ordering::Relaxed);
        row.delivered += t.delivered();
        row.bytes_on_disk += stats.bytes_on_disk;
        row.segments += u64::from(stats.segments);
        row.torn_tails += c.torn_tails_truncated.load(Ordering::Relaxed);
        // Ranges a repair accepted are skipped by readers: not damage that
        // still stops anyone.
        let damaged = t
            .log
            .damaged_ranges()
            .iter()
            .filter(|d| !d.accepted)
            .count();
        row.damaged_ranges += damaged as u64;
        c.fsync_seconds.add_to(&mut row.fsync);
        c.group_batches.add_to(&mut row.group_batches);
    }

    async fn add_groups(&mut self, t: &Arc<Topic>, labelled: bool) {
        let infos = match tokio::time::timeout(GROUP_INFO_TIMEOUT, t.group_infos()).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) | Err(_) => return,
        };
        let topic = topic_label(&t.name, labelled);
        let pooled = !labelled || member_groups(&t.name);
        for g in infos.into_iter().filter(|g| g.damaged.is_none()) {
            let group = match (labelled, pooled) {
                (false, _) => String::new(),
                (true, true) => MEMBER_GROUPS.to_owned(),
                (true, false) => g.name.clone(),
            };
            let row = self.groups.entry((topic.clone(), group)).or_default();
            row.lag += g.lag;
            row.in_flight += g.in_flight;
            row.redelivered += g.redelivered;
            row.dead_lettered += g.dead_lettered;
            row.members += g.members.len() as u64;
            // A group name is unique within its topic: an unpooled row is
            // one group.
            row.ack_floor = (!pooled).then_some(g.ack_floor);
        }
    }

    fn add_events(&mut self, m: &Metrics) {
        for t in Transport::ALL {
            for st in ConnState::ALL {
                let n = m.connections[t as usize][st as usize].load(Ordering::Relaxed);
                self.connections.push((t.label(), st.label(), n));
            }
            self.accepted
                .push((t.label(), m.accepted[t as usize].load(Ordering::Relaxed)));
        }
        for r in Refusal::ALL {
            let n = m.refused[r as usize].load(Ordering::Relaxed);
            self.refused.push((r.label(), n));
        }
        self.over_address_cap = m.over_address_cap.load(Ordering::Relaxed);
        for (b, n) in m.frames.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let name = match herald_protocol::Opcode::from_u8(b as u8) {
                    Ok(op) => format!("{op:?}"),
                    Err(_) => format!("0x{b:02x}"),
                };
                self.frames.push((name, n));
            }
        }
        for (code, n) in m.errors.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let name = if code == ERROR_SLOTS - 1 {
                    "Other".to_owned()
                } else {
                    format!("{:?}", herald_protocol::ErrorCode::from_u16(code as u16))
                };
                self.errors.push((name, n));
            }
        }
    }
}
