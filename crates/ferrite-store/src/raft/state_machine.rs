//! The raft state machine: the v2 store, the last membership, and the
//! members' published attributes, with snapshots of all three.
//!
//! The state lives in memory. It is made durable by the snapshot file plus
//! the log: on open the state machine restores the last snapshot, and
//! openraft re-applies the committed entries after it (the log store keeps
//! the commit point, see [`super::log_store`]).
//!
//! Files in the data directory:
//! - `snapshot`: header `FERRSNAP` v1, one frame: postcard `SnapshotFile`,
//!   the snapshot's metadata and its data. The data is the blob sent to
//!   followers as is: postcard `SnapshotBody` (last applied log id,
//!   membership, member attributes, the v2 store's own snapshot bytes).
//!   Replaced atomically.
//!
//! The HTTP layer reads the state through [`SharedState`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::durability::Durability;
use super::durable::{self, FileKind, OpenError, FILE_HEADER_LEN};
use super::types::{
    Entry, LogId, NodeId, Raft, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::v2store::{self, Store, UnixNanos};

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_KIND: FileKind = FileKind { magic: *b"FERRSNAP", version: 1, name: "snapshot" };
/// How long [`SnapshotSchedule::run`] waits for a snapshot it asked for
/// before it asks again.
const SNAPSHOT_BUILD_WAIT: Duration = Duration::from_secs(10);

/// What a member publishes about itself once it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The snapshot blob: what a follower installs.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    members: BTreeMap<NodeId, MemberAttributes>,
    store: Vec<u8>,
}

/// The `snapshot` file's record.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Why snapshot data cannot become a state.
#[derive(Debug, thiserror::Error)]
enum SnapshotDataError {
    #[error("cannot decode the snapshot")]
    Decode(#[source] postcard::Error),
    #[error("the snapshot's data is at {body:?} but its metadata says {meta:?}")]
    Mismatch { meta: Option<LogId>, body: Option<LogId> },
    #[error(transparent)]
    Restore(v2store::SnapshotError),
}

/// Why a snapshot cannot be built.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("cannot encode the snapshot")]
    Encode(#[source] postcard::Error),
}

/// Everything applying the log builds.
struct State {
    store: Store,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    members: BTreeMap<NodeId, MemberAttributes>,
    /// Writes applied since the last snapshot was taken (or installed):
    /// what [`SnapshotSchedule`] counts.
    writes_since_snapshot: u64,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("last_applied", &self.last_applied)
            .field("last_membership", &self.last_membership)
            .field("members", &self.members)
            .field("writes_since_snapshot", &self.writes_since_snapshot)
            .finish_non_exhaustive()
    }
}

impl State {
    fn empty() -> State {
        State {
            store: Store::new(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            members: BTreeMap::new(),
            writes_since_snapshot: 0,
        }
    }

    /// The state a snapshot holds, checked against its metadata.
    fn from_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<State, SnapshotDataError> {
        let body: SnapshotBody = postcard::from_bytes(data).map_err(SnapshotDataError::Decode)?;
        if body.last_applied != meta.last_log_id || body.last_membership != meta.last_membership {
            return Err(SnapshotDataError::Mismatch { meta: meta.last_log_id, body: body.last_applied });
        }
        Ok(State {
            store: Store::restore(&body.store).map_err(SnapshotDataError::Restore)?,
            last_applied: body.last_applied,
            last_membership: body.last_membership,
            members: body.members,
            writes_since_snapshot: 0,
        })
    }

    fn apply(&mut self, entry: Entry, now: UnixNanos) -> Response {
        self.last_applied = Some(entry.log_id);
        // etcd counts every applied entry, one write each; an election's
        // blank entry and a membership change count as one here too.
        self.writes_since_snapshot += match &entry.payload {
            EntryPayload::Normal(request) => request.writes(),
            EntryPayload::Blank | EntryPayload::Membership(_) => 1,
        };
        match entry.payload {
            EntryPayload::Blank => Response::Done,
            EntryPayload::Normal(request) => self.apply_request(request, now),
            EntryPayload::Membership(membership) => {
                // A removed member's attributes go with it, as in etcd.
                self.members.retain(|id, _| membership.get_node(id).is_some());
                self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                Response::Done
            }
        }
    }

    fn apply_request(&mut self, request: Request, now: UnixNanos) -> Response {
        match request {
            Request::Keys(command) => Response::Keys(self.store.apply(&command, now)),
            Request::PublishMember { id, name, client_urls } => {
                self.members.insert(id, MemberAttributes { name, client_urls });
                Response::Done
            }
            // In order, as if each had been its own entry: a later write in
            // the batch sees the earlier ones.
            Request::Batch(requests) => {
                Response::Batch(requests.into_iter().map(|request| self.apply_request(request, now)).collect())
            }
        }
    }

    /// The snapshot of this state; the count toward the next starts over.
    fn snapshot(&mut self) -> Result<StoredSnapshot, BuildError> {
        #[derive(Serialize)]
        struct BodyRef<'a> {
            last_applied: &'a Option<LogId>,
            last_membership: &'a StoredMembership,
            members: &'a BTreeMap<NodeId, MemberAttributes>,
            store: &'a [u8],
        }
        let store = self.store.snapshot();
        let data = postcard::to_stdvec(&BodyRef {
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            members: &self.members,
            store: &store,
        })
        .map_err(BuildError::Encode)?;
        self.writes_since_snapshot = 0;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, now_nanos()),
            None => format!("none-{}", now_nanos()),
        };
        Ok(StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
                snapshot_id,
            },
            data,
        })
    }
}

