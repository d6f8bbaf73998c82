//! A minimal protocol-level client for broker tests, built directly on
//! `herald-protocol`, plus helpers to start brokers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use herald_broker::server::BrokerHandle;
use herald_broker::BrokerConfig;
use herald_protocol::codec::FrameCodec;
use herald_protocol::*;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub const T: Duration = Duration::from_secs(10);

pub fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    }
}

pub async fn start(dir: &std::path::Path) -> BrokerHandle {
    herald_broker::server::start(config(dir)).await.unwrap()
}

pub struct Raw {
    pub framed: Framed<TcpStream, FrameCodec>,
    next_id: u64,
    /// Frames received while waiting for something else.
    pub backlog: std::collections::VecDeque<Frame>,
    pub client_id: String,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Self::connect_as(addr, None).await
    }

    pub async fn connect_as(addr: SocketAddr, id: Option<&str>) -> Raw {
        match Self::connect_with_token(addr, id, None).await {
            Ok(r) => r,
            Err(e) => panic!("handshake: {e:?}"),
        }
    }

    /// Handshakes with `token`; the broker's Error when it refuses.
    pub async fn connect_with_token(
        addr: SocketAddr,
        id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Raw, ErrorBody> {
        let mut r = Self::unhandshaken(addr).await;
        let hello = Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: "test".into(),
            client_id: id.map(str::to_owned),
            token: token.map(str::to_owned),
        });
        match r.request(hello).await {
            Message::HelloOk(ok) => r.client_id = ok.client_id,
            Message::Error(e) => return Err(e),
            other => panic!("handshake: {other:?}"),
        }
        Ok(r)
    }

    /// A connection that has sent nothing yet.
    pub async fn unhandshaken(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            framed: Framed::new(s, FrameCodec::default()),
            next_id: 1,
            backlog: Default::default(),
            client_id: String::new(),
        }
    }

    pub async fn send(&mut self, m: Message) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.framed.send((id, m)).await.unwrap();
        id
    }

    pub async fn send_no_reply(&mut self, m: Message) {
        self.framed.send((0, m)).await.unwrap();
    }

    pub async fn recv(&mut self) -> Option<Frame> {
        if let Some(f) = self.backlog.pop_front() {
            return Some(f);
        }
        match tokio::time::timeout(T, self.framed.next()).await {
            Ok(Some(Ok(f))) => Some(f),
            Ok(_) => None,
            Err(_) => panic!("timed out waiting for a frame"),
        }
    }

    /// Sends a request and waits for the reply with its id, keeping pushed
    /// frames for later.
    pub async fn request(&mut self, m: Message) -> Message {
        let id = self.send(m).await;
        self.wait_reply(id).await
    }

    pub async fn wait_reply(&mut self, id: u64) -> Message {
        let mut kept = Vec::new();
        loop {
            let f = tokio::time::timeout(T, self.framed.next())
                .await
                .expect("reply timeout")
                .expect("closed")
                .unwrap();
            if f.header.request_id == id && f.header.opcode != Opcode::Deliver {
                self.backlog.extend(kept);
                return Message::decode(&f).unwrap();
            }
            kept.push(f);
        }
    }

    /// Sends one EmitBatch, an emit per `(room, event)` (payload `x`), and
    /// returns its outcomes, one per emit.
    pub async fn emit_batch(&mut self, emits: &[(&str, &str)]) -> Vec<EmitOutcome> {
        let emits = emits
            .iter()
            .map(|(room, event)| Emit {
                target: EmitTarget::Room((*room).into()),
                event: (*event).into(),
                payload: b"x".to_vec(),
                correlation: 0,
            })
            .collect();
        match self.request(Message::EmitBatch(EmitBatch { emits })).await {
            Message::EmitBatchOk(ok) => ok.results,
            other => panic!("EmitBatch answered {other:?}"),
        }
    }

    pub async fn publish(&mut self, topic: &str, payloads: &[&[u8]]) -> PublishOk {
        self.publish_seq(topic, payloads, 0, 0).await.unwrap()
    }

    pub async fn publish_seq(
        &mut self,
        topic: &str,
        payloads: &[&[u8]],
        pid: u64,
        seq: u64,
    ) -> Result<PublishOk, ErrorBody> {
        let batch = batch(payloads, pid, seq);
        match self
            .request(Message::Publish {
                topic: topic.into(),
                batch,
            })
            .await
        {
            Message::PublishOk(ok) => Ok(ok),
            Message::Error(e) => Err(e),
            m => panic!("unexpected {m:?}"),
        }
    }

    /// Creates a topic with the broker's defaults (subscribing does not
    /// create one).
    pub async fn create_topic(&mut self, name: &str) {
        match self
            .request(Message::CreateTopic(CreateTopic {
                name: name.into(),
                config: TopicConfig::default(),
                replicas: 0,
            }))
            .await
        {
            Message::TopicInfo(_) => {}
            m => panic!("create topic {name}: {m:?}"),
        }
    }

    pub async fn subscribe(
        &mut self,
        topic: &str,
        group: Option<&str>,
        start: StartPosition,
        prefetch: u32,
    ) -> u64 {
        self.subscribe_with(Subscribe {
            topic: topic.into(),
            group: group.map(str::to_owned),
            start,
            prefetch_messages: prefetch,
            prefetch_bytes: 64 << 20,
            ack_timeout_ms: 0,
            max_deliveries: 0,
        })
        .await
    }

    pub async fn subscribe_with(&mut self, s: Subscribe) -> u64 {
        match self.request(Message::Subscribe(s)).await {
            Message::SubscribeOk(ok) => ok.subscription_id,
            m => panic!("subscribe: {m:?}"),
        }
    }

    /// Next delivery: (subscription, delivery count, records in range).
    pub async fn next_delivery(&mut self) -> (u64, u32, Vec<Record>) {
        loop {
            let f = self.recv().await.expect("connection closed");
            if let Ok(Message::Deliver(d)) = Message::decode(&f) {
                let recs = d
                    .batch
                    .records()
                    .filter(|r| r.offset >= d.first_offset && r.offset <= d.last_offset)
                    .collect();
                return (d.subscription_id, d.delivery_count, recs);
            }
        }
    }

    /// Collects deliveries until `n` records arrived.
    pub async fn take(&mut self, n: usize) -> Vec<(u32, Record)> {
        let mut out = Vec::new();
        while out.len() < n {
            let (_, c, recs) = self.next_delivery().await;
            out.extend(recs.into_iter().map(|r| (c, r)));
        }
        out
    }

    /// Asserts that no delivery arrives within `d`.
    pub async fn expect_quiet(&mut self, d: Duration) {
        let r = tokio::time::timeout(d, async {
            loop {
                match self.framed.next().await {
                    Some(Ok(f)) if f.header.opcode == Opcode::Deliver => return f,
                    Some(Ok(_)) => continue,
                    _ => futures::future::pending::<()>().await,
                }
            }
        })
        .await;
        assert!(r.is_err(), "unexpected delivery");
    }

    /// Waits (up to [`T`]) until the first group of `topic` counts `n`
    /// dead-lettered records: the copy runs beside the group, which counts
    /// it once it is durable.
    pub async fn until_dead_lettered(&mut self, topic: &str, n: u64) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let name = topic.to_owned();
            match self.request(Message::ListGroups(TopicName { name })).await {
                Message::GroupList(l) if l.groups[0].dead_lettered == n => return,
                Message::GroupList(_) => {}
                m => panic!("{m:?}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}: not {n} dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // polling the group's count
        }
    }

    pub async fn ack(&mut self, sub: u64, kind: AckKind, ranges: Vec<(u64, u64)>) {
        match self
            .request(Message::Ack(Ack {
                subscription_id: sub,
                kind,
                ranges,
            }))
            .await
        {
            Message::Ok => {}
            m => panic!("ack: {m:?}"),
        }
    }
}

