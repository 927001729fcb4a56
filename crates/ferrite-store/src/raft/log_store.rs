//! The durable raft log: openraft's [`RaftLogStorage`] on append-only
//! segment files of checksummed records, as etcd's WAL.
//!
//! Files in the data directory:
//! - `log.<seq>` (16 hex digits), the segments: header `FERRLOG\0` v1, then
//!   frames (see [`super::durable`]) whose payloads are postcard `Record`s:
//!   `Append` (one per `append` call), `Truncate`, `Purge`, `Committed`.
//!   Replaying the records of every segment in order on open rebuilds the
//!   in-memory log. Once a segment reaches [`LogStoreOptions::segment_bytes`]
//!   the next write starts a new one, which begins with the purge and commit
//!   points as they are then. A purge deletes the oldest segments whose
//!   entries it covers all of (once the purge itself is on disk), so the
//!   first segment left may start after a gap that a later purge covers.
//!   Nothing is ever rewritten: a write never waits behind a compaction.
//!   (A `log` file from a build before segments is taken as segment 0.)
//! - `vote`: header `FERRVOTE` v1, one frame: the vote. Replaced atomically.
//! - `LOCK`: held with an exclusive file lock while the store is open.
//!
//! Every write to `log` goes through one writer thread, in the order the
//! raft core issued it. The thread writes whatever has queued up, fsyncs
//! once (fdatasync), and only then completes the callbacks of that group.
//! Writes nobody waits for (the commit point, a purge) are written but not
//! fsynced on their own: the next write that is waited for, or the writer
//! going idle for [`IDLE_SYNC`], syncs them. The commit point is not even
//! written on its own: it goes in front of the next record (or on close).
//! Losing either costs nothing but applying less at once on restart, and
//! it halves the fsyncs per write (each commit would otherwise take one of
//! its own, in the way of the next append's).
//! A failed write truncates the file back to where it was and poisons the
//! writer: every later write fails too, so the file never gets a hole.
//!
//! With [`LogStoreOptions::member`] set, the leader's own appends are
//! acknowledged before their fsync, so replication starts at once; the
//! writer publishes what is synced through [`Durability`], which holds back
//! commitment until then (see [`super::durability`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::durability::{Durability, SyncedSender};
use super::durable::{self, FileError, FileKind, Frame, OpenError, FILE_HEADER_LEN};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::histogram::{Histogram, DISK_BUCKETS};

/// The single log file of builds before segments: segment 0.
const LEGACY_LOG_FILE: &str = "log";
const SEGMENT_PREFIX: &str = "log.";
const VOTE_FILE: &str = "vote";
const LOCK_FILE: &str = "LOCK";

const LOG_KIND: FileKind = FileKind { magic: *b"FERRLOG\0", version: 1, name: "log" };
const VOTE_KIND: FileKind = FileKind { magic: *b"FERRVOTE", version: 1, name: "vote" };

/// At most this many queued writes share one fsync.
const MAX_GROUP: usize = 1024;
/// Unsynced writes nobody waits for are synced after this long without
/// any other write.
const IDLE_SYNC: std::time::Duration = std::time::Duration::from_millis(100);
/// The file name of segment `seq`; names sort in segment order.
fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:016x}")
}

/// The segment number a file name stands for, if it names a segment.
fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Tuning for [`LogStore::open_with`].
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// A segment that reaches this size is closed; the next write starts
    /// a new one. Purges free disk space a whole segment at a time.
    pub segment_bytes: u64,
    /// The member this log belongs to. When set, its appends as leader
    /// are acknowledged before their fsync, and commitment waits for it
    /// through [`LogStore::durability`] instead.
    pub member: Option<NodeId>,
    /// Test seam: pretend the disk fills after this many more bytes.
    #[cfg(test)]
    pub(crate) space_left: Option<u64>,
    /// Test seam: the writer takes this lock before each write, so a test
    /// holding it stalls the disk.
    #[cfg(test)]
    pub(crate) disk: Arc<Mutex<()>>,
}

impl LogStoreOptions {
    /// A running member's log: appends as leader acknowledged early.
    // The update fills the test seams, fields only under cfg(test).
    #[allow(clippy::needless_update)]
    pub fn for_member(member: NodeId, segment_bytes: u64) -> LogStoreOptions {
        LogStoreOptions { member: Some(member), segment_bytes, ..LogStoreOptions::default() }
    }
}

impl Default for LogStoreOptions {
    fn default() -> LogStoreOptions {
        LogStoreOptions {
            segment_bytes: 16 << 20,
            member: None,
            #[cfg(test)]
            space_left: None,
            #[cfg(test)]
            disk: Arc::default(),
        }
    }
}

/// One change to the log, as written to the file and replayed on open.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    /// Consecutive entries following the current last entry.
    Append(Vec<Entry>),
    /// Remove the entries at `since` and after (a conflict).
    Truncate { since: u64 },
    /// Remove the entries up to `upto`, inclusive (they are in a snapshot).
    Purge { upto: LogId },
    /// The last committed log id.
    Committed(Option<LogId>),
}

impl Record {
    /// The first and last index of an append's entries.
    fn appended(&self) -> Option<(u64, u64)> {
        match self {
            Record::Append(entries) => Some((entries.first()?.log_id.index, entries.last()?.log_id.index)),
            _ => None,
        }
    }
}

/// The log as the raft core sees it: every change is applied here first,
/// then queued for the writer.
#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
    vote: Option<Vote>,
    /// Bytes of the current segment once every queued write lands.
    segment_bytes: u64,
    /// `committed` changed since a `Committed` record was last queued.
    committed_unwritten: bool,
    /// While replaying: the entries up to here were in segments a purge
    /// deleted, so the first segment left starts after them. A later purge
    /// must cover them by the end of the replay.
    missing_upto: Option<u64>,
}

