//! Running the real `herald` binary from tests: one-shot commands bounded
//! by a deadline, and long-running ones (a `serve`, a `sub` that stays a
//! member, a `pub` whose stdin stays open) that are killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Deadline of one command or one awaited output line.
pub const T: Duration = Duration::from_secs(20);

/// `herald ARGS` with none of the caller's `HERALD_*` settings leaking in.
pub fn herald(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            c.env_remove(k);
        }
    }
    c.env("HERALD_LOG", "warn");
    c
}

/// What a finished command printed and returned.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics (showing stderr) unless the command exited 0.
    pub fn ok(self) -> Output {
        assert!(
            self.status.success(),
            "{:?} failed: {}",
            self.status,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    pub fn failed(self) -> Output {
        assert!(!self.status.success(), "expected a failure: {self:?}");
        self
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout as JSON lines.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

/// Runs `cmd` to completion with `stdin`, killing it after [`T`].
pub fn run_cmd(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // A command that exits early closes the pipe; that is not our failure.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // stdout closes when the process exits.
    let stdout = match rx.recv_timeout(T) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {T:?}");
        }
    };
    let status = child.wait().expect("wait");
    let _ = writer.join();
    let stderr = err_reader.join().unwrap_or_default();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `herald ARGS` to completion, stdin empty.
pub fn run(args: &[&str]) -> Output {
    run_cmd(herald(args), b"")
}

/// `herald ARGS --server ADDR` to completion with `stdin`.
pub fn run_at(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = herald(args);
    c.arg("--server").arg(addr.to_string());
    run_cmd(c, stdin)
}

/// A running `herald` whose stdout lines arrive on a channel; killed and
/// reaped on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// All of stderr once it closes, when spawned with [`Proc::spawn_with_stderr`].
    stderr: Option<mpsc::Receiver<String>>,
}

impl Proc {
    pub fn spawn(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, false)
    }

    /// Like [`Proc::spawn`], keeping stderr for [`Proc::finish_with_stderr`].
    pub fn spawn_with_stderr(cmd: Command) -> Proc {
        Self::spawn_inner(cmd, true)
    }

    fn spawn_inner(mut cmd: Command, keep_stderr: bool) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn herald");
        let stderr = child.stderr.take().map(|mut err| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                let _ = tx.send(s);
            });
            rx
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The next stdout line, waiting at most [`T`].
    pub fn line(&self) -> String {
        self.line_within(T).expect("no output line in time")
    }

    /// The next stdout line, or `None` when none came within `d` or stdout
    /// closed.
    pub fn line_within(&self, d: Duration) -> Option<String> {
        self.lines.recv_timeout(d).ok()
    }

    /// Closes stdin, reads the remaining stdout lines until it closes and
    /// waits for the exit, all within `d`.
    pub fn finish(mut self, d: Duration) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + d;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => rest.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("herald did not finish in {d:?}"),
            }
        }
        let status = self.child.wait().expect("wait");
        (status, rest)
    }

    /// Waits (stdin left open) for the process to exit within `d`; returns
    /// its status and stderr. Needs [`Proc::spawn_with_stderr`].
    pub fn finish_with_stderr(mut self, d: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("herald did not exit in {d:?}"),
            }
        }
        let status = self.child.wait().expect("wait");
        let left = deadline.saturating_duration_since(Instant::now());
        let err = self
            .stderr
            .take()
            .expect("spawned with spawn_with_stderr")
            .recv_timeout(left)
            .unwrap_or_default();
        (status, err)
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of `herald serve`'s HTTP listener, from its next line
/// (`http listening on ADDR (...)`, printed right after `listening on`),
/// with that line.
pub fn http_listening(p: &Proc) -> (SocketAddr, String) {
    let line = p.line();
    let http = line
        .strip_prefix("http listening on ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not the HTTP listener's line: {line}"));
    (http, line)
}

/// Starts `herald serve ARGS` with `envs` and returns it with the address
/// from its `listening on` line.
pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let mut c = herald(&["serve"]);
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let p = Proc::spawn(c);
    loop {
        let l = p.line();
        if let Some(a) = l.strip_prefix("listening on ") {
            let addr = a.trim().parse().expect("address");
            return (p, addr);
        }
    }
}
