//! Runs the example programs (`chat`, `resume`, `work_queue`) for real, as
//! separate processes against a broker started in this process, and checks
//! that they print what the README's "Examples" section shows.
//!
//! The programs are the binaries `cargo test -p herald-examples` builds
//! before it runs the tests, in `<target>/<profile>/examples/`. A run given
//! a test name or `--test examples_run` does not build them: it uses the
//! ones the last full build left, and fails naming the program if one is
//! missing or older than its source file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_broker::server::BrokerHandle;
use herald_broker::BrokerConfig;

/// How long a program may take to print the next line we wait for.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a program may take to exit once it has been told to (or, for
/// the ones that run to completion, once it has started).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The broker's presence grace period in these tests (5 s by default, as
/// the README says): how soon the chat announces that a user went away.
const PRESENCE_GRACE: Duration = Duration::from_millis(300);

/// The banner the chat prints once the user has joined the room.
fn chat_banner(user: &str) -> String {
    format!("* you are {user} in lobby; /msg USER TEXT, /join ROOM, /leave ROOM, /who, /quit")
}

fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        presence_grace: PRESENCE_GRACE,
        ..BrokerConfig::default()
    }
}

/// A broker on its own runtime, listening on a free port, with its data in
/// a temporary folder. Dropping it shuts the broker down (bounded) and
/// removes the folder.
struct Broker {
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<BrokerHandle>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("a temporary data folder");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the broker");
        let handle = rt
            .block_on(async {
                tokio::time::timeout(
                    EXIT_TIMEOUT,
                    herald_broker::server::start(config(dir.path())),
                )
                .await
            })
            .expect("the broker did not start in time")
            .expect("the broker failed to start");
        Broker {
            addr: handle.local_addr(),
            rt: Some(rt),
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// Starts `example` with `args` and `--server` this broker.
    fn run(&self, label: &str, example: &str, args: &[&str]) -> Proc {
        Proc::spawn(label, example, args, self.addr)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let (Some(rt), Some(handle)) = (self.rt.take(), self.handle.take()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await
            });
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// `<target>/<profile>/examples/<name>`, next to the `deps` folder this
/// test binary runs from; fails if it is missing or older than its source.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no <target>/<profile> above {}", exe.display()));
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let how = "`cargo test -p herald-examples` builds the examples before running the \
               tests, but not when given a test name or `--test examples_run`; \
               `cargo build -p herald-examples --examples` builds them";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "the example program {} is missing ({e}): {how}",
                path.display()
            )
        });
    // A stale program would test old code: catch the common case, an
    // edited example (not an edited dependency).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for source in [dir.join(format!("{name}.rs")), dir.join("lib.rs")] {
        let edited = std::fs::metadata(&source).and_then(|m| m.modified());
        if edited.is_ok_and(|t| t > built) {
            panic!(
                "the example program {} is older than {}: {how}",
                path.display(),
                source.display()
            );
        }
    }
    path
}

