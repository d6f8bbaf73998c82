//! The calling side of [`super::rpc`]: Raft's network, one connection per
//! peer and group, request after request.
//!
//! Raft sends one request at a time to each target of each group and waits
//! for the answer, so a connection needs no multiplexing: a call writes
//! one `Cluster` frame and reads frames until the `ClusterReply` with its
//! id (answering the broker's pings meanwhile). Any failure drops the
//! connection; the next call opens a new one.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use herald_protocol::{codec::FrameCodec, Hello, Message};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::rpc::{Answer, Call, CallBody};
use super::types::{Node, NodeId, TypeConfig};

/// Bytes of entries one AppendEntries call carries at most (and at least
/// one entry): big enough for many client batches per round trip, small
/// enough that encoding it does not hold a runtime thread for long.
const CALL_BYTES: usize = 1 << 20;

/// `None` when `entries` fit in `budget` bytes; otherwise how many of the
/// first ones do (at least one: a single entry always fits a frame, since
/// a client batch is smaller than the frame limit by more than an entry's
/// overhead).
fn entries_within(entries: &[super::types::Entry], budget: usize) -> Option<u64> {
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        total += entry_bytes(e);
        if total > budget {
            // The first entry goes alone if it has to.
            let n = i.max(1);
            return (n < entries.len()).then_some(n as u64);
        }
    }
    None
}

/// An entry's encoded size, about.
fn entry_bytes(e: &super::types::Entry) -> usize {
    use super::types::Command;
    64 + match &e.payload {
        openraft::EntryPayload::Normal(Command::Publish(b)) => b.iter().map(|b| b.len() + 8).sum(),
        _ => 256,
    }
}

/// How long a connection attempt (connect and Hello) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

/// Raft's network for one group.
#[derive(Clone)]
pub struct Network {
    pub group: String,
    pub node_id: NodeId,
    pub token: Option<String>,
    /// The frame limit peers accept (the same settings on every node).
    pub max_frame: usize,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
            conn: None,
            next_id: 1,
        }
    }
}

/// One peer of one group.
pub struct Peer {
    net: Network,
    target: NodeId,
    addr: String,
    conn: Option<Framed<TcpStream, FrameCodec>>,
    next_id: u64,
}

/// A failed call, before it is given Raft's error type.
enum Failure {
    /// Could not reach the peer: Raft backs off.
    Unreachable(String),
    /// The connection broke or the peer answered nonsense.
    Network(String),
    /// The call would be over the frame limit; Raft should send at most
    /// this many entries.
    TooLarge(u64),
}