impl LogMem {
    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.last_key_value() {
            Some((_, entry)) => Some(entry.log_id),
            None => self.last_purged,
        }
    }

    /// Checks that `record` follows from the current state, then applies
    /// it, returning the entries it removed: freeing thousands of them is
    /// for after the lock is let go. Nothing changes on error.
    fn apply(&mut self, record: Record) -> Result<BTreeMap<u64, Entry>, String> {
        match record {
            Record::Append(entries) => {
                let Some(first) = entries.first() else {
                    return Err("an append record with no entries".to_owned());
                };
                // No hole after the last entry or the purge point. Starting
                // lower overwrites, as openraft's own reference stores do
                // (its test suite relies on it; the raft core truncates
                // first and never does).
                let last = self.entries.last_key_value().map(|(&index, _)| index);
                let last = last.max(self.last_purged.map(|id| id.index)).max(self.missing_upto);
                if last.is_some_and(|last| first.log_id.index > last + 1) {
                    return Err(format!(
                        "entry {} would leave a hole after the last log id {:?}",
                        first.log_id,
                        self.last_log_id()
                    ));
                }
                if let Some(pair) = entries.windows(2).find(|w| w[0].log_id.index + 1 != w[1].log_id.index) {
                    return Err(format!("entries {} and {} are not consecutive", pair[0].log_id, pair[1].log_id));
                }
                // Overwritten entries (see above) are few; dropped here.
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
                Ok(BTreeMap::new())
            }
            Record::Truncate { since } => Ok(self.entries.split_off(&since)),
            Record::Purge { upto } => {
                if self.last_purged.is_some_and(|purged| purged >= upto) {
                    return Ok(BTreeMap::new());
                }
                let kept = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
                Ok(std::mem::replace(&mut self.entries, kept))
            }
            Record::Committed(committed) => {
                self.committed = committed;
                Ok(BTreeMap::new())
            }
        }
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Vec::new();
        }
        self.entries.range(start..end).map(|(_, entry)| entry.clone()).collect()
    }

    /// How a new segment begins: its header, the purge point and the
    /// commit point, so that it reads on its own once older ones are gone.
    fn segment_start(&self) -> Result<Vec<u8>, WriteError> {
        let mut start = LOG_KIND.header().to_vec();
        if let Some(upto) = self.last_purged {
            encode_record(&Record::Purge { upto }, &mut start)?;
        }
        if self.committed.is_some() {
            encode_record(&Record::Committed(self.committed), &mut start)?;
        }
        Ok(start)
    }
}

/// The durable raft log. Open one per data directory.
#[derive(Debug)]
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: WriterHandle,
    durability: Durability,
    fsyncs: Arc<Histogram>,
    options: LogStoreOptions,
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Queued before the writer's queue closes (the handle drops next).
        let unwritten = {
            let mem = lock(&self.mem);
            mem.committed_unwritten.then_some(mem.committed)
        };
        if let Some(committed) = unwritten {
            let done = Done::Unawaited { what: "save the committed log id", sync: false };
            if let Err(e) = self.record(Record::Committed(committed), done) {
                tracing::warn!(error = %e, "cannot save the commit point on close");
            }
        }
    }
}

/// Reads the log for replication tasks; shares the in-memory log.
#[derive(Debug, Clone)]
pub struct LogReader {
    mem: Arc<Mutex<LogMem>>,
}

fn lock(mem: &Mutex<LogMem>) -> MutexGuard<'_, LogMem> {
    // Every change checks before it mutates, so a panic elsewhere cannot
    // leave the log half-changed.
    mem.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<LogStore, OpenError> {
        LogStore::open_with(dir, LogStoreOptions::default())
    }

    pub fn open_with(dir: &Path, options: LogStoreOptions) -> Result<LogStore, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir { path: dir.to_owned(), source })?;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        let lock_path = dir.join(LOCK_FILE);
        let lock_file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked { path: lock_path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            let name = segment_name(0);
            durable::replace_file(dir, &name, &LOG_KIND.header())
                .map_err(|e| OpenError::Io { path: e.path, source: e.source })?;
            segments.push(Segment { seq: 0, path: dir.join(name), max_index: None });
        }
        let mut mem = LogMem::default();
        let mut good_end = 0;
        let mut appended = false;
        let count = segments.len();
        for (i, segment) in segments.iter_mut().enumerate() {
            let last = i + 1 == count;
            let bytes = std::fs::read(&segment.path).map_err(io_err(&segment.path))?;
            let replayed = replay(&segment.path, &bytes, &mut mem, &mut appended)?;
            segment.max_index = replayed.max_index;
            good_end = replayed.good_end;
            if good_end < bytes.len() {
                if !last {
                    // A segment is synced before the next one starts.
                    return Err(OpenError::Corrupt {
                        path: segment.path.clone(),
                        offset: good_end as u64,
                        reason: "a torn record in a segment that is not the last".to_owned(),
                    });
                }
                tracing::warn!(
                    path = %segment.path.display(),
                    offset = good_end,
                    discarded = bytes.len() - good_end,
                    "discarding a torn write at the end of the log"
                );
            }
        }
        if let Some(missing) = mem.missing_upto.take() {
            if mem.last_purged.is_none_or(|purged| purged.index < missing) {
                return Err(OpenError::Corrupt {
                    path: segments[0].path.clone(),
                    offset: FILE_HEADER_LEN as u64,
                    reason: format!(
                        "the log starts after entry {missing}, which no purge covers (purged up to {:?}): \
                         an earlier segment is missing",
                        mem.last_purged
                    ),
                });
            }
        }
        let current = segments.pop().expect("at least one segment");
        let path = current.path;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        file.set_len(good_end as u64).map_err(io_err(&path))?;
        // What was replayed may still be only in the page cache (a crash
        // between a write and its fsync): make it as durable as it looks.
        file.sync_all().map_err(io_err(&path))?;
        mem.segment_bytes = good_end as u64;
        mem.vote = match durable::read_single(&dir.join(VOTE_FILE), &VOTE_KIND)? {
            Some(payload) => Some(postcard::from_bytes(&payload).map_err(|source| OpenError::Decode {
                path: dir.join(VOTE_FILE),
                offset: FILE_HEADER_LEN as u64,
                source,
            })?),
            None => None,
        };
        tracing::info!(
            path = %path.display(),
            segments = segments.len() + 1,
            entries = mem.entries.len(),
            last_purged = ?mem.last_purged,
            committed = ?mem.committed,
            vote = ?mem.vote,
            "opened raft log"
        );

        let last_index = mem.last_log_id().map_or(0, |id| id.index);
        let (synced, durability) = SyncedSender::new(last_index);
        let fsyncs = Arc::new(Histogram::new(&DISK_BUCKETS));
        let writer = Writer {
            fsyncs: Arc::clone(&fsyncs),
            synced,
            written_upto: last_index,
            dir: dir.to_owned(),
            closed: segments,
            seq: current.seq,
            path,
            file,
            max_index: current.max_index,
            len: good_end as u64,
            unsynced: false,
            failed: None,
            reaper: Reaper::start().map_err(io_err(dir))?,
            _lock: lock_file,
            #[cfg(test)]
            space_left: options.space_left,
            #[cfg(test)]
            disk: Arc::clone(&options.disk),
        };
        let writer = Worker::spawn("raft-log-writer", move |rx| writer.run(rx)).map_err(io_err(dir))?;
        Ok(LogStore { mem: Arc::new(Mutex::new(mem)), writer: WriterHandle(writer), durability, fsyncs, options })
    }

    /// How far this log is on disk.
    pub fn durability(&self) -> Durability {
        self.durability.clone()
    }

    /// A reader of the in-memory log, for the network's commit gate.
    pub fn reader(&self) -> LogReader {
        LogReader { mem: Arc::clone(&self.mem) }
    }

    /// How long this log's fsyncs take, as they happen.
    pub fn fsyncs(&self) -> Arc<Histogram> {
        Arc::clone(&self.fsyncs)
    }

    /// Applies `record` to the in-memory log and queues it for the writer,
    /// after the commit point if that changed since it was last written.
    fn record(&mut self, record: Record, done: Done) -> Result<(), WriteError> {
        // Encoded before taking the lock the replication tasks read the log
        // under; only the commit point in front of it depends on the state.
        let mut bytes = Vec::new();
        encode_record(&record, &mut bytes)?;
        let mut mem = lock(&self.mem);
        let mut commit = None;
        if mem.committed_unwritten && !matches!(record, Record::Committed(_)) {
            let bytes = commit.insert(Vec::with_capacity(64));
            encode_record(&Record::Committed(mem.committed), bytes)?;
        }
        let extent = match &record {
            Record::Append(_) => record.appended().map(|(_, last)| Extent::Upto(last)),
            Record::Truncate { since } => Some(Extent::Truncated { since: *since }),
            Record::Purge { .. } | Record::Committed(_) => None,
        };
        let removed = mem.apply(record).map_err(WriteError::Refused)?;
        if let Some(commit) = commit {
            // Its own op, queued first: the writer joins the two in one write.
            mem.segment_bytes += commit.len() as u64;
            let done = Done::Unawaited { what: "the commit point", sync: false };
            self.writer.send(Op::Log { bytes: commit, extent: None, done })?;
        }
        mem.committed_unwritten = false;
        mem.segment_bytes += bytes.len() as u64;
        self.writer.send(Op::Log { bytes, extent, done })?;
        if mem.segment_bytes >= self.options.segment_bytes {
            // What follows goes to a new segment, which starts from the
            // state as of this record.
            let start = mem.segment_start()?;
            mem.segment_bytes = start.len() as u64;
            self.writer.send(Op::Roll { start })?;
        }
        drop(mem);
        drop(removed);
        Ok(())
    }

    /// Whether an append now is this member's own, as the leader: its
    /// vote is a committed vote for itself.
    fn appends_as_leader(&self) -> bool {
        self.leadership().is_some()
    }

    /// This member's leadership as the log now records it: its vote, when
    /// that is a committed vote for itself, and the last index of the log.
    /// Read at start, it is the leadership openraft 0.9 restores at once,
    /// without an election (see `Node::read_index_local`).
    pub fn leadership(&self) -> Option<(Vote, u64)> {
        let me = self.options.member?;
        let mem = lock(&self.mem);
        let vote = mem.vote.filter(|vote| vote.committed && vote.leader_id.voted_for() == Some(me))?;
        Some((vote, mem.last_log_id().map_or(0, |id| id.index)))
    }

    /// Queues `record` and waits until it is on disk.
    async fn record_durably(&mut self, record: Record) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.record(record, Done::Reply(tx))?;
        wait(rx).await
    }
}

