//! An in-process cluster of ferrite-store members for tier-1 tests.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ferrite_store::config::{ClusterState, InitialMember, Settings};
use ferrite_store::raft::network::Faults;
use ferrite_store::server::{start, Embed, Started};

pub struct Cluster {
    members: Vec<Option<Started>>,
    settings: Vec<Settings>,
    faults: Vec<Faults>,
    ids: Vec<u64>,
    _dirs: tempfile::TempDir,
}

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn url(l: &TcpListener) -> String {
    format!("http://{}", l.local_addr().unwrap())
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    /// Starts `n` members, letting the test adjust each member's settings.
    pub async fn start_with(n: usize, adjust: impl Fn(&mut Settings)) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let clients: Vec<TcpListener> = (0..n).map(|_| bind()).collect();
        let peers: Vec<TcpListener> = (0..n).map(|_| bind()).collect();
        let initial: Vec<InitialMember> =
            (0..n).map(|i| InitialMember { name: format!("n{i}"), peer_urls: vec![url(&peers[i])] }).collect();
        let settings: Vec<Settings> = (0..n)
            .map(|i| Settings {
                name: format!("n{i}"),
                data_dir: dirs.path().join(format!("n{i}")),
                listen_client: vec![clients[i].local_addr().unwrap()],
                advertise_client_urls: vec![url(&clients[i])],
                listen_peer: vec![peers[i].local_addr().unwrap()],
                advertise_peer_urls: vec![url(&peers[i])],
                initial_cluster: initial.clone(),
                cluster_state: ClusterState::New,
                cluster_token: "it".into(),
                discovery: None,
                heartbeat: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                snapshot_count: 10_000,
                log_segment_bytes: 16 << 20,
            })
            .map(|mut s| {
                adjust(&mut s);
                s
            })
            .collect();
        let faults: Vec<Faults> = (0..n).map(|_| Faults::default()).collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in clients.into_iter().zip(peers).enumerate() {
            let embed = Embed { faults: faults[i].clone(), listeners: Some((vec![client], vec![peer])) };
            members.push(Some(start(settings[i].clone(), embed).await.unwrap()));
        }
        let ids = members.iter().map(|m| m.as_ref().unwrap().node.id).collect();
        Cluster { members, settings, faults, ids, _dirs: dirs }
    }

    pub fn client_url(&self, i: usize) -> String {
        self.settings[i].advertise_client_urls[0].clone()
    }

    /// The segment numbers of member `i`'s raft log files.
    pub fn log_segments(&self, i: usize) -> Vec<u64> {
        let dir = self.settings[i].data_dir.join("ferrite/raft");
        let mut found: Vec<u64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_prefix("log.").map(str::to_owned))
            .filter_map(|seq| u64::from_str_radix(&seq, 16).ok())
            .collect();
        found.sort();
        found
    }

    pub fn node(&self, i: usize) -> std::sync::Arc<ferrite_store::node::Node> {
        self.members[i].as_ref().expect("member is running").node.clone()
    }

    pub fn keys_url(&self, i: usize, key: &str) -> String {
        format!("{}/v2/keys{key}", self.settings[i].advertise_client_urls[0])
    }

    /// Waits until the running members agree on a leader; its index.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<Option<u64>> = self.members.iter().flatten().map(|m| m.node.leader()).collect();
            if let Some(Some(l)) = leaders.first() {
                let agreed = leaders.iter().all(|x| *x == Some(*l));
                let alive = self.members.iter().flatten().any(|m| m.node.id == *l);
                if agreed && alive {
                    return self.ids.iter().position(|id| id == l).unwrap();
                }
            }
            assert!(Instant::now() < deadline, "no leader agreed within 10 s: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(m) = self.members[i].take() {
            m.stop().await;
        }
    }

    /// Cuts every link to and from member `i`.
    pub fn isolate(&self, i: usize) {
        for (j, f) in self.faults.iter().enumerate() {
            if j != i {
                f.cut(self.ids[j], self.ids[i]);
                self.faults[i].cut(self.ids[i], self.ids[j]);
            }
        }
    }

    pub fn heal(&self) {
        for f in &self.faults {
            f.heal();
        }
    }

    /// Stops every member, then starts each again from its data directory.
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
        for i in 0..self.members.len() {
            let s = self.settings[i].clone();
            let client = rebind(s.listen_client[0]);
            let peer = rebind(s.listen_peer[0]);
            let embed = Embed { faults: self.faults[i].clone(), listeners: Some((vec![client], vec![peer])) };
            self.members[i] = Some(start(s, embed).await.unwrap());
        }
    }

    pub async fn stop(mut self) {
        for i in 0..self.members.len() {
            self.kill(i).await;
        }
    }
}

/// Binds the same port again once the old listener is gone.
fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot rebind {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
