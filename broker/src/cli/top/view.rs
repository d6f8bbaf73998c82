//! Drawing a [`View`] with ratatui: a header (broker state, connections,
//! memory, disk), the busiest topics and the groups by lag.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;

use super::model::View;
use crate::cli::common::human_bytes;

/// What the header says besides the numbers.
pub struct Status<'a> {
    pub addr: &'a str,
    /// The last scrape's error, if it failed.
    pub error: Option<&'a str>,
}

pub fn draw(f: &mut Frame, view: &View, status: &Status) {
    let [head, topics, groups] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Percentage(55),
        Constraint::Fill(1),
    ])
    .areas(f.area());
    f.render_widget(header(view, status), head);
    f.render_widget(topic_table(view, topics.height), topics);
    f.render_widget(group_table(view, groups.height), groups);
}

fn header<'a>(v: &View, status: &Status<'a>) -> Paragraph<'a> {
    let state = match (status.error, v.ready) {
        (Some(e), _) => format!("UNREACHABLE: {e}"),
        (None, true) => "ready".to_owned(),
        (None, false) => "not ready".to_owned(),
    };
    let conns: Vec<String> = v
        .connections
        .iter()
        .filter(|(_, _, n)| *n > 0.0)
        .map(|(t, s, n)| format!("{t} {s} {n}"))
        .collect();
    let memory = if v.memory_budget > 0.0 {
        format!(
            "{} of {} ({:.0}%)",
            human_bytes(v.memory_used as u64),
            human_bytes(v.memory_budget as u64),
            100.0 * v.memory_used / v.memory_budget
        )
    } else {
        "-".to_owned()
    };
    let lines = vec![
        Line::from(format!(
            "herald top  {}  {state}   (q to quit)",
            status.addr
        )),
        Line::from(format!(
            "connections: {}",
            if conns.is_empty() {
                "none".to_owned()
            } else {
                conns.join(", ")
            }
        )),
        Line::from(format!(
            "memory: {memory}   disk free: {}   open files: {}   errors/s: {:.1}",
            v.disk_free.map_or("-".into(), |d| human_bytes(d as u64)),
            v.open_fds.map_or("-".into(), |n| format!("{n}")),
            v.errors_per_sec
        )),
    ];
    Paragraph::new(lines).block(Block::default().borders(Borders::BOTTOM))
}

fn topic_table(v: &View, height: u16) -> Table<'static> {
    let rows = v
        .topics
        .iter()
        .take(height.saturating_sub(2) as usize)
        .map(|t| {
            Row::new(vec![
                t.name.clone(),
                format!("{:.0}", t.records_per_sec),
                human_bytes(t.bytes_per_sec as u64),
                format!("{:.0}", t.delivered_per_sec),
                format!("{:.0}", t.records),
                human_bytes(t.size as u64),
                format!("{:.0}", t.segments),
                t.fsync_p99
                    .map_or("-".into(), |s| format!("≤{:.1}ms", s * 1e3)),
            ])
        });
    Table::new(
        rows,
        [
            Constraint::Fill(3),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(5),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new(vec![
            "TOPIC",
            "rec/s",
            "bytes/s",
            "deliv/s",
            "records",
            "on disk",
            "segs",
            "fsync p99",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(
        Block::default()
            .title("busiest topics")
            .borders(Borders::TOP),
    )
}

fn group_table(v: &View, height: u16) -> Table<'static> {
    let rows = v
        .groups
        .iter()
        .take(height.saturating_sub(2) as usize)
        .map(|g| {
            Row::new(vec![
                g.topic.clone(),
                g.group.clone(),
                format!("{:.0}", g.lag),
                format!("{:.0}", g.in_flight),
                format!("{:.0}", g.members),
                format!("{:.0}", g.redelivered),
                format!("{:.0}", g.dead_lettered),
            ])
        });
    Table::new(
        rows,
        [
            Constraint::Fill(2),
            Constraint::Fill(2),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(
        Row::new(vec![
            "TOPIC",
            "GROUP",
            "lag",
            "in flight",
            "members",
            "redelivered",
            "dead letters",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(
        Block::default()
            .title("groups by lag")
            .borders(Borders::TOP),
    )
}