impl Peer {
    async fn connect(&self) -> Result<Framed<TcpStream, FrameCodec>, Failure> {
        let open = async {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Failure::Unreachable(format!("connect {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            let mut framed = Framed::new(stream, FrameCodec::new(self.net.max_frame));
            let hello = Message::Hello(Hello {
                min_version: 1,
                max_version: 1,
                client_name: format!("herald-node-{}", self.net.node_id),
                client_id: None,
                token: self.net.token.clone(),
            });
            framed
                .send((1, hello))
                .await
                .map_err(|e| Failure::Unreachable(e.to_string()))?;
            loop {
                let f = framed
                    .next()
                    .await
                    .ok_or_else(|| Failure::Unreachable("closed during the handshake".into()))?
                    .map_err(|e| Failure::Unreachable(e.to_string()))?;
                match Message::decode(&f).map_err(|e| Failure::Unreachable(e.to_string()))? {
                    Message::HelloOk(_) => return Ok(framed),
                    Message::Error(e) => {
                        return Err(Failure::Unreachable(format!(
                            "peer {} refused this node: {}",
                            self.addr, e.message
                        )))
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| Failure::Unreachable(format!("connect {}: timed out", self.addr)))?
    }

    /// Sends `body` and waits for its answer (at most `timeout`).
    ///
    /// The connection is taken out for the call and put back only once its
    /// answer came: a call Raft gives up on (its own timeout drops this
    /// future) closes the connection with it. Kept open, the peer would
    /// still have to serve the abandoned call, and every retry would queue
    /// behind it (the peer serves one call per connection at a time): a
    /// follower catching up then heard nothing else for seconds, heartbeats
    /// included, and stood for election.
    async fn call(&mut self, body: CallBody, timeout: Duration) -> Result<Answer, Failure> {
        // Connected first: nothing is encoded for a peer that is down.
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let call = Call {
            group: self.net.group.clone(),
            body,
        };
        let encoded = postcard::to_allocvec(&call).map_err(|e| Failure::Network(e.to_string()))?;
        // Header and a margin: the peer's frame limit counts the whole frame.
        if encoded.len() + 64 > self.net.max_frame {
            self.conn = Some(conn);
            return Err(Failure::TooLarge(1));
        }
        let id = self.next_id;
        self.next_id += 1;
        let result = tokio::time::timeout(timeout, async {
            conn.send((id, Message::Cluster(encoded.into())))
                .await
                .map_err(|e| Failure::Network(e.to_string()))?;
            loop {
                let f = conn
                    .next()
                    .await
                    .ok_or_else(|| {
                        Failure::Network(format!("{} closed the connection", self.addr))
                    })?
                    .map_err(|e| Failure::Network(e.to_string()))?;
                let request_id = f.header.request_id;
                match Message::decode(&f).map_err(|e| Failure::Network(e.to_string()))? {
                    Message::Ping => {
                        conn.send((request_id, Message::Pong))
                            .await
                            .map_err(|e| Failure::Network(e.to_string()))?;
                    }
                    Message::ClusterReply(b) if request_id == id => {
                        return postcard::from_bytes::<Answer>(&b)
                            .map_err(|e| Failure::Network(format!("bad answer: {e}")));
                    }
                    Message::Error(e) if request_id == id => {
                        return Err(Failure::Network(format!(
                            "peer {}: {}",
                            self.addr, e.message
                        )))
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Network(format!(
                "{} did not answer in time",
                self.addr
            )))
        });
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// Bytes of entries one call carries at most.
    fn call_budget(&self) -> usize {
        CALL_BYTES
            .min(self.net.max_frame.saturating_sub(4096))
            .max(1)
    }

    fn error<E: std::error::Error>(&self, f: Failure) -> RpcError<E> {
        if matches!(f, Failure::Network(_) | Failure::Unreachable(_)) {
            tracing::debug!(peer = %self.addr, group = %self.net.group, "cluster call failed");
        }
        let io = |m: String| std::io::Error::other(m);
        match f {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&io(m))),
            Failure::Network(m) => RPCError::Network(NetworkError::new(&io(m))),
            // Raft sends fewer entries next time.
            Failure::TooLarge(n) => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(n)),
        }
    }

    fn unexpected<E: std::error::Error>(&self, a: Answer) -> RpcError<E> {
        let m = match a {
            // Not created on that node yet: like an unreachable peer.
            Answer::NoGroup(g) => {
                return RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                    "node {} has no group {g} yet",
                    self.target
                ))))
            }
            Answer::Malformed(m) => m,
            other => format!("unexpected answer {other:?}"),
        };
        RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
    }
}

/// How long Raft waits before calling an unreachable peer again (openraft
/// waits 500 ms by default): a restarted node hears from its leader soon
/// after its listener is up, well within `catchup::HOLD`.
pub const BACKOFF: Duration = Duration::from_millis(100);

impl RaftNetwork<TypeConfig> for Peer {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(BACKOFF))
    }

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        // Bounded before anything is encoded: a follower far behind is
        // sent its entries in calls of at most CALL_BYTES (Raft takes the
        // hint and sends that many next time).
        if let Some(n) = entries_within(&req.entries, self.call_budget()) {
            return Err(self.error(Failure::TooLarge(n)));
        }
        match self.call(CallBody::Append(req), option.hard_ttl()).await {
            Ok(Answer::Append(Ok(r))) => Ok(r),
            Ok(Answer::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(f) => Err(self.error(f)),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        match self.call(CallBody::Snapshot(req), option.hard_ttl()).await {
            Ok(Answer::Snapshot(Ok(r))) => Ok(r),
            Ok(Answer::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(f) => Err(self.error(f)),
        }
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        match self.call(CallBody::Vote(req), option.hard_ttl()).await {
            Ok(Answer::Vote(Ok(r))) => Ok(r),
            Ok(Answer::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(f) => Err(self.error(f)),
        }
    }
}

/// What saying Hello to a broker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It answered (anything: an unauthorized Hello's error is an answer).
    Answered,
    /// Nothing listens there, or the connection was closed unanswered: the
    /// process is gone. (A connection alone proves nothing: a process being
    /// killed closes its connections before its listener, which still
    /// takes connections meanwhile, and resets them once it is gone.)
    Gone,
    /// No answer in time: a busy broker, or a machine that is down.
    Silent,
}

/// Says Hello to the broker at `addr` and waits `timeout` at most.
pub async fn probe(addr: &str, timeout: Duration) -> Probe {
    let probe = async {
        let Ok(stream) = TcpStream::connect(addr).await else {
            return Probe::Gone;
        };
        let mut framed = Framed::new(stream, FrameCodec::default());
        let hello = Message::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: "herald-node-probe".into(),
            client_id: None,
            token: None,
        });
        if framed.send((1, hello)).await.is_err() {
            return Probe::Gone;
        }
        match framed.next().await {
            Some(Ok(_)) => Probe::Answered,
            _ => Probe::Gone,
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or(Probe::Silent)
}

/// Sends one write to the node at `addr` (a rare write forwarded to its
/// group's leader) and returns its answer.
///
/// # Errors
/// The peer could not be reached or answered something else.
pub async fn propose(
    net: &Network,
    addr: &str,
    write: super::propose::Write,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut peer = Peer {
        net: net.clone(),
        target: 0,
        addr: addr.to_owned(),
        conn: None,
        next_id: 1,
    };
    let body = match write {
        super::propose::Write::Entry(c) => CallBody::Propose(c),
        super::propose::Write::Voters(v) => CallBody::Reconfigure(v),
    };
    peer.call(body, timeout).await.map_err(|f| match f {
        Failure::Unreachable(m) | Failure::Network(m) => m,
        Failure::TooLarge(_) => "proposal too large".into(),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::super::types::{Command, Entry, LogId};
    use super::*;

    fn entry(size: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Command::Publish(vec![Bytes::from(vec![0u8; size])])),
        }
    }

    /// Calls are cut to the byte budget, and one entry always goes, even
    /// alone over it (otherwise Raft would be told to send none, forever).
    #[test]
    fn calls_are_bounded_but_always_carry_an_entry() {
        let e = |n: usize, size: usize| (0..n).map(|_| entry(size)).collect::<Vec<_>>();
        assert_eq!(entries_within(&e(10, 100), 10_000), None);
        assert_eq!(entries_within(&e(10, 1000), 3_000), Some(2));
        assert_eq!(entries_within(&e(3, 10_000), 5_000), Some(1));
        assert_eq!(entries_within(&e(1, 10_000), 5_000), None);
    }
}