async fn wait(rx: oneshot::Receiver<io::Result<()>>) -> Result<(), WriteError> {
    match rx.await {
        Ok(result) => result.map_err(WriteError::Io),
        Err(_) => Err(WriteError::WriterGone),
    }
}

/// Appends `record`, framed, to `out`.
fn encode_record(record: &impl Serialize, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let payload = postcard::to_stdvec(record).map_err(WriteError::Encode)?;
    durable::encode_frame(&payload, out).map_err(WriteError::TooLarge)
}

/// A change to the log that was not made.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("cannot encode a log record")]
    Encode(#[source] postcard::Error),
    #[error(transparent)]
    TooLarge(durable::RecordTooLarge),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the raft log writer thread has stopped")]
    WriterGone,
    #[error(transparent)]
    Io(io::Error),
}

impl From<WriteError> for StorageError {
    fn from(e: WriteError) -> StorageError {
        StorageIOError::write_logs(AnyError::new(&e)).into()
    }
}

/// The segments in `dir`, oldest first (a legacy `log` renamed to
/// segment 0 first); leftover temporary files are removed.
fn list_segments(dir: &Path) -> Result<Vec<Segment>, OpenError> {
    let io_err = |source| OpenError::Io { path: dir.to_owned(), source };
    let legacy = dir.join(LEGACY_LOG_FILE);
    durable::remove_leftover(&dir.join(format!("{LEGACY_LOG_FILE}.tmp")));
    let mut segments = Vec::new();
    for dirent in std::fs::read_dir(dir).map_err(io_err)? {
        let name = dirent.map_err(io_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_suffix(".tmp").and_then(segment_seq) {
            durable::remove_leftover(&dir.join(segment_name(seq) + ".tmp"));
        } else if let Some(seq) = segment_seq(name) {
            segments.push(Segment { seq, path: dir.join(name), max_index: None });
        }
    }
    if legacy.exists() {
        if !segments.is_empty() {
            return Err(OpenError::Corrupt {
                path: legacy,
                offset: 0,
                reason: "a log from before segments beside segments".to_owned(),
            });
        }
        let first = dir.join(segment_name(0));
        std::fs::rename(&legacy, &first).map_err(|source| OpenError::Io { path: legacy.clone(), source })?;
        durable::sync_dir(dir).map_err(|e| OpenError::Io { path: e.path, source: e.source })?;
        tracing::info!(from = %legacy.display(), to = %first.display(), "the log file is now the first segment");
        segments.push(Segment { seq: 0, path: first, max_index: None });
    }
    segments.sort_by_key(|segment| segment.seq);
    Ok(segments)
}

/// What replaying one segment found.
struct Replayed {
    /// Where its good records end (before a torn tail, if any).
    good_end: usize,
    /// The last entry index it holds, if any.
    max_index: Option<u64>,
}

/// Replays one segment into `mem`. The first entries of the whole replay
/// (`appended` says whether there were any yet) may follow a gap: older
/// segments a purge deleted. `mem.missing_upto` records it for the caller
/// to check once every segment is read.
fn replay(path: &Path, bytes: &[u8], mem: &mut LogMem, appended: &mut bool) -> Result<Replayed, OpenError> {
    LOG_KIND.check_header(path, bytes)?;
    let mut offset = FILE_HEADER_LEN;
    let mut max_index = None;
    loop {
        match durable::read_frame(bytes, offset) {
            Frame::End => return Ok(Replayed { good_end: offset, max_index }),
            Frame::Torn { reason } => {
                tracing::warn!(path = %path.display(), offset, reason, "torn record at the end of the log");
                return Ok(Replayed { good_end: offset, max_index });
            }
            Frame::Corrupt { reason } => {
                return Err(OpenError::Corrupt {
                    path: path.to_owned(),
                    offset: offset as u64,
                    reason: reason.to_owned(),
                })
            }
            Frame::Record { payload, end } => {
                let record: Record = postcard::from_bytes(payload).map_err(|source| OpenError::Decode {
                    path: path.to_owned(),
                    offset: offset as u64,
                    source,
                })?;
                if let Some((first_index, last_index)) = record.appended() {
                    let last = mem.last_log_id().map_or(0, |id| id.index);
                    if !*appended && first_index > last + 1 {
                        mem.missing_upto = Some(first_index - 1);
                    }
                    *appended = true;
                    max_index = max_index.max(Some(last_index));
                }
                mem.apply(record).map_err(|reason| OpenError::Corrupt {
                    path: path.to_owned(),
                    offset: offset as u64,
                    reason,
                })?;
                offset = end;
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.mem).range(range))
    }
}

impl LogReader {
    /// The id of the entry at `index`, if the log holds it or it is the
    /// last purged one.
    pub fn log_id_at(&self, index: u64) -> Option<LogId> {
        let mem = lock(&self.mem);
        match mem.entries.get(&index) {
            Some(entry) => Some(entry.log_id),
            None => mem.last_purged.filter(|purged| purged.index == index),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(lock(&self.mem).range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = lock(&self.mem);
        Ok(LogState { last_purged_log_id: mem.last_purged, last_log_id: mem.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { mem: Arc::clone(&self.mem) }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let saved = async {
            let payload = postcard::to_stdvec(vote).map_err(WriteError::Encode)?;
            let (tx, rx) = oneshot::channel();
            self.writer.send(Op::Vote { payload, done: tx })?;
            wait(rx).await
        };
        saved.await.map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        lock(&self.mem).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.mem).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Written with the next record (or on close), not on its own: the
        // commit point moves with nearly every append, and a write (and a
        // wake of the writer) of its own each time cost CPU for nothing. A
        // lost commit point only means applying less at once on restart.
        let mut mem = lock(&self.mem);
        if mem.committed != committed {
            mem.committed = committed;
            mem.committed_unwritten = true;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.mem).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            // Nothing to write, but the callback still waits for every
            // write queued before it.
            self.writer.send(Op::Log { bytes: Vec::new(), extent: None, done: Done::Flushed(callback) })?;
            return Ok(());
        }
        if self.appends_as_leader() {
            // In memory now, so replication can read them; the writer
            // syncs them next and `durability` says when (see there).
            if let Some(reason) = self.durability.failure() {
                return Err(WriteError::Io(io::Error::other(reason)).into());
            }
            self.record(Record::Append(entries), Done::Unawaited { what: "append the leader's entries", sync: true })?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        Ok(self.record(Record::Append(entries), Done::Flushed(callback))?)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the log");
        let truncate = Record::Truncate { since: log_id.index };
        Ok(self.record_durably(truncate).await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log");
        // Not awaited (openraft allows a purge to finish later): purged
        // entries that come back after a crash are only ones a snapshot
        // already holds. A failure poisons the writer like any other.
        self.record(Record::Purge { upto: log_id }, Done::Unawaited { what: "purge the log", sync: false })?;
        self.writer.send(Op::Release { upto: log_id.index })?;
        Ok(())
    }
}

/// Completion of a queued write.
enum Done {
    Flushed(LogFlushed<TypeConfig>),
    Reply(oneshot::Sender<io::Result<()>>),
    /// Nobody waits; a failure is logged as failing to do this. With
    /// `sync`, it is fsynced at once all the same.
    Unawaited {
        what: &'static str,
        sync: bool,
    },
}

impl Done {
    /// Whether the write must be on disk before this completes.
    fn needs_sync(&self) -> bool {
        !matches!(self, Done::Unawaited { sync: false, .. })
    }

    fn complete(self, result: io::Result<()>) {
        match self {
            Done::Flushed(callback) => callback.log_io_completed(result),
            // The waiter may have gone away (its future dropped); nothing
            // else needs the answer.
            Done::Reply(tx) => drop(tx.send(result)),
            Done::Unawaited { what, .. } => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot {what}");
                }
            }
        }
    }
}

/// A write for the writer thread.
enum Op {
    /// Frames to append to the log file, and what they do to its entries.
    Log { bytes: Vec<u8>, extent: Option<Extent>, done: Done },
    /// A new vote file.
    Vote { payload: Vec<u8>, done: oneshot::Sender<io::Result<()>> },
    /// Close the current segment and go on in a new one that starts with
    /// these bytes (see [`LogMem::segment_start`]).
    Roll { start: Vec<u8> },
    /// A purge up to this index is queued before: delete the oldest closed
    /// segments holding no entry after it.
    Release { upto: u64 },
}

/// A closed segment: full, synced, and only ever deleted.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// The last entry index written to it, if any.
    max_index: Option<u64>,
}

/// What a write does to the entries the file holds.
#[derive(Debug, Clone, Copy)]
enum Extent {
    /// Entries up to this index follow.
    Upto(u64),
    /// Entries from `since` on are removed.
    Truncated { since: u64 },
}

/// A thread fed through a queue. Dropping it closes the queue and waits
/// for the thread to finish what was queued.
struct Worker<T> {
    tx: Option<mpsc::Sender<T>>,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(name: &'static str, run: impl FnOnce(mpsc::Receiver<T>) + Send + 'static) -> io::Result<Worker<T>> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || run(rx))?;
        Ok(Worker { tx: Some(tx), thread: Some(thread), name })
    }

    /// Queues `item`; gives it back if the thread is gone.
    fn send(&self, item: T) -> Result<(), T> {
        match &self.tx {
            Some(tx) => tx.send(item).map_err(|mpsc::SendError(item)| item),
            None => Err(item),
        }
    }
}

