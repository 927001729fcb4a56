//! Starting a member: the data directory and the member's identity, raft,
//! the listeners, and bootstrap (new cluster, joining one, or restart).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use ferrite_etcd_api::v2;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::{ClusterState, InitialMember, Settings};
use crate::ids;
use crate::node::{self, Node, RestoredLeadership};
use crate::raft::election;
use crate::raft::log_store::{LogStore, LogStoreOptions};
use crate::raft::network::{peer_http_client, Faults, Network, PeerStats};
use crate::raft::state_machine::{SnapshotSchedule, StateMachine};
use crate::raft::stream::Streams;
use crate::raft::types::{NodeId, PeerNode, Raft};

/// The file naming this member and its cluster, written once at bootstrap.
const META_FILE: &str = "meta.json";
const META_FORMAT: &str = "ferrite-store/1";

/// Why a member could not start. Each names the path, address or peer.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "{path}: this is an etcd data directory; ferrite-store cannot read etcd's WAL (start with an empty --data-dir)"
    )]
    ForeignEtcdDir { path: PathBuf },
    #[error("{path}: not a ferrite-store member file: {reason}")]
    BadMeta { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot open the raft log")]
    Log(#[source] crate::raft::OpenError),
    #[error("cannot open the state machine")]
    StateMachine(#[source] crate::raft::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// What `meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: String,
    name: String,
    member_id: String,
    cluster_id: String,
}

/// Options for embedding a member (tests run several in one process).
#[derive(Debug, Default)]
pub struct Embed {
    /// Links to cut or slow, for fault tests.
    pub faults: Faults,
    /// Listeners bound by the caller (client, peer), used instead of
    /// binding the addresses in the settings; lets tests use port 0.
    pub listeners: Option<(Vec<std::net::TcpListener>, Vec<std::net::TcpListener>)>,
}

/// A started member: its node, the addresses it listens on, and the tasks
/// serving them.
#[derive(Debug)]
pub struct Started {
    pub node: Arc<Node>,
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addrs: Vec<SocketAddr>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// Stops serving and shuts raft down: to its peers the member is gone.
    /// The listeners close at once; requests in flight get up to
    /// [`STOP_GRACE`] to be answered (a watch that long is cut).
    pub async fn stop(mut self) {
        // The listeners stop accepting, and the peer streams end.
        self.node.stop_serving();
        let servers = std::mem::take(&mut self.servers);
        let aborts: Vec<_> = servers.iter().map(tokio::task::JoinHandle::abort_handle).collect();
        if tokio::time::timeout(STOP_GRACE, futures::future::join_all(servers)).await.is_err() {
            tracing::debug!("requests still in flight after {STOP_GRACE:?}: cutting them");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        let _ = self.node.raft.shutdown().await;
    }
}

/// Sends small answers and stream frames at once, as Go's net package
/// (and so etcd) does for every connection: with Nagle's algorithm, a
/// reply written while the previous one is unacknowledged waits for the
/// peer's delayed ACK, up to 40 ms.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

fn adopt(listeners: Vec<std::net::TcpListener>) -> Result<Vec<TcpListener>, StartError> {
    listeners
        .into_iter()
        .map(|l| {
            let addr = l.local_addr().map_err(|source| StartError::Io { path: PathBuf::from("listener"), source })?;
            l.set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
                .map_err(|source| StartError::Bind { addr, source })
        })
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io { path: path.to_owned(), source }
}

fn read_meta(path: &Path) -> Result<Option<(NodeId, u64)>, StartError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StartError::Io { path: path.to_owned(), source: e }),
    };
    let bad = |reason: String| StartError::BadMeta { path: path.to_owned(), reason };
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if meta.format != META_FORMAT {
        return Err(bad(format!("format {:?}, expected {META_FORMAT:?}", meta.format)));
    }
    let id = v2::parse_id(&meta.member_id).ok_or_else(|| bad(format!("member id {:?}", meta.member_id)))?;
    let cid = v2::parse_id(&meta.cluster_id).ok_or_else(|| bad(format!("cluster id {:?}", meta.cluster_id)))?;
    Ok(Some((id, cid)))
}

/// Writes a small file atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Binds every listener first, so a port conflict fails the start at once.
async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    let mut out = Vec::new();
    for addr in addrs {
        out.push(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr: *addr, source })?);
    }
    Ok(out)
}