pub fn batch(payloads: &[&[u8]], pid: u64, seq: u64) -> Batch {
    let mut b = BatchBuilder::new();
    for p in payloads {
        b.push(&RecordRef {
            payload: p,
            timestamp: 1,
            ..Default::default()
        });
    }
    Batch::validate(b.finish(pid, seq)).unwrap()
}

pub fn payloads(rs: &[(u32, Record)]) -> Vec<Bytes> {
    rs.iter().map(|(_, r)| r.payload.clone()).collect()
}

pub fn raw_frame(op: Opcode, id: u64, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    frame::put_frame(&mut b, op, 0, id, body);
    b
}

/// A `herald serve` child process on a free port.
pub struct Child {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Child {
    /// Starts the real binary on `dir` and waits for its `listening on` line.
    pub fn spawn(dir: &std::path::Path, extra: &[&str]) -> Child {
        Self::spawn_on(dir, "127.0.0.1:0", extra)
    }

    pub fn spawn_on(dir: &std::path::Path, listen: &str, extra: &[&str]) -> Child {
        Self::start(Self::command(dir, listen, extra))
    }

    /// The `herald serve` command line `spawn_on` runs, to adjust first.
    pub fn command(dir: &std::path::Path, listen: &str, extra: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        c.args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("HERALD_LOG", "warn");
        c
    }

    /// Runs a `herald serve` command and waits for its `listening on` line.
    pub fn start(cmd: std::process::Command) -> Child {
        Self::start_with_stderr(cmd, std::process::Stdio::inherit())
    }

    /// Like [`Child::start`], with the broker's log going to `stderr` (a
    /// file the test reads afterwards).
    pub fn start_with_stderr(mut cmd: std::process::Command, stderr: std::process::Stdio) -> Child {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            while let Some(Ok(l)) = lines.next() {
                if let Some(a) = l.strip_prefix("listening on ") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(T)
            .expect("herald did not print its address");
        Child {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_sigterm(self.child.id());
        let deadline = std::time::Instant::now() + T;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "herald did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling a child's exit
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