impl<T> Debug for Worker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).field("running", &self.tx.is_some()).finish()
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the {} thread panicked", self.name);
            }
        }
    }
}

/// The store's side of the writer thread.
#[derive(Debug)]
struct WriterHandle(Worker<Op>);

impl WriterHandle {
    fn send(&self, op: Op) -> Result<(), WriteError> {
        self.0.send(op).map_err(|_| WriteError::WriterGone)
    }
}

/// Owns the log file; runs on its own thread.
struct Writer {
    /// Where the last index on disk is published.
    synced: SyncedSender,
    /// Every fsync of the log file, timed.
    fsyncs: Arc<Histogram>,
    /// The last entry index written (synced or not).
    written_upto: u64,
    dir: PathBuf,
    /// The closed segments, oldest first.
    closed: Vec<Segment>,
    /// The current segment: its number, path, open file, and the last
    /// entry index written to it.
    seq: u64,
    path: PathBuf,
    file: File,
    max_index: Option<u64>,
    /// The file's length: everything before it is written (complete
    /// frames), and synced unless `unsynced`.
    len: u64,
    /// Whether frames were written since the last fsync.
    unsynced: bool,
    /// Set by the first failed write; every later write fails with it.
    failed: Option<(io::ErrorKind, String)>,
    /// Deletes purged segments. Dropped before the lock below is released.
    reaper: Reaper,
    /// Held for the directory lock; released when the thread ends.
    _lock: File,
    #[cfg(test)]
    space_left: Option<u64>,
    #[cfg(test)]
    disk: Arc<Mutex<()>>,
}

