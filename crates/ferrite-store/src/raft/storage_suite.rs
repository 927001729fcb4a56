//! The log store and state machine under openraft itself: its storage test
//! suite, and a single-node `Raft` restarted on the same directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Config, SnapshotPolicy};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::{SharedState, StateMachine};
use crate::v2store::{Command, Ttl};

use super::types::{NodeId, PeerNode, Raft, Request, Response, StorageError, TypeConfig};

struct DiskStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(DiskStores).unwrap();
}

/// A network with no peers: a single node never calls it.
struct NoPeers;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, PeerNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("no peers in this test")))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &PeerNode) -> NoPeers {
        NoPeers
    }
}

async fn start(dir: &Path) -> (Raft, SharedState) {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Snapshot only when asked, and purge everything it covers.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    let log = LogStore::open(dir).unwrap();
    let sm = StateMachine::open(dir).unwrap();
    let shared = sm.shared();
    let raft = Raft::new(1, Arc::new(config.validate().unwrap()), NoPeers, log, sm).await.unwrap();
    (raft, shared)
}

async fn publish(raft: &Raft, name: &str) -> u64 {
    let written = raft
        .client_write(Request::PublishMember {
            id: 1,
            name: name.to_owned(),
            client_urls: vec![format!("http://{name}:2379")],
        })
        .await
        .unwrap();
    assert_eq!(written.data, Response::Done);
    written.log_id.index
}

async fn set(raft: &Raft, key: &str, value: &str) {
    let written = raft
        .client_write(Request::Keys(Command::Set {
            key: key.to_owned(),
            dir: false,
            value: value.to_owned(),
            ttl: Ttl::default(),
        }))
        .await
        .unwrap();
    assert!(matches!(written.data, Response::Keys(Ok(_))), "{:?}", written.data);
}

fn get(shared: &SharedState, key: &str) -> Option<String> {
    let got = shared.with_store(|store| store.get(key, false, false, 0));
    got.ok().and_then(|applied| applied.event.node.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_comes_back_with_its_state_vote_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let wait = Some(Duration::from_secs(10));
    let (snapshot_index, last_index, vote) = {
        let (raft, _) = start(dir.path()).await;
        let node = PeerNode { peer_urls: vec!["http://127.0.0.1:2380".to_owned()] };
        raft.initialize(BTreeMap::from([(1, node)])).await.unwrap();
        raft.wait(wait).current_leader(1, "leader").await.unwrap();
        set(&raft, "/in-snapshot", "1").await;
        let snapshot_index = publish(&raft, "in-snapshot").await;
        raft.trigger().snapshot().await.unwrap();
        let metrics =
            raft.wait(wait).metrics(|m| m.purged.is_some_and(|p| p.index == snapshot_index), "purged").await.unwrap();
        assert_eq!(metrics.snapshot.map(|s| s.index), Some(snapshot_index));
        // After the snapshot: only in the log, re-applied on restart.
        set(&raft, "/after-snapshot", "2").await;
        let last_index = publish(&raft, "after-snapshot").await;
        let vote = raft.metrics().borrow().vote;
        raft.shutdown().await.unwrap();
        (snapshot_index, last_index, vote)
    };

    // What the stopped node left on disk: the vote it had.
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    }

    let (raft, shared) = start(dir.path()).await;
    // Raft::new re-applied the committed entries after the snapshot.
    assert_eq!(shared.last_applied().map(|id| id.index), Some(last_index));
    assert_eq!(shared.members()[&1].name, "after-snapshot");
    assert_eq!(get(&shared, "/in-snapshot").as_deref(), Some("1"));
    assert_eq!(get(&shared, "/after-snapshot").as_deref(), Some("2"));
    // It leads again; the log starts where the purge left it.
    let metrics = raft.wait(wait).current_leader(1, "leader again").await.unwrap();
    assert_eq!(metrics.purged.map(|p| p.index), Some(snapshot_index));
    assert_eq!(metrics.snapshot.map(|s| s.index), Some(snapshot_index));
    // And it goes on serving writes.
    let next = publish(&raft, "after-restart").await;
    assert!(next > last_index);
    shared.wait_applied(next).await.unwrap();
    assert_eq!(shared.members()[&1].name, "after-restart");
    raft.shutdown().await.unwrap();
}
