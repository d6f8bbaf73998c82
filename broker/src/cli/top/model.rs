//! What `herald top` shows, computed from two scrapes a second apart:
//! totals from the newer one, rates from the difference.

use std::collections::BTreeMap;
use std::time::Instant;

use super::parse::Sample;

/// One topic's numbers in one scrape.
#[derive(Debug, Default, Clone)]
pub struct TopicNums {
    pub records: f64,
    pub bytes: f64,
    pub delivered: f64,
    pub size: f64,
    pub segments: f64,
    /// fsync-latency buckets: `(upper bound, cumulative count)`.
    pub fsync: Vec<(f64, f64)>,
}

/// One group's numbers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupNums {
    pub topic: String,
    pub group: String,
    pub lag: f64,
    pub in_flight: f64,
    pub members: f64,
    pub redelivered: f64,
    pub dead_lettered: f64,
}

/// One scrape, read.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub topics: BTreeMap<String, TopicNums>,
    pub groups: Vec<GroupNums>,
    /// `(transport, state) -> count`.
    pub connections: BTreeMap<(String, String), f64>,
    pub memory_used: f64,
    pub memory_budget: f64,
    pub disk_free: Option<f64>,
    pub open_fds: Option<f64>,
    pub errors: f64,
    pub ready: bool,
}

impl Scrape {
    /// Picks what the view needs out of the samples.
    pub fn from_samples(samples: &[Sample]) -> Scrape {
        let mut s = Scrape::default();
        let mut groups: BTreeMap<(String, String), GroupNums> = BTreeMap::new();
        for x in samples {
            let topic = || x.label("topic").unwrap_or("(all)").to_owned();
            match x.name.as_str() {
                "herald_topic_appended_records_total" => {
                    s.topics.entry(topic()).or_default().records = x.value
                }
                "herald_topic_appended_bytes_total" => {
                    s.topics.entry(topic()).or_default().bytes = x.value
                }
                "herald_topic_delivered_records_total" => {
                    s.topics.entry(topic()).or_default().delivered = x.value
                }
                "herald_topic_size_bytes" => s.topics.entry(topic()).or_default().size = x.value,
                "herald_topic_segments" => s.topics.entry(topic()).or_default().segments = x.value,
                "herald_topic_fsync_duration_seconds_bucket" => {
                    let le = x.label("le").and_then(parse_le).unwrap_or(f64::INFINITY);
                    s.topics
                        .entry(topic())
                        .or_default()
                        .fsync
                        .push((le, x.value));
                }
                "herald_group_lag_records" => group(&mut groups, x).lag = x.value,
                "herald_group_in_flight_records" => group(&mut groups, x).in_flight = x.value,
                "herald_group_members" => group(&mut groups, x).members = x.value,
                "herald_group_redelivered_records_total" => {
                    group(&mut groups, x).redelivered = x.value
                }
                "herald_group_dead_lettered_records_total" => {
                    group(&mut groups, x).dead_lettered = x.value
                }
                "herald_connections" => {
                    let t = x.label("transport").unwrap_or("?").to_owned();
                    let st = x.label("state").unwrap_or("?").to_owned();
                    s.connections.insert((t, st), x.value);
                }
                "herald_memory_used_bytes" => s.memory_used = x.value,
                "herald_memory_budget_bytes" => s.memory_budget = x.value,
                "herald_disk_free_bytes" => s.disk_free = Some(x.value),
                "process_open_fds" => s.open_fds = Some(x.value),
                "herald_errors_total" => s.errors += x.value,
                "herald_ready" => s.ready = x.value >= 1.0,
                _ => {}
            }
        }
        s.groups = groups.into_values().collect();
        s
    }
}

/// The row of the sample's group (labels off: one row, "(all)").
fn group<'a>(
    groups: &'a mut BTreeMap<(String, String), GroupNums>,
    x: &Sample,
) -> &'a mut GroupNums {
    let key = (
        x.label("topic").unwrap_or("(all)").to_owned(),
        x.label("group").unwrap_or("(all)").to_owned(),
    );
    groups.entry(key.clone()).or_insert_with(|| GroupNums {
        topic: key.0,
        group: key.1,
        ..GroupNums::default()
    })
}

fn parse_le(v: &str) -> Option<f64> {
    if v == "+Inf" {
        Some(f64::INFINITY)
    } else {
        v.parse().ok()
    }
}

/// A topic's line in the view.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicLine {
    pub name: String,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    pub delivered_per_sec: f64,
    pub records: f64,
    pub size: f64,
    pub segments: f64,
    /// The 99th percentile of the fsyncs since the last refresh (an upper
    /// bucket bound), if there were any.
    pub fsync_p99: Option<f64>,
}