/// The current snapshot, as in the `snapshot` file.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(self.data.clone())) }
    }
}

/// The state machine's state, shared with the HTTP layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedState {
    state: Arc<Mutex<State>>,
    applied: Arc<Mutex<Applied>>,
}

/// How far the state is applied, and who waits for it to go further.
/// Each waiter is woken once, when its index is applied: a watch would
/// wake every waiting request at every apply, to find most still waiting.
#[derive(Debug, Default)]
struct Applied {
    index: Option<u64>,
    /// Waiters by the index they wait for.
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    /// Set when nothing will be applied any more (raft stopped).
    closed: bool,
}

/// The state machine will apply nothing more: raft stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMoreApplied;

impl SharedState {
    fn new(state: State) -> SharedState {
        let applied = Applied { index: state.last_applied.map(|id| id.index), ..Applied::default() };
        SharedState { state: Arc::new(Mutex::new(state)), applied: Arc::new(Mutex::new(applied)) }
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Applying an entry cannot fail halfway in a way a panic would
        // expose more than the panic itself does.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells waiting readers how far the state has been applied.
    fn publish_applied(&self, last_applied: Option<LogId>) {
        let index = last_applied.map(|id| id.index);
        let ready = {
            let mut applied = self.applied();
            applied.index = index;
            match index {
                // Every waiter at or below `index`; woken outside the lock.
                Some(index) => {
                    let later = applied.waiting.split_off(&(index + 1));
                    std::mem::replace(&mut applied.waiting, later)
                }
                None => BTreeMap::new(),
            }
        };
        for waiter in ready.into_values().flatten() {
            // The waiter may have given up (its deadline passed).
            let _ = waiter.send(());
        }
    }

    /// Wakes every waiter with [`NoMoreApplied`], now and from now on.
    pub fn close_applied(&self) {
        let waiting = {
            let mut applied = self.applied();
            applied.closed = true;
            std::mem::take(&mut applied.waiting)
        };
        drop(waiting);
    }

    /// Runs `f` on the v2 store (get, watch, stats). Keep `f` short: log
    /// entries wait while it runs.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.lock().store)
    }

    /// The attributes each member has published, by member id.
    pub fn members(&self) -> BTreeMap<NodeId, MemberAttributes> {
        self.lock().members.clone()
    }

    /// The last membership config applied.
    pub fn membership(&self) -> StoredMembership {
        self.lock().last_membership.clone()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.lock().last_applied
    }

    /// The index of the last applied log entry, as readers see it.
    pub fn applied_index(&self) -> Option<u64> {
        self.applied().index
    }

    /// Waits until the entry at `index` has been applied (for linearizable
    /// reads: wait for the read index, then read; for a write forwarded to
    /// the leader: wait for it here, so a read here sees it).
    pub async fn wait_applied(&self, index: u64) -> Result<(), NoMoreApplied> {
        let woken = {
            let mut applied = self.applied();
            if applied.index.is_some_and(|applied| applied >= index) {
                return Ok(());
            }
            if applied.closed {
                return Err(NoMoreApplied);
            }
            let (tx, rx) = oneshot::channel();
            applied.waiting.entry(index).or_default().push(tx);
            rx
        };
        woken.await.map_err(|_| NoMoreApplied)
    }
}