/// A running example program: its stdin, the lines of its stdout as they
/// come (read on a thread of their own), and its stderr (kept for failure
/// messages). Dropping it kills the process and waits for it.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line received so far.
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(label: &str, example: &str, args: &[&str], server: SocketAddr) -> Proc {
        let path = example_path(example);
        let mut child = Command::new(&path)
            .args(args)
            .arg("--server")
            .arg(server.to_string())
            .env_remove("HERALD_SERVER")
            // work_queue's worker 0 panics on purpose: one line, not a trace.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        Proc {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// What the program printed so far, for failure messages.
    fn context(&self) -> String {
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "{} printed on stdout:\n{}\n{} printed on stderr:\n{}",
            self.label,
            indent(&self.seen.join("\n")),
            self.label,
            indent(&stderr),
        )
    }

    /// Types `line` (and Enter) into the program.
    #[track_caller]
    fn send(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin already closed", self.label));
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!(
                "{}: cannot type {line:?}: {e}\n{}",
                self.label,
                self.context()
            );
        }
    }

    /// Closes stdin: Ctrl-D at a terminal.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, or `None` once stdout is closed; fails after
    /// `timeout` without one.
    #[track_caller]
    fn next_line_within(&mut self, timeout: Duration, waiting_for: &str) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line within {timeout:?} while waiting for {waiting_for}\n{}",
                self.label,
                self.context()
            ),
        }
    }

    /// The next stdout line must be `want`.
    #[track_caller]
    fn expect_line(&mut self, want: &str) {
        let got = self.next_line_within(LINE_TIMEOUT, &format!("{want:?}"));
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{}: expected the line {want:?}, got {got:?} (None: stdout closed)\n{}",
            self.label,
            self.context()
        );
    }

    /// Reads stdout to its end, then waits for the process to exit: both
    /// within [`EXIT_TIMEOUT`]. Returns the exit status.
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let what = "stdout to close (the program to exit)";
        while self
            .next_line_within(deadline.saturating_duration_since(Instant::now()), what)
            .is_some()
        {}
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    // Stdout is closed, so the process is exiting: poll.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => panic!(
                    "{}: closed stdout but did not exit within {EXIT_TIMEOUT:?}\n{}",
                    self.label,
                    self.context()
                ),
                Err(e) => panic!("{}: waiting for it: {e}", self.label),
            }
        }
    }

    /// Waits for the exit and requires the exit code `code`.
    #[track_caller]
    fn expect_exit(&mut self, code: i32) {
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(code),
            "{}: expected exit code {code}, got {status}\n{}",
            self.label,
            self.context()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (nothing)".to_owned();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Guards the README's chat transcript (and the requirement to keep
/// the examples, the chat example in particular, working): alice and bob in
/// `lobby`; bob's line and direct message reach alice; bob's Ctrl-D is
/// announced to alice after the grace period; what alice says while bob is
/// away is the first thing bob sees when he comes back, and alice sees him
/// come back. Each user's whole output is checked, not only the lines the
/// README shows (a user sees neither their own lines nor their own presence).
#[test]
fn chat_runs_as_the_readme_shows() {
    let broker = Broker::start();

    let mut alice = broker.run("alice", "chat", &["lobby", "alice"]);
    alice.expect_line(&chat_banner("alice"));

    let mut bob = broker.run("bob", "chat", &["lobby", "bob"]);
    bob.expect_line(&chat_banner("bob"));
    alice.expect_line("* bob joined lobby");

    bob.send("hello alice");
    alice.expect_line("[lobby] <bob> hello alice");
    bob.send("/msg alice psst");
    alice.expect_line("(direct) <bob> psst");
    // A room joined and left again: lines go to the room joined before.
    bob.send("/join side");
    bob.send("/leave side");
    bob.expect_line("* now in lobby");
    bob.send("back in lobby");
    alice.expect_line("[lobby] <bob> back in lobby");

    // Ctrl-D: bob goes away but stays a member of lobby.
    bob.close_stdin();
    bob.expect_exit(0);
    assert_eq!(
        bob.seen,
        [chat_banner("bob"), "* now in lobby".to_owned()],
        "bob: printed more than his banner\n{}",
        bob.context()
    );
    alice.expect_line("* bob went away from lobby");

    alice.send("see you tomorrow");
    // `/who` runs after the broadcast above has been confirmed (alice's
    // commands run one at a time), so bob comes back after it is stored:
    // he has missed it, rather than getting it live.
    alice.send("/who");
    let mut who = [
        alice.next_line_within(LINE_TIMEOUT, "the first line of /who"),
        alice.next_line_within(LINE_TIMEOUT, "the second line of /who"),
    ];
    who.sort();
    assert_eq!(
        who,
        [
            Some("* alice (online)".to_owned()),
            Some("* bob (away)".to_owned())
        ],
        "alice: /who while bob is away\n{}",
        alice.context()
    );

    let mut bob = broker.run("bob (again)", "chat", &["lobby", "bob"]);
    bob.expect_line(&chat_banner("bob"));
    bob.expect_line("[lobby] <alice> see you tomorrow");
    alice.expect_line("* bob is back in lobby");

    alice.close_stdin();
    alice.expect_exit(0);
    // Nothing else: no echo of her own line, no presence of her own.
    assert_eq!(
        alice.seen.len(),
        9,
        "alice: printed lines the README does not show\n{}",
        alice.context()
    );

    bob.close_stdin();
    bob.expect_exit(0);
    // After the two lines above bob may see alice go away (she quit first),
    // depending on whether the grace period ran out before he quit.
    let extra: Vec<_> = bob.seen[2..]
        .iter()
        .filter(|l| *l != "* alice went away from lobby")
        .collect();
    assert!(
        extra.is_empty(),
        "bob (again): printed lines the README does not show: {extra:?}\n{}",
        bob.context()
    );
}

/// Guards the README's resume transcript (and the requirement to
/// keep the examples working): `resume produce 100` publishes offsets 0 to
/// 99; `resume consume 30` handles offsets 0 to 29 and exits like a crash
/// (status 1); `resume consume` then resumes at offset 30, exactly where
/// the group left off, handles 30 to 99 and exits cleanly.
#[test]
fn resume_runs_as_the_readme_shows() {
    let broker = Broker::start();

    let mut produce = broker.run("resume produce 100", "resume", &["produce", "100"]);
    produce.expect_line("published 100 messages, the last at offset 99");
    produce.expect_exit(0);
    assert_eq!(produce.seen.len(), 1, "{}", produce.context());

    let mut crash = broker.run("resume consume 30", "resume", &["consume", "30"]);
    crash.expect_line("resuming at offset 0");
    for i in 0..30 {
        crash.expect_line(&format!("offset {i}: message {i}"));
    }
    crash.expect_line("crashing after 30 messages");
    crash.expect_exit(1);
    assert_eq!(crash.seen.len(), 32, "{}", crash.context());

    let mut resume = broker.run("resume consume", "resume", &["consume"]);
    resume.expect_line("resuming at offset 30");
    for i in 30..100 {
        resume.expect_line(&format!("offset {i}: message {i}"));
    }
    resume.expect_line("nothing more for 2 s; handled 70, exiting cleanly");
    resume.expect_exit(0);
    assert_eq!(resume.seen.len(), 72, "{}", resume.context());
}

/// Guards the README's work queue transcript (and the requirement
/// to keep the examples working): worker 0 takes a job and crashes (its
/// panic on stderr); that job is redelivered to another worker (at once,
/// as the crash drops worker 0's subscription; at the latest after the 2 s
/// ack timeout); all 20 jobs get done by the surviving workers; the
/// program reports the crash and ends with "all 20 jobs done, the crashed
/// worker's job included". Which job worker 0 takes varies from run to run
/// (the README shows "job 1"), so the check follows it.
#[test]
fn work_queue_runs_as_the_readme_shows() {
    const JOBS: usize = 20;
    let broker = Broker::start();
    let mut wq = broker.run("work_queue", "work_queue", &[]);
    wq.close_stdin();
    wq.expect_exit(0);
    let lines = wq.seen.clone();
    let fail = |what: &str| -> ! { panic!("work_queue: {what}\n{}", wq.context()) };

    let crashed: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("worker 0 takes \"")?
                .strip_suffix("\" and crashes before acking it")
        })
        .collect();
    let [crashed_job] = crashed[..] else {
        fail("expected exactly one `worker 0 takes \"job N\" and crashes before acking it`")
    };

    let queued = lines
        .iter()
        .filter(|l| {
            l.strip_prefix(&format!("{JOBS} jobs queued on jobs."))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    if queued != 1 {
        fail("expected one `20 jobs queued on jobs.<pid>` line");
    }

    // Every job done by a surviving worker, the crashed one redelivered.
    let mut done = std::collections::BTreeSet::new();
    let mut redelivered = false;
    for l in &lines {
        let Some(rest) = l
            .strip_prefix("worker 1 does \"")
            .or_else(|| l.strip_prefix("worker 2 does \""))
        else {
            continue;
        };
        let (job, again) = match rest.strip_suffix("\" (redelivered)") {
            Some(job) => (job, true),
            None => (rest.strip_suffix('"').unwrap_or(rest), false),
        };
        redelivered |= again && job == crashed_job;
        done.insert(job.to_owned());
    }
    let all: std::collections::BTreeSet<_> = (0..JOBS).map(|i| format!("job {i}")).collect();
    if done != all {
        fail(&format!(
            "expected `worker 1|2 does \"job N\"` for every job 0 to 19; missing: {:?}",
            all.difference(&done).collect::<Vec<_>>()
        ));
    }
    if !redelivered {
        fail(&format!(
            "expected `worker 1|2 does \"{crashed_job}\" (redelivered)`"
        ));
    }

    let tail: Vec<&str> = lines
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    if tail
        != [
            "worker 0 had crashed",
            "all 20 jobs done, the crashed worker's job included",
        ]
    {
        fail("expected it to end with `worker 0 had crashed` and `all 20 jobs done, ...`");
    }
    let other: Vec<&String> = lines
        .iter()
        .filter(|l| {
            !(l.starts_with("worker 0 takes ")
                || l.starts_with("worker 1 does ")
                || l.starts_with("worker 2 does ")
                || l.starts_with("20 jobs queued on ")
                || *l == "worker 0 had crashed"
                || *l == "all 20 jobs done, the crashed worker's job included")
        })
        .collect();
    if !other.is_empty() {
        fail(&format!(
            "printed lines the README does not show: {other:?}"
        ));
    }
    if !wq
        .stderr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains("worker 0 crashed")
    {
        fail("expected worker 0's panic message (`worker 0 crashed`) on stderr");
    }
}
