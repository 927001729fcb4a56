//! A running member: raft, the state machine, and the operations the HTTP
//! layer needs (propose, linearizable read barrier, membership changes),
//! with forwarding to the leader when this member is a follower.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferrite_etcd_api::v2;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use crate::forwarder::{Forward, Forwarder};
use crate::histogram::Histogram;
use crate::proposer::Proposer;
use crate::raft::election::Heard;
use crate::raft::network::{call, Encoding, PeerStats};
use crate::raft::state_machine::{NoMoreApplied, SharedState};
use crate::raft::stream::{Kind, Streams};
use crate::raft::types::{NodeId, PeerNode, Raft, Request, Response, Vote};
use crate::v2store::{Command, UnixNanos};

/// How long a request waits for a leader or a commit before etcd's
/// "request timed out".
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be served; the HTTP layer prints these as
/// etcd's error 300 "Raft Internal Error" with the text as cause.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Raft stopped, e.g. after a failed log write (a full disk): the
    /// reason says why.
    #[error("etcdserver: server stopped: {0}")]
    Stopped(String),
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: {0}")]
    Internal(String),
}

/// Why a membership change was refused; mapped to etcd's HTTP answers.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum MemberError {
    #[error("membership: peerURL exists")]
    PeerUrlExists,
    #[error("membership: ID exists")]
    IdExists,
    #[error("No such member: {0:x}")]
    NotFound(NodeId),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A committed and applied write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposed {
    pub response: Response,
    pub log_index: u64,
}

/// Counters for `/v2/stats/self` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub proposals_forwarded: AtomicU64,
    pub leader_changes: AtomicU64,
    pub recv_append: AtomicU64,
}

/// One member of the cluster.
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub cluster_id: u64,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub cluster_token: String,
    pub raft: Raft,
    pub state: SharedState,
    pub started: SystemTime,
    pub counters: Counters,
    /// The leader's view of its AppendEntries to each follower.
    pub peer_stats: PeerStats,
    /// Fired when this member sees itself removed from the cluster.
    pub removed: tokio::sync::Notify,
    /// Resets the election timer when a leader's word arrives.
    pub heard: Heard,
    /// How long the raft log's fsyncs take (etcd's WAL fsync histogram).
    pub wal_fsyncs: Arc<Histogram>,
    /// The leadership this member had when it last stopped, which openraft
    /// restored at start.
    restored: Option<RestoredLeadership>,
    /// Set when the member stops serving; the peer streams it serves end.
    stopping: tokio::sync::watch::Sender<bool>,
    http: reqwest::Client,
    streams: Streams,
    proposer: Proposer,
    forwarder: Forwarder,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &format_args!("{:x}", self.id))
            .field("name", &self.name)
            .field("cluster_id", &format_args!("{:x}", self.cluster_id))
            .finish_non_exhaustive()
    }
}

/// What a member is made of, as the server assembles it.
#[allow(missing_debug_implementations)] // `Node`'s own Debug says what matters
pub struct Parts {
    pub id: NodeId,
    pub name: String,
    pub cluster_id: u64,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub cluster_token: String,
    pub raft: Raft,
    pub state: SharedState,
    pub peer_stats: PeerStats,
    pub heard: Heard,
    pub restored: Option<RestoredLeadership>,
    pub streams: Streams,
    pub http: reqwest::Client,
    pub wal_fsyncs: Arc<Histogram>,
}

/// A leadership openraft restored at start: the member's vote then, and
/// the last index of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredLeadership {
    pub vote: Vote,
    pub last_index: u64,
}