/// Consecutive log writes that share one write and one fsync.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    extents: Vec<Extent>,
    dones: Vec<Done>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        loop {
            let next = if self.unsynced { rx.recv_timeout(IDLE_SYNC) } else { rx.recv().map_err(Into::into) };
            let first = match next {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sync_idle();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.handle(ops);
        }
        // Closed: leave nothing unsynced behind.
        self.sync_idle();
    }

    /// Syncs writes nobody waited for.
    fn sync_idle(&mut self) {
        if !self.unsynced || self.failed.is_some() {
            return;
        }
        match self.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                self.synced.synced(self.written_upto);
            }
            Err(e) => self.fail(&FileError::new("fsync", &self.path, e).into_io()),
        }
    }

    /// Writes a group of queued ops in order. Log frames that follow each
    /// other share one write and one fsync.
    fn handle(&mut self, ops: Vec<Op>) {
        let mut group = Group::default();
        for op in ops {
            match op {
                Op::Log { bytes, extent, done } => {
                    if let Some(Extent::Truncated { since }) = extent {
                        // Lowering what counts as synced is safe at once.
                        self.synced.truncated(since.saturating_sub(1));
                    }
                    group.bytes.extend_from_slice(&bytes);
                    group.extents.extend(extent);
                    group.dones.push(done);
                }
                Op::Vote { payload, done } => {
                    self.flush(&mut group);
                    let result = self.check().and_then(|()| self.write_vote(&payload));
                    drop(done.send(result));
                }
                Op::Roll { start } => {
                    self.flush(&mut group);
                    if self.check().is_ok() {
                        self.roll(&start);
                    }
                }
                Op::Release { upto } => {
                    self.flush(&mut group);
                    if self.check().is_ok() {
                        self.release(upto);
                    }
                }
            }
        }
        self.flush(&mut group);
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, message)) => {
                Err(io::Error::new(*kind, format!("the raft log stopped at an earlier write failure: {message}")))
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        tracing::error!(path = %self.path.display(), error = %e, "raft log write failed; refusing further writes");
        self.failed = Some((e.kind(), e.to_string()));
        self.synced.failed(e.to_string());
    }

    fn flush(&mut self, group: &mut Group) {
        if group.dones.is_empty() {
            return;
        }
        let sync = group.dones.iter().any(Done::needs_sync);
        let result = self.check().and_then(|()| self.append(&group.bytes, sync));
        match &result {
            Ok(()) => {
                for extent in group.extents.drain(..) {
                    self.written_upto = match extent {
                        Extent::Upto(index) => {
                            self.max_index = self.max_index.max(Some(index));
                            index
                        }
                        Extent::Truncated { since } => self.written_upto.min(since.saturating_sub(1)),
                    };
                }
                if !self.unsynced {
                    self.synced.synced(self.written_upto);
                }
            }
            Err(e) => self.fail(e),
        }
        group.extents.clear();
        for done in group.dones.drain(..) {
            let copy = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            done.complete(copy);
        }
        group.bytes.clear();
    }

    /// Appends and, with `sync`, fdatasyncs (it and every unsynced write
    /// before it); on failure, cuts the file back to its length before, so
    /// a partial write never stays in front of later ones.
    fn append(&mut self, bytes: &[u8], sync: bool) -> io::Result<()> {
        let unsynced = self.unsynced || !bytes.is_empty();
        let result = self.write_all(bytes).and_then(|()| if sync && unsynced { self.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.unsynced = unsynced && !sync;
                Ok(())
            }
            Err(e) => {
                if let Err(undo) = self.file.set_len(self.len).and_then(|()| self.file.sync_data()) {
                    // Open will see the partial frame as a torn tail.
                    tracing::error!(path = %self.path.display(), error = %undo, "cannot cut back a failed write");
                }
                Err(FileError::new("append to", &self.path, e).into_io())
            }
        }
    }

    /// fdatasyncs the log file, timed into `fsyncs`.
    fn sync_data(&self) -> io::Result<()> {
        let began = std::time::Instant::now();
        let result = self.file.sync_data();
        self.fsyncs.observe(began.elapsed());
        result
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        let _disk = Arc::clone(&self.disk);
        #[cfg(test)]
        let _disk = _disk.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(test)]
        if let Some(left) = &mut self.space_left {
            if bytes.len() as u64 > *left {
                let fits = *left as usize;
                *left = 0;
                self.file.write_all(&bytes[..fits])?;
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            *left -= bytes.len() as u64;
        }
        self.file.write_all(bytes)
    }

    fn write_vote(&mut self, payload: &[u8]) -> io::Result<()> {
        let result = durable::write_atomic(&self.dir, VOTE_FILE, &VOTE_KIND, payload).map_err(FileError::into_io);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// Closes the current segment (synced first: only the last segment
    /// may end torn) and goes on in a new one that starts with `start`.
    /// If the new one cannot be made, writing goes on in the current one.
    fn roll(&mut self, start: &[u8]) {
        let began = std::time::Instant::now();
        if self.unsynced {
            self.sync_idle();
            if self.failed.is_some() {
                return;
            }
        }
        let seq = self.seq + 1;
        let name = segment_name(seq);
        let path = self.dir.join(&name);
        let opened = durable::replace_file(&self.dir, &name, start)
            .map_err(FileError::into_io)
            .and_then(|()| OpenOptions::new().append(true).open(&path));
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                durable::remove_leftover(&path);
                tracing::warn!(path = %path.display(), error = %e, "cannot start a new log segment; going on in the current one");
                return;
            }
        };
        let old =
            Segment { seq: self.seq, path: std::mem::replace(&mut self.path, path), max_index: self.max_index.take() };
        self.closed.push(old);
        self.file = file;
        self.seq = seq;
        self.len = start.len() as u64;
        tracing::debug!(path = %self.path.display(), took_us = began.elapsed().as_micros() as u64, "started a new log segment");
    }

    /// Deletes the oldest closed segments whose entries are all purged
    /// (up to `upto`), once that purge is on disk: replay must never find
    /// the gap they leave without the purge that covers it.
    fn release(&mut self, upto: u64) {
        let done = self.closed.iter().take_while(|segment| segment.max_index.is_none_or(|last| last <= upto)).count();
        if done == 0 {
            return;
        }
        self.sync_idle();
        if self.failed.is_some() {
            return;
        }
        let paths: Vec<PathBuf> = self.closed.drain(..done).map(|segment| segment.path).collect();
        tracing::debug!(segments = paths.len(), upto, kept = self.closed.len() + 1, "deleting purged log segments");
        self.reaper.delete(&self.dir, paths);
    }
}

