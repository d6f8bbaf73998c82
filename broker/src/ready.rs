//! Readiness, for `GET /readyz`: the broker is ready once recovery has
//! finished (every log opened, torn tails cut, rooms loaded) and while its
//! data folder takes writes. A load balancer or an orchestrator sends
//! traffic only to a ready broker; `/healthz` only says the process serves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a write probe's result is reused: a probe is a create, a write
/// and a remove in the data folder, and a scraper or a balancer may ask
/// several times a second.
pub const PROBE_TTL: Duration = Duration::from_secs(1);

/// The file the probe writes, in the data folder (not in `topics/`, where
/// every folder is a topic).
const PROBE_FILE: &str = ".readyz-probe";

/// Whether the broker is ready to serve.
#[derive(Debug)]
pub struct Readiness {
    data_dir: PathBuf,
    recovered: AtomicBool,
    /// The last probe: when, and its error if it failed. A std Mutex: held
    /// to read or store the result only, never across the probe itself.
    probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(data_dir: PathBuf) -> Arc<Readiness> {
        Arc::new(Readiness {
            data_dir,
            recovered: AtomicBool::new(false),
            probe: Mutex::new(None),
        })
    }

    /// Recovery finished: every log and room is open.
    pub fn mark_recovered(&self) {
        self.recovered.store(true, Ordering::Release);
    }

    pub fn is_recovered(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }

    /// `Ok` when ready; else why not.
    pub async fn check(&self) -> Result<(), String> {
        if !self.is_recovered() {
            return Err("recovering the data folder".into());
        }
        let cached = {
            let p = self.probe.lock().unwrap_or_else(|p| p.into_inner());
            p.as_ref()
                .filter(|(at, _)| at.elapsed() < PROBE_TTL)
                .map(|(_, r)| r.clone())
        };
        if let Some(r) = cached {
            return r;
        }
        let path = self.data_dir.join(PROBE_FILE);
        let result = tokio::task::spawn_blocking(move || probe(&path))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), result.clone()));
        result
    }
}

/// Creates, writes and removes a small file: what fails on a read-only
/// remount, a full disk or a lost permission.
fn probe(path: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let written = std::fs::File::create(path).and_then(|mut f| f.write_all(b"ok\n"));
    let removed = std::fs::remove_file(path);
    written
        .and(removed)
        .map_err(|e| format!("data folder not writable: {e}"))
}
