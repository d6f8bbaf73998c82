//! `herald top` against a live broker, inside a pseudo-terminal: it draws
//! the broker's topics, and leaves cleanly on `q` (restoring the
//! terminal) and when its terminal is closed.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Output of the program in the terminal, as read from the master side.
enum Chunk {
    Bytes(Vec<u8>),
    /// The reader stopped (the terminal's other side is gone, or it was
    /// told to close the terminal).
    End,
}

/// A program running in a new pseudo-terminal, as its controlling
/// terminal (it is a session leader: closing the terminal hangs it up).
struct InPty {
    child: Child,
    /// The master side, for typing.
    writer: Option<std::fs::File>,
    chunks: mpsc::Receiver<Chunk>,
    /// Everything read so far.
    screen: Vec<u8>,
}

/// What the reader does once `pattern` has been seen.
#[derive(Clone, Copy, PartialEq)]
enum AfterMatch {
    KeepReading,
    /// Drop its handle of the master: with the writer's gone too, the
    /// terminal is closed.
    Close,
}

impl InPty {
    fn spawn(mut cmd: Command, pattern: &'static str, after: AfterMatch) -> InPty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 140,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out pointers to two ints; no name buffer; a valid winsize.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // The master must not leak into the program: it would hold its own
        // terminal open.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn herald top");
        // The parent's copies of the slave side go with `cmd`.
        drop(cmd);
        let writer = std::fs::File::from(master.try_clone().unwrap());
        let mut reader = std::fs::File::from(master);
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    // EIO once the program's side is closed.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        let _ = tx.send(Chunk::Bytes(buf[..n].to_vec()));
                        let found = seen.windows(pattern.len()).any(|w| w == pattern.as_bytes());
                        if found && after == AfterMatch::Close {
                            break;
                        }
                    }
                }
            }
            drop(reader);
            let _ = tx.send(Chunk::End);
        });
        InPty {
            child,
            writer: Some(writer),
            chunks,
            screen: Vec::new(),
        }
    }

    fn shown(&self, text: &str) -> bool {
        self.screen
            .windows(text.len())
            .any(|w| w == text.as_bytes())
    }

    /// Reads output until `text` has been shown; false at the end of
    /// output or after `d`.
    fn wait_for(&mut self, text: &str, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while !self.shown(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(Chunk::Bytes(b)) => self.screen.extend(b),
                Ok(Chunk::End) | Err(_) => return self.shown(text),
            }
        }
        true
    }

    fn type_keys(&mut self, keys: &[u8]) {
        let w = self.writer.as_mut().unwrap();
        w.write_all(keys).unwrap();
        w.flush().unwrap();
    }

    /// Waits for the program to exit (reading its output meanwhile, so
    /// it never blocks on a full terminal), or kills it after `d`.
    fn exit_within(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            if let Ok(Chunk::Bytes(b)) = self.chunks.recv_timeout(Duration::from_millis(50)) {
                self.screen.extend(b);
            }
        }
    }
}

impl Drop for InPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn top(http: std::net::SocketAddr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["top", "--http", &http.to_string(), "--interval", "200ms"])
        .env("TERM", "xterm-256color")
        .env_remove("HERALD_HTTP")
        .env_remove("HERALD_TLS_CA");
    cmd
}

async fn broker_with_topic(
    dir: &std::path::Path,
    topic: &str,
) -> herald_broker::server::BrokerHandle {
    let mut cfg = config(dir);
    cfg.http = Some("127.0.0.1:0".parse().unwrap());
    let b = herald_broker::server::start(cfg).await.unwrap();
    let mut c = Raw::connect(b.local_addr()).await;
    c.publish(topic, &[b"x", b"y"]).await;
    b
}

/// Leaving the alternate screen: the terminal was restored.
const RESTORED: &str = "\x1b[?1049l";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_broker_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker_with_topic(dir.path(), "orders-top").await;
    let http = b.http_addr().unwrap();
    let broker = b.local_addr();
    let rt = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut t = InPty::spawn(top(http), "orders-top", AfterMatch::KeepReading);
        assert!(
            t.wait_for("orders-top", T),
            "the topic never showed: {}",
            String::from_utf8_lossy(&t.screen)
        );
        assert!(
            t.shown("busiest"),
            "{:?}",
            String::from_utf8_lossy(&t.screen)
        );
        // Later refreshes show what changed since: a new topic.
        rt.block_on(async {
            let mut c = Raw::connect(broker).await;
            c.publish("later-topic", &[b"z"]).await;
        });
        assert!(
            t.wait_for("later-topic", T),
            "a later refresh never showed the new topic: {}",
            String::from_utf8_lossy(&t.screen)
        );
        t.type_keys(b"q");
        let status = t.exit_within(T).expect("herald top did not exit on q");
        t.wait_for(RESTORED, Duration::from_secs(2));
        (
            status,
            t.shown(RESTORED),
            String::from_utf8_lossy(&t.screen).into_owned(),
        )
    })
    .await
    .unwrap();
    let (status, restored, screen) = result;
    assert!(status.success(), "{status:?}: {screen}");
    assert!(restored, "the terminal was not restored: {screen:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_exits_when_its_terminal_closes() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker_with_topic(dir.path(), "closing-top").await;
    let http = b.http_addr().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut t = InPty::spawn(top(http), "closing-top", AfterMatch::Close);
        assert!(t.wait_for("closing-top", T), "the topic never showed");
        // The reader has dropped its handle; this was the last one.
        t.writer = None;
        t.exit_within(T)
    })
    .await
    .unwrap();
    let status = status.expect("herald top still running after its terminal closed");
    assert!(status.success(), "{status:?}");
    b.shutdown().await;
}

#[test]
fn top_without_a_terminal_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["top", "--http", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("terminal"), "{err}");
}

/// A CA's PEM, and a certificate and key it signed for 127.0.0.1.
fn pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_reads_an_https_listener_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The topic is made before TLS is on (the test client speaks plain TCP).
    broker_with_topic(&data, "tls-top").await.shutdown().await;
    let (ca, cert, key) = pki();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = config(&data);
    cfg.http = Some("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(herald_broker::tls::TlsConfig {
        cert: file("cert.pem", &cert),
        key: file("key.pem", &key),
        client_ca: None,
    });
    let b = herald_broker::server::start(cfg).await.unwrap();
    let http = b.http_addr().unwrap();
    let ca = file("ca.pem", &ca);
    let status = tokio::task::spawn_blocking(move || {
        let mut cmd = top(http);
        cmd.arg("--tls-ca").arg(&ca);
        let mut t = InPty::spawn(cmd, "tls-top", AfterMatch::KeepReading);
        assert!(
            t.wait_for("tls-top", T),
            "the topic never showed over HTTPS: {}",
            String::from_utf8_lossy(&t.screen)
        );
        t.type_keys(b"q");
        t.exit_within(T)
    })
    .await
    .unwrap();
    assert!(status.expect("did not exit on q").success());
    b.shutdown().await;
}