/// Deletes purged segments on a thread of its own: unlinking a full
/// segment and syncing the directory take tens of milliseconds on a
/// disk mounted with `discard`, and appends queued behind them on the
/// writer thread waited that long.
///
/// Segments are deleted oldest first, and only once the purge covering
/// them is on disk. A crash part way leaves the newest of them, if any:
/// replay finds its log starting after a gap, which that purge covers.
///
/// Dropped, it finishes the deletions queued, so a closed log is as its
/// purges say.
struct Reaper(Worker<(PathBuf, Vec<PathBuf>)>);

impl Reaper {
    fn start() -> io::Result<Reaper> {
        let worker = Worker::spawn("raft-log-reaper", |rx: mpsc::Receiver<(PathBuf, Vec<PathBuf>)>| {
            for (dir, paths) in rx {
                delete_segments(&dir, &paths);
            }
        })?;
        Ok(Reaper(worker))
    }

    fn delete(&self, dir: &Path, paths: Vec<PathBuf>) {
        if let Err((dir, paths)) = self.0.send((dir.to_owned(), paths)) {
            // The thread is gone (it panicked): delete them here.
            delete_segments(&dir, &paths);
        }
    }
}

fn delete_segments(dir: &Path, paths: &[PathBuf]) {
    let began = std::time::Instant::now();
    let mut removed = 0;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Left behind, it costs only disk space and replay time.
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a purged log segment");
            }
        }
    }
    if let Err(e) = durable::sync_dir(dir) {
        tracing::warn!(error = %e, "cannot sync the log directory after deleting segments");
    }
    tracing::info!(removed, took_ms = began.elapsed().as_millis() as u64, "deleted purged log segments");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::testing::{blank_ent, log_id, membership_ent};
    use openraft::{EntryPayload, Vote as RaftVote};

    use super::*;
    use crate::raft::types::Request;

    /// Appends and waits for the flush callback, as the raft core would.
    async fn append(store: &mut LogStore, entries: Vec<Entry>) -> Result<(), StorageError> {
        use openraft::storage::RaftLogStorageExt;
        store.blocking_append(entries).await
    }

    fn blank(term: u64, index: u64) -> Entry {
        blank_ent::<TypeConfig>(term, 1, index)
    }

    fn member(index: u64, name: &str) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Request::PublishMember {
                id: 7,
                name: name.to_owned(),
                client_urls: vec![format!("http://{name}:2379")],
            }),
        }
    }

    async fn all(store: &mut LogStore) -> Vec<Entry> {
        store.try_get_log_entries(..).await.unwrap()
    }

    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(segment_name(0))
    }

    /// Replays a copy of one segment as it is now: the log, where its
    /// good records end, and its length.
    fn replay_file(path: &Path) -> (LogMem, usize, usize) {
        let bytes = std::fs::read(path).unwrap();
        let mut mem = LogMem::default();
        let replayed = replay(path, &bytes, &mut mem, &mut false).unwrap();
        (mem, replayed.good_end, bytes.len())
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn a_reopened_log_has_everything_written_before() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, vec![membership_ent::<TypeConfig>(1, 1, 0, vec![BTreeSet::from([1])])]).await.unwrap();
            append(&mut store, (1..=5).map(|i| blank(1, i)).collect()).await.unwrap();
            append(&mut store, vec![member(6, "infra0")]).await.unwrap();
            store.save_vote(&RaftVote::new_committed(1, 1)).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 6))).await.unwrap();
            store.purge(log_id(1, 1, 2)).await.unwrap();
            // A conflict drops 5..; the leader's term-2 entries replace them.
            store.truncate(log_id(1, 1, 5)).await.unwrap();
            append(&mut store, vec![blank(2, 5), blank(2, 6)]).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        let entries = all(&mut store).await;
        assert_eq!(indexes(&entries), vec![3, 4, 5, 6]);
        assert_eq!(entries[2].log_id, log_id(2, 1, 5));
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState { last_purged_log_id: Some(log_id(1, 1, 2)), last_log_id: Some(log_id(2, 1, 6)) }
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(RaftVote::new_committed(1, 1)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 6)));
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _store = LogStore::open(dir.path()).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_vote_survives_a_restart_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), None);
            store.save_vote(&RaftVote::new(3, 2)).await.unwrap();
            store.save_vote(&RaftVote::new(4, 1)).await.unwrap();
            // Durable as soon as save_vote returns: read the file itself.
            let bytes = durable::read_single(&dir.path().join(VOTE_FILE), &VOTE_KIND).unwrap().unwrap();
            assert_eq!(postcard::from_bytes::<Vote>(&bytes).unwrap(), RaftVote::new(4, 1));
        }
        assert!(!dir.path().join("vote.tmp").exists());
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(RaftVote::new(4, 1)));
    }

    #[tokio::test]
    async fn appended_entries_are_on_disk_when_the_callback_fires() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await.unwrap();
        // Still open: replay a copy of the file as it is now.
        let (mem, end, len) = replay_file(&first_segment(dir.path()));
        assert_eq!(end, len);
        assert_eq!(mem.entries.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    /// A log of member 1 with a committed vote for `leader`, and the lock
    /// that stalls its disk.
    async fn log_of_member_1(dir: &Path, leader: NodeId, space_left: Option<u64>) -> (LogStore, Arc<Mutex<()>>) {
        let options = LogStoreOptions { member: Some(1), space_left, ..LogStoreOptions::default() };
        let disk = Arc::clone(&options.disk);
        let mut store = LogStore::open_with(dir, options).unwrap();
        store.save_vote(&RaftVote::new_committed(2, leader)).await.unwrap();
        (store, disk)
    }

    const BRIEFLY: std::time::Duration = std::time::Duration::from_millis(200);

    #[tokio::test]
    // The guard stalls the writer thread, which takes the lock blocking.
    #[allow(clippy::await_holding_lock)]
    async fn the_leaders_appends_are_acknowledged_at_once_and_synced_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, disk) = log_of_member_1(dir.path(), 1, None).await;
        let durability = store.durability();
        let stalled = disk.lock().unwrap();
        // The raft core gets its callback (and replicates) with the disk
        // stalled...
        let appended = tokio::time::timeout(BRIEFLY * 10, append(&mut store, (1..=3).map(|i| blank(2, i)).collect()));
        appended.await.expect("acknowledged without the disk").unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![1, 2, 3]);
        // ...but nothing counts as on disk until it is.
        assert!(tokio::time::timeout(BRIEFLY, durability.wait(1)).await.is_err());
        drop(stalled);
        durability.wait(3).await.unwrap();
        let (mem, _, _) = replay_file(&first_segment(dir.path()));
        assert_eq!(mem.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[tokio::test]
    // The guard stalls the writer thread, which takes the lock blocking.
    #[allow(clippy::await_holding_lock)]
    async fn a_followers_appends_are_acknowledged_only_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, disk) = log_of_member_1(dir.path(), 2, None).await;
        let stalled = disk.lock().unwrap();
        let appended = tokio::time::timeout(BRIEFLY, append(&mut store, (1..=3).map(|i| blank(2, i)).collect()));
        assert!(appended.await.is_err(), "a follower answered its leader before its fsync");
        drop(stalled);
        store.durability().wait(3).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_leader_write_fails_the_wait_and_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _disk) = log_of_member_1(dir.path(), 1, Some(10)).await;
        append(&mut store, vec![blank(2, 1)]).await.unwrap();
        let err = store.durability().wait(1).await.unwrap_err();
        assert!(err.contains("cannot be written"), "{err}");
        let err = append(&mut store, vec![blank(2, 2)]).await.unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        let intact;
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await.unwrap();
            intact = std::fs::metadata(&path).unwrap().len();
            append(&mut store, (3..6).map(|i| blank(1, i)).collect()).await.unwrap();
        }
        // Power cut in the middle of the second write.
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(intact + (full - intact) / 2).unwrap();
        drop(file);
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            assert_eq!(indexes(&all(&mut store).await), vec![0, 1, 2]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), intact, "tail cut off");
            append(&mut store, vec![blank(2, 3)]).await.unwrap();
        }
        // A tail of zeros (the file grew, the data never landed) is torn too.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0u8; 100]).unwrap();
        drop(file);
        let mut store = LogStore::open(dir.path()).unwrap();
        let entries = all(&mut store).await;
        assert_eq!(indexes(&entries), vec![0, 1, 2, 3]);
        assert_eq!(entries[3].log_id, log_id(2, 1, 3));
    }

    #[tokio::test]
    async fn damage_before_the_last_record_fails_open_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, vec![member(0, "infra0")]).await.unwrap();
            append(&mut store, vec![member(1, "infra1")]).await.unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let first = FILE_HEADER_LEN;
        bytes[first + durable::FRAME_HEADER_LEN + 5] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        match &err {
            OpenError::Corrupt { path: p, offset, .. } => {
                assert_eq!(p, &path);
                assert_eq!(*offset, first as u64);
            }
            other => panic!("expected corruption, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("offset 12"), "{message}");
    }

    #[tokio::test]
    async fn a_record_that_checks_out_but_does_not_decode_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        let mut bytes = LOG_KIND.header().to_vec();
        durable::encode_frame(&[0xff, 0xff, 0xff], &mut bytes).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Decode { path: p, offset: 12, .. } if p == &path), "{err}");
    }

    #[tokio::test]
    async fn entries_with_a_gap_on_disk_fail_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        let mut bytes = LOG_KIND.header().to_vec();
        for batch in [vec![blank(1, 0)], vec![blank(1, 2)]] {
            encode_record(&Record::Append(batch), &mut bytes).unwrap();
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Corrupt { offset, .. } if *offset > 12), "{err}");
    }

    #[tokio::test]
    async fn a_foreign_or_newer_file_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        std::fs::write(&path, b"{\"etcd\": \"member dir\"}").unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Foreign { path: p, .. } if p == &path), "{err}");

        let mut newer = LOG_KIND.header();
        newer[8] = 9;
        std::fs::write(&path, newer).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Version { found: 9, .. }), "{err}");

        std::fs::write(&path, LOG_KIND.header()).unwrap();
        std::fs::write(dir.path().join(VOTE_FILE), b"garbage").unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Foreign { kind: "vote", .. }), "{err}");
    }

    fn segments(dir: &Path) -> Vec<u64> {
        list_segments(dir).unwrap().iter().map(|segment| segment.seq).collect()
    }

    /// A store with segments of 4 KiB, and 200 entries in them.
    async fn segmented(dir: &Path) -> (LogStore, LogStoreOptions) {
        let options = LogStoreOptions { segment_bytes: 4096, ..LogStoreOptions::default() };
        let mut store = LogStore::open_with(dir, options.clone()).unwrap();
        for i in 0..200 {
            append(&mut store, vec![member(i, &format!("member-{i}"))]).await.unwrap();
        }
        (store, options)
    }

    #[tokio::test]
    async fn the_commit_point_goes_to_disk_with_the_next_write_or_on_close() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await.unwrap();
            store.save_committed(Some(log_id(1, 1, 1))).await.unwrap();
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 1)));
            let (mem, _, _) = replay_file(&first_segment(dir.path()));
            assert_eq!(mem.committed, None, "written on its own");
            append(&mut store, vec![blank(1, 3)]).await.unwrap();
            let (mem, _, _) = replay_file(&first_segment(dir.path()));
            assert_eq!(mem.committed, Some(log_id(1, 1, 1)));
            store.save_committed(Some(log_id(1, 1, 3))).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));
    }

    #[tokio::test]
    async fn a_full_segment_is_closed_and_the_log_goes_on_in_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = segmented(dir.path()).await;
            store.save_committed(Some(log_id(1, 1, 150))).await.unwrap();
        }
        let found = segments(dir.path());
        assert!(found.len() >= 3, "segments {found:?}");
        assert_eq!(found, (0..found.len() as u64).collect::<Vec<_>>());
        for seq in &found[..found.len() - 1] {
            let size = std::fs::metadata(dir.path().join(segment_name(*seq))).unwrap().len();
            assert!((4096..8192).contains(&size), "segment {seq} has {size} bytes");
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        let entries = all(&mut store).await;
        assert_eq!(indexes(&entries), (0..200).collect::<Vec<_>>());
        assert_eq!(entries[120], member(120, "member-120"));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 150)));
    }

    #[tokio::test]
    async fn a_purge_deletes_the_segments_it_covers_and_the_rest_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let options;
        let before;
        {
            let mut store;
            (store, options) = segmented(dir.path()).await;
            store.save_committed(Some(log_id(1, 1, 199))).await.unwrap();
            store.save_vote(&RaftVote::new_committed(1, 1)).await.unwrap();
            before = segments(dir.path());
            store.purge(log_id(1, 1, 189)).await.unwrap();
            // Queued after the purge, so its flush means the segments
            // are gone.
            append(&mut store, vec![blank(2, 200)]).await.unwrap();
        }
        let after = segments(dir.path());
        assert!(after.len() <= 2 && after.len() < before.len(), "segments {before:?}, then {after:?}");
        assert_eq!(after.last(), before.last(), "the current segment stays");
        let mut store = LogStore::open_with(dir.path(), options).unwrap();
        let entries = all(&mut store).await;
        assert_eq!(indexes(&entries), (190..=200).collect::<Vec<_>>());
        assert_eq!(entries[0], member(190, "member-190"));
        assert_eq!(store.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(1, 1, 189)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 199)));
        assert_eq!(store.read_vote().await.unwrap(), Some(RaftVote::new_committed(1, 1)));
    }

    #[tokio::test]
    async fn a_purge_keeps_a_segment_that_still_holds_a_live_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = segmented(dir.path()).await;
        let before = segments(dir.path());
        store.purge(log_id(1, 1, 0)).await.unwrap();
        append(&mut store, vec![blank(2, 200)]).await.unwrap();
        assert_eq!(segments(dir.path()), before);
    }

    #[tokio::test]
    async fn a_missing_segment_fails_open_naming_the_one_after_the_gap() {
        for gone in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            drop(segmented(dir.path()).await);
            std::fs::remove_file(dir.path().join(segment_name(gone))).unwrap();
            let err = LogStore::open(dir.path()).unwrap_err().to_string();
            let next = dir.path().join(segment_name(gone + 1));
            assert!(err.contains(&next.display().to_string()), "segment {gone} gone: {err}");
        }
    }

    #[tokio::test]
    async fn a_torn_record_in_a_closed_segment_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(segmented(dir.path()).await);
        let path = first_segment(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Corrupt { path: p, .. } if *p == path), "{err}");
        assert!(err.to_string().contains("not the last"), "{err}");
    }

    #[tokio::test]
    async fn a_log_file_from_before_segments_becomes_segment_0() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await.unwrap();
        }
        std::fs::rename(first_segment(dir.path()), dir.path().join(LEGACY_LOG_FILE)).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![0, 1, 2]);
        assert!(!dir.path().join(LEGACY_LOG_FILE).exists());
        assert_eq!(segments(dir.path()), vec![0]);
    }

    #[tokio::test]
    async fn purging_everything_keeps_the_purge_point() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            append(&mut store, (0..3).map(|i| blank(1, i)).collect()).await.unwrap();
            store.purge(log_id(1, 1, 20)).await.unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState { last_purged_log_id: Some(log_id(1, 1, 20)), last_log_id: Some(log_id(1, 1, 20)) }
        );
        append(&mut store, vec![blank(1, 21)]).await.unwrap();
        assert!(append(&mut store, vec![blank(1, 23)]).await.is_err(), "a hole is refused");
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_write_and_keeps_what_was_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_segment(dir.path());
        let intact;
        {
            let mut store = LogStore::open_with(
                dir.path(),
                LogStoreOptions { space_left: Some(200), ..LogStoreOptions::default() },
            )
            .unwrap();
            append(&mut store, vec![blank(1, 0), blank(1, 1)]).await.unwrap();
            intact = std::fs::metadata(&path).unwrap().len();
            let big = (2..50).map(|i| member(i, "a-member-with-a-long-name")).collect();
            let err = append(&mut store, big).await.unwrap_err();
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), intact, "partial write cut back");
            // Later writes fail too rather than leave a hole.
            assert!(append(&mut store, vec![blank(1, 50)]).await.is_err());
            assert!(store.save_vote(&RaftVote::new(2, 1)).await.is_err());
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![0, 1]);
        assert_eq!(store.read_vote().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reads_take_any_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, (0..10).map(|i| blank(1, i)).collect()).await.unwrap();
        let mut reader = store.get_log_reader().await;
        assert_eq!(indexes(&reader.try_get_log_entries(3..6).await.unwrap()), vec![3, 4, 5]);
        assert_eq!(indexes(&reader.try_get_log_entries(8..=20).await.unwrap()), vec![8, 9]);
        let backwards = (Bound::Included(6), Bound::Excluded(3));
        assert!(reader.try_get_log_entries(backwards).await.unwrap().is_empty());
        assert!(reader.try_get_log_entries(5..5).await.unwrap().is_empty());
    }
}