/// Asks the members named in `--initial-cluster` who we are in the
/// cluster they run: our id (by our peer URLs) and the cluster id.
async fn fetch_identity(settings: &Settings) -> Result<(NodeId, u64), StartError> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap_or_default();
    let mut last_error = String::from("no other member in --initial-cluster");
    for member in settings.initial_cluster.iter().filter(|m| m.name != settings.name) {
        for url in &member.peer_urls {
            let resp = match http.get(format!("{url}/members")).send().await {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!("{url}: {e}");
                    continue;
                }
            };
            let cluster_id =
                resp.headers().get("x-etcd-cluster-id").and_then(|v| v.to_str().ok()).and_then(v2::parse_id);
            let members: Vec<v2::Member> = match resp.json().await {
                Ok(m) => m,
                Err(e) => {
                    last_error = format!("{url}/members: {e}");
                    continue;
                }
            };
            let Some(cluster_id) = cluster_id else {
                last_error = format!("{url}/members: no X-Etcd-Cluster-ID header");
                continue;
            };
            let me = members.iter().find(|m| {
                let mut a = m.peer_urls.clone();
                let mut b = settings.advertise_peer_urls.clone();
                a.sort();
                b.sort();
                a == b
            });
            return match me.and_then(|m| v2::parse_id(&m.id)) {
                Some(id) => Ok((id, cluster_id)),
                None => Err(StartError::Join(format!(
                    "no member with peer URLs {} in the cluster (add it first with `etcdctl member add`)",
                    settings.advertise_peer_urls.join(",")
                ))),
            };
        }
    }
    Err(StartError::Join(last_error))
}

fn initial_members(cluster: &[InitialMember], token: &str) -> BTreeMap<NodeId, PeerNode> {
    cluster
        .iter()
        .map(|m| (ids::member_id(&m.peer_urls, token, None), PeerNode { peer_urls: m.peer_urls.clone() }))
        .collect()
}

/// How long a stopping member gives the requests in flight to finish. etcd
/// stops a removed member after 1 s (`stopWithDelay`) for the same reason:
/// when the member served the request that removed it, the answer must
/// still go out. A client that saw the connection drop instead would retry
/// the removal on another member, and be told 404.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The runtime's worker threads for a member: one. A write's way through
/// raft is a chain of short steps on different tasks (the request, raft's
/// core, a replication task and a peer stream per follower, the log's
/// writer thread, the state machine's worker), each waking the next. With a
/// worker per core, most of those wakes find the other worker asleep and
/// cost a context switch to rouse it: a 3-member cluster on a 2-core
/// machine switched 59 times per write at one connection, and 39 with one
/// worker each (`perf stat`), which took its single-connection writes from
/// parity with etcd's to 1.40x and 1.11x (BENCHMARKS.md, session 10). Work
/// that blocks has threads of its own (the log's writer, snapshot encoding,
/// file writes), so the worker never waits on the disk, and a member leaves
/// the machine's other cores to the containers it runs beside.
/// `TOKIO_WORKER_THREADS` overrides it.
pub const ASYNC_WORKERS: usize = 1;

/// Starts a member and serves until `shutdown` resolves.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let started = start(settings, Embed::default()).await?;
    let node = started.node.clone();
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = node.removed.notified() => {}
    }
    started.stop().await;
    Ok(())
}

