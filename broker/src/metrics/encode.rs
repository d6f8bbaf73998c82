//! Writes a [`Snapshot`] in the Prometheus text format through
//! `prometheus-client`: a collector over the snapshot, so the crate does
//! the naming (`_total`, unit suffixes), the `# HELP`/`# TYPE` lines, the
//! label escaping and the histogram layout. docs/operations.md lists every
//! metric written here; a name changed here must change there (and in
//! docs/grafana/herald.json).

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
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

/// A metric family: its name (without the `_total` or unit suffix, which
/// the encoder adds), help text, unit and type.
struct Desc(&'static str, &'static str, Option<Unit>, MetricType);

use MetricType::{Counter, Gauge, Histogram};

/// Writes family `d` with one sample per label set.
fn series(
    enc: &mut DescriptorEncoder,
    d: &Desc,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(d.0, d.1, d.2.as_ref(), d.3)?;
    for (labels, v) in rows {
        let mut sample = m.encode_family(&labels)?;
        match d.3 {
            Counter => sample.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            _ => sample.encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX))?,
        }
    }
    Ok(())
}

/// Family `d` with one unlabelled sample.
fn single(enc: &mut DescriptorEncoder, d: &Desc, v: u64) -> Result<(), Error> {
    series(enc, d, [(Labels::new(), v)])
}

