//! The peer network: raft RPCs between members, served on the peer
//! listener (see [`crate::http::peer`]).
//!
//! AppendEntries and votes go on the member's long-lived stream to the
//! peer ([`super::stream`]); a snapshot is one `POST <peer-url>/raft/snapshot`.
//! Each carries a postcard-encoded request, and the answer is a
//! postcard-encoded `Result<response, RaftError>`, so a remote raft error
//! travels back as itself.
//!
//! [`Faults`] lets in-process tests cut or delay chosen links; production
//! code never sets it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::durability::Durability;
use super::election::Heard;
use super::log_store::LogReader;
use super::stream::{Kind, Streams};
use super::types::{LogId, NodeId, PeerNode, TypeConfig, Vote};

/// Links that tests have cut or slowed, by (from, to).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    inner: Arc<Mutex<FaultTable>>,
}

#[derive(Debug, Default)]
struct FaultTable {
    cut: HashSet<(NodeId, NodeId)>,
    delay: HashMap<(NodeId, NodeId), Duration>,
}

impl Faults {
    /// Drops every message from `from` to `to` until [`Faults::heal`].
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.table().cut.insert((from, to));
    }

    /// Delays every message from `from` to `to`.
    pub fn delay(&self, from: NodeId, to: NodeId, by: Duration) {
        self.table().delay.insert((from, to), by);
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut table = self.table();
        table.cut.clear();
        table.delay.clear();
    }

    fn check(&self, from: NodeId, to: NodeId) -> (bool, Option<Duration>) {
        let table = self.table();
        (table.cut.contains(&(from, to)), table.delay.get(&(from, to)).copied())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, FaultTable> {
        // A poisoned table only means a test panicked mid-update; the data
        // (two sets) is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the leader saw of its AppendEntries calls to each follower, for
/// `/v2/stats/leader` and `/v2/stats/self` (etcd's latency and counts).
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    inner: Arc<Mutex<HashMap<NodeId, FollowerStats>>>,
}

/// Latency in milliseconds and counts of one follower's AppendEntries.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct FollowerStats {
    pub success: u64,
    pub fail: u64,
    pub current_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    sum_ms: f64,
    sum_sq_ms: f64,
}

impl FollowerStats {
    pub fn average_ms(&self) -> f64 {
        if self.success == 0 {
            0.0
        } else {
            self.sum_ms / self.success as f64
        }
    }

    pub fn standard_deviation_ms(&self) -> f64 {
        if self.success == 0 {
            return 0.0;
        }
        let mean = self.average_ms();
        (self.sum_sq_ms / self.success as f64 - mean * mean).max(0.0).sqrt()
    }
}

impl PeerStats {
    fn record(&self, to: NodeId, elapsed: Option<Duration>) {
        let mut table = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = table.entry(to).or_default();
        match elapsed {
            Some(d) => {
                let ms = d.as_secs_f64() * 1000.0;
                if s.success == 0 || ms < s.min_ms {
                    s.min_ms = ms;
                }
                s.max_ms = s.max_ms.max(ms);
                s.current_ms = ms;
                s.sum_ms += ms;
                s.sum_sq_ms += ms * ms;
                s.success += 1;
            }
            None => s.fail += 1,
        }
    }

    /// Every follower's figures.
    pub fn snapshot(&self) -> HashMap<NodeId, FollowerStats> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// AppendEntries calls sent, answered or not.
    pub fn sent(&self) -> u64 {
        self.snapshot().values().map(|s| s.success + s.fail).sum()
    }
}

/// Builds a client per peer; all share the member's streams and its HTTP
/// connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    me: NodeId,
    http: reqwest::Client,
    streams: Streams,
    faults: Faults,
    stats: PeerStats,
    commits: Option<CommitGate>,
    heard: Option<Heard>,
}

/// What the leader tells followers is committed: no more than its own log
/// has on disk (see `durability`).
///
/// New entries go out at once, their commit index lowered to what is on
/// disk: waiting for the leader's fsync there put it back in series with
/// the follower's, one round in every few. The commit held back follows
/// them once the fsync reaches it (`PeerClient::send_held_back_commit`),
/// and a message carrying only a commit waits for the fsync, so the whole
/// commit gets there: a follower whose clients wait for a write to apply
/// would otherwise wait for the next entry or heartbeat.
#[derive(Debug, Clone)]
struct CommitGate {
    durability: Durability,
    log: LogReader,
}

