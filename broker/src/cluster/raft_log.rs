//! The Raft log of one group, kept in a Herald log ([`crate::storage::Log`]).
//!
//! Why not a log of its own: the storage engine already gives what a Raft
//! log needs — appends confirmed after `fdatasync` with group commit,
//! checksummed batches, a torn tail truncated at start, damage reported
//! loudly — and it is the code every topic runs on.
//!
//! Each `append` from Raft becomes one batch of the log, one record per
//! entry (the entry in postcard). What a log cannot do, truncate its tail or
//! remember a vote, is written as records too ([`Stored`]): the log is the
//! history of the Raft log's changes, replayed at open into an in-memory
//! index (raft index -> offset of its record). A truncation is a record,
//! so a crash after it cannot bring truncated entries back.
//!
//! Entries are kept in memory from `append` until their batch is durable
//! (Raft replicates them meanwhile) and then while the cache is under
//! [`CACHE_BYTES`]; older ones are read back from the log.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use herald_protocol::batch::{BatchBuilder, RecordRef};
use herald_protocol::Batch;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogId, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::storage::{Log, LogConfig};

/// Entries kept in memory after they are durable, for followers that are
/// nearly caught up (most reads).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// One record of the log.
#[derive(Debug, Serialize, Deserialize)]
enum Stored {
    /// A Raft entry; an index at or below the last one replaces it and
    /// everything after it (Raft truncated them first).
    Entry(Entry),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this one are gone (they are in the state machine).
    Purge(LogId),
    /// The vote this node gave.
    Vote(Vote),
}

/// One entry of the index.
#[derive(Debug)]
struct Slot {
    log_id: LogId,
    /// Offset of its record, once durable.
    offset: Option<u64>,
    /// The entry itself while it is not durable, and then while cached.
    entry: Option<Entry>,
    size: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Raft index of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    /// Bytes of entries held in `slots` that are durable too.
    cached: usize,
}

impl State {
    fn last_log_id(&self) -> Option<LogId> {
        self.slots.back().map(|s| s.log_id).or(self.last_purged)
    }

    /// Drops entries from raft index `index` on.
    fn truncate(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first) as usize;
        while self.slots.len() > keep {
            if let Some(s) = self.slots.pop_back() {
                if s.offset.is_some() && s.entry.is_some() {
                    self.cached -= s.size;
                }
            }
        }
    }

    /// Drops entries up to raft index `index`.
    fn purge(&mut self, index: u64) {
        while self.first <= index {
            let Some(s) = self.slots.pop_front() else {
                break;
            };
            if s.offset.is_some() && s.entry.is_some() {
                self.cached -= s.size;
            }
            self.first += 1;
        }
        if self.slots.is_empty() {
            self.first = index + 1;
        }
    }

    /// Adds an entry at its index, replacing any at or after it.
    fn push(&mut self, slot: Slot) {
        let index = slot.log_id.index;
        if self.slots.is_empty() {
            self.first = index;
        } else if index < self.first + self.slots.len() as u64 {
            self.truncate(index);
            if self.slots.is_empty() {
                self.first = index;
            }
        }
        self.slots.push_back(slot);
    }

    /// Lets go of durable entries past the cache's size, oldest first.
    fn trim_cache(&mut self) {
        for s in self.slots.iter_mut() {
            if self.cached <= CACHE_BYTES {
                break;
            }
            if s.offset.is_some() && s.entry.take().is_some() {
                self.cached -= s.size;
            }
        }
    }
}

/// The Raft log of one group. Clones share it (Raft takes one as its log
/// reader).
#[derive(Clone)]
pub struct RaftLog {
    log: Arc<Log>,
    state: Arc<Mutex<State>>,
}