/// The raft state machine. Open one per data directory.
#[derive(Debug)]
pub struct StateMachine {
    dir: PathBuf,
    shared: SharedState,
    current: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
    /// When the log acknowledges the leader's appends before their fsync,
    /// entries are applied only once synced (see `durability`).
    durability: Option<Durability>,
    schedule: Option<SnapshotSchedule>,
}

/// When to take a snapshot: once `every` writes have been applied since the
/// last, as etcd's `--snapshot-count` counts them. openraft's own policy
/// counts log entries, and an entry here is a batch of up to hundreds of
/// writes, so under load it would snapshot far more often than etcd does;
/// that policy is off, and [`SnapshotSchedule::run`] asks raft for each
/// snapshot instead. Every member keeps its own count, as in etcd.
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    every: u64,
    due: Arc<Notify>,
}

impl SnapshotSchedule {
    pub fn every(writes: u64) -> SnapshotSchedule {
        SnapshotSchedule { every: writes.max(1), due: Arc::default() }
    }

    /// Called after each apply with the writes since the last snapshot.
    fn counted(&self, writes_since_snapshot: u64) {
        if writes_since_snapshot >= self.every {
            self.due.notify_one();
        }
    }

    /// Asks `raft` for a snapshot each time one is due, until raft stops.
    pub async fn run(self, raft: Raft, state: SharedState) {
        let mut metrics = raft.metrics();
        loop {
            self.due.notified().await;
            if state.lock().writes_since_snapshot < self.every {
                // A snapshot was taken since this was said.
                continue;
            }
            let taken = metrics.borrow().snapshot;
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // One at a time: until that snapshot is built, which starts the
            // count over, every apply says again that one is due.
            let built = tokio::time::timeout(SNAPSHOT_BUILD_WAIT, metrics.wait_for(|m| m.snapshot != taken)).await;
            if let Ok(Err(_)) = built {
                return;
            }
        }
    }
}

impl StateMachine {
    /// Counts writes toward the next snapshot, for `schedule` to ask raft
    /// for it (see [`SnapshotSchedule`]).
    pub fn snapshot_on(mut self, schedule: SnapshotSchedule) -> StateMachine {
        self.schedule = Some(schedule);
        self
    }

    /// Applies entries only once `durability` says they are on disk.
    pub fn apply_when_synced(mut self, durability: Durability) -> StateMachine {
        self.durability = Some(durability);
        self
    }

    /// Opens the state machine in `dir`, restoring the snapshot there if
    /// there is one.
    pub fn open(dir: &Path) -> Result<StateMachine, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir { path: dir.to_owned(), source })?;
        durable::remove_leftover(&dir.join(format!("{SNAPSHOT_FILE}.tmp")));
        let path = dir.join(SNAPSHOT_FILE);
        let (state, current) = match durable::read_single(&path, &SNAPSHOT_KIND)? {
            None => (State::empty(), None),
            Some(payload) => {
                let offset = FILE_HEADER_LEN as u64;
                let file: SnapshotFile = postcard::from_bytes(&payload).map_err(|source| OpenError::Decode {
                    path: path.clone(),
                    offset,
                    source,
                })?;
                let state = State::from_snapshot(&file.meta, &file.data).map_err(|e| match e {
                    SnapshotDataError::Decode(source) => OpenError::Decode { path: path.clone(), offset, source },
                    SnapshotDataError::Restore(source) => OpenError::Restore { path: path.clone(), source },
                    mismatch @ SnapshotDataError::Mismatch { .. } => {
                        OpenError::Corrupt { path: path.clone(), offset, reason: mismatch.to_string() }
                    }
                })?;
                tracing::info!(path = %path.display(), meta = %file.meta, "restored the state machine from its snapshot");
                (state, Some(StoredSnapshot { meta: file.meta, data: file.data }))
            }
        };
        Ok(StateMachine {
            durability: None,
            schedule: None,
            dir: dir.to_owned(),
            shared: SharedState::new(state),
            current: Arc::new(tokio::sync::Mutex::new(current)),
        })
    }

    /// A handle on the state for readers.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }
}