impl CommitGate {
    /// `rpc` with the commit index it may carry now, and the commit it
    /// held back, if it lowered it.
    async fn gate(
        &self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        limit: Duration,
    ) -> Result<(AppendEntriesRequest<TypeConfig>, Option<LogId>), String> {
        let Some(commit) = rpc.leader_commit else { return Ok((rpc, None)) };
        if rpc.entries.is_empty() {
            return match tokio::time::timeout(limit, self.durability.wait(commit.index)).await {
                Ok(Ok(())) => Ok((rpc, None)),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err(format!("the leader's log is not yet on disk up to the commit {commit}")),
            };
        }
        let synced = self.durability.synced()?;
        rpc.leader_commit = commit_on_disk(Some(commit), synced, |index| self.log.log_id_at(index));
        let held_back = (rpc.leader_commit != Some(commit)).then_some(commit);
        Ok((rpc, held_back))
    }
}

/// `commit`, lowered to the entry at `synced` when the leader's log is on
/// disk only that far. A lower commit (or none) is always safe to send: a
/// follower never moves its commit back.
fn commit_on_disk(commit: Option<LogId>, synced: u64, log_id_at: impl Fn(u64) -> Option<LogId>) -> Option<LogId> {
    match commit {
        Some(commit) if commit.index > synced => log_id_at(synced),
        commit => commit,
    }
}

/// The HTTP client for calls to peers: HTTP/1 only (a stream is an
/// upgraded HTTP/1 connection), no Nagle delay on small messages.
pub fn peer_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http1_only()
        .build()
        .unwrap_or_default()
}

impl Network {
    pub fn new(me: NodeId, streams: Streams, http: reqwest::Client, faults: Faults, stats: PeerStats) -> Network {
        Network { me, http, streams, faults, stats, commits: None, heard: None }
    }

    /// Tells the election timer when a vote this member asked for is
    /// refused by a member with a longer log (see `election`).
    pub fn elections(mut self, heard: Heard) -> Network {
        self.heard = Some(heard);
        self
    }

    /// Tells followers of a commit only as far as the local log is on
    /// disk (see `durability`): the leader acknowledges its own appends
    /// early. `log` names the entry a lowered commit stops at.
    pub fn commit_when_synced(mut self, durability: Durability, log: LogReader) -> Network {
        self.commits = Some(CommitGate { durability, log });
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient {
            me: self.me,
            target,
            base: node.peer_urls.first().map(|u| u.trim_end_matches('/').to_owned()).unwrap_or_default(),
            http: self.http.clone(),
            streams: self.streams.clone(),
            faults: self.faults.clone(),
            stats: self.stats.clone(),
            commits: self.commits.clone(),
            heard: self.heard.clone(),
        }
    }
}

/// The RPC client for one peer.
#[derive(Debug)]
pub struct PeerClient {
    me: NodeId,
    target: NodeId,
    base: String,
    stats: PeerStats,
    http: reqwest::Client,
    streams: Streams,
    faults: Faults,
    commits: Option<CommitGate>,
    heard: Option<Heard>,
}

/// Why a peer call failed before the peer answered.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("link to member {to:x} is cut by a test")]
    Cut { to: NodeId },
    #[error("member {to:x} at {url} is unreachable: {source}")]
    Unreachable { to: NodeId, url: String, source: reqwest::Error },
    #[error("call to member {to:x} at {url} failed: {source}")]
    Transport { to: NodeId, url: String, source: reqwest::Error },
    #[error("member {to:x} at {url} answered HTTP {status}: {body}")]
    Status { to: NodeId, url: String, status: u16, body: String },
    #[error("cannot decode the answer of member {to:x} at {url}: {reason}")]
    Decode { to: NodeId, url: String, reason: String },
    #[error("cannot encode a request to member {to:x}: {reason}")]
    Encode { to: NodeId, reason: String },
    #[error("member {to:x} at {url} did not answer a {kind} call in time")]
    Timeout { to: NodeId, url: String, kind: &'static str },
    #[error("the stream to member {to:x} at {url} broke: {reason}")]
    Stream { to: NodeId, url: String, reason: String },
    #[error("member {to:x} at {url} refused a call: {reason}")]
    Refused { to: NodeId, url: String, reason: String },
}

