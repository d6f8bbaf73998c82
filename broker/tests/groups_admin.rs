//! Group and topic administration through real TCP: lag with acks out of
//! order, what subscribing to a missing topic does under each setting,
//! resets of unknown groups and to positions outside the log.

mod common;

use common::*;
use herald_broker::BrokerConfig;
use herald_protocol::*;

fn group_sub(topic: &str, group: &str, start: StartPosition) -> Subscribe {
    Subscribe {
        topic: topic.into(),
        group: Some(group.into()),
        start,
        prefetch_messages: 100,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms: 60_000,
        max_deliveries: 0,
    }
}

fn ephemeral(topic: &str, start: StartPosition) -> Subscribe {
    Subscribe {
        group: None,
        ..group_sub(topic, "", start)
    }
}

async fn groups(c: &mut Raw, topic: &str) -> Vec<GroupInfo> {
    match c
        .request(Message::ListGroups(TopicName { name: topic.into() }))
        .await
    {
        Message::GroupList(l) => l.groups,
        m => panic!("list groups: {m:?}"),
    }
}

async fn topics(c: &mut Raw) -> Vec<String> {
    match c.request(Message::ListTopics).await {
        Message::TopicList(l) => l.topics.into_iter().map(|t| t.name).collect(),
        m => panic!("list topics: {m:?}"),
    }
}

fn error_code(m: &Message) -> Option<ErrorCode> {
    match m {
        Message::Error(e) => Some(ErrorCode::from_u16(e.code)),
        _ => None,
    }
}

async fn reset(c: &mut Raw, topic: &str, group: &str, to: StartPosition) -> Message {
    c.request(Message::ResetGroup(ResetGroup {
        topic: topic.into(),
        group: group.into(),
        to,
    }))
    .await
}

async fn start_with(
    dir: &std::path::Path,
    f: impl FnOnce(&mut BrokerConfig),
) -> herald_broker::server::BrokerHandle {
    let mut cfg = config(dir);
    f(&mut cfg);
    herald_broker::server::start(cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_acks_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| vec![i]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    c.publish("t", &refs).await;
    let s = c
        .subscribe_with(group_sub("t", "g", StartPosition::Earliest))
        .await;
    c.take(10).await;
    c.ack(s, AckKind::Ack, vec![(1, 4), (7, 7)]).await;
    let g = groups(&mut c, "t").await.remove(0);
    assert_eq!(g.ack_floor, 0, "0 is still out");
    assert_eq!(g.lag, 5, "0, 5, 6, 8 and 9 are not done: {g:?}");
    assert_eq!(g.in_flight, 5);
    c.ack(s, AckKind::Ack, vec![(0, 0)]).await;
    let g = groups(&mut c, "t").await.remove(0);
    assert_eq!((g.ack_floor, g.lag), (5, 4));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_a_missing_topic_fails_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    for s in [
        ephemeral("nosuch", StartPosition::Latest),
        group_sub("nosuch", "g", StartPosition::Resume),
    ] {
        let r = c.request(Message::Subscribe(s)).await;
        assert_eq!(error_code(&r), Some(ErrorCode::UnknownTopic), "{r:?}");
    }
    assert!(topics(&mut c).await.is_empty(), "nothing was created");
    // A publish still creates one (auto-creation is on by default).
    c.publish("made", &[b"x"]).await;
    b.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir.path(), |c| c.auto_create_on_subscribe = true).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.subscribe_with(group_sub("fresh", "g", StartPosition::Resume))
        .await;
    assert_eq!(topics(&mut c).await, ["fresh"]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auto_create_covers_publish_and_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let b = start_with(dir.path(), |c| {
        c.auto_create_topics = false;
        c.auto_create_on_subscribe = true;
    })
    .await;
    let mut c = Raw::connect(b.local_addr()).await;
    let r = c.publish_seq("p", &[b"x"], 0, 0).await.unwrap_err();
    assert_eq!(ErrorCode::from_u16(r.code), ErrorCode::UnknownTopic);
    let r = c
        .request(Message::Subscribe(group_sub(
            "s",
            "g",
            StartPosition::Resume,
        )))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownTopic));
    assert!(topics(&mut c).await.is_empty());
    // The client's own inbox is the broker's business: still created.
    let inbox = format!("_inbox.{}", c.client_id);
    c.subscribe_with(group_sub(&inbox, "inbox", StartPosition::Resume))
        .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_needs_an_existing_group_and_a_position_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("t", &[b"a", b"b", b"c"]).await;
    let r = reset(&mut c, "t", "typo", StartPosition::Earliest).await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownGroup), "{r:?}");
    assert!(groups(&mut c, "t").await.is_empty(), "no group was created");
    let groups_dir = dir.path().join("topics").join("t").join("groups");
    let files = std::fs::read_dir(&groups_dir).map_or(0, |d| d.count());
    assert_eq!(files, 0, "no file was created");

    // A real group, idle.
    let mut m = Raw::connect(b.local_addr()).await;
    let s = m
        .subscribe_with(group_sub("t", "g", StartPosition::Earliest))
        .await;
    m.take(3).await;
    m.ack(s, AckKind::Ack, vec![(0, 0)]).await;
    drop(m);
    for bad in [
        StartPosition::Offset(4),
        StartPosition::Offset(999_999),
        StartPosition::Resume,
    ] {
        // The member's departure may still be on its way: GroupActive
        // until it is gone.
        let deadline = std::time::Instant::now() + T;
        let r = loop {
            let r = reset(&mut c, "t", "g", bad).await;
            if error_code(&r) != Some(ErrorCode::GroupActive) {
                break r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the member never left"
            );
        };
        let Message::Error(e) = &r else {
            panic!("{bad:?} accepted")
        };
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument);
        if matches!(bad, StartPosition::Offset(_)) {
            assert!(e.message.contains("0 to 3"), "{}", e.message);
        }
    }
    assert_eq!(groups(&mut c, "t").await[0].ack_floor, 1, "unchanged");
    assert_eq!(
        reset(&mut c, "t", "g", StartPosition::Offset(3)).await,
        Message::Ok
    );
    let g = groups(&mut c, "t").await.remove(0);
    assert_eq!((g.ack_floor, g.lag), (3, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_offsets_outside_the_log_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path()).await;
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish("t", &[b"a", b"b"]).await;
    for s in [
        ephemeral("t", StartPosition::Offset(3)),
        group_sub("t", "g", StartPosition::Offset(3)),
    ] {
        let r = c.request(Message::Subscribe(s)).await;
        let Message::Error(e) = &r else {
            panic!("accepted: {r:?}")
        };
        assert_eq!(ErrorCode::from_u16(e.code), ErrorCode::InvalidArgument);
        assert!(e.message.contains("0 to 2"), "{}", e.message);
    }
    assert!(groups(&mut c, "t").await.is_empty(), "no group was created");
    // The end itself is fine: from the next record on.
    c.subscribe_with(ephemeral("t", StartPosition::Offset(2)))
        .await;
    b.shutdown().await;
}