/// Makes `snapshot` the current one, file first. With `only_if_newer`, a
/// snapshot older than the current one (a build that raced an install)
/// is dropped instead.
async fn save_snapshot(
    dir: &Path,
    current: &tokio::sync::Mutex<Option<StoredSnapshot>>,
    snapshot: StoredSnapshot,
    only_if_newer: bool,
) -> Result<(), StorageError> {
    let mut current = current.lock().await;
    if only_if_newer && current.as_ref().is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id) {
        tracing::debug!(meta = %snapshot.meta, "a newer snapshot is already current; not saving");
        return Ok(());
    }
    // Encodes exactly as `SnapshotFile` does, without copying the data.
    #[derive(Serialize)]
    struct SnapshotFileRef<'a> {
        meta: &'a SnapshotMeta,
        data: &'a [u8],
    }
    // Encoding and writing a large store takes a while: off the runtime's
    // worker, which goes on with raft meanwhile.
    let dir = dir.to_owned();
    let (snapshot, written) = tokio::task::spawn_blocking(move || {
        let written = postcard::to_stdvec(&SnapshotFileRef { meta: &snapshot.meta, data: &snapshot.data })
            .map_err(|e| AnyError::new(&e))
            .and_then(|file| {
                durable::write_atomic(&dir, SNAPSHOT_FILE, &SNAPSHOT_KIND, &file).map_err(|e| AnyError::new(&e))
            });
        (snapshot, written)
    })
    .await
    .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
    written.map_err(|e| StorageIOError::write_snapshot(Some(snapshot.meta.signature()), e))?;
    tracing::info!(meta = %snapshot.meta, bytes = snapshot.data.len(), "saved snapshot");
    *current = Some(snapshot);
    Ok(())
}

fn now_nanos() -> UnixNanos {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => UnixNanos::try_from(since.as_nanos()).unwrap_or(UnixNanos::MAX),
        Err(_) => 0,
    }
}

