//! Writes a [`Snapshot`] in the Prometheus text format through
//! `prometheus-client`: a collector over the snapshot, so the crate does
//! the naming (`_total`, unit suffixes), the `# HELP`/`# TYPE` lines, the
//! label escaping and the histogram layout. docs/operations.md lists every
//! metric written here; a name changed here must change there (and in
//! docs/grafana/herald.json).

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::HistogramSnapshot;
use super::snapshot::{GroupRow, Snapshot, TopicRow};

/// Encodes `snap`.
pub fn text(snap: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snap)));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// One metric family: its descriptor, then one sample per label set.
fn family<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, T)>,
    mut write: impl FnMut(&mut MetricEncoder, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, v) in rows {
        let mut sample = m.encode_family(&labels)?;
        write(&mut sample, &v)?;
    }
    Ok(())
}

fn counter(m: &mut MetricEncoder, v: &u64) -> Result<(), Error> {
    m.encode_counter::<NoLabelSet, _, u64>(v, None)
}

fn gauge(m: &mut MetricEncoder, v: &i64) -> Result<(), Error> {
    m.encode_gauge(v)
}

fn histogram(m: &mut MetricEncoder, h: &HistogramSnapshot) -> Result<(), Error> {
    m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SnapshotCollector {
    fn topic_labels(&self, topic: &str) -> Labels {
        if self.0.labelled {
            vec![("topic", topic.to_owned())]
        } else {
            Vec::new()
        }
    }

    fn group_labels(&self, topic: &str, group: &str) -> Labels {
        if self.0.labelled {
            vec![("topic", topic.to_owned()), ("group", group.to_owned())]
        } else {
            Vec::new()
        }
    }

    /// One per-topic family, from `f` of each row.
    fn topics<T>(
        &self,
        enc: &mut DescriptorEncoder,
        (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
        f: impl Fn(&TopicRow) -> T,
        write: impl FnMut(&mut MetricEncoder, &T) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let rows = self
            .0
            .topics
            .iter()
            .map(|(t, row)| (self.topic_labels(t), f(row)));
        family(enc, name, help, unit, kind, rows, write)
    }

    /// One per-group family.
    fn groups(
        &self,
        enc: &mut DescriptorEncoder,
        (name, help, kind): (&str, &str, MetricType),
        f: impl Fn(&GroupRow) -> Option<u64>,
    ) -> Result<(), Error> {
        let rows = self
            .0
            .groups
            .iter()
            .filter_map(|((t, g), row)| Some((self.group_labels(t, g), f(row)?)));
        family(enc, name, help, None, kind, rows, |m, v| match kind {
            MetricType::Counter => counter(m, v),
            _ => gauge(m, &clamp(*v)),
        })
    }

    fn encode_topics(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let s = &self.0;
        family(
            enc,
            "herald_topics",
            "Topics the broker serves (internal ones included).",
            None,
            Gauge,
            [(Vec::new(), clamp(s.topic_count))],
            gauge,
        )?;
        let t = |name, help, unit, kind| (name, help, unit, kind);
        self.topics(
            enc,
            t(
                "herald_topic_appends",
                "Record batches appended (confirmed writes; duplicates not counted).",
                None,
                Counter,
            ),
            |r| r.appends,
            counter,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_appended_records",
                "Records appended.",
                None,
                Counter,
            ),
            |r| r.records,
            counter,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_appended",
                "Bytes of record batches appended, as stored.",
                Some(Unit::Bytes),
                Counter,
            ),
            |r| r.bytes,
            counter,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_delivered_records",
                "Records handed to consumer-group members (redeliveries included).",
                None,
                Counter,
            ),
            |r| r.delivered,
            counter,
        )?;
        self.topics(
            enc,
            t("herald_topic_fsync_duration", "Duration of each fdatasync of segment data (group commits under fsync always, interval syncs, segment rolls).", Some(Unit::Seconds), Histogram),
            |r| r.fsync.clone(),
            histogram,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_group_commit_batches",
                "Record batches written per group commit (one write, and one fsync under always).",
                None,
                Histogram,
            ),
            |r| r.group_batches.clone(),
            histogram,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_size",
                "Bytes of the topic's segments on disk.",
                Some(Unit::Bytes),
                Gauge,
            ),
            |r| clamp(r.bytes_on_disk),
            gauge,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_segments",
                "Segment files of the topic.",
                None,
                Gauge,
            ),
            |r| clamp(r.segments),
            gauge,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_torn_tails_truncated",
                "Torn tails cut off when the log was opened (crash recovery).",
                None,
                Counter,
            ),
            |r| r.torn_tails,
            counter,
        )?;
        self.topics(
            enc,
            t(
                "herald_topic_damaged_ranges",
                "Damaged byte ranges in the log not yet accepted by a repair: readers stop there.",
                None,
                Gauge,
            ),
            |r| clamp(r.damaged_ranges),
            gauge,
        )
    }

    fn encode_groups(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        self.groups(
            enc,
            ("herald_group_lag_records", "Records of the topic not yet done by the group (not acknowledged, dead-lettered or skipped).", Gauge),
            |g| Some(g.lag),
        )?;
        self.groups(
            enc,
            (
                "herald_group_in_flight_records",
                "Records delivered to members and not yet acknowledged.",
                Gauge,
            ),
            |g| Some(g.in_flight),
        )?;
        self.groups(
            enc,
            (
                "herald_group_ack_floor",
                "The group's ack floor: every offset below it is done.",
                Gauge,
            ),
            |g| g.ack_floor,
        )?;
        self.groups(
            enc,
            (
                "herald_group_members",
                "Subscriptions that are members of the group now.",
                Gauge,
            ),
            |g| Some(g.members),
        )?;
        self.groups(
            enc,
            (
                "herald_group_redelivered_records",
                "Records delivered again (ack timeout, nack, member gone).",
                Counter,
            ),
            |g| Some(g.redelivered),
        )?;
        self.groups(
            enc,
            (
                "herald_group_dead_lettered_records",
                "Records moved to the dead-letter topic after max deliveries.",
                Counter,
            ),
            |g| Some(g.dead_lettered),
        )
    }

    fn encode_connections(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        let s = &self.0;
        let rows = s.connections.iter().map(|(t, st, n)| {
            (
                vec![("transport", (*t).to_owned()), ("state", (*st).to_owned())],
                *n,
            )
        });
        family(
            enc,
            "herald_connections",
            "Connections now, by transport (tcp, websocket) and state (handshake, open).",
            None,
            Gauge,
            rows,
            gauge,
        )?;
        let rows = s
            .accepted
            .iter()
            .map(|(t, n)| (vec![("transport", (*t).to_owned())], *n));
        family(
            enc,
            "herald_connections_accepted",
            "Connections accepted, by transport.",
            None,
            Counter,
            rows,
            counter,
        )?;
        let rows = s
            .refused
            .iter()
            .map(|(r, n)| (vec![("reason", (*r).to_owned())], *n));
        family(
            enc,
            "herald_handshakes_refused",
            "Handshakes refused, by reason (timeout, protocol, version, auth).",
            None,
            Counter,
            rows,
            counter,
        )?;
        family(
            enc,
            "herald_connections_over_address_cap",
            "Connections closed at once because their address held too many.",
            None,
            Counter,
            [(Vec::new(), s.over_address_cap)],
            counter,
        )?;
        let rows = s
            .frames
            .iter()
            .map(|(t, n)| (vec![("type", t.clone())], *n));
        family(
            enc,
            "herald_frames_received",
            "Request frames read from clients, by frame type.",
            None,
            Counter,
            rows,
            counter,
        )?;
        let rows = s
            .errors
            .iter()
            .map(|(c, n)| (vec![("code", c.clone())], *n));
        family(
            enc,
            "herald_errors",
            "Error replies sent to clients, by error code.",
            None,
            Counter,
            rows,
            counter,
        )
    }

    fn encode_rooms(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        let s = &self.0;
        let one = |v: u64| [(Labels::new(), v)];
        let g = |v: u64| [(Labels::new(), clamp(v))];
        family(
            enc,
            "herald_rooms",
            "Rooms with members.",
            None,
            Gauge,
            g(s.rooms.rooms),
            gauge,
        )?;
        family(
            enc,
            "herald_room_members",
            "Room memberships, over all rooms.",
            None,
            Gauge,
            g(s.rooms.members),
            gauge,
        )?;
        family(
            enc,
            "herald_clients_online",
            "Client ids with at least one connection.",
            None,
            Gauge,
            g(s.rooms.online_clients),
            gauge,
        )?;
        family(
            enc,
            "herald_rooms_damaged",
            "Durable rooms unavailable because their member file is damaged.",
            None,
            Gauge,
            g(s.rooms.damaged),
            gauge,
        )?;
        family(
            enc,
            "herald_room_emits",
            "Emit requests accepted.",
            None,
            Counter,
            one(s.emits),
            counter,
        )?;
        family(
            enc,
            "herald_room_deliveries",
            "Room events (room logs and inboxes) delivered to members, in records.",
            None,
            Counter,
            one(s.room_deliveries),
            counter,
        )?;
        family(
            enc,
            "herald_room_presence_events",
            "Presence events (join, leave, connect, disconnect) recorded.",
            None,
            Counter,
            one(s.presence_events),
            counter,
        )
    }

    fn encode_process(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        use MetricType::Gauge;
        let s = &self.0;
        let g = |v: u64| [(Labels::new(), clamp(v))];
        family(
            enc,
            "herald_ready",
            "1 once recovery finished (see /readyz), else 0.",
            None,
            Gauge,
            g(u64::from(s.ready)),
            gauge,
        )?;
        family(
            enc,
            "herald_memory_budget",
            "The memory budget for record data (--max-memory).",
            Some(Unit::Bytes),
            Gauge,
            g(s.memory_limit),
            gauge,
        )?;
        family(
            enc,
            "herald_memory_used",
            "Record data held in memory now, counted against the budget.",
            Some(Unit::Bytes),
            Gauge,
            g(s.memory_used),
            gauge,
        )?;
        family(
            enc,
            "herald_memory_queued",
            "Bytes of deliveries queued for sockets (part of the used memory).",
            Some(Unit::Bytes),
            Gauge,
            g(s.memory_queued),
            gauge,
        )?;
        if let Some(v) = s.open_files {
            family(
                enc,
                "process_open_fds",
                "Open file descriptors.",
                None,
                Gauge,
                g(v),
                gauge,
            )?;
        }
        if let Some(v) = s.max_open_files {
            family(
                enc,
                "process_max_fds",
                "The limit on open file descriptors.",
                None,
                Gauge,
                g(v),
                gauge,
            )?;
        }
        if let Some(v) = s.disk_free {
            family(
                enc,
                "herald_disk_free",
                "Bytes available on the data folder's file system.",
                Some(Unit::Bytes),
                Gauge,
                g(v),
                gauge,
            )?;
        }
        if let Some(v) = s.disk_total {
            family(
                enc,
                "herald_disk_size",
                "Size of the data folder's file system.",
                Some(Unit::Bytes),
                Gauge,
                g(v),
                gauge,
            )?;
        }
        Ok(())
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        self.encode_process(&mut enc)?;
        self.encode_topics(&mut enc)?;
        self.encode_groups(&mut enc)?;
        self.encode_connections(&mut enc)?;
        self.encode_rooms(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut s = Snapshot {
            labelled: true,
            ..Snapshot::default()
        };
        let mut row = TopicRow {
            records: 7,
            bytes: 700,
            ..TopicRow::default()
        };
        let h = super::super::histogram::AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(0.002);
        h.add_to(&mut row.fsync);
        s.topics.insert("a\"b".into(), row);
        let text = text(s);
        assert!(
            text.contains("herald_topic_appended_records_total{topic=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("herald_topic_appended_bytes_total{topic=\"a\\\"b\"} 700\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE herald_topic_fsync_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_topic_fsync_duration_seconds_bucket{topic=\"a\\\"b\",le=\"0.01\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("herald_memory_budget_bytes 0\n"), "{text}");
    }
}