impl PeerCallError {
    /// What a request that failed before an answer came means: a peer
    /// that cannot be reached, or a transport failure after connecting.
    pub fn sending(to: NodeId, url: &str) -> impl FnOnce(reqwest::Error) -> PeerCallError + '_ {
        move |source| {
            let url = url.to_owned();
            if source.is_connect() {
                PeerCallError::Unreachable { to, url, source }
            } else {
                PeerCallError::Transport { to, url, source }
            }
        }
    }

    fn is_unreachable(&self) -> bool {
        matches!(self, PeerCallError::Cut { .. } | PeerCallError::Unreachable { .. })
    }
}

/// How a peer call's bodies are encoded. Raft's own RPCs use postcard
/// (compact, fast); calls whose answers carry etcd API shapes use JSON,
/// because those shapes omit empty fields, which only a self-describing
/// format can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Postcard,
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Postcard => "application/octet-stream",
            Encoding::Json => "application/json",
        }
    }

    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf, value)?;
        Ok(buf)
    }

    /// Appends `value`'s encoding to `buf`.
    pub fn encode_into<T: Serialize>(self, buf: &mut Vec<u8>, value: &T) -> Result<(), String> {
        match self {
            Encoding::Postcard => {
                *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(|e| e.to_string())?;
                Ok(())
            }
            Encoding::Json => serde_json::to_writer(buf, value).map_err(|e| e.to_string()),
        }
    }

    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Encoding::Postcard => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Sends one call to a peer and decodes its answer.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    http: &reqwest::Client,
    to: NodeId,
    base: &str,
    route: &str,
    req: &Req,
    timeout: Duration,
    encoding: Encoding,
) -> Result<Resp, PeerCallError> {
    let url = format!("{base}{route}");
    let body = encoding.encode(req).map_err(|reason| PeerCallError::Encode { to, reason })?;
    let resp = http
        .post(&url)
        .header(http::header::CONTENT_TYPE, encoding.content_type())
        .timeout(timeout)
        .body(body)
        .send()
        .await
        .map_err(PeerCallError::sending(to, &url))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|source| PeerCallError::Transport { to, url: url.clone(), source })?;
    if !status.is_success() {
        return Err(PeerCallError::Status {
            to,
            url,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    encoding.decode(&bytes).map_err(|reason| PeerCallError::Decode { to, url, reason })
}

/// Where a raft RPC goes.
#[derive(Debug, Clone, Copy)]
enum Route {
    Stream(Kind),
    Http(&'static str),
}

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        route: Route,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (cut, delay) = self.faults.check(self.me, self.target);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let (to, ttl) = (self.target, option.hard_ttl());
        let answer: Result<Result<Resp, RaftError<NodeId, E>>, _> = match route {
            _ if cut => Err(PeerCallError::Cut { to }),
            Route::Stream(kind) => self.streams.call(to, &self.base, kind, req, ttl).await,
            Route::Http(path) => call(&self.http, to, &self.base, path, req, ttl, Encoding::Postcard).await,
        };
        match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e) if e.is_unreachable() => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    /// Sends the commit the gate held back from entries the follower just
    /// took, once the leader's fsync reaches it, as the commit-only
    /// AppendEntries openraft itself sends (`prev_log_id` the follower's
    /// last entry). openraft counts that commit as sent: the follower
    /// would hear of it only with the next message, which for a follower
    /// whose clients all wait for their writes to apply is the next
    /// heartbeat, up to 150 ms later. Best effort: a failure only leaves
    /// that to the heartbeat.
    async fn send_held_back_commit(&self, vote: Vote, last: Option<LogId>, commit: LogId, option: &RPCOption) {
        let Some(commits) = &self.commits else { return };
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: last,
            entries: Vec::new(),
            leader_commit: Some(commit),
        };
        let sent = match commits.gate(rpc, option.hard_ttl()).await {
            Ok((rpc, _)) => {
                let answer: Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> =
                    self.rpc(Route::Stream(Kind::Append), &rpc, option).await;
                answer.map(|_| ()).map_err(|e| e.to_string())
            }
            Err(reason) => Err(reason),
        };
        if let Err(reason) = sent {
            tracing::debug!(to = %format_args!("{:x}", self.target), %commit, %reason, "cannot send a held-back commit");
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let mut held_back = None;
        if let Some(commits) = &self.commits {
            (rpc, held_back) = commits
                .gate(rpc, option.hard_ttl())
                .await
                .map_err(|reason| RPCError::Network(NetworkError::new(&AnyError::error(reason))))?;
        }
        let started = std::time::Instant::now();
        let answer = self.rpc(Route::Stream(Kind::Append), &rpc, &option).await;
        self.stats.record(self.target, answer.is_ok().then(|| started.elapsed()));
        if let (Some(commit), Ok(AppendEntriesResponse::Success)) = (held_back, &answer) {
            let last = rpc.entries.last().map(|entry| entry.log_id).or(rpc.prev_log_id);
            self.send_held_back_commit(rpc.vote, last, commit, &option).await;
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(Route::Http("/raft/snapshot"), &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let answer = self.rpc(Route::Stream(Kind::Vote), &rpc, &option).await;
        if let (Some(heard), Ok(answer)) = (&self.heard, &answer) {
            heard.vote_answered(&rpc, answer);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;

    use super::*;
    use crate::raft::durability::SyncedSender;
    use crate::raft::log_store::LogStore;

    #[test]
    fn a_commit_goes_to_followers_only_as_far_as_the_leader_has_it_on_disk() {
        let log_id_at = |index| (index >= 3).then(|| log_id(2, 1, index));
        // On disk: sent as it is.
        assert_eq!(commit_on_disk(Some(log_id(2, 1, 5)), 5, log_id_at), Some(log_id(2, 1, 5)));
        assert_eq!(commit_on_disk(Some(log_id(2, 1, 5)), 9, log_id_at), Some(log_id(2, 1, 5)));
        assert_eq!(commit_on_disk(None, 0, log_id_at), None);
        // Ahead of the leader's fsync: lowered to the entry on disk.
        assert_eq!(commit_on_disk(Some(log_id(2, 1, 5)), 4, log_id_at), Some(log_id(2, 1, 4)));
        // Nothing the leader holds to name: no commit at all.
        assert_eq!(commit_on_disk(Some(log_id(2, 1, 5)), 1, log_id_at), None);
    }

    #[tokio::test]
    async fn the_gate_reads_the_synced_index_and_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        {
            use openraft::storage::RaftLogStorageExt;
            let entries = (1..=3).map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i)).collect::<Vec<_>>();
            store.blocking_append(entries).await.unwrap();
        }
        let (synced, durability) = SyncedSender::new(2);
        let gate = CommitGate { durability, log: store.reader() };
        let rpc = |entries: u64| AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(1, 1, 3 - entries)),
            entries: (4 - entries..=3).map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i)).collect(),
            leader_commit: Some(log_id(1, 1, 3)),
        };
        let limit = Duration::from_secs(5);
        // New entries go at once, with the commit the leader has on disk.
        let (sent, held_back) = gate.gate(rpc(1), limit).await.unwrap();
        assert_eq!((sent.entries.len(), sent.leader_commit), (1, Some(log_id(1, 1, 2))));
        assert_eq!(held_back, Some(log_id(1, 1, 3)), "what to send once the fsync is done");
        // A commit alone waits for the fsync, then goes whole.
        let held = tokio::time::timeout(Duration::from_millis(200), gate.gate(rpc(0), limit)).await;
        assert!(held.is_err(), "told a follower of a commit the leader had not synced");
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.gate(rpc(0), limit).await }
        });
        synced.synced(3);
        let (sent, held_back) = tokio::time::timeout(limit, waiting).await.unwrap().unwrap().unwrap();
        assert_eq!((sent.leader_commit, held_back), (Some(log_id(1, 1, 3)), None));
        let (sent, held_back) = gate.gate(rpc(1), limit).await.unwrap();
        assert_eq!((sent.leader_commit, held_back), (Some(log_id(1, 1, 3)), None));
        synced.failed("disk full".to_owned());
        assert!(gate.gate(rpc(1), limit).await.unwrap_err().contains("disk full"));
    }
}