/// Starts a member in this process and returns once it is serving.
pub async fn start(mut settings: Settings, embed: Embed) -> Result<Started, StartError> {
    let data_dir = settings.data_dir.clone();
    let etcd_wal = data_dir.join("member").join("wal");
    if etcd_wal.exists() {
        return Err(StartError::ForeignEtcdDir { path: data_dir });
    }
    let dir = data_dir.join("ferrite");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let meta_path = dir.join(META_FILE);

    let (client_listeners, peer_listeners) = match embed.listeners {
        Some((client, peer)) => (adopt(client)?, adopt(peer)?),
        None => (bind_all(&settings.listen_client).await?, bind_all(&settings.listen_peer).await?),
    };
    let client_addrs: Vec<SocketAddr> = client_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let peer_addrs: Vec<SocketAddr> = peer_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();

    // Who are we? A restart knows; a new member derives it; a joiner asks.
    let existing = read_meta(&meta_path)?;
    let (id, cluster_id, bootstrap) = match existing {
        Some((id, cid)) => (id, cid, None),
        None => {
            if let Some(url) = settings.discovery.clone() {
                settings.initial_cluster = discover(&settings, &url).await?;
            }
            match settings.cluster_state {
                ClusterState::New => {
                    let members = initial_members(&settings.initial_cluster, &settings.cluster_token);
                    let id = ids::member_id(&settings.advertise_peer_urls, &settings.cluster_token, None);
                    let cid = ids::cluster_id(&members.keys().copied().collect::<Vec<_>>());
                    (id, cid, Some(members))
                }
                ClusterState::Existing => {
                    let (id, cid) = fetch_identity(&settings).await?;
                    (id, cid, None)
                }
            }
        }
    };

    let log_options = LogStoreOptions::for_member(id, settings.log_segment_bytes);
    let log_store = LogStore::open_with(&dir.join("raft"), log_options).map_err(StartError::Log)?;
    // The leader writes its log in parallel with replicating it; these two
    // keep commitment behind its fsync (see `raft::durability`).
    let durability = log_store.durability();
    let wal_fsyncs = log_store.fsyncs();
    let log_reader = log_store.reader();
    let restored = log_store.leadership().map(|(vote, last_index)| RestoredLeadership { vote, last_index });
    let snapshots = SnapshotSchedule::every(settings.snapshot_count);
    let state_machine = StateMachine::open(&dir.join("sm"))
        .map_err(StartError::StateMachine)?
        .apply_when_synced(durability.clone())
        .snapshot_on(snapshots.clone());
    let state = state_machine.shared();

    let heartbeat = u64::try_from(settings.heartbeat.as_millis()).unwrap_or(100);
    let election = u64::try_from(settings.election_timeout.as_millis()).unwrap_or(1000);
    let config = openraft::Config {
        cluster_name: settings.cluster_token.clone(),
        heartbeat_interval: heartbeat,
        // A voter refuses votes within its leader's lease, which openraft
        // takes to be `election_timeout_max`: etcd's --election-timeout is
        // its lease too (check-quorum). openraft's own campaign timer is
        // off: ours (`raft::election`) draws its timeout anew each time,
        // where openraft 0.9 draws it once per process.
        election_timeout_min: election / 2,
        election_timeout_max: election,
        enable_elect: false,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 1024,
        // Snapshots are taken by count of writes (`SnapshotSchedule`).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // Entries kept behind a snapshot so a briefly lagging follower
        // catches up from the log (etcd keeps 5000) rather than a snapshot.
        max_in_snapshot_log_to_keep: settings.snapshot_count.min(5000),
        purge_batch_size: 64,
        ..Default::default()
    };
    let config = Arc::new(config.validate().map_err(|e| StartError::Raft(e.to_string()))?);
    let peer_stats = PeerStats::default();
    let heard = election::Heard::default();
    let http = peer_http_client();
    let streams = Streams::new(http.clone());
    let network = Network::new(id, streams.clone(), http.clone(), embed.faults.clone(), peer_stats.clone())
        .commit_when_synced(durability, log_reader)
        .elections(heard.clone());
    let raft =
        Raft::new(id, config, network, log_store, state_machine).await.map_err(|e| StartError::Raft(e.to_string()))?;
    tokio::spawn(election::run(raft.clone(), heard.clone(), settings.election_timeout));
    tokio::spawn(snapshots.run(raft.clone(), state.clone()));
    // Requests waiting for this member to apply an index give up at once
    // when raft stops (a failed log write), not at their deadline.
    tokio::spawn({
        let mut metrics = raft.metrics();
        let state = state.clone();
        async move {
            // An error here is raft gone altogether: closed all the same.
            let _ = metrics.wait_for(|m| m.running_state.is_err()).await;
            state.close_applied();
        }
    });

    let node = Node::new(node::Parts {
        id,
        name: settings.name.clone(),
        cluster_id,
        client_urls: settings.advertise_client_urls.clone(),
        peer_urls: settings.advertise_peer_urls.clone(),
        cluster_token: settings.cluster_token.clone(),
        raft: raft.clone(),
        state,
        peer_stats,
        heard,
        restored,
        streams,
        http,
        wal_fsyncs,
    });

    let mut servers = Vec::new();
    let routers = peer_listeners
        .into_iter()
        .map(|l| (l, crate::http::peer::router(node.clone()), "peer"))
        .chain(client_listeners.into_iter().map(|l| (l, crate::http::client::router(node.clone()), "client")));
    for (listener, app, which) in routers {
        let node = node.clone();
        servers.push(tokio::spawn(async move {
            let stopped = async move { node.stopped().await };
            if let Err(e) = axum::serve(listener.tap_io(no_delay), app).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "{which} listener failed");
            }
        }));
    }

    if let Some(members) = bootstrap {
        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            // Every initial member initializes with the same membership;
            // openraft treats the identical calls as one bootstrap.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "raft already initialized by a peer");
            }
        }
    }
    let meta = Meta {
        format: META_FORMAT.to_owned(),
        name: settings.name.clone(),
        member_id: v2::format_id(id),
        cluster_id: v2::format_id(cluster_id),
    };
    if existing.is_none() {
        let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(&meta_path, &bytes).map_err(io_err(&meta_path))?;
    }
    tracing::info!(
        name = %settings.name,
        id = %meta.member_id,
        cluster = %meta.cluster_id,
        clients = ?client_addrs,
        peers = ?peer_addrs,
        "member started"
    );
    node.spawn_duties();
    Ok(Started { node, client_addrs, peer_addrs, servers })
}

/// Bootstraps the initial cluster from a discovery token, as etcd does:
/// register under the token, wait for the cluster's size, and take the
/// members it lists.
async fn discover(settings: &Settings, url: &str) -> Result<Vec<InitialMember>, StartError> {
    let id = ids::member_id(&settings.advertise_peer_urls, &settings.cluster_token, None);
    tracing::info!(url, "joining the cluster through discovery");
    let cluster = ferrite_etcd_client::discovery::join(url, id, &settings.name, &settings.advertise_peer_urls)
        .await
        .map_err(|e| StartError::Discovery(format!("failed to join discovery cluster ({e})")))?;
    crate::config::parse_initial_cluster(&cluster)
        .map_err(|e| StartError::Discovery(format!("discovery returned an unusable cluster {cluster:?}: {e}")))
}