/// The time in the form commands carry it.
pub fn unix_nanos(t: SystemTime) -> UnixNanos {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(parts: Parts) -> Arc<Node> {
        let Parts {
            id,
            name,
            cluster_id,
            client_urls,
            peer_urls,
            cluster_token,
            raft,
            state,
            peer_stats,
            heard,
            restored,
            streams,
            http,
            wal_fsyncs,
        } = parts;
        let proposer = Proposer::spawn(raft.clone());
        let forwarder = Forwarder::spawn(streams.clone());
        Arc::new(Node {
            id,
            name,
            cluster_id,
            client_urls,
            peer_urls,
            cluster_token,
            raft,
            state,
            started: SystemTime::now(),
            counters: Counters::default(),
            peer_stats,
            removed: tokio::sync::Notify::new(),
            heard,
            wal_fsyncs,
            restored,
            stopping: tokio::sync::watch::Sender::new(false),
            http,
            streams,
            proposer,
            forwarder,
        })
    }

    /// Ends every peer stream this member serves, now and later.
    pub fn stop_serving(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the member stops serving.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Why raft stopped, if it did.
    fn stop_reason(&self) -> String {
        crate::proposer::stop_reason(&self.raft)
    }

    /// The leader this member knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn server_state(&self) -> ServerState {
        self.raft.metrics().borrow().state
    }

    /// `(raft index, raft term)` for the `X-Raft-*` headers.
    pub fn raft_status(&self) -> (u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.last_applied.map_or(0, |l| l.index), m.current_term)
    }

    /// Every member raft knows (voters and learners) with its peer URLs.
    pub fn raft_members(&self) -> BTreeMap<NodeId, PeerNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.nodes().map(|(id, node)| (*id, node.clone())).collect()
    }

    /// The cluster as `/v2/members` lists it, ordered by id.
    pub fn members(&self) -> Vec<v2::Member> {
        let attributes = self.state.members();
        self.raft_members()
            .into_iter()
            .map(|(id, node)| {
                let attr = attributes.get(&id);
                v2::Member {
                    id: v2::format_id(id),
                    name: attr.map(|a| a.name.clone()).unwrap_or_default(),
                    peer_urls: node.peer_urls.clone(),
                    client_urls: attr.map(|a| a.client_urls.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    fn leader_peer_url(&self, leader: NodeId) -> Option<String> {
        self.raft_members()
            .get(&leader)
            .and_then(|n| n.peer_urls.first().cloned())
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    /// Waits until this member knows a leader, up to the deadline.
    async fn wait_leader(&self, deadline: Instant) -> Result<NodeId, NodeError> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow().current_leader {
                return Ok(leader);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NodeError::Timeout);
            }
            match tokio::time::timeout(left, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NodeError::Stopped("raft shut down".into())),
                Err(_) => return Err(NodeError::Timeout),
            }
        }
    }

    /// Waits until this member's state machine has applied `index`, so a
    /// read here after a write sees the write.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), NodeError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.state.wait_applied(index)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(NoMoreApplied)) => Err(NodeError::Stopped(self.stop_reason())),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Commits a request through raft and returns its result once this
    /// member has applied it. Followers forward to the leader.
    pub async fn propose(&self, request: Request) -> Result<Proposed, NodeError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let result = self.propose_until(request, deadline).await;
        match &result {
            Ok(_) => self.counters.proposals_committed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.proposals_failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn propose_until(&self, request: Request, deadline: Instant) -> Result<Proposed, NodeError> {
        loop {
            let leader = self.wait_leader(deadline).await?;
            if leader == self.id {
                match self.propose_local(request.clone()).await {
                    Err(NotLeader) => {}
                    Ok(result) => return result,
                }
            } else if let Some(url) = self.leader_peer_url(leader) {
                self.counters.proposals_forwarded.fetch_add(1, Ordering::Relaxed);
                let forward = Forward { leader, peer_url: url, request: request.clone(), deadline };
                match self.forwarder.forward(forward).await {
                    Ok(Ok(proposed)) => {
                        self.wait_applied(proposed.log_index, deadline).await?;
                        return Ok(proposed);
                    }
                    // The leader stepped down before proposing: try again.
                    Ok(Err(NodeError::LeaderChanged)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "forwarding a proposal to the leader failed");
                        // Whether the leader proposed it is unknown: a retry
                        // could apply it twice, so give up as etcd does.
                        return Err(NodeError::Timeout);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes on this member, which believes it is the leader.
    /// `Err(NotLeader)` means nothing was proposed.
    /// Goes through the [`Proposer`], which batches concurrent writes.
    pub async fn propose_local(&self, request: Request) -> Result<Result<Proposed, NodeError>, NotLeader> {
        self.proposer.propose(request).await
    }

    /// Serves proposals a follower forwarded, in their order: all are
    /// queued at once, so they usually share a log entry.
    pub async fn propose_forwarded(&self, requests: Vec<Request>) -> Vec<Result<Proposed, NodeError>> {
        let proposals = requests.into_iter().map(|request| async move {
            match self.propose_local(request).await {
                Ok(result) => result,
                Err(NotLeader) => Err(NodeError::LeaderChanged),
            }
        });
        futures::future::join_all(proposals).await
    }

    /// Makes the next local read linearizable: it will see every write
    /// acknowledged before this call (raft read index).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let leader = self.wait_leader(deadline).await?;
            let index = if leader == self.id {
                match self.read_index_local().await {
                    Ok(index) => index,
                    Err(NodeError::LeaderChanged) => continue,
                    Err(e) => return Err(e),
                }
            } else {
                let url = self.leader_peer_url(leader).ok_or(NodeError::LeaderChanged)?;
                let left = deadline.saturating_duration_since(Instant::now());
                let answer: Result<Result<u64, NodeError>, _> =
                    self.streams.call(leader, &url, Kind::ReadIndex, &(), left).await;
                match answer {
                    Ok(Ok(index)) => index,
                    Ok(Err(NodeError::LeaderChanged)) => continue,
                    Ok(Err(e)) => return Err(e),
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(_) => return Err(NodeError::Timeout),
                }
            };
            return self.wait_applied(index, deadline).await;
        }
    }

    /// The read index, served by the leader: the commit index confirmed by
    /// a quorum's heartbeat.
    ///
    /// A leader that restarted within its lease is leader again at once:
    /// openraft 0.9 restores a committed vote of its own as leadership,
    /// without an election. Its commit index is then the one its log last
    /// wrote down, which may lag the writes it acknowledged before it
    /// stopped (the log writes the commit point lazily), and openraft's
    /// read index (`max(committed, first entry of this leadership)`) does
    /// not cover those. Raft's answer for a new leader is to wait for an
    /// entry of its own term to commit; a restored leader has no new term,
    /// so its reads wait for its whole log as it was at start, which holds
    /// every entry it ever saw committed. (It commits them all as it
    /// replicates; a later leadership has its own first entry instead.)
    pub async fn read_index_local(&self) -> Result<u64, NodeError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => {
                let index = read.map_or(0, |l| l.index);
                // Once the commit index has passed the floor (soon after
                // start), this costs no look at the vote.
                let floor = self
                    .restored
                    .filter(|restored| index < restored.last_index)
                    .filter(|restored| self.raft.metrics().borrow().vote == restored.vote)
                    .map_or(0, |restored| restored.last_index);
                Ok(index.max(floor))
            }
            Err(RaftError::APIError(_)) => Err(NodeError::LeaderChanged),
            Err(RaftError::Fatal(f)) => Err(NodeError::Stopped(f.to_string())),
        }
    }

    /// Adds a member (etcd's `POST /v2/members`), forwarding to the leader.
    pub async fn add_member(&self, peer_urls: Vec<String>) -> Result<v2::Member, MemberError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let leader = self.wait_leader(deadline).await?;
        if leader != self.id {
            return self.forward_member_change(leader, "/raft/members/add", &peer_urls, deadline).await;
        }
        self.add_member_local(peer_urls).await
    }

    pub async fn add_member_local(&self, peer_urls: Vec<String>) -> Result<v2::Member, MemberError> {
        let members = self.raft_members();
        if members.values().any(|n| n.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(MemberError::PeerUrlExists);
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = crate::ids::member_id(&peer_urls, &self.cluster_token, Some(i64::try_from(now).unwrap_or(0)));
        if members.contains_key(&id) {
            return Err(MemberError::IdExists);
        }
        let node = PeerNode { peer_urls: peer_urls.clone() };
        // Step 1: the new member joins as a learner; committed by the
        // current voters alone, so it cannot cost the cluster its quorum.
        self.raft.add_learner(id, node, false).await.map_err(member_raft_error)?;
        // Step 2: promote it once it can take part. Joint consensus waits
        // for a quorum of the new configuration, which may need the new
        // member itself (a 1-member cluster growing to 2), so this runs in
        // the background and the caller gets etcd's immediate answer.
        let raft = self.raft.clone();
        tokio::spawn(async move {
            let mut ids = BTreeSet::new();
            ids.insert(id);
            loop {
                match raft.change_membership(ChangeMembers::AddVoterIds(ids.clone()), false).await {
                    Ok(_) => {
                        tracing::info!(member = %format_args!("{id:x}"), "member promoted to voter");
                        return;
                    }
                    Err(RaftError::Fatal(_)) | Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        return;
                    }
                    Err(e) => {
                        // A learner removed meanwhile, or a change in
                        // progress: retry while the learner is still wanted.
                        tracing::debug!(error = %e, "promoting a member failed; retrying");
                        let still_there = raft.metrics().borrow().membership_config.nodes().any(|(nid, _)| *nid == id);
                        if !still_there {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(v2::Member { id: v2::format_id(id), name: String::new(), peer_urls, client_urls: Vec::new() })
    }

    /// Removes a member (etcd's `DELETE /v2/members/<id>`).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MemberError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let leader = self.wait_leader(deadline).await?;
        if leader != self.id {
            return self.forward_member_change(leader, "/raft/members/remove", &id, deadline).await;
        }
        self.remove_member_local(id).await
    }

    pub async fn remove_member_local(&self, id: NodeId) -> Result<(), MemberError> {
        let (is_voter, is_node) = {
            let config = self.raft.metrics().borrow().membership_config.clone();
            let membership = config.membership();
            let is_voter = membership.voter_ids().any(|v| v == id);
            let is_node = membership.nodes().any(|(n, _)| *n == id);
            (is_voter, is_node)
        };
        if !is_node {
            return Err(MemberError::NotFound(id));
        }
        let mut ids = BTreeSet::new();
        ids.insert(id);
        let change = if is_voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) };
        self.raft.change_membership(change, false).await.map_err(member_raft_error)?;
        Ok(())
    }

    /// Changes a member's peer URLs (etcd's `PUT /v2/members/<id>`).
    pub async fn update_member(&self, id: NodeId, peer_urls: Vec<String>) -> Result<(), MemberError> {
        let members = self.raft_members();
        if !members.contains_key(&id) {
            return Err(MemberError::NotFound(id));
        }
        if members.iter().any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(MemberError::PeerUrlExists);
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let leader = self.wait_leader(deadline).await?;
        if leader != self.id {
            return Err(MemberError::Node(NodeError::Internal(format!(
                "member updates are served by the leader ({leader:x})"
            ))));
        }
        let mut nodes = BTreeMap::new();
        nodes.insert(id, PeerNode { peer_urls });
        self.raft.change_membership(ChangeMembers::SetNodes(nodes), true).await.map_err(member_raft_error)?;
        Ok(())
    }

    async fn forward_member_change<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        leader: NodeId,
        route: &str,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, MemberError> {
        let url = self.leader_peer_url(leader).ok_or(NodeError::LeaderChanged)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let answer: Result<Result<Resp, MemberError>, _> =
            call(&self.http, leader, &url, route, req, left, Encoding::Json).await;
        answer.map_err(|e| MemberError::Node(NodeError::Internal(e.to_string())))?
    }

    /// Runs the duties of a member for as long as the process lives:
    /// publishing its name and client URLs, and, while leader, expiring
    /// TTL keys by the leader's clock.
    pub fn spawn_duties(self: &Arc<Node>) {
        let node = self.clone();
        tokio::spawn(async move { node.publish_loop().await });
        let node = self.clone();
        tokio::spawn(async move { node.expiry_loop().await });
        let node = self.clone();
        tokio::spawn(async move { node.leader_watch_loop().await });
    }

    async fn publish_loop(self: Arc<Node>) {
        loop {
            let published = self
                .state
                .members()
                .get(&self.id)
                .is_some_and(|a| a.name == self.name && a.client_urls == self.client_urls);
            if published {
                break;
            }
            let request =
                Request::PublishMember { id: self.id, name: self.name.clone(), client_urls: self.client_urls.clone() };
            match self.propose(request).await {
                Ok(_) => {
                    tracing::info!(name = %self.name, id = %format_args!("{:x}", self.id), "published member attributes");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "publishing member attributes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tracing::info!("ready to serve client requests");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }

    /// etcd's SYNC: every 500 ms the leader proposes the deletion of keys
    /// whose expiration has passed by its clock. Followers never expire.
    async fn expiry_loop(self: Arc<Node>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.leader() != Some(self.id) {
                continue;
            }
            let now = unix_nanos(SystemTime::now());
            let due = self.state.with_store(|s| s.next_expiration()).is_some_and(|at| at <= now);
            if due {
                if let Err(e) = self.propose(Request::Keys(Command::DeleteExpired { cutoff: now })).await {
                    tracing::warn!(error = %e, "proposing TTL expiry failed");
                }
            }
        }
    }

    /// Follows raft's metrics: counts leader changes, and notices when a
    /// committed membership no longer holds this member, which then stops,
    /// as etcd's removed members do, instead of disturbing the cluster
    /// with elections it can no longer win.
    async fn leader_watch_loop(self: Arc<Node>) {
        let mut metrics = self.raft.metrics();
        let mut last = metrics.borrow().current_leader;
        let mut was_member = false;
        // While this member sees itself being removed, it asks the members
        // that stay every half second whether the removal went through.
        let mut confirm = tokio::time::interval(Duration::from_millis(500));
        loop {
            let leaving_now = {
                let m = metrics.borrow();
                let config = m.membership_config.clone();
                let membership = config.membership();
                // Being removed shows as a joint configuration whose old
                // side has this member as a voter and whose new side does
                // not. The final configuration is never replicated to the
                // member it leaves out, and neither may be the commit of the
                // joint one, so the member cannot learn the outcome from its
                // own log: it asks the others (below).
                let joint = membership.get_joint_config();
                // A leader removing itself finishes the change first (it
                // commits the final configuration), then stops.
                let leaving = joint.len() > 1
                    && m.current_leader != Some(self.id)
                    && joint.first().is_some_and(|old| old.contains(&self.id))
                    && joint.last().is_some_and(|new| !new.contains(&self.id));
                let is_member = !leaving && membership.nodes().any(|(id, _)| *id == self.id);
                let committed = m.last_applied.is_some_and(|applied| config.log_id().is_some_and(|l| l <= applied));
                let now = m.current_leader;
                drop(m);
                if is_member {
                    was_member = true;
                } else if was_member && committed && !leaving {
                    tracing::warn!("the member has been permanently removed from the cluster; stopping");
                    self.removed.notify_one();
                    return;
                }
                if now != last {
                    if now.is_some() {
                        self.counters.leader_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(leader = ?now.map(|l| format!("{l:x}")), "leader changed");
                    last = now;
                }
                leaving.then(|| joint.last().cloned().unwrap_or_default())
            };
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = confirm.tick(), if leaving_now.is_some() => {
                    let staying = leaving_now.unwrap_or_default();
                    if self.removal_confirmed(&staying).await {
                        tracing::warn!("the member has been permanently removed from the cluster; stopping");
                        self.removed.notify_one();
                        return;
                    }
                }
            }
        }
    }

    /// Whether a member that stays in the cluster no longer lists this one.
    async fn removal_confirmed(&self, staying: &BTreeSet<NodeId>) -> bool {
        let members = self.raft_members();
        for id in staying {
            let Some(url) = members.get(id).and_then(|n| n.peer_urls.first()) else { continue };
            let url = format!("{}/members", url.trim_end_matches('/'));
            let Ok(resp) = self.http.get(&url).timeout(Duration::from_secs(1)).send().await else { continue };
            let Ok(list) = resp.json::<Vec<v2::Member>>().await else { continue };
            let me = v2::format_id(self.id);
            return !list.iter().any(|m| m.id == me);
        }
        false
    }
}

/// The member is not the leader; nothing was proposed.
#[derive(Debug, Clone, Copy)]
pub struct NotLeader;

fn member_raft_error(e: RaftError<NodeId, ClientWriteError<NodeId, PeerNode>>) -> MemberError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MemberError::Node(NodeError::LeaderChanged),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MemberError::Node(NodeError::Internal(e.to_string()))
        }
        RaftError::Fatal(f) => MemberError::Node(NodeError::Stopped(f.to_string())),
    }
}