/// Family `d` with one sample per value of label `key`.
fn by<S: ToString>(
    enc: &mut DescriptorEncoder,
    d: &Desc,
    key: &'static str,
    rows: &[(S, u64)],
) -> Result<(), Error> {
    series(
        enc,
        d,
        rows.iter().map(|(k, v)| (vec![(key, k.to_string())], *v)),
    )
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

    /// A per-topic family of `f` of each row.
    fn topics(
        &self,
        enc: &mut DescriptorEncoder,
        d: Desc,
        f: impl Fn(&TopicRow) -> u64,
    ) -> Result<(), Error> {
        let rows = self
            .0
            .topics
            .iter()
            .map(|(t, r)| (self.topic_labels(t), f(r)));
        series(enc, &d, rows)
    }

    /// A per-topic histogram.
    fn topic_histograms(
        &self,
        enc: &mut DescriptorEncoder,
        d: Desc,
        f: impl Fn(&TopicRow) -> &HistogramSnapshot,
    ) -> Result<(), Error> {
        let mut m = enc.encode_descriptor(d.0, d.1, d.2.as_ref(), d.3)?;
        for (t, row) in &self.0.topics {
            let labels = self.topic_labels(t);
            let h = f(row);
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    /// A per-group family of `f` of each row (rows where it is `None` left
    /// out).
    fn groups(
        &self,
        enc: &mut DescriptorEncoder,
        d: Desc,
        f: impl Fn(&GroupRow) -> Option<u64>,
    ) -> Result<(), Error> {
        let rows = self
            .0
            .groups
            .iter()
            .filter_map(|((t, g), row)| Some((self.group_labels(t, g), f(row)?)));
        series(enc, &d, rows)
    }

    fn encode_topics(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let d = Desc(
            "herald_topics",
            "Topics the broker serves (internal ones included).",
            None,
            Gauge,
        );
        single(enc, &d, self.0.topic_count)?;
        let d = Desc(
            "herald_topic_appends",
            "Record batches appended (confirmed writes; duplicates not counted).",
            None,
            Counter,
        );
        self.topics(enc, d, |r| r.appends)?;
        let d = Desc(
            "herald_topic_appended_records",
            "Records appended.",
            None,
            Counter,
        );
        self.topics(enc, d, |r| r.records)?;
        let d = Desc(
            "herald_topic_appended",
            "Bytes of record batches appended, as stored.",
            Some(Unit::Bytes),
            Counter,
        );
        self.topics(enc, d, |r| r.bytes)?;
        let d = Desc(
            "herald_topic_delivered_records",
            "Records handed to subscribers: group members (redeliveries included) and ephemeral subscriptions.",
            None,
            Counter,
        );
        self.topics(enc, d, |r| r.delivered)?;
        let d = Desc("herald_topic_fsync_duration", "Duration of each fdatasync of segment data (group commits under fsync always, interval syncs, segment rolls).", Some(Unit::Seconds), Histogram);
        self.topic_histograms(enc, d, |r| &r.fsync)?;
        let d = Desc(
            "herald_topic_group_commit_batches",
            "Record batches written per group commit (one write, and one fsync under always).",
            None,
            Histogram,
        );
        self.topic_histograms(enc, d, |r| &r.group_batches)?;
        let d = Desc(
            "herald_topic_size",
            "Bytes of the topic's segments on disk.",
            Some(Unit::Bytes),
            Gauge,
        );
        self.topics(enc, d, |r| r.bytes_on_disk)?;
        let d = Desc(
            "herald_topic_segments",
            "Segment files of the topic.",
            None,
            Gauge,
        );
        self.topics(enc, d, |r| r.segments)?;
        let d = Desc(
            "herald_topic_torn_tails_truncated",
            "Torn tails cut off when the log was opened (crash recovery).",
            None,
            Counter,
        );
        self.topics(enc, d, |r| r.torn_tails)?;
        let d = Desc(
            "herald_topic_damaged_ranges",
            "Damaged byte ranges in the log not yet accepted by a repair: readers stop there.",
            None,
            Gauge,
        );
        self.topics(enc, d, |r| r.damaged_ranges)
    }

    fn encode_groups(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let d = Desc("herald_group_lag_records", "Records of the topic not yet done by the group (not acknowledged, dead-lettered or skipped).", None, Gauge);
        self.groups(enc, d, |g| Some(g.lag))?;
        let d = Desc(
            "herald_group_in_flight_records",
            "Records delivered to members and not yet acknowledged.",
            None,
            Gauge,
        );
        self.groups(enc, d, |g| Some(g.in_flight))?;
        let d = Desc(
            "herald_group_ack_floor",
            "The group's ack floor: every offset below it is done.",
            None,
            Gauge,
        );
        self.groups(enc, d, |g| g.ack_floor)?;
        let d = Desc(
            "herald_group_members",
            "Subscriptions that are members of the group now.",
            None,
            Gauge,
        );
        self.groups(enc, d, |g| Some(g.members))?;
        let d = Desc(
            "herald_group_redelivered_records",
            "Records delivered again (ack timeout, nack, member gone).",
            None,
            Counter,
        );
        self.groups(enc, d, |g| Some(g.redelivered))?;
        let d = Desc(
            "herald_group_dead_lettered_records",
            "Records moved to the dead-letter topic after max deliveries.",
            None,
            Counter,
        );
        self.groups(enc, d, |g| Some(g.dead_lettered))
    }

    fn encode_connections(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        let d = Desc(
            "herald_connections",
            "Connections now, by transport (tcp, websocket) and state (handshake, open).",
            None,
            Gauge,
        );
        let rows = s.connections.iter().map(|(t, st, n)| {
            let labels = vec![("transport", (*t).to_owned()), ("state", (*st).to_owned())];
            (labels, u64::try_from(*n).unwrap_or(0))
        });
        series(enc, &d, rows)?;
        let d = Desc(
            "herald_connections_accepted",
            "Connections accepted, by transport.",
            None,
            Counter,
        );
        by(enc, &d, "transport", &s.accepted)?;
        let d = Desc(
            "herald_handshakes_refused",
            "Handshakes refused, by reason (timeout, protocol, version, auth).",
            None,
            Counter,
        );
        by(enc, &d, "reason", &s.refused)?;
        let d = Desc(
            "herald_connections_over_address_cap",
            "Connections closed at once because their address held too many.",
            None,
            Counter,
        );
        single(enc, &d, s.over_address_cap)?;
        let d = Desc(
            "herald_frames_received",
            "Request frames read from clients, by frame type.",
            None,
            Counter,
        );
        by(enc, &d, "type", &s.frames)?;
        let d = Desc(
            "herald_errors",
            "Error replies sent to clients, by error code.",
            None,
            Counter,
        );
        by(enc, &d, "code", &s.errors)
    }

    fn encode_rooms(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        single(
            enc,
            &Desc("herald_rooms", "Rooms with members.", None, Gauge),
            s.rooms.rooms,
        )?;
        single(
            enc,
            &Desc(
                "herald_room_members",
                "Room memberships, over all rooms.",
                None,
                Gauge,
            ),
            s.rooms.members,
        )?;
        single(
            enc,
            &Desc(
                "herald_clients_online",
                "Client ids with at least one connection.",
                None,
                Gauge,
            ),
            s.rooms.online_clients,
        )?;
        single(
            enc,
            &Desc(
                "herald_rooms_damaged",
                "Durable rooms unavailable because their member file is damaged.",
                None,
                Gauge,
            ),
            s.rooms.damaged,
        )?;
        single(
            enc,
            &Desc(
                "herald_room_positions_damaged",
                "Rooms whose positions file (every member's position) is damaged: their members cannot read them.",
                None,
                Gauge,
            ),
            s.room_positions_damaged,
        )?;
        single(
            enc,
            &Desc(
                "herald_room_emits",
                "Emit requests accepted.",
                None,
                Counter,
            ),
            s.emits,
        )?;
        single(
            enc,
            &Desc(
                "herald_room_deliveries",
                "Room events (room logs and inboxes) delivered to members, in records.",
                None,
                Counter,
            ),
            s.room_deliveries,
        )?;
        single(
            enc,
            &Desc(
                "herald_room_presence_events",
                "Presence events (join, leave, connect, disconnect) recorded.",
                None,
                Counter,
            ),
            s.presence_events,
        )
    }

    fn encode_process(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        single(
            enc,
            &Desc(
                "herald_ready",
                "1 once recovery finished (see /readyz), else 0.",
                None,
                Gauge,
            ),
            u64::from(s.ready),
        )?;
        single(
            enc,
            &Desc(
                "herald_memory_budget",
                "The memory budget for record data (--max-memory).",
                Some(Unit::Bytes),
                Gauge,
            ),
            s.memory_limit,
        )?;
        single(
            enc,
            &Desc(
                "herald_memory_used",
                "Record data held in memory now, counted against the budget.",
                Some(Unit::Bytes),
                Gauge,
            ),
            s.memory_used,
        )?;
        single(
            enc,
            &Desc(
                "herald_memory_queued",
                "Bytes of deliveries queued for sockets (part of the used memory).",
                Some(Unit::Bytes),
                Gauge,
            ),
            s.memory_queued,
        )?;
        let optional = [
            (
                Desc("process_open_fds", "Open file descriptors.", None, Gauge),
                s.open_files,
            ),
            (
                Desc(
                    "process_max_fds",
                    "The limit on open file descriptors.",
                    None,
                    Gauge,
                ),
                s.max_open_files,
            ),
            (
                Desc(
                    "herald_disk_free",
                    "Bytes available on the data folder's file system.",
                    Some(Unit::Bytes),
                    Gauge,
                ),
                s.disk_free,
            ),
            (
                Desc(
                    "herald_disk_size",
                    "Size of the data folder's file system.",
                    Some(Unit::Bytes),
                    Gauge,
                ),
                s.disk_total,
            ),
        ];
        for (d, v) in optional {
            if let Some(v) = v {
                single(enc, &d, v)?;
            }
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