fn io_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn io_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl RaftLog {
    /// Opens (or creates) the log in `dir` and replays it into the index.
    ///
    /// # Errors
    /// The log cannot be opened, or a record of it cannot be read or decoded
    /// (damage is reported, never skipped: a Raft log with a hole would
    /// vote and answer wrongly).
    pub fn open(dir: &Path, config: LogConfig) -> Result<RaftLog, StorageError> {
        let log = Log::open(dir, config).map_err(io_read)?;
        let mut state = State::default();
        let mut from = log.first_offset();
        let end = log.next_offset();
        while from < end {
            let batches = log.read(from, 4 << 20, 4096).map_err(io_read)?;
            if batches.is_empty() {
                break;
            }
            for b in &batches {
                for r in b.records() {
                    if r.offset < from {
                        continue;
                    }
                    let stored: Stored = postcard::from_bytes(&r.payload)
                        .map_err(|e| io_read(format!("raft log record {}: {e}", r.offset)))?;
                    match stored {
                        Stored::Entry(e) => state.push(Slot {
                            log_id: e.log_id,
                            offset: Some(r.offset),
                            entry: None,
                            size: 0,
                        }),
                        Stored::Truncate(i) => state.truncate(i),
                        Stored::Purge(id) => {
                            state.purge(id.index);
                            state.last_purged = Some(id);
                        }
                        Stored::Vote(v) => state.vote = Some(v),
                    }
                }
                from = from.max(b.last_offset() + 1);
            }
        }
        Ok(RaftLog {
            log,
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves the index as it was between two
        // whole operations: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes records and waits until they are durable.
    async fn write(&self, records: &[Stored]) -> Result<u64, StorageError> {
        let batch = encode(records)?;
        let out = self.log.append(batch).await.map_err(io_write)?;
        Ok(out.base_offset)
    }

    /// Whether the log holds (or held) any entry: the group ran here
    /// before.
    pub fn has_entries(&self) -> bool {
        self.lock().last_log_id().is_some()
    }

    /// Closes the underlying log (its writer flushes and stops).
    pub async fn close(&self) {
        let _ = self.log.close().await;
    }
}

/// One batch holding `records`, one record each.
fn encode(records: &[Stored]) -> Result<Batch, StorageError> {
    let mut b = BatchBuilder::new();
    for r in records {
        let payload = postcard::to_allocvec(r).map_err(io_write)?;
        b.push(&RecordRef {
            payload: &payload,
            ..RecordRef::default()
        });
    }
    Ok(Batch::from_trusted(b.finish(0, 0)))
}

/// The raft index range `range` as `[start, end)`.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        // What is in memory is taken under the lock; what must be read from
        // disk is read after, by offset.
        let mut out: Vec<Option<Entry>> = Vec::new();
        let mut wanted: Vec<(usize, u64)> = Vec::new();
        {
            let st = self.lock();
            let lo = start.max(st.first);
            let hi = end.min(st.first + st.slots.len() as u64);
            for i in lo..hi {
                let s = &st.slots[(i - st.first) as usize];
                match (&s.entry, s.offset) {
                    (Some(e), _) => out.push(Some(e.clone())),
                    (None, Some(off)) => {
                        wanted.push((out.len(), off));
                        out.push(None);
                    }
                    (None, None) => return Err(io_read(format!("raft entry {i} is missing"))),
                }
            }
        }
        let mut k = 0;
        while k < wanted.len() {
            let batches = self.log.read(wanted[k].1, 4 << 20, 4096).map_err(io_read)?;
            let before = k;
            for b in &batches {
                for r in b.records() {
                    if k < wanted.len() && r.offset == wanted[k].1 {
                        match postcard::from_bytes::<Stored>(&r.payload) {
                            Ok(Stored::Entry(e)) => out[wanted[k].0] = Some(e),
                            Ok(_) => {
                                return Err(io_read(format!("record {} is not an entry", r.offset)))
                            }
                            Err(e) => {
                                return Err(io_read(format!("raft log record {}: {e}", r.offset)))
                            }
                        }
                        k += 1;
                    }
                }
            }
            if k == before {
                return Err(io_read(format!(
                    "raft log record at offset {} could not be read",
                    wanted[k].1
                )));
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let st = self.lock();
        Ok(LogState {
            last_purged_log_id: st.last_purged,
            last_log_id: st.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write(&[Stored::Vote(*vote)]).await?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let ids: Vec<LogId> = entries.iter().map(|e| *e.get_log_id()).collect();
        let records: Vec<Stored> = entries.iter().cloned().map(Stored::Entry).collect();
        let batch = encode(&records)?;
        // Queued first (in Raft's order), indexed, then confirmed in the
        // background: Raft may replicate the entries meanwhile.
        let pending = self.log.enqueue(batch).await.map_err(io_write)?;
        {
            let mut st = self.lock();
            for e in entries {
                let size = size_of_entry(&e);
                st.push(Slot {
                    log_id: e.log_id,
                    offset: None,
                    entry: Some(e),
                    size,
                });
            }
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            match pending.wait().await {
                Ok(out) => {
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    for (i, id) in ids.iter().enumerate() {
                        let Some(pos) = id.index.checked_sub(st.first) else {
                            continue;
                        };
                        let Some(s) = st.slots.get_mut(pos as usize) else {
                            continue;
                        };
                        // Truncated and replaced meanwhile: not this entry.
                        if s.log_id != *id || s.offset.is_some() {
                            continue;
                        }
                        s.offset = Some(out.base_offset + i as u64);
                        let size = s.size;
                        st.cached += size;
                    }
                    st.trim_cache();
                    drop(st);
                    callback.log_io_completed(Ok(()));
                }
                Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
            }
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().truncate(log_id.index);
        self.write(&[Stored::Truncate(log_id.index)]).await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut st = self.lock();
            st.purge(log_id.index);
            st.last_purged = Some(log_id);
        }
        self.write(&[Stored::Purge(log_id)]).await?;
        Ok(())
    }
}

/// What an entry costs in memory, roughly: its payload.
fn size_of_entry(e: &Entry) -> usize {
    use openraft::EntryPayload;
    64 + match &e.payload {
        EntryPayload::Normal(super::types::Command::Publish(b)) => b.iter().map(|b| b.len()).sum(),
        _ => 256,
    }
}

/// For tests: the bytes of a publish entry.
#[cfg(test)]
fn payload_of(e: &Entry) -> Option<bytes::Bytes> {
    match &e.payload {
        openraft::EntryPayload::Normal(super::types::Command::Publish(b)) => b.first().cloned(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::super::types::Command;
    use super::*;

    fn entry(term: u64, index: u64, data: &'static [u8]) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::Publish(vec![Bytes::from_static(data)])),
        }
    }

    async fn append(log: &mut RaftLog, entries: Vec<Entry>) {
        use openraft::storage::RaftLogStorageExt;
        log.blocking_append(entries).await.unwrap();
    }

    /// Appends, a truncation, a purge and a vote survive a reopen, and
    /// entries read back from disk equal what was appended.
    #[tokio::test]
    async fn replays_appends_truncations_and_votes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RaftLog::open(dir.path(), LogConfig::default()).unwrap();
            append(
                &mut log,
                vec![entry(1, 1, b"a"), entry(1, 2, b"b"), entry(1, 3, b"c")],
            )
            .await;
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3))
                .await
                .unwrap();
            append(&mut log, vec![entry(2, 3, b"C"), entry(2, 4, b"D")]).await;
            let v = Vote::new(2, 1);
            log.save_vote(&v).await.unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
                .await
                .unwrap();
            log.close().await;
        }
        let mut log = RaftLog::open(dir.path(), LogConfig::default()).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            st.last_log_id.map(|l| (l.leader_id.term, l.index)),
            Some((2, 4))
        );
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        let got = log.try_get_log_entries(0..10).await.unwrap();
        let data: Vec<_> = got.iter().filter_map(payload_of).collect();
        assert_eq!(
            data,
            vec![
                Bytes::from_static(b"b"),
                Bytes::from_static(b"C"),
                Bytes::from_static(b"D")
            ]
        );
        assert_eq!(got[1].log_id.leader_id.term, 2);
    }

    /// A truncation written before a crash keeps the truncated entries gone
    /// even though nothing replaced them.
    #[tokio::test]
    async fn a_truncation_alone_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RaftLog::open(dir.path(), LogConfig::default()).unwrap();
            append(&mut log, vec![entry(1, 1, b"a"), entry(1, 2, b"b")]).await;
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 2))
                .await
                .unwrap();
            log.close().await;
        }
        let mut log = RaftLog::open(dir.path(), LogConfig::default()).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id.map(|l| l.index), Some(1));
        assert_eq!(log.try_get_log_entries(0..10).await.unwrap().len(), 1);
    }
}
