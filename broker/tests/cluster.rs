//! A three-node cluster of real `herald serve` processes on loopback: a
//! replicated topic keeps every confirmed message through a SIGKILL of its
//! leader, stores none twice, and the restarted node catches up.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use herald_protocol::codec::FrameCodec;
use herald_protocol::*;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use common::{batch, Child};

/// How long the cluster may take to elect, fail over, catch up.
const PATIENCE: Duration = Duration::from_secs(30);

/// Free loopback ports for the nodes (bound and released: the nodes
/// listen on them right after).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

struct Cluster {
    addrs: Vec<SocketAddr>,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Child>>,
    /// The first `formed` nodes form the cluster; the others start with
    /// `--join` and wait to be added.
    formed: usize,
    /// Each node's HTTP listener (WebSocket clients), when it has one.
    http: Option<Vec<SocketAddr>>,
    /// With a partitionable network: `links[i][j]` is the proxy node `i`
    /// reaches node `j` through.
    links: Option<Vec<Vec<Option<Link>>>>,
    /// Environment every node starts with, beside the test's defaults.
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Self::start_with(n)
    }

    /// A cluster whose nodes reach each other through proxies the test can
    /// cut ([`Cluster::isolate`]); clients still reach every node.
    async fn start_partitionable(n: usize) -> Cluster {
        let addrs = free_addrs(n);
        let mut links = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for (j, a) in addrs.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(Link::start(*a).await)
                });
            }
            links.push(row);
        }
        let mut c = Self::start_on(addrs, Some(links));
        c.spawn_all();
        c
    }

    fn start_with(n: usize) -> Cluster {
        let mut c = Self::start_on(free_addrs(n), None);
        c.spawn_all();
        c
    }

    fn start_on(addrs: Vec<SocketAddr>, links: Option<Vec<Vec<Option<Link>>>>) -> Cluster {
        let dirs: Vec<_> = (0..addrs.len())
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let formed = addrs.len();
        Cluster {
            addrs,
            dirs,
            nodes: Vec::new(),
            formed,
            http: None,
            links,
            env: Vec::new(),
        }
    }

    fn spawn_all(&mut self) {
        let n = self.addrs.len();
        let c = self;
        for i in 0..n {
            let child = c.spawn(i);
            c.nodes.push(Some(child));
        }
    }

    /// `--peers` for node `i`: itself at its own address, the others that
    /// form the cluster at theirs or through `i`'s proxies to them.
    fn peers(&self, i: usize) -> String {
        self.addrs
            .iter()
            .enumerate()
            // A joining node knows only itself (docs/cluster.md).
            .filter(|(j, _)| (*j < self.formed && i < self.formed) || *j == i)
            .map(|(j, a)| {
                let a = match &self.links {
                    Some(l) if i != j => l[i][j].as_ref().map_or(*a, |p| p.addr),
                    _ => *a,
                };
                format!("{}={a}", j + 1)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Cuts node `i` off from the others (both ways), or heals it.
    fn isolate(&self, i: usize, cut: bool) {
        let Some(links) = &self.links else { return };
        for (a, row) in links.iter().enumerate() {
            for (b, l) in row.iter().enumerate() {
                if let Some(l) = l {
                    if a == i || b == i {
                        let _ = l.cut.send(cut);
                    }
                }
            }
        }
    }

    fn spawn(&self, i: usize) -> Child {
        let id = (i + 1).to_string();
        let peers = self.peers(i);
        let http = self.http.as_ref().map(|h| h[i].to_string());
        let mut args = vec!["--node-id", &id, "--peers", &peers];
        match &http {
            Some(h) => args.extend(["--http", h.as_str()]),
            None => args.push("--no-http"),
        }
        if i >= self.formed {
            args.push("--join");
        }
        let mut cmd = Child::command(self.dirs[i].path(), &self.addrs[i].to_string(), &args);
        // Peers that are down are expected here: openraft's reports of them
        // are noise (HERALD_TEST_LOG shows them when a test is studied).
        let log = std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn,openraft=off".into());
        cmd.env("HERALD_LOG", log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Child::start(cmd)
    }

    fn kill(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].take() {
            c.kill();
        }
    }

    fn restart(&mut self, i: usize) {
        let c = self.spawn(i);
        self.nodes[i] = Some(c);
    }
}

/// A TCP proxy from one node to another that the test can cut: a cut
/// drops every connection through it and refuses new ones until healed.
struct Link {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn start(to: SocketAddr) -> Link {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (cut, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    return;
                };
                if *rx.borrow() {
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Link { addr, cut, task }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(c) = n.take() {
                c.kill();
            }
        }
    }
}

/// A plain protocol connection that reports failures instead of panicking
/// (nodes die in these tests).
struct Conn {
    framed: Framed<TcpStream, FrameCodec>,
    next: u64,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Option<Conn> {
        let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let mut c = Conn {
            framed: Framed::new(s, FrameCodec::default()),
            next: 1,
        };
        let hello = Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: "cluster-test".into(),
            client_id: None,
            token: None,
        });
        match c.request(hello).await? {
            Message::HelloOk(_) => Some(c),
            _ => None,
        }
    }

    async fn request(&mut self, m: Message) -> Option<Message> {
        let id = self.next;
        self.next += 1;
        self.framed.send((id, m)).await.ok()?;
        let wait = async {
            loop {
                let f = self.framed.next().await?.ok()?;
                if f.header.request_id == id && f.header.opcode != Opcode::Deliver {
                    return Message::decode(&f).ok();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .ok()?
    }
}

/// The leader address named by a NotLeader error, if any.
fn leader_in(e: &ErrorBody) -> Option<SocketAddr> {
    e.message.split("leader: ").nth(1)?.trim().parse().ok()
}

/// A producer that follows the topic's leader: on NotLeader it goes where
/// the error points (or tries the next node), and a batch whose confirm
/// was lost with a node is sent again with the same producer sequence, so
/// it is stored once.
struct Producer {
    addrs: Vec<SocketAddr>,
    at: usize,
    conn: Option<Conn>,
}

impl Producer {
    fn new(addrs: &[SocketAddr]) -> Producer {
        Producer {
            addrs: addrs.to_vec(),
            at: 0,
            conn: None,
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8], seq: u64) -> PublishOk {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(
                Instant::now() < deadline,
                "no node confirmed sequence {seq}"
            );
            if self.conn.is_none() {
                self.conn = Conn::open(self.addrs[self.at]).await;
                if self.conn.is_none() {
                    self.at = (self.at + 1) % self.addrs.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let m = Message::Publish {
                topic: topic.into(),
                batch: batch(&[payload], 7, seq),
            };
            let conn = self.conn.as_mut().unwrap();
            match conn.request(m).await {
                Some(Message::PublishOk(ok)) => return ok,
                Some(Message::Error(e)) if ErrorCode::from_u16(e.code) == ErrorCode::NotLeader => {
                    self.conn = None;
                    match leader_in(&e).and_then(|a| self.addrs.iter().position(|x| *x == a)) {
                        Some(i) => self.at = i,
                        None => {
                            self.at = (self.at + 1) % self.addrs.len();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Some(Message::Error(e)) if ErrorCode::from_u16(e.code).is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some(other) => panic!("publish {seq}: {other:?}"),
                // The node died or stopped answering: another one.
                None => {
                    self.conn = None;
                    self.at = (self.at + 1) % self.addrs.len();
                }
            }
        }
    }
}

/// Every record of `topic` on the node at `addr`, once it holds `n`.
async fn read_all(addr: SocketAddr, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    let mut c = loop {
        if let Some(c) = Conn::open(addr).await {
            break c;
        }
        assert!(Instant::now() < deadline, "node {addr} did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sub = loop {
        let s = Message::Subscribe(Subscribe {
            topic: topic.into(),
            group: None,
            start: StartPosition::Earliest,
            prefetch_messages: 10_000,
            prefetch_bytes: 64 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
        });
        match c.request(s).await {
            Some(Message::SubscribeOk(ok)) => break ok.subscription_id,
            // The node has not learnt of the topic yet.
            Some(Message::Error(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("subscribe on {addr}: {other:?}"),
        }
    };
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = tokio::time::timeout(left, c.framed.next())
            .await
            .unwrap_or_else(|_| panic!("node {addr} holds {} of {n} records", out.len()))
            .expect("closed")
            .unwrap();
        if let Ok(Message::Deliver(d)) = Message::decode(&f) {
            assert_eq!(d.subscription_id, sub);
            for r in d.batch.records() {
                if r.offset >= d.first_offset && r.offset <= d.last_offset {
                    out.push(r.payload.to_vec());
                }
            }
        }
    }
    out
}

/// Creates `topic` through any node (the metadata group may still be
/// electing its first leader).
async fn create(addrs: &[SocketAddr], topic: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for a in addrs {
            let Some(mut c) = Conn::open(*a).await else {
                continue;
            };
            let m = Message::CreateTopic(CreateTopic {
                name: topic.into(),
                config: TopicConfig::default(),
                replicas: 0,
            });
            if let Some(Message::TopicInfo(_)) = c.request(m).await {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} could not be created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_loses_nothing_confirmed_and_stores_nothing_twice() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "orders").await;
    let mut p = Producer::new(&addrs);
    const N: u64 = 120;
    let mut confirmed = Vec::new();
    for seq in 0..N / 2 {
        let ok = p
            .publish("orders", format!("m-{seq}").as_bytes(), seq)
            .await;
        confirmed.push(ok.base_offset);
    }
    // SIGKILL the node that confirmed the last publish: the leader.
    let leader = p.at;
    cluster.kill(leader);
    let killed = Instant::now();
    p.conn = None;
    for seq in N / 2..N {
        let ok = p
            .publish("orders", format!("m-{seq}").as_bytes(), seq)
            .await;
        confirmed.push(ok.base_offset);
        if seq == N / 2 {
            // The followers saw the leader's connections close, found it
            // gone and elected another at once (cluster::failover): the
            // first confirm comes before openraft's own timers could have
            // started an election (the dead leader's lease, 1 s, then 0.5-1 s
            // more after its last heartbeat, at most 150 ms before the kill).
            let took = killed.elapsed();
            assert!(
                took < Duration::from_millis(1200),
                "failover took {took:?}: the followers waited for openraft's timers"
            );
        }
    }
    assert_ne!(p.at, leader, "a new leader confirmed the second half");
    // Offsets are dense and in order: nothing stored twice, no gap.
    assert_eq!(confirmed, (0..N).collect::<Vec<_>>());
    cluster.restart(leader);
    let want: Vec<Vec<u8>> = (0..N).map(|i| format!("m-{i}").into_bytes()).collect();
    for a in &addrs {
        let got = read_all(*a, "orders", N as usize).await;
        assert_eq!(got, want, "node {a}");
    }
}

/// Leader after leader is SIGKILLed (and comes back), then every node at
/// once: every confirmed message is on every node afterwards, once, in
/// order. `HERALD_CLUSTER_KILLS` sets how many leader kills
/// (`scripts/cluster-kills.sh` runs the long version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_leader_kills_and_a_whole_cluster_kill_lose_nothing() {
    let kills: u64 = std::env::var("HERALD_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "events").await;
    let mut p = Producer::new(&addrs);
    const PER_ROUND: u64 = 20;
    let mut seq = 0;
    let mut confirmed = Vec::new();
    for k in 0..kills {
        confirmed.extend(round(&mut p, &mut seq, PER_ROUND).await);
        let leader = p.at;
        cluster.kill(leader);
        let killed = Instant::now();
        eprintln!(
            "killed node {} at {:?}",
            leader + 1,
            std::time::SystemTime::now()
        );
        p.conn = None;
        // Failover time: from the SIGKILL to the first confirm by the new
        // leader (printed for scripts/cluster-kills.sh).
        confirmed.extend(round(&mut p, &mut seq, 1).await);
        eprintln!("failover_ms={}", killed.elapsed().as_millis());
        confirmed.extend(round(&mut p, &mut seq, PER_ROUND - 1).await);
        assert_ne!(p.at, leader, "round {k}: a new leader confirmed");
        cluster.restart(leader);
        // The restarted node catches up before the next kill (otherwise
        // the next failover would wait for it: it would be the only other
        // node of a quorum of two).
        let want: Vec<Vec<u8>> = (0..seq).map(|i| format!("e-{i}").into_bytes()).collect();
        assert_eq!(
            read_all(addrs[leader], "events", seq as usize).await,
            want,
            "round {k}: node {} after its restart",
            leader + 1
        );
    }
    // Every node at once, mid-stream: what was confirmed stays.
    for i in 0..addrs.len() {
        cluster.kill(i);
    }
    p.conn = None;
    for i in 0..addrs.len() {
        cluster.restart(i);
    }
    confirmed.extend(round(&mut p, &mut seq, PER_ROUND).await);
    assert_eq!(confirmed, (0..seq).collect::<Vec<_>>());
    let want: Vec<Vec<u8>> = (0..seq).map(|i| format!("e-{i}").into_bytes()).collect();
    for a in &addrs {
        assert_eq!(read_all(*a, "events", seq as usize).await, want, "node {a}");
    }
}

/// Publishes `n` messages `e-<seq>` (following the leader) and returns
/// their offsets.
async fn round(p: &mut Producer, seq: &mut u64, n: u64) -> Vec<u64> {
    let mut offs = Vec::new();
    for s in *seq..*seq + n {
        offs.push(
            p.publish("events", format!("e-{s}").as_bytes(), s)
                .await
                .base_offset,
        );
    }
    *seq += n;
    offs
}

/// The Rust client given every node's address follows the leader: it is
/// connected to whichever node, publishes are answered NotLeader there and
/// re-sent to the leader named; the leader is SIGKILLed mid-stream and the
/// client finds the new one. Every publish is confirmed, at its own offset,
/// and every node ends up with each message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_leader_through_a_sigkill() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "pipeline").await;
    // Which node leads: the one that confirms a first message.
    let mut probe = Producer::new(&addrs);
    probe.publish("pipeline", b"probe", 0).await;
    let leader = probe.at;
    drop(probe);
    // The leader last: the client starts at a node that answers NotLeader.
    let mut order: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| *a != addrs[leader])
        .collect();
    order.push(addrs[leader]);
    let list = order
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let client = herald_client::Client::connect(list).await.unwrap();
    let producer = client.producer("pipeline");
    const N: usize = 200;
    let mut offsets = Vec::new();
    let mut pending = Vec::new();
    for i in 0..N / 2 {
        pending.push(producer.send(format!("m-{i}")).await.unwrap());
    }
    for p in pending.drain(..) {
        offsets.push(
            tokio::time::timeout(PATIENCE, p)
                .await
                .expect("confirm")
                .unwrap()
                .offset,
        );
    }
    // The second half is in flight when the leader dies.
    for i in N / 2..N {
        pending.push(producer.send(format!("m-{i}")).await.unwrap());
    }
    cluster.kill(leader);
    for (i, p) in pending.into_iter().enumerate() {
        let r = tokio::time::timeout(PATIENCE, p)
            .await
            .unwrap_or_else(|_| panic!("message {} not confirmed", N / 2 + i))
            .unwrap();
        offsets.push(r.offset);
    }
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (1..=N as u64).collect::<Vec<_>>(),
        "one offset each"
    );
    cluster.restart(leader);
    let mut want = vec![b"probe".to_vec()];
    want.extend((0..N).map(|i| format!("m-{i}").into_bytes()));
    for a in &addrs {
        assert_eq!(read_all(*a, "pipeline", N + 1).await, want, "node {a}");
    }
    client.close().await;
}

/// The leader of a topic is cut off from the other two nodes (clients can
/// still reach it). Its publishes are not confirmed; the two others elect
/// a leader and confirm; once healed, the old leader's unconfirmed entry is
/// gone and every node holds exactly the confirmed records, each at the
/// offset its confirm gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_confirms_nothing_and_its_tail_is_discarded() {
    let cluster = Cluster::start_partitionable(3).await;
    let addrs = cluster.addrs.clone();
    create(&addrs, "split").await;
    let mut p = Producer::new(&addrs);
    let mut confirmed = std::collections::BTreeMap::new();
    for seq in 0..20u64 {
        let ok = p.publish("split", format!("c-{seq}").as_bytes(), seq).await;
        assert!(confirmed
            .insert(ok.base_offset, format!("c-{seq}"))
            .is_none());
    }
    let old = p.at;
    cluster.isolate(old, true);
    // A publish to the isolated leader: no quorum, no confirm.
    let mut lone = Conn::open(addrs[old])
        .await
        .expect("the old leader still serves clients");
    let m = Message::Publish {
        topic: "split".into(),
        batch: batch(&[b"lost"], 8, 0),
    };
    let id = lone.next;
    lone.next += 1;
    lone.framed.send((id, m)).await.unwrap();
    // The majority elects a leader and confirms.
    let mut majority = Producer {
        addrs: addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != old)
            .map(|(_, a)| *a)
            .collect(),
        at: 0,
        conn: None,
    };
    for seq in 20..40u64 {
        let ok = majority
            .publish("split", format!("c-{seq}").as_bytes(), seq)
            .await;
        assert!(
            confirmed
                .insert(ok.base_offset, format!("c-{seq}"))
                .is_none(),
            "two records confirmed at offset {}",
            ok.base_offset
        );
    }
    // Still nothing confirmed by the old leader.
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match lone.framed.next().await {
                Some(Ok(f)) if f.header.request_id == id => return Message::decode(&f).ok(),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    assert!(
        !matches!(quiet, Ok(Some(Message::PublishOk(_)))),
        "the isolated leader confirmed a publish: {quiet:?}"
    );
    cluster.isolate(old, false);
    let want: Vec<Vec<u8>> = confirmed.values().map(|v| v.clone().into_bytes()).collect();
    assert_eq!(
        confirmed.keys().copied().collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    for a in &addrs {
        assert_eq!(read_all(*a, "split", want.len()).await, want, "node {a}");
    }
    // The lost publish, if it is answered at all after the heal, is not
    // confirmed.
    if let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match lone.framed.next().await {
                Some(Ok(f)) if f.header.request_id == id => return Some(Ok(f)),
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    {
        let m = Message::decode(&f).unwrap();
        assert!(
            !matches!(m, Message::PublishOk(_)),
            "confirmed after the heal: {m:?}"
        );
    }
}

/// A follower that was down while 10 MiB of large batches were confirmed
/// catches up when it comes back: more than one call's worth of entries
/// (calls are cut to a byte budget below the frame limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_on_large_batches() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "big").await;
    let mut p = Producer::new(&addrs);
    p.publish("big", b"first", 0).await;
    let follower = (p.at + 1) % addrs.len();
    cluster.kill(follower);
    let big = |i: u64| vec![i as u8; 256 << 10];
    for seq in 1..=40u64 {
        p.publish("big", &big(seq), seq).await;
    }
    cluster.restart(follower);
    let mut want = vec![b"first".to_vec()];
    want.extend((1..=40).map(big));
    let got = read_all(addrs[follower], "big", want.len()).await;
    assert!(got == want, "the follower's copy differs");
}

/// `ClusterStatus` (and `herald cluster status`) on the leader: the
/// topic's group with its leader and three replicas, none behind once
/// quiet; a follower that is down falls behind by what was published since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_leaders_and_how_far_replicas_are_behind() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "warmup").await;
    // Once the cluster is up, a creation asked of any node (here each of
    // them, whichever leads the metadata) answers with the topic at once.
    for (i, a) in addrs.iter().enumerate() {
        let mut c = Conn::open(*a).await.unwrap();
        let m = Message::CreateTopic(CreateTopic {
            name: format!("made-on-{i}"),
            config: TopicConfig::default(),
            replicas: 0,
        });
        match c.request(m).await {
            Some(Message::TopicInfo(t)) => assert_eq!(t.name, format!("made-on-{i}")),
            other => panic!("create through node {}: {other:?}", i + 1),
        }
    }
    create(&addrs, "watched").await;
    let mut p = Producer::new(&addrs);
    for seq in 0..5 {
        p.publish("watched", b"x", seq).await;
    }
    let leader = p.at;
    let status = |addr: SocketAddr| async move {
        let mut c = Conn::open(addr).await.expect("connect");
        match c.request(Message::ClusterStatus).await {
            Some(Message::ClusterInfo(i)) => i,
            other => panic!("cluster status: {other:?}"),
        }
    };
    // Every replica catches up (the followers' progress is reported to the
    // leader with their next answer).
    let deadline = Instant::now() + PATIENCE;
    let group = loop {
        let info = status(addrs[leader]).await;
        assert_eq!(info.node_id, leader as u64 + 1);
        assert_eq!(info.nodes.len(), 3);
        assert_eq!(info.groups[0].name, "meta");
        let g = info
            .groups
            .iter()
            .find(|g| g.name == "topic/watched")
            .expect("the topic's group")
            .clone();
        assert_eq!(g.replicas.len(), 3);
        // Raft's metrics follow its state a moment later.
        if g.leader == Some(leader as u64 + 1)
            && g.replicas.iter().all(|r| r.matched == g.last_index)
        {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never caught up: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    for seq in 5..10 {
        p.publish("watched", b"y", seq).await;
    }
    let info = status(addrs[leader]).await;
    let g = info
        .groups
        .iter()
        .find(|g| g.name == "topic/watched")
        .unwrap();
    let behind = g
        .replicas
        .iter()
        .find(|r| r.node == follower as u64 + 1)
        .unwrap();
    assert_eq!(
        behind.matched, group.last_index,
        "the stopped follower has what it had"
    );
    assert!(g.last_index > group.last_index);
    // The command line shows the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["cluster", "status", "--server", &addrs[leader].to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("topic/watched"))
        .expect(&text);
    let lag = g.last_index.unwrap() - group.last_index.unwrap();
    assert!(line.contains(&format!("{}: {lag}", follower + 1)), "{line}");
}

/// Group `group`'s ack floor on the node at `addr`, once `want` says it is
/// the one expected (waiting for replication, bounded).
async fn floor_on(addr: SocketAddr, topic: &str, group: &str, want: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some(mut c) = Conn::open(addr).await {
            let m = Message::ListGroups(TopicName { name: topic.into() });
            if let Some(Message::GroupList(l)) = c.request(m).await {
                last = l
                    .groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.ack_floor);
                if let Some(f) = last.filter(|f| want(*f)) {
                    return f;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} on {addr}: floor {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins `group` on `addr` (start Resume) and returns its start offset and
/// the connection, with deliveries coming.
async fn join_group(addr: SocketAddr, topic: &str, group: &str) -> (u64, u64, Conn) {
    let mut c = Conn::open(addr).await.expect("node up");
    let s = Message::Subscribe(Subscribe {
        topic: topic.into(),
        group: Some(group.into()),
        start: StartPosition::Resume,
        prefetch_messages: 10_000,
        prefetch_bytes: 64 << 20,
        ack_timeout_ms: 0,
        max_deliveries: 0,
    });
    match c.request(s).await {
        Some(Message::SubscribeOk(ok)) => (ok.subscription_id, ok.start_offset, c),
        other => panic!("join {group} on {addr}: {other:?}"),
    }
}

/// The offsets delivered on `c` until `n` came.
async fn offsets(c: &mut Conn, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = tokio::time::timeout(PATIENCE, c.framed.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} delivered", out.len()))
            .expect("closed")
            .unwrap();
        if let Ok(Message::Deliver(d)) = Message::decode(&f) {
            for r in d.batch.records() {
                if r.offset >= d.first_offset && r.offset <= d.last_offset {
                    out.push(r.offset);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_on_another_node_where_its_acks_got_to() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "jobs").await;
    let mut p = Producer::new(&addrs);
    for seq in 0..100 {
        p.publish("jobs", format!("job-{seq}").as_bytes(), seq)
            .await;
    }
    drop(p);

    // A worker on node 1 takes all 100 and acks the first 60.
    let (sub, start, mut c) = join_group(addrs[0], "jobs", "workers").await;
    assert_eq!(start, 0);
    let got = offsets(&mut c, 100).await;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let ack = Message::Ack(Ack {
        subscription_id: sub,
        kind: AckKind::Ack,
        ranges: vec![(0, 59)],
    });
    c.framed.send((999, ack)).await.unwrap();
    // The other replicas learn where the group stands.
    for a in &addrs[1..] {
        floor_on(*a, "jobs", "workers", |f| f == 60).await;
    }

    // Node 1 dies with the worker's connection; the worker comes back on
    // node 2 and gets the 40 it had not acked, and nothing it had.
    cluster.kill(0);
    drop(c);
    let (_, start, mut c) = join_group(addrs[1], "jobs", "workers").await;
    assert_eq!(start, 60, "the group resumes where its acks got to");
    let got = offsets(&mut c, 40).await;
    assert_eq!(got, (60..100).collect::<Vec<_>>());
    drop(c);

    // A reset on node 2 moves the group on every replica, node 1 included
    // once it is back (it applies the log again: the reset comes after
    // the floor it had, so the floor does not win).
    let mut admin = Conn::open(addrs[1]).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = Message::ResetGroup(ResetGroup {
            topic: "jobs".into(),
            group: "workers".into(),
            to: StartPosition::Offset(10),
        });
        match admin.request(m).await {
            Some(Message::Ok) => break,
            // The member that just left may not be gone yet.
            Some(Message::Error(e)) if Instant::now() < deadline => {
                eprintln!("reset: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("reset: {other:?}"),
        }
    }
    floor_on(addrs[2], "jobs", "workers", |f| f == 10).await;
    cluster.restart(0);
    floor_on(addrs[0], "jobs", "workers", |f| f == 10).await;
    let (_, start, mut c) = join_group(addrs[0], "jobs", "workers").await;
    assert_eq!(start, 10);
    assert_eq!(offsets(&mut c, 90).await, (10..100).collect::<Vec<_>>());
}

/// Asks the node at `addr` for a cluster change and waits (long: a new
/// replica copies the topic) for its answer.
async fn change(addr: SocketAddr, change: ClusterChange) -> Message {
    let mut c = Conn::open(addr).await.expect("node up");
    let id = c.next;
    c.next += 1;
    c.framed
        .send((id, Message::ClusterChange(change)))
        .await
        .unwrap();
    let wait = async {
        loop {
            let f = c.framed.next().await.expect("closed").unwrap();
            if f.header.request_id == id {
                return Message::decode(&f).unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("the change was not answered")
}

/// Describes `topic` on `addr` until `done` accepts the answer (bounded).
async fn describe_until(addr: SocketAddr, topic: &str, done: impl Fn(&Message) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(mut c) = Conn::open(addr).await {
            let m = Message::DescribeTopic(TopicName { name: topic.into() });
            last = c.request(m).await;
            if last.as_ref().is_some_and(&done) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{topic} on {addr}: {last:?}");
}

fn unknown_topic(m: &Message) -> bool {
    matches!(m, Message::Error(e) if ErrorCode::from_u16(e.code) == ErrorCode::UnknownTopic)
}

/// The topic limit holds for replicated topics: past it, the node asked
/// refuses a new topic (`Busy`, naming the limit) before the cluster's
/// metadata places it anywhere, and the topics there go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_past_the_topic_limit_is_refused_on_the_node_asked() {
    let mut cluster = Cluster::start_on(free_addrs(3), None);
    cluster.env.push(("HERALD_MAX_TOPICS", "2".into()));
    cluster.spawn_all();
    let addrs = cluster.addrs.clone();
    for t in ["kept-1", "kept-2"] {
        create(&addrs, t).await;
        for a in &addrs {
            describe_until(*a, t, |m| matches!(m, Message::TopicInfo(_))).await;
        }
    }
    for (i, a) in addrs.iter().enumerate() {
        let mut c = Conn::open(*a).await.expect("node up");
        let m = Message::CreateTopic(CreateTopic {
            name: "one-too-many".into(),
            config: TopicConfig::default(),
            replicas: 0,
        });
        match c.request(m).await {
            Some(Message::Error(e)) => {
                assert_eq!(
                    ErrorCode::from_u16(e.code),
                    ErrorCode::Busy,
                    "node {i}: {e:?}"
                );
                assert!(e.message.contains("--max-topics 2"), "node {i}: {e:?}");
            }
            other => panic!("node {i} created a topic past the limit: {other:?}"),
        }
        describe_until(*a, "one-too-many", unknown_topic).await;
    }
    // Creating one that exists is not a new topic, and the topics serve.
    create(&addrs, "kept-1").await;
    let mut p = Producer::new(&addrs);
    p.publish("kept-2", b"still here", 0).await;
    for a in &addrs {
        assert_eq!(
            read_all(*a, "kept-2", 1).await,
            vec![b"still here".to_vec()]
        );
    }
}

/// A fourth node joins a running cluster (`herald cluster add`), a topic
/// moves onto it while a producer keeps publishing (`herald cluster move`:
/// nothing confirmed is lost or stored twice, the new replica holds every
/// record), the node it left lets its copy go, and that node is then taken
/// out of the cluster (`herald cluster remove`), which goes on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_topic_moves_onto_it_and_the_node_it_left_is_removed() {
    let mut cluster = Cluster::start_on(free_addrs(4), None);
    cluster.formed = 3;
    for i in 0..3 {
        let c = cluster.spawn(i);
        cluster.nodes.push(Some(c));
    }
    let addrs = cluster.addrs.clone();
    create(&addrs[..3], "orders").await;
    let mut p = Producer::new(&addrs[..3]);
    let mut confirmed = Vec::new();
    for seq in 0..50 {
        confirmed.push(
            p.publish("orders", format!("m-{seq}").as_bytes(), seq)
                .await
                .base_offset,
        );
    }
    // Node 4 starts with --join: it forms nothing and waits.
    let joining = cluster.spawn(3);
    cluster.nodes.push(Some(joining));
    let bad = ClusterChange::AddNode {
        id: 4,
        addr: "no-port".into(),
    };
    assert!(
        matches!(change(addrs[1], bad).await, Message::Error(e) if ErrorCode::from_u16(e.code) == ErrorCode::InvalidArgument)
    );
    let add = ClusterChange::AddNode {
        id: 4,
        addr: addrs[3].to_string(),
    };
    match change(addrs[1], add).await {
        Message::ClusterInfo(i) => assert!(i.nodes.iter().any(|n| n.id == 4), "{i:?}"),
        other => panic!("add node 4: {other:?}"),
    }
    // Four nodes now: a topic on two of them (`--replicas 2`), and not on
    // five.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["topics", "create", "pair", "--replicas", "2"])
        .args(["--server", &addrs[1].to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (Each holder opens its replica as it applies the creation.)
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut holders = Vec::new();
        for a in &addrs {
            let mut c = Conn::open(*a).await.unwrap();
            if let Some(Message::ClusterInfo(i)) = c.request(Message::ClusterStatus).await {
                if let Some(g) = i.groups.iter().find(|g| g.name == "topic/pair") {
                    assert_eq!(g.replicas.len(), 2, "{g:?}");
                    holders.push(i.node_id);
                }
            }
        }
        assert!(holders.len() <= 2, "nodes holding a replica: {holders:?}");
        if holders.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes holding a replica: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = Conn::open(addrs[1]).await.unwrap();
    let five = Message::CreateTopic(CreateTopic {
        name: "five".into(),
        config: TopicConfig::default(),
        replicas: 5,
    });
    match c.request(five).await {
        Some(Message::Error(e)) => assert!(e.message.contains("the cluster has 4 nodes"), "{e:?}"),
        other => panic!("five replicas on four nodes: {other:?}"),
    }
    // Node 1 holds a replica: it cannot be removed yet.
    match change(addrs[1], ClusterChange::RemoveNode { id: 1 }).await {
        Message::Error(e) => assert!(e.message.contains("still holds replicas"), "{e:?}"),
        other => panic!("remove node 1 early: {other:?}"),
    }
    // Move the topic from 1,2,3 to 2,3,4 while publishing goes on (until
    // 20 more were confirmed after the move).
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = moved.clone();
    let producer = tokio::spawn(async move {
        let mut p = Producer::new(&addrs[1..]);
        let mut confirmed = Vec::new();
        let mut after = 0;
        let mut seq = 50;
        while after < 20 {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                after += 1;
            }
            let m = format!("m-{seq}");
            confirmed.push(p.publish("orders", m.as_bytes(), seq).await.base_offset);
            seq += 1;
        }
        confirmed
    });
    let addrs = cluster.addrs.clone();
    let mv = ClusterChange::MoveTopic {
        topic: "orders".into(),
        replicas: vec![2, 3, 4],
    };
    match change(addrs[0], mv.clone()).await {
        Message::ClusterInfo(_) => {}
        other => panic!("move: {other:?}"),
    }
    moved.store(true, std::sync::atomic::Ordering::SeqCst);
    confirmed.extend(producer.await.unwrap());
    let n = confirmed.len() as u64;
    assert!(n > 70, "publishes went on during the move ({n})");
    assert_eq!(
        confirmed,
        (0..n).collect::<Vec<_>>(),
        "dense: none lost, none twice"
    );
    let want: Vec<Vec<u8>> = (0..n).map(|i| format!("m-{i}").into_bytes()).collect();
    assert!(
        read_all(addrs[3], "orders", n as usize).await == want,
        "node 4's copy"
    );
    // Node 1 let its copy go: the topic and its Raft log are gone there.
    describe_until(addrs[0], "orders", unknown_topic).await;
    assert!(!cluster.dirs[0]
        .path()
        .join("cluster/topics/orders")
        .exists());
    // Moving again to where it is changes nothing (here through the
    // command line, which prints the cluster afterwards).
    let _ = mv;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "cluster",
            "move",
            "orders",
            "--to",
            "2,3,4",
            "--timeout",
            "60s",
        ])
        .args(["--server", &addrs[2].to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "topic/orders")
        .expect("the topic's group")
        .clone();
    let nodes: Vec<u64> = group["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_u64().unwrap())
        .collect();
    assert_eq!(nodes, vec![2, 3, 4], "{info}");
    // Now node 1 can go; the cluster carries on without it.
    match change(addrs[2], ClusterChange::RemoveNode { id: 1 }).await {
        Message::ClusterInfo(i) => assert!(i.nodes.iter().all(|n| n.id != 1), "{i:?}"),
        other => panic!("remove node 1: {other:?}"),
    }
    cluster.kill(0);
    create(&addrs[1..], "after").await;
    let mut p = Producer::new(&addrs[1..]);
    assert_eq!(p.publish("after", b"a", 0).await.base_offset, 0);
    assert_eq!(read_all(addrs[3], "after", 1).await, vec![b"a".to_vec()]);
    assert_eq!(p.publish("orders", b"more", n).await.base_offset, n);
    // The node that joined restarts from its own logs like any member.
    cluster.kill(3);
    cluster.restart(3);
    let got = read_all(addrs[3], "orders", n as usize + 1).await;
    assert_eq!(got.last().map(Vec::as_slice), Some(&b"more"[..]));
    assert_eq!(
        p.publish("orders", b"again", n + 1).await.base_offset,
        n + 1
    );
}

/// Deleting a replicated topic deletes it on every node, also on one that
/// was down and learns of it when it comes back; the name can then be
/// created afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_is_deleted_everywhere_even_on_a_node_that_was_down() {
    let mut cluster = Cluster::start(3);
    let addrs = cluster.addrs.clone();
    create(&addrs, "gone").await;
    let mut p = Producer::new(&addrs);
    for seq in 0..10 {
        p.publish("gone", b"x", seq).await;
    }
    let down = (p.at + 1) % 3;
    cluster.kill(down);
    let asked = (down + 1) % 3;
    let mut c = Conn::open(addrs[asked]).await.unwrap();
    let del = Message::DeleteTopic(TopicName {
        name: "gone".into(),
    });
    match c.request(del.clone()).await {
        Some(Message::Ok) => {}
        other => panic!("delete: {other:?}"),
    }
    for (i, a) in addrs.iter().enumerate() {
        if i != down {
            describe_until(*a, "gone", unknown_topic).await;
        }
    }
    // Deleting it again: it is not there.
    match c.request(del).await {
        Some(Message::Error(e)) => {
            assert_eq!(
                ErrorCode::from_u16(e.code),
                ErrorCode::UnknownTopic,
                "{e:?}"
            )
        }
        other => panic!("second delete: {other:?}"),
    }
    cluster.restart(down);
    describe_until(addrs[down], "gone", unknown_topic).await;
    let raft_dir = cluster.dirs[down].path().join("cluster/topics/gone");
    let deadline = Instant::now() + PATIENCE;
    while raft_dir.exists() {
        assert!(Instant::now() < deadline, "{raft_dir:?} is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The name is free again: a new topic, from offset 0, on every node.
    create(&addrs, "gone").await;
    let mut p = Producer::new(&addrs);
    assert_eq!(p.publish("gone", b"new", 0).await.base_offset, 0);
    for a in &addrs {
        assert_eq!(read_all(*a, "gone", 1).await, vec![b"new".to_vec()]);
    }
}

/// A Rust client over WebSocket given only a follower's URL cannot dial
/// the leader (a NotLeader names it by its TCP address): it tries its one
/// address again after a pause each time, instead of reconnecting in a
/// tight loop, and its publish is never confirmed by a node that does not
/// lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_cannot_reach_the_leader_does_not_spin() {
    let mut cluster = Cluster::start_on(free_addrs(3), None);
    cluster.http = Some(free_addrs(3));
    cluster.spawn_all();
    let addrs = cluster.addrs.clone();
    create(&addrs, "far").await;
    let mut p = Producer::new(&addrs);
    p.publish("far", b"x", 0).await;
    let follower = (p.at + 1) % addrs.len();
    let url = format!("ws://{}/ws", cluster.http.as_ref().unwrap()[follower]);
    let client = herald_client::Client::connect(url).await.unwrap();
    let mut events = client.events();
    let producer = client.producer("far");
    let confirm = producer.send("y").await.unwrap();
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = drops.clone();
    let counter = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if matches!(e, herald_client::ConnectionEvent::Disconnected { .. }) {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    // Watched for 2 s: a NotLeader every 100 ms at most (the pause) is 20
    // drops; a tight loop is hundreds.
    if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), confirm).await {
        panic!("confirmed through a follower it cannot leave: {c:?}");
    }
    counter.abort();
    let drops = drops.load(std::sync::atomic::Ordering::SeqCst);
    assert!(drops >= 2, "the client tried again ({drops} drops)");
    assert!(drops <= 40, "{drops} reconnects in 2 s: the client spins");
}