/// Builds snapshots of the state machine it came from.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    shared: SharedState,
    current: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Encoding holds the state's lock (applies and reads wait), but not
        // the runtime's worker: raft's heartbeats go on.
        let shared = self.shared.clone();
        let snapshot = tokio::task::spawn_blocking(move || shared.lock().snapshot())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        let built = snapshot.to_snapshot();
        save_snapshot(&self.dir, &self.current, snapshot, true).await?;
        Ok(built)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.lock();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durability), Some(last)) = (&self.durability, entries.last()) {
            durability
                .wait(last.log_id.index)
                .await
                .map_err(|reason| StorageIOError::apply(last.log_id, AnyError::error(reason)))?;
        }
        let now = now_nanos();
        let (replies, last_applied, writes_since_snapshot) = {
            let mut state = self.shared.lock();
            let replies: Vec<Response> = entries.into_iter().map(|entry| state.apply(entry, now)).collect();
            (replies, state.last_applied, state.writes_since_snapshot)
        };
        self.shared.publish_applied(last_applied);
        if let Some(schedule) = &self.schedule {
            schedule.counted(writes_since_snapshot);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { dir: self.dir.clone(), shared: self.shared.clone(), current: Arc::clone(&self.current) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoding a large store takes a while: off the runtime's worker.
        let decoding = meta.clone();
        let (state, data) =
            tokio::task::spawn_blocking(move || State::from_snapshot(&decoding, &data).map(|state| (state, data)))
                .await
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        save_snapshot(&self.dir, &self.current, stored, false).await?;
        let last_applied = state.last_applied;
        *self.shared.lock() = state;
        self.shared.publish_applied(last_applied);
        tracing::info!(%meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current.lock().await.as_ref().map(StoredSnapshot::to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use ferrite_etcd_api::v2;
    use openraft::testing::{blank_ent, log_id, membership_ent};
    use openraft::{Membership, RaftSnapshotBuilder};

    use super::*;
    use crate::v2store::{Command, Ttl};

    fn normal(index: u64, request: Request) -> Entry {
        Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Normal(request) }
    }

    fn publish(index: u64, id: NodeId, name: &str) -> Entry {
        normal(
            index,
            Request::PublishMember { id, name: name.to_owned(), client_urls: vec![format!("http://{name}:2379")] },
        )
    }

    fn set(index: u64, key: &str, value: &str) -> Entry {
        normal(
            index,
            Request::Keys(Command::Set {
                key: key.to_owned(),
                dir: false,
                value: value.to_owned(),
                ttl: Ttl::default(),
            }),
        )
    }

    fn members_1_2() -> Entry {
        membership_ent::<TypeConfig>(1, 1, 1, vec![BTreeSet::from([1, 2])])
    }

    fn get(shared: &SharedState, key: &str) -> Option<String> {
        shared
            .with_store(|store| store.get(key, false, false, now_nanos()))
            .ok()
            .and_then(|applied| applied.event.node.value)
    }

    #[tokio::test]
    async fn entries_are_applied_only_once_the_log_has_them_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (synced, durability) = crate::raft::durability::SyncedSender::new(1);
        let mut sm = StateMachine::open(dir.path()).unwrap().apply_when_synced(durability);
        let entries = || vec![members_1_2(), publish(2, 1, "infra0")];
        let early = tokio::time::timeout(Duration::from_millis(200), sm.apply(entries())).await;
        assert!(early.is_err(), "applied entries the leader had not synced");
        assert_eq!(sm.shared().last_applied(), None);
        synced.synced(2);
        sm.apply(entries()).await.unwrap();
        assert_eq!(sm.shared().last_applied(), Some(log_id(1, 1, 2)));
    }

    #[tokio::test]
    async fn a_snapshot_is_due_after_as_many_writes_as_the_count_batched_or_not() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let schedule = SnapshotSchedule::every(4);
        let mut sm = StateMachine::open(dir.path()).unwrap().snapshot_on(schedule.clone());
        let due = || schedule.due.notified().now_or_never().is_some();
        let batch = |index, keys: &[&str]| {
            let writes = keys.iter().map(|key| match set(index, key, "v").payload {
                EntryPayload::Normal(request) => request,
                _ => unreachable!(),
            });
            normal(index, Request::Batch(writes.collect()))
        };

        // One entry, three writes: not yet.
        sm.apply(vec![batch(1, &["/a", "/b", "/c"])]).await.unwrap();
        assert!(!due());
        // The fourth write makes it due, and each apply after says so again
        // until a snapshot is taken.
        sm.apply(vec![set(2, "/d", "v")]).await.unwrap();
        assert!(due());
        sm.apply(vec![set(3, "/e", "v")]).await.unwrap();
        assert!(due());
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(sm.shared().lock().writes_since_snapshot, 0);
        sm.apply(vec![batch(4, &["/f", "/g"])]).await.unwrap();
        assert!(!due());
    }

    #[tokio::test]
    async fn members_publish_their_attributes_and_readers_see_the_applied_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let shared = sm.shared();
        assert_eq!(shared.applied_index(), None);
        let waiter = tokio::spawn({
            let shared = shared.clone();
            async move { shared.wait_applied(3).await.unwrap() }
        });

        let replies = sm
            .apply(vec![
                blank_ent::<TypeConfig>(1, 1, 0),
                members_1_2(),
                publish(2, 1, "infra0"),
                publish(3, 2, "infra1"),
            ])
            .await
            .unwrap();
        assert_eq!(replies, vec![Response::Done; 4]);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();

        assert_eq!(shared.last_applied(), Some(log_id(1, 1, 3)));
        assert_eq!(shared.applied_index(), Some(3));
        assert_eq!(shared.members()[&2].name, "infra1");
        assert_eq!(shared.membership().membership(), &Membership::new(vec![BTreeSet::from([1, 2])], None));

        // Member 2 is removed: its attributes go too.
        sm.apply(vec![membership_ent::<TypeConfig>(1, 1, 4, vec![BTreeSet::from([1])])]).await.unwrap();
        assert_eq!(shared.members().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 4)));
    }

    #[tokio::test]
    async fn keys_writes_answer_with_the_store_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let replies = sm
            .apply(vec![
                set(1, "/message", "hello"),
                normal(
                    2,
                    Request::Keys(Command::Update {
                        key: "/missing".to_owned(),
                        value: "x".to_owned(),
                        ttl: Ttl::default(),
                    }),
                ),
            ])
            .await
            .unwrap();
        match &replies[0] {
            Response::Keys(Ok(applied)) => assert_eq!(applied.event.action, v2::Action::Set),
            other => panic!("set answered {other:?}"),
        }
        assert!(matches!(&replies[1], Response::Keys(Err(_))), "{:?}", replies[1]);
        assert_eq!(get(&sm.shared(), "/message").as_deref(), Some("hello"));
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_and_answers_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let create = |value: &str| {
            Request::Keys(Command::Create {
                key: "/once".to_owned(),
                dir: false,
                value: value.to_owned(),
                unique: false,
                ttl: Ttl::default(),
            })
        };
        let publish = Request::PublishMember { id: 2, name: "infra1".to_owned(), client_urls: Vec::new() };
        let batch = Request::Batch(vec![create("first"), create("second"), publish]);
        let replies = sm.apply(vec![normal(1, batch)]).await.unwrap();
        let [Response::Batch(answers)] = &replies[..] else { panic!("a batch answered {replies:?}") };
        assert_eq!(answers.len(), 3);
        // The second create sees the first: applied in order, one by one.
        assert!(matches!(&answers[0], Response::Keys(Ok(_))), "{:?}", answers[0]);
        assert!(matches!(&answers[1], Response::Keys(Err(_))), "{:?}", answers[1]);
        assert_eq!(answers[2], Response::Done);
        assert_eq!(get(&sm.shared(), "/once").as_deref(), Some("first"));
        assert_eq!(sm.shared().members()[&2].name, "infra1");
        assert_eq!(sm.shared().last_applied(), Some(log_id(1, 1, 1)));
    }

    #[tokio::test]
    async fn a_built_snapshot_is_current_and_restored_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let built = {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            assert!(sm.get_current_snapshot().await.unwrap().is_none());
            sm.apply(vec![members_1_2(), publish(2, 1, "infra0"), set(3, "/message", "hello")]).await.unwrap();
            let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 3)));
            let current = sm.get_current_snapshot().await.unwrap().unwrap();
            assert_eq!(current.meta, built.meta);
            assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());
            // Applied after the snapshot: gone on reopen until the log
            // re-applies it.
            sm.apply(vec![set(4, "/message", "later")]).await.unwrap();
            built
        };
        assert!(!dir.path().join("snapshot.tmp").exists());
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let shared = sm.shared();
        assert_eq!(shared.last_applied(), Some(log_id(1, 1, 3)));
        assert_eq!(shared.applied_index(), Some(3));
        assert_eq!(shared.members()[&1].client_urls, vec!["http://infra0:2379"]);
        assert_eq!(get(&shared, "/message").as_deref(), Some("hello"));
        assert_eq!(sm.applied_state().await.unwrap(), (Some(log_id(1, 1, 3)), built.meta.last_membership.clone()));
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, built.meta);
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_state_and_survives_reopen() {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = StateMachine::open(leader_dir.path()).unwrap();
        leader.apply(vec![members_1_2(), publish(2, 2, "infra1"), set(3, "/a", "1")]).await.unwrap();
        let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();

        {
            let mut follower = StateMachine::open(follower_dir.path()).unwrap();
            follower.apply(vec![set(1, "/stale", "x")]).await.unwrap();
            let shared = follower.shared();
            let mut rx = follower.begin_receiving_snapshot().await.unwrap();
            *rx = *snapshot.snapshot.clone();
            follower.install_snapshot(&snapshot.meta, rx).await.unwrap();
            assert_eq!(get(&shared, "/a").as_deref(), Some("1"));
            assert_eq!(get(&shared, "/stale"), None);
            assert_eq!(shared.members()[&2].name, "infra1");
            assert_eq!(shared.applied_index(), Some(3));
            assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
        }
        let follower = StateMachine::open(follower_dir.path()).unwrap();
        assert_eq!(get(&follower.shared(), "/a").as_deref(), Some("1"));
        assert_eq!(follower.shared().last_applied(), Some(log_id(1, 1, 3)));
    }

    #[tokio::test]
    async fn a_snapshot_whose_data_disagrees_with_its_metadata_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(vec![members_1_2()]).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut meta = snapshot.meta.clone();
        meta.last_log_id = Some(log_id(9, 1, 90));
        let err = sm.install_snapshot(&meta, snapshot.snapshot).await.unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
        assert_eq!(sm.shared().last_applied(), Some(log_id(1, 1, 1)));
    }

    #[tokio::test]
    async fn a_damaged_snapshot_file_fails_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(vec![members_1_2(), publish(2, 1, "infra0")]).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = StateMachine::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Corrupt { path: p, .. } if p == &path), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");

        std::fs::write(&path, b"not a snapshot").unwrap();
        let err = StateMachine::open(dir.path()).unwrap_err();
        assert!(matches!(&err, OpenError::Foreign { kind: "snapshot", .. }), "{err}");
    }
}
