//! The HTTP listener: WebSocket sessions speak the TCP protocol's frames to
//! the same session code (with the same limits, heartbeats and stall
//! cut-off), the static files, `/healthz`, the Origin check, close codes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use futures::{SinkExt, StreamExt};
use herald_broker::BrokerConfig;
use herald_protocol::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as Ws};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn web_config(dir: &std::path::Path) -> BrokerConfig {
    let mut c = config(dir);
    c.http = Some("127.0.0.1:0".parse().unwrap());
    c
}

async fn ws_connect(http: SocketAddr, origin: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let mut req = format!("ws://{http}/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let r = tokio::time::timeout(T, tokio_tungstenite::connect_async(req)).await;
    r.expect("connect timed out").map(|(s, _)| s)
}

fn encode(id: u64, m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    m.encode(id, &mut b);
    b.freeze()
}

/// Reads frames from the concatenated binary messages.
struct Frames {
    ws: Socket,
    buf: BytesMut,
}

impl Frames {
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = frame::decode_frame(&mut self.buf, DEFAULT_MAX_FRAME).unwrap() {
                return Some(f);
            }
            match tokio::time::timeout(T, self.ws.next())
                .await
                .expect("frame timeout")
            {
                Some(Ok(Ws::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn message(&mut self) -> (u64, Message) {
        let f = self.next().await.expect("connection closed");
        (f.header.request_id, Message::decode(&f).unwrap())
    }

    async fn send(&mut self, id: u64, m: &Message) {
        self.ws.send(Ws::Binary(encode(id, m))).await.unwrap();
    }

    /// Waits for the Close message and returns its code.
    async fn close_code(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(T, self.ws.next())
                .await
                .expect("close timeout")
            {
                Some(Ok(Ws::Close(c))) => return c.map(|c| c.code),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }
}

fn hello(id: Option<&str>) -> Message {
    Message::Hello(Hello {
        min_version: 1,
        max_version: 1,
        client_name: "ws-test".into(),
        client_id: id.map(str::to_owned),
        token: None,
    })
}

async fn session(http: SocketAddr, id: &str) -> Frames {
    session_on(ws_connect(http, None).await.unwrap(), id).await
}

async fn session_on(ws: Socket, id: &str) -> Frames {
    let mut f = Frames {
        ws,
        buf: BytesMut::new(),
    };
    f.send(1, &hello(Some(id))).await;
    match f.message().await {
        (1, Message::HelloOk(ok)) => assert_eq!(ok.client_id, id),
        other => panic!("handshake: {other:?}"),
    }
    f
}

fn publish(topic: &str, payload: &[u8]) -> Message {
    let mut b = BatchBuilder::new();
    b.push(&RecordRef {
        key: b"",
        headers: &[],
        payload,
        timestamp: 1,
    });
    Message::Publish {
        topic: topic.into(),
        batch: Batch::validate(b.finish(0, 0)).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_publishes_and_subscribes_like_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let http = b.http_addr().expect("http on");
    let mut ws = session(http, "w1").await;

    // One frame split over two messages, then two frames in one message:
    // message boundaries mean nothing.
    let first = encode(2, &publish("t", b"one"));
    ws.ws.send(Ws::Binary(first.slice(..10))).await.unwrap();
    ws.ws.send(Ws::Binary(first.slice(10..))).await.unwrap();
    let mut two = BytesMut::new();
    publish("t", b"two").encode(3, &mut two);
    publish("t", b"three").encode(4, &mut two);
    ws.ws.send(Ws::Binary(two.freeze())).await.unwrap();
    for (want_id, offset) in [(2, 0), (3, 1), (4, 2)] {
        match ws.message().await {
            (id, Message::PublishOk(ok)) => {
                assert_eq!((id, ok.base_offset), (want_id, offset));
            }
            other => panic!("{other:?}"),
        }
    }

    // A TCP client sees what the WebSocket client published, and the
    // other way round.
    let mut tcp = Raw::connect(b.local_addr()).await;
    tcp.subscribe("t", Some("g"), StartPosition::Earliest, 10)
        .await;
    let got = tcp.take(3).await;
    assert_eq!(payloads(&got), [&b"one"[..], b"two", b"three"]);
    tcp.publish("t", &[b"four"]).await;

    let sub = Message::Subscribe(Subscribe {
        topic: "t".into(),
        group: Some("web".into()),
        start: StartPosition::Earliest,
        prefetch_messages: 100,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms: 0,
        max_deliveries: 0,
    });
    ws.send(5, &sub).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let f = ws.next().await.unwrap();
        match Message::decode(&f).unwrap() {
            Message::SubscribeOk(_) => {}
            Message::Deliver(d) => {
                for r in d.batch.records() {
                    if (d.first_offset..=d.last_offset).contains(&r.offset) {
                        seen.push(r.payload.clone());
                    }
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, [&b"one"[..], b"two", b"three", b"four"]);
    ws.send(6, &Message::Ping).await;
    assert_eq!(ws.message().await, (6, Message::Pong));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_going_away_then_close_1001() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let mut ws = session(b.http_addr().unwrap(), "w").await;
    let stop = tokio::spawn(b.shutdown());
    let (id, m) = ws.message().await;
    assert_eq!(id, 0);
    assert!(matches!(m, Message::GoingAway(_)), "{m:?}");
    assert_eq!(ws.close_code().await, Some(CloseCode::Away));
    tokio::time::timeout(T, stop).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_oversized_messages_close_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.max_frame_bytes = 64 * 1024;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();

    let mut ws = session(http, "text").await;
    ws.ws.send(Ws::text("hello")).await.unwrap();
    assert_eq!(ws.close_code().await, Some(CloseCode::Unsupported));

    let mut ws = session(http, "big").await;
    let big = vec![0u8; 65 * 1024];
    let _ = ws.ws.send(Ws::Binary(big.into())).await;
    assert_eq!(ws.close_code().await, Some(CloseCode::Size));

    // A frame whose length is over the limit, in small messages: the
    // frame decoder refuses it from its first 4 bytes.
    let mut ws = session(http, "frame").await;
    let mut f = BytesMut::new();
    frame::put_frame(&mut f, Opcode::Ping, 0, 9, &[]);
    f[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    ws.ws.send(Ws::Binary(f.freeze())).await.unwrap();
    match ws.message().await {
        (0, Message::Error(e)) => assert_eq!(e.code, ErrorCode::TooLarge.as_u16()),
        other => panic!("{other:?}"),
    }
    assert_eq!(ws.close_code().await, Some(CloseCode::Normal));

    // A frame of a reserved opcode breaks the WebSocket protocol: 1002.
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    let mut ws = session(http, "reserved").await;
    let reserved = WsFrame::message(
        Bytes::from_static(b"x"),
        OpCode::Data(Data::Reserved(3)),
        true,
    );
    ws.ws.send(Ws::Frame(reserved)).await.unwrap();
    assert_eq!(ws.close_code().await, Some(CloseCode::Protocol));

    // A client that closes gets the broker's Close back (the closing
    // handshake), not a dropped connection.
    let mut ws = session(http, "closer").await;
    ws.ws.close(None).await.unwrap();
    let answer = tokio::time::timeout(T, ws.ws.next())
        .await
        .expect("an answer to the Close");
    assert!(
        matches!(answer, Some(Ok(Ws::Close(_)))),
        "the client's Close was answered with {answer:?}"
    );

    // The broker goes on serving.
    let mut ok = session(http, "after").await;
    ok.send(2, &Message::Ping).await;
    assert_eq!(ok.message().await, (2, Message::Pong));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_peer_is_pinged_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.heartbeat = Duration::from_millis(100);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut ws = session(b.http_addr().unwrap(), "quiet").await;
    assert_eq!(ws.message().await, (0, Message::Ping));
    // Three heartbeats of silence: the broker hangs up.
    let closed = tokio::time::timeout(T, async {
        loop {
            if ws.next().await.is_none() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    b.shutdown().await;
}

/// A WebSocket Ping control frame is answered with a Pong carrying the
/// same payload (RFC 6455, 5.5.2-5.5.3), even while half of a Herald frame
/// waits for its other half, and the session's frame stream goes on
/// undisturbed. Proxies, load balancers and non-browser clients probe idle
/// connections this way and drop those that do not answer; the broker
/// leaves the answer to tungstenite (ws.rs ignores control messages), so
/// this guards against a change of the WebSocket layer or of its reader
/// that stops answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ping_is_answered_with_a_pong_of_the_same_payload() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    // No heartbeat of the broker's (a Herald Ping) in between.
    cfg.heartbeat = Duration::from_secs(600);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut ws = session(b.http_addr().unwrap(), "pinger").await;

    // The first half of a (Herald) Ping frame, then the WebSocket Ping.
    let ping = encode(2, &Message::Ping);
    let half = ping.len() / 2;
    ws.ws.send(Ws::Binary(ping.slice(..half))).await.unwrap();
    let payload = Bytes::from_static(b"are-you-there");
    ws.ws.send(Ws::Ping(payload.clone())).await.unwrap();
    let pong = tokio::time::timeout(T, async {
        loop {
            match ws.ws.next().await {
                Some(Ok(Ws::Pong(p))) => return p,
                Some(Ok(Ws::Binary(b))) => ws.buf.extend_from_slice(&b),
                other => panic!("waiting for a Pong: {other:?}"),
            }
        }
    })
    .await
    .expect("no Pong to the WebSocket Ping");
    assert_eq!(pong, payload);

    // The control frame did not disturb the frame stream: the rest of the
    // Herald Ping completes it.
    ws.ws.send(Ws::Binary(ping.slice(half..))).await.unwrap();
    assert_eq!(ws.message().await, (2, Message::Pong));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_stops_reading_is_cut_off_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.write_stall_timeout = Duration::from_millis(300);
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut p = Raw::connect(b.local_addr()).await;
    let big = vec![b'z'; 256 * 1024];
    for _ in 0..40 {
        p.publish("t", &[&big]).await;
    }
    let mut stuck = session(b.http_addr().unwrap(), "stuck").await;
    let sub = Message::Subscribe(Subscribe {
        topic: "t".into(),
        group: None,
        start: StartPosition::Earliest,
        prefetch_messages: 100_000,
        prefetch_bytes: 64 << 20,
        ack_timeout_ms: 0,
        max_deliveries: 0,
    });
    stuck.send(2, &sub).await;
    let mut other = Raw::connect(b.local_addr()).await;
    other
        .subscribe("t", None, StartPosition::Earliest, 100)
        .await;
    assert_eq!(other.take(40).await.len(), 40);
    // let the stall timeout pass (what is tested)
    tokio::time::sleep(Duration::from_millis(600)).await;
    let raw = stuck.ws.get_mut();
    let MaybeTlsStream::Plain(raw) = raw else {
        panic!("plain TCP expected")
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    tokio::time::timeout(T, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the stuck peer was never cut off");
    assert!(total < 40 * 256 * 1024, "not cut off ({total} bytes)");
    assert_eq!(p.publish("t", &[b"still fine"]).await.base_offset, 40);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_other_than_the_page_s_own_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.http_allowed_origins = vec!["https://app.example".into()];
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();
    match ws_connect(http, Some("https://evil.example")).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(ws_connect(http, Some("https://app.example")).await.is_ok());
    assert!(ws_connect(http, Some(&format!("http://{http}")))
        .await
        .is_ok());
    assert!(ws_connect(http, None).await.is_ok());
    // DNS rebinding: a page of rebound.example, that name made to resolve
    // to the broker, sends it as both Origin and Host. A name is trusted
    // only when listed; this listener's address, and localhost, are not
    // names anyone else can point here.
    let port = http.port();
    let with_host = |origin: String, host: String| {
        let mut req = format!("ws://{http}/ws").into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req.headers_mut().insert("host", host.parse().unwrap());
        async move {
            let r = tokio::time::timeout(T, tokio_tungstenite::connect_async(req)).await;
            r.expect("connect timed out").map(|_| ())
        }
    };
    let rebound = format!("rebound.example:{port}");
    match with_host(format!("http://{rebound}"), rebound).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a rebound name was let in: {other:?}"),
    }
    let local = format!("localhost:{port}");
    assert!(with_host(format!("http://{local}"), local).await.is_ok());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_count_against_the_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    // The TCP listener holds one permit while it waits for its next
    // connection (it takes it before accept), so 2 leaves room for one.
    cfg.max_connections = 2;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();
    let held = Raw::connect(b.local_addr()).await;
    match ws_connect(http, None).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    drop(held);
    // The permit comes back once the TCP session is over.
    let again = tokio::time::timeout(T, async {
        loop {
            if let Ok(s) = ws_connect(http, None).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll until the session ended
        }
    })
    .await;
    assert!(again.is_ok());
    b.shutdown().await;
}

/// `GET path` over a fresh connection: (status, body).
async fn get(http: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(http).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_client_and_healthz_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let b = herald_broker::server::start(web_config(dir.path()))
        .await
        .unwrap();
    let http = b.http_addr().unwrap();
    assert_eq!(get(http, "/healthz").await.0, 200);
    let (status, page) = get(http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");
    let (status, entry) = get(http, "/herald.js").await;
    assert_eq!(status, 200);
    assert!(entry.contains("./herald/index.js"));
    // Every module of the client is served, byte for byte.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../js/src");
    for e in std::fs::read_dir(src).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "js") {
            let name = path.file_name().unwrap().to_str().unwrap();
            let (status, body) = get(http, &format!("/herald/{name}")).await;
            assert_eq!(status, 200, "{name}");
            assert_eq!(body, std::fs::read_to_string(&path).unwrap(), "{name}");
        }
    }
    assert_eq!(get(http, "/nope").await.0, 404);
    b.shutdown().await;
}

#[test]
fn serve_prints_its_http_address_and_no_http_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Child::command(dir.path(), "127.0.0.1:0", &[]);
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening on 127.0.0.1:"), "{first}");
    let second = lines.next().unwrap().unwrap();
    let http: SocketAddr = second
        .strip_prefix("http listening on ")
        .and_then(|r| r.split_whitespace().next())
        .expect(&second)
        .parse()
        .unwrap();
    assert_ne!(
        http.port(),
        7480,
        "port 0 for --listen means a free HTTP port too"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(get(http, "/healthz")).0, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // An explicit address that is busy is an error; --no-http binds none.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http"])
        .arg(busy.local_addr().unwrap().to_string())
        .arg("--data-dir")
        .arg(dir.path().join("b"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    let mut c = Child::command(&dir.path().join("c"), "127.0.0.1:0", &["--no-http"]);
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(lines.next().unwrap().unwrap().starts_with("listening on "));
    child.kill().unwrap();
    // Nothing more was printed: the stream ends with the process.
    assert!(lines.next().is_none());
    child.wait().unwrap();
}

/// A browser tab that vanishes (the TCP connection closes without a
/// WebSocket close) ends its session at once, not at the next heartbeat:
/// its group membership and connection permit are given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_vanishes_is_noticed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.max_connections = 2;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();
    let mut p = Raw::connect(b.local_addr()).await;
    p.publish("t", &[b"x"]).await;
    drop(p);
    // The publisher's permit comes back once the broker has seen it close.
    let ws = tokio::time::timeout(T, async {
        loop {
            if let Ok(ws) = ws_connect(http, None).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll until the permit is back
        }
    })
    .await
    .expect("the publisher's connection was never released");
    let mut gone = session_on(ws, "gone").await;
    let sub = Message::Subscribe(Subscribe {
        topic: "t".into(),
        group: Some("g".into()),
        start: StartPosition::Earliest,
        prefetch_messages: 10,
        prefetch_bytes: 1 << 20,
        ack_timeout_ms: 0,
        max_deliveries: 0,
    });
    gone.send(2, &sub).await;
    assert!(matches!(gone.message().await, (2, Message::SubscribeOk(_))));
    // Drop the TCP connection under the WebSocket, no close frame.
    drop(gone);
    let started = std::time::Instant::now();
    tokio::time::timeout(T, async {
        loop {
            if ws_connect(http, None).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll until the session ended
        }
    })
    .await
    .expect("the vanished session was never noticed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    b.shutdown().await;
}

/// Whether the broker closed `s` (EOF or reset) within `within`; bytes it
/// sends first (a 408 answer) are read and dropped.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An HTTP connection must send each request's header within the handshake
/// timeout (a silent one, a half-sent request, and a kept-alive one that
/// goes quiet after its answer are closed), and holds a place in the
/// per-address cap shared with sessions while it is open. Before, idle
/// HTTP connections lived for ever, outside every limit: twenty thousand
/// took all of the broker's file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_are_timed_out_and_count_against_the_address_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_config(dir.path());
    cfg.handshake_timeout = Duration::from_millis(300);
    cfg.max_connections_per_address = 3;
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();

    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut half = TcpStream::connect(http).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut kept = TcpStream::connect(http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Three open: a fourth from the same address is closed at once, and a
    // TCP session from it is refused too (the cap is shared).
    let mut fourth = TcpStream::connect(http).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_millis(200)).await,
        "a fourth HTTP connection from one address was kept"
    );
    let mut tcp = TcpStream::connect(b.local_addr()).await.unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_millis(200)).await,
        "a session past the address cap was kept"
    );
    // Within a few handshake timeouts all three are closed.
    for (what, s) in [
        ("silent", &mut silent),
        ("half-sent", &mut half),
        ("kept-alive", &mut kept),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "the {what} HTTP connection was not closed"
        );
    }
    // Their places are free again (each is given back just after its
    // socket closes): a WebSocket session opens.
    let deadline = std::time::Instant::now() + T;
    let mut ws = loop {
        match ws_connect(http, None).await {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no WebSocket after the cut: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await; // polling the cap
            }
        }
    };
    ws.close(None).await.unwrap();
    b.shutdown().await;
}