/// Everything one refresh shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Busiest first (records per second, then name).
    pub topics: Vec<TopicLine>,
    /// Biggest lag first.
    pub groups: Vec<GroupNums>,
    pub connections: Vec<(String, String, f64)>,
    pub memory_used: f64,
    pub memory_budget: f64,
    pub disk_free: Option<f64>,
    pub open_fds: Option<f64>,
    pub errors_per_sec: f64,
    pub ready: bool,
}

impl View {
    /// The view of `now`, with rates against `before` (none on the first
    /// refresh).
    pub fn new(now: &(Instant, Scrape), before: Option<&(Instant, Scrape)>) -> View {
        let (t1, cur) = now;
        let secs = before.map(|(t0, _)| t1.duration_since(*t0).as_secs_f64().max(1e-3));
        let rate = |new: f64, old: Option<f64>| match (secs, old) {
            (Some(s), Some(o)) if new >= o => (new - o) / s,
            _ => 0.0,
        };
        let mut topics: Vec<TopicLine> = cur
            .topics
            .iter()
            .map(|(name, t)| {
                let old = before.and_then(|(_, b)| b.topics.get(name));
                TopicLine {
                    name: name.clone(),
                    records_per_sec: rate(t.records, old.map(|o| o.records)),
                    bytes_per_sec: rate(t.bytes, old.map(|o| o.bytes)),
                    delivered_per_sec: rate(t.delivered, old.map(|o| o.delivered)),
                    records: t.records,
                    size: t.size,
                    segments: t.segments,
                    fsync_p99: old.and_then(|o| p99(&o.fsync, &t.fsync)),
                }
            })
            .collect();
        topics.sort_by(|a, b| {
            b.records_per_sec
                .total_cmp(&a.records_per_sec)
                .then_with(|| b.records.total_cmp(&a.records))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut groups = cur.groups.clone();
        groups.sort_by(|a, b| b.lag.total_cmp(&a.lag).then_with(|| a.topic.cmp(&b.topic)));
        let errors_per_sec = rate(cur.errors, before.map(|(_, b)| b.errors));
        View {
            topics,
            groups,
            connections: cur
                .connections
                .iter()
                .map(|((t, s), n)| (t.clone(), s.clone(), *n))
                .collect(),
            memory_used: cur.memory_used,
            memory_budget: cur.memory_budget,
            disk_free: cur.disk_free,
            open_fds: cur.open_fds,
            errors_per_sec,
            ready: cur.ready,
        }
    }
}

/// The upper bound of the bucket holding the 99th percentile of the
/// observations made between two cumulative bucket lists.
fn p99(old: &[(f64, f64)], new: &[(f64, f64)]) -> Option<f64> {
    if old.len() != new.len() {
        return None;
    }
    let deltas: Vec<(f64, f64)> = new
        .iter()
        .zip(old)
        .map(|((le, n), (_, o))| (*le, (n - o).max(0.0)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    deltas
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::parse::parse;

    #[test]
    fn rates_order_and_percentiles() {
        let a = "herald_topic_appended_records_total{topic=\"a\"} 10\n\
                 herald_topic_appended_records_total{topic=\"b\"} 10\n\
                 herald_topic_fsync_duration_seconds_bucket{topic=\"b\",le=\"0.001\"} 0\n\
                 herald_topic_fsync_duration_seconds_bucket{topic=\"b\",le=\"0.01\"} 0\n\
                 herald_topic_fsync_duration_seconds_bucket{topic=\"b\",le=\"+Inf\"} 0\n\
                 herald_group_lag_records{topic=\"a\",group=\"g\"} 5\n\
                 herald_group_lag_records{topic=\"b\",group=\"h\"} 50\n\
                 herald_group_members{topic=\"b\",group=\"h\"} 2\n";
        let b = a
            .replace("{topic=\"b\"} 10", "{topic=\"b\"} 210")
            .replace("le=\"0.001\"} 0", "le=\"0.001\"} 90")
            .replace("le=\"0.01\"} 0", "le=\"0.01\"} 100")
            .replace("le=\"+Inf\"} 0", "le=\"+Inf\"} 100");
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(2);
        let s0 = (t0, Scrape::from_samples(&parse(a).unwrap()));
        let s1 = (t1, Scrape::from_samples(&parse(&b).unwrap()));
        let v = View::new(&s1, Some(&s0));
        assert_eq!(v.topics[0].name, "b");
        assert_eq!(v.topics[0].records_per_sec, 100.0);
        assert_eq!(v.topics[0].fsync_p99, Some(0.01));
        assert_eq!(v.topics[1].records_per_sec, 0.0);
        assert_eq!(v.groups[0].group, "h");
        assert_eq!(v.groups[0].members, 2.0);
        assert_eq!(v.groups[1].lag, 5.0);
        // The first refresh has no rates.
        assert_eq!(View::new(&s1, None).topics[0].records_per_sec, 0.0);
    }
}
